/* fuzz_lcmd.c: libFuzzer harness for the .lcmd dataset path a training run takes (src/data/dataset.c,
 * plan.c): open and validate the file, scan it for NaN/Inf, build the batch plan of tests/fuzz/tiny.ini
 * (train mode, shuffled, EOT appended when the file has one) and copy the first micro-batches out. */
#include "fuzz_util.h"
#include "lcm/config.h"
#include "lcm/plan.h"

static lcm_plan_config plan_config;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    static lcm_config cfg;
    lcm_error err = {0};
    if (lcm_config_load(&cfg, FUZZ_TINY_INI, 0, NULL, &err) != 0) {
        fprintf(stderr, "fuzz_lcmd: %s\n", err.msg);
        abort();
    }
    lcm_plan_config_from(&plan_config, &cfg, LCM_PLAN_TRAIN);
    return 0;
}

/* A micro-batch is at most max_tokens padded concepts of dim floats; larger dims are left unread. */
#define MAX_FLOATS (1u << 22)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fuzz_path(path, sizeof path, "in.lcmd");
    fuzz_write(path, data, size);
    lcm_error err = {0};
    lcm_dataset ds;
    if (lcm_dataset_open(&ds, path, &err) != 0) return 0;
    if (lcm_dataset_check_finite(&ds, &err) != 0) goto done;
    lcm_plan_config pc = plan_config;
    pc.append_eot = ds.eot != NULL;
    lcm_plan *plan = NULL;
    if (lcm_plan_create(&plan, &ds, &pc, &err) != 0) goto done;
    enum { N_MB = 3 };
    int max_rows = lcm_plan_max_rows(plan);
    size_t row_cap = (size_t)N_MB * (size_t)(max_rows > 0 ? max_rows : 1);
    lcm_row *rows = malloc(row_cap * sizeof *rows);
    lcm_microbatch mb[N_MB];
    lcm_cursor cur = {0, 0};
    if (rows && lcm_plan_take(plan, &cur, N_MB, mb, rows, row_cap, &err) == 0) {
        for (int i = 0; i < N_MB; i++) {
            size_t n = (size_t)mb[i].n_rows * (size_t)mb[i].max_len * (size_t)ds.dim;
            if (n == 0 || n > MAX_FLOATS) continue;
            float *x = malloc(n * sizeof *x);
            int32_t *lens = malloc((size_t)mb[i].n_rows * sizeof *lens);
            uint64_t *docs = malloc((size_t)mb[i].n_rows * sizeof *docs);
            if (x && lens && docs) lcm_batch_fill(&ds, &mb[i], pc.append_eot, x, lens, docs);
            free(x);
            free(lens);
            free(docs);
        }
    }
    free(rows);
    lcm_plan_free(plan);
done:
    if (!err.msg[0] ? 0 : strchr(err.msg, '\n') != NULL) __builtin_trap(); /* messages are one line */
    lcm_dataset_close(&ds);
    return 0;
}

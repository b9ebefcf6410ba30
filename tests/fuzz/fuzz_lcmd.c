/* fuzz_lcmd.c: libFuzzer harness for the .lcmd dataset path a training run takes (src/data/dataset.c,
 * plan.c): open and validate the file, scan it for NaN/Inf, build the batch plan of tests/fuzz/tiny.ini
 * (train mode, shuffled, EOT appended when the file has one) and copy the first micro-batches out.
 *
 * The header and table CRCs of the input are recomputed before the file is written: a mutated file
 * would otherwise stop at the CRC checks, and the fuzzer would never reach the layout, offsets and
 * plan code behind them. The CRC checks themselves are tested in tests/test_dataset.c. */
#include "fuzz_util.h"
#include "lcm/config.h"
#include "lcm/plan.h"

/* From the format (docs/dataset-format.md): the header page, offsets_off, tables_crc, header_crc. */
#define LCMD_PAGE 4096
#define AT_OFFSETS_OFF 56
#define AT_TABLES_CRC 112
#define AT_HEADER_CRC 116

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void fix_crcs(uint8_t *b, size_t n) {
    if (n < LCMD_PAGE) return;
    uint64_t off = 0;
    for (int i = 7; i >= 0; i--) off = (off << 8) | b[AT_OFFSETS_OFF + i];
    if (off >= LCMD_PAGE && off <= n) put32(b + AT_TABLES_CRC, lcm_crc32(0, b + off, (size_t)(n - off)));
    put32(b + AT_HEADER_CRC, 0);
    put32(b + AT_HEADER_CRC, lcm_crc32(0, b, LCMD_PAGE));
}

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
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    fix_crcs(copy, size);
    fuzz_write(path, copy, size);
    free(copy);
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

/* fuzz_safetensors.c: libFuzzer harness for the safetensors reader (src/io/safetensors.c) through each
 * path that reads a file someone else may have written. The first input byte picks the path:
 *   0  lcm_st_open: every tensor converted to fp32, metadata looked up (any safetensors file)
 *   1  lcm_normalizer_load (model.normalizer, the dataset's normalizer)
 *   2  lcm_weights_load of the tiny model (lcm eval, trainer.init_from)
 *   3  lcm_checkpoint_load of a directory (resume): model.safetensors, the line "=====", then
 *      train_state.safetensors
 * The tiny model is the one of tests/fuzz/tiny.ini, whose checkpoint make_seeds.sh writes. */
#include "fuzz_util.h"
#include "lcm/checkpoint.h"
#include "lcm/config.h"
#include "lcm/dataset.h"
#include "lcm/model.h"
#include "lcm/safetensors.h"

static lcm_param_table table;
static float *master, *adam_m, *adam_v;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    static lcm_config cfg;
    lcm_error err = {0};
    lcm_dims d;
    if (lcm_config_load(&cfg, FUZZ_TINY_INI, 0, NULL, &err) != 0 || lcm_dims_from_config(&d, &cfg.model, &err) != 0 ||
        lcm_param_table_build(&table, &d, &err) != 0) {
        fprintf(stderr, "fuzz_safetensors: %s\n", err.msg);
        abort();
    }
    master = malloc(table.total * sizeof(float));
    adam_m = malloc(table.total * sizeof(float));
    adam_v = malloc(table.total * sizeof(float));
    if (!master || !adam_m || !adam_v) abort();
    return 0;
}

/* Tensors up to this many elements are converted (the reader already proved their bytes exist). */
#define MAX_NUMEL (1u << 20)

static void read_all(const char *path) {
    lcm_error err = {0};
    lcm_st_file f;
    if (lcm_st_open(&f, path, &err) != 0) return;
    for (int i = 0; i < f.n; i++) {
        const lcm_st_tensor *t = &f.tensors[i];
        if (lcm_st_find(&f, t->name) != t) __builtin_trap(); /* names are unique */
        if (t->numel == 0 || t->numel > MAX_NUMEL) continue;
        float *out = malloc(t->numel * sizeof *out);
        if (out) lcm_st_to_f32(t, out, &err);
        free(out);
    }
    for (int i = 0; i < f.n_meta; i++)
        if (lcm_st_meta(&f, f.meta_keys[i]) != f.meta_values[i]) __builtin_trap(); /* keys are unique */
    lcm_st_close(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int mode = data[0] & 3;
    data++, size--;
    char path[512], dir[512];
    lcm_error err = {0};
    lcm_normalizer norm = {0};
    switch (mode) {
    case 0:
        fuzz_path(path, sizeof path, "in.safetensors");
        fuzz_write(path, data, size);
        read_all(path);
        break;
    case 1:
        fuzz_path(path, sizeof path, "normalizer.safetensors");
        fuzz_write(path, data, size);
        lcm_normalizer_load(&norm, path, 0, &err);
        break;
    case 2:
        fuzz_path(path, sizeof path, "model.safetensors");
        fuzz_write(path, data, size);
        lcm_weights_load(path, &table, master, &norm, &err);
        break;
    case 3: {
        const uint8_t *parts[2];
        size_t lens[2];
        if (fuzz_split(data, size, parts, lens, 2) != 2) return 0;
        fuzz_path(dir, sizeof dir, "ckpt");
        lcm_mkdir_p(dir, &err);
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        fuzz_write(path, parts[0], lens[0]);
        snprintf(path, sizeof path, "%s/train_state.safetensors", dir);
        fuzz_write(path, parts[1], lens[1]);
        lcm_train_state st;
        lcm_error_clear(&err);
        lcm_checkpoint_load(dir, &table, master, adam_m, adam_v, &norm, &st, &err);
        break;
    }
    }
    lcm_normalizer_free(&norm); /* also after a failed load: the caller owns what was allocated */
    if (err.msg[0] && strchr(err.msg, '\n')) __builtin_trap(); /* messages are one line */
    return 0;
}

/* bench.c: `lcm bench`: the training step's speed and memory on the configured devices, measured on
 * random full-length rows (no dataset, no checkpoints) through the same worker and step code as
 * training. FLOPs per concept are lcm_model_flops_per_concept (documented in docs/performance.md). */
#include <stdlib.h>
#include <string.h>

#include "lcm/log.h"
#include "train_internal.h"

int lcm_bench(const lcm_config *cfg, lcm_bench_result *out, lcm_error *err) {
    memset(out, 0, sizeof *out);
    lcm_train_summary sum;
    memset(&sum, 0, sizeof sum);
    lcm_run run_storage, *run = &run_storage;
    memset(run, 0, sizeof *run);
    run->cfg = cfg;
    run->sum = &sum;
    run->bench = 1;
    run->bench_out = out;
    run->accum = cfg->trainer.grad_accum;
    run->max_T = cfg->data.max_seq_len;
    run->max_tokens = cfg->data.max_tokens;
    run->max_rows = (int)(cfg->data.max_tokens / cfg->data.max_seq_len);
    int rc = lcm_dims_from_config(&run->d, &cfg->model, err);
    if (!rc && cfg->bench.steps < 1) rc = lcm_fail(err, LCM_ERR_CONFIG, "bench.steps must be at least 1");
    if (!rc) rc = lcm_normalizer_identity(&run->norm, run->d.D, err);
    if (!rc) rc = lcm_resolve_devices(cfg->trainer.devices, run->dev, &run->n, err);
    lcm_param_table t;
    if (!rc) rc = lcm_param_table_build(&t, &run->d, err);
    if (!rc) {
        run->init_master = malloc(t.total * sizeof(float));
        if (!run->init_master) rc = lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for %zu parameters", t.total);
        else lcm_params_init(&t, run->init_master, cfg->trainer.seed);
        lcm_param_table_free(&t);
    }
    if (!rc) rc = lcm_run_make_group(run, err);
    if (!rc) {
        out->devices = run->n;
        out->is_gpu = run->dev[0].is_gpu;
        if (out->is_gpu) lcm_cuda_device_name(run->dev[0].index, out->device_name, sizeof out->device_name, err);
        else snprintf(out->device_name, sizeof out->device_name, "CPU (%d cores)", lcm_cpu_count());
        rc = lcm_run_workers(run, err);
    }
    lcm_run_free(run);
    return rc;
}

/* evaluate.c: the evaluation loop (validation during training, and `lcm eval`): the EVAL plan's
 * micro-batches through the model's forward pass, and the metrics of include/lcm/eval.h. */
#include <stdlib.h>
#include <string.h>

#include "lcm/log.h"
#include "train_internal.h"

int lcm_eval_loop(lcm_model *m, const lcm_dataset *ds, lcm_plan *plan, int append_eot, const lcm_normalizer *norm,
                  int rank, int n_ranks, int64_t max_batches, lcm_slot *slot, lcm_row *rows, float *pred,
                  float *scratch, lcm_eval_sums *sums, lcm_error *err) {
    uint64_t n_mb = 0;
    LCM_TRY(lcm_plan_epoch_size(plan, 0, &n_mb, err));
    if (max_batches > 0 && (uint64_t)max_batches < n_mb) n_mb = (uint64_t)max_batches;
    lcm_dropout_key no_dropout = {0};
    for (uint64_t i = (uint64_t)rank; i < n_mb; i += (uint64_t)n_ranks) {
        lcm_microbatch mb;
        LCM_TRY(lcm_plan_get(plan, 0, i, &mb, rows, (size_t)m->max_rows, err));
        lcm_batch_fill(ds, &mb, append_eot, slot->x, slot->lens, slot->docs);
        LCM_TRY(lcm_model_upload_batch(m, slot->x, slot->lens, mb.n_rows, mb.max_len, err));
        lcm_model_forward(m, mb.n_rows, mb.max_len, 0.0f, no_dropout);
        LCM_TRY(lcm_model_predictions(m, pred, mb.n_rows, mb.max_len, err));
        lcm_eval_accumulate(sums, pred, slot->x, slot->lens, slot->docs, mb.n_rows, mb.max_len, m->d.D, norm->center,
                            norm->scale, scratch);
    }
    return 0;
}

/* The weights file of a checkpoint directory, or the path itself when it is a file. */
static void weights_path(const char *checkpoint, char *out, size_t cap) {
    if (lcm_is_dir(checkpoint))
        snprintf(out, cap, "%s/model.safetensors", checkpoint);
    else
        snprintf(out, cap, "%s", checkpoint);
}

typedef struct eval_state {
    lcm_backend *be;
    lcm_model model;
    int have_model;
    lcm_dataset ds;
    int have_ds;
    lcm_plan *plan;
    lcm_normalizer norm;
    lcm_slot slot;
    lcm_row *rows;
    float *weights, *pred, *scratch;
} eval_state;

static void eval_state_free(eval_state *s) {
    if (s->be) lcm_slot_free(&s->slot, s->be);
    if (s->have_model) lcm_model_destroy(&s->model);
    lcm_backend_destroy(s->be);
    if (s->plan) lcm_plan_free(s->plan);
    if (s->have_ds) lcm_dataset_close(&s->ds);
    lcm_normalizer_free(&s->norm);
    free(s->rows);
    free(s->weights);
    free(s->pred);
    free(s->scratch);
}

static int evaluate(eval_state *s, const char *checkpoint, const char *dataset, const lcm_config *cfg,
                    lcm_eval_result *out, lcm_error *err) {
    lcm_dims d;
    LCM_TRY(lcm_dims_from_config(&d, &cfg->model, err));
    lcm_param_table t;
    LCM_TRY(lcm_param_table_build(&t, &d, err));
    char path[LCM_PATH_MAX + 32];
    weights_path(checkpoint, path, sizeof path);
    s->weights = malloc(t.total * sizeof(float));
    int rc = s->weights ? lcm_weights_load(path, &t, s->weights, &s->norm, err)
                        : lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for the weights");
    lcm_param_table_free(&t);
    if (rc) return rc;
    if (s->norm.dim == 0) {
        lcm_warn("%s carries no normalizer: using model.normalizer = %s", path, cfg->model.normalizer);
        LCM_TRY(lcm_normalizer_resolve(&s->norm, cfg->model.normalizer, dataset, d.D, err));
    }
    LCM_TRY(lcm_dataset_open(&s->ds, dataset, err));
    s->have_ds = 1;
    if (s->ds.dim != d.D)
        return lcm_fail(err, LCM_ERR_CONFIG, "%s holds %d-dimensional concepts but the model expects %d", dataset,
                        s->ds.dim, d.D);
    LCM_TRY(lcm_dataset_check_finite(&s->ds, err));
    lcm_plan_config pc;
    lcm_plan_config_from(&pc, cfg, LCM_PLAN_EVAL);
    LCM_TRY(lcm_plan_create(&s->plan, &s->ds, &pc, err));

    lcm_device dev[LCM_MAX_DEVICES];
    int n_dev = 0;
    LCM_TRY(lcm_resolve_devices(cfg->trainer.devices, dev, &n_dev, err));
    if (dev[0].is_gpu)
        LCM_TRY(lcm_cuda_backend_create(&s->be, dev[0].index, err));
    else
        LCM_TRY(lcm_cpu_backend_create(&s->be, 0, err));
    const int max_rows = lcm_plan_max_rows(s->plan);
    const int64_t max_tokens = cfg->data.max_tokens;
    LCM_TRY(lcm_model_create(&s->model, s->be, &d, max_tokens, max_rows, cfg->data.max_seq_len, 0, err));
    s->have_model = 1;
    LCM_TRY(lcm_model_set_params(&s->model, s->weights, err));
    LCM_TRY(lcm_model_set_normalizer(&s->model, &s->norm, err));
    LCM_TRY(lcm_slot_alloc(&s->slot, s->be, max_tokens, max_rows, d.D, err));
    s->rows = malloc((size_t)max_rows * sizeof *s->rows);
    s->pred = malloc((size_t)max_tokens * d.D * sizeof(float));
    s->scratch = malloc(lcm_eval_scratch_floats(max_rows, cfg->data.max_seq_len, d.D) * sizeof(float));
    if (!s->rows || !s->pred || !s->scratch) return lcm_fail(err, LCM_ERR_NOMEM, "out of host memory");
    lcm_eval_sums sums = {0};
    LCM_TRY(lcm_eval_loop(&s->model, &s->ds, s->plan, cfg->data.append_eot, &s->norm, 0, 1, 0, &s->slot, s->rows,
                          s->pred, s->scratch, &sums, err));
    lcm_eval_finish(&sums, out);
    return 0;
}

int lcm_evaluate(const char *checkpoint, const char *dataset, const lcm_config *cfg, lcm_eval_result *out,
                 lcm_error *err) {
    eval_state s;
    memset(&s, 0, sizeof s);
    int rc = evaluate(&s, checkpoint, dataset, cfg, out, err);
    eval_state_free(&s);
    return rc;
}

/* evaluate.c: the evaluation loop (validation during training, and `lcm eval`): the EVAL plan's
 * micro-batches through the model's forward pass, and the metrics of include/lcm/eval.h. */
#include <stdlib.h>
#include <string.h>

#include "lcm/log.h"
#include "train_internal.h"

int lcm_eval_ctx_init(lcm_eval_ctx *c, lcm_model *m, const lcm_split *split, int append_eot,
                      const lcm_normalizer *norm, lcm_error *err) {
    memset(c, 0, sizeof *c);
    c->model = m;
    c->split = split;
    c->append_eot = append_eot;
    c->norm = norm;
    LCM_TRY(lcm_slot_alloc(&c->slot, m->be, m->max_tokens, m->max_rows, m->d.D, err));
    c->rows = malloc((size_t)m->max_rows * sizeof *c->rows);
    c->pred = malloc((size_t)m->max_tokens * m->d.D * sizeof(float));
    c->scratch = malloc(lcm_eval_scratch_floats(m->max_rows, m->max_T, m->d.D) * sizeof(float));
    if (!c->rows || !c->pred || !c->scratch)
        return lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for the evaluation buffers");
    return 0;
}

void lcm_eval_ctx_free(lcm_eval_ctx *c) {
    if (c->model) lcm_slot_free(&c->slot, c->model->be);
    free(c->rows);
    free(c->pred);
    free(c->scratch);
    memset(c, 0, sizeof *c);
}

int lcm_eval_loop(lcm_eval_ctx *c, int rank, int n_ranks, int64_t max_batches, lcm_eval_sums *sums, lcm_error *err) {
    lcm_model *m = c->model;
    lcm_slot *slot = &c->slot;
    uint64_t n_mb = 0;
    LCM_TRY(lcm_plan_epoch_size(c->split->plan, 0, &n_mb, err));
    if (max_batches > 0 && (uint64_t)max_batches < n_mb) n_mb = (uint64_t)max_batches;
    lcm_dropout_key no_dropout = {0};
    for (uint64_t i = (uint64_t)rank; i < n_mb; i += (uint64_t)n_ranks) {
        lcm_microbatch mb;
        LCM_TRY(lcm_plan_get(c->split->plan, 0, i, &mb, c->rows, (size_t)m->max_rows, err));
        lcm_batch_fill(&c->split->ds, &mb, c->append_eot, slot->x, slot->lens, slot->docs);
        LCM_TRY(lcm_model_upload_batch(m, slot->x, slot->lens, mb.n_rows, mb.max_len, err));
        lcm_model_forward(m, mb.n_rows, mb.max_len, 0.0f, no_dropout);
        LCM_TRY(lcm_model_predictions(m, c->pred, mb.n_rows, mb.max_len, err));
        lcm_eval_accumulate(sums, c->pred, slot->x, slot->lens, slot->docs, mb.n_rows, mb.max_len, m->d.D,
                            c->norm->center, c->norm->scale, c->scratch);
        if (c->beats) atomic_fetch_add_explicit(c->beats, 1, memory_order_release);
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
    lcm_split split;
    lcm_normalizer norm;
    lcm_eval_ctx ctx;
    float *weights;
} eval_state;

static void eval_state_free(eval_state *s) {
    lcm_eval_ctx_free(&s->ctx);
    if (s->have_model) lcm_model_destroy(&s->model);
    lcm_backend_destroy(s->be);
    lcm_split_close(&s->split);
    lcm_normalizer_free(&s->norm);
    free(s->weights);
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
    LCM_TRY(lcm_split_open(&s->split, dataset, d.D, 1, cfg, LCM_PLAN_EVAL, err));

    lcm_device dev[LCM_MAX_DEVICES];
    int n_dev = 0;
    LCM_TRY(lcm_resolve_devices(cfg->trainer.devices, dev, &n_dev, err));
    LCM_TRY(lcm_backend_for_device(&s->be, dev[0], err));
    LCM_TRY(s->be->ops->set_attention(s->be, cfg->model.attention, d.C / d.H, err));
    const int max_rows = lcm_plan_max_rows(s->split.plan);
    LCM_TRY(lcm_model_create(&s->model, s->be, &d, cfg->data.max_tokens, max_rows, cfg->data.max_seq_len, 0, err));
    s->have_model = 1;
    LCM_TRY(lcm_model_set_params(&s->model, s->weights, err));
    LCM_TRY(lcm_model_set_normalizer(&s->model, &s->norm, err));
    LCM_TRY(lcm_eval_ctx_init(&s->ctx, &s->model, &s->split, cfg->data.append_eot, &s->norm, err));
    lcm_eval_sums sums = {0};
    LCM_TRY(lcm_eval_loop(&s->ctx, 0, 1, 0, &sums, err));
    lcm_eval_finish(&sums, out);
    return lcm_eval_mean_baseline(&s->split.ds, s->split.plan, cfg->data.append_eot, s->norm.center, s->norm.scale,
                                  &out->baseline, err);
}

int lcm_evaluate(const char *checkpoint, const char *dataset, const lcm_config *cfg, lcm_eval_result *out,
                 lcm_error *err) {
    eval_state s;
    memset(&s, 0, sizeof s);
    int rc = evaluate(&s, checkpoint, dataset, cfg, out, err);
    eval_state_free(&s);
    return rc;
}

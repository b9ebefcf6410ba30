/* params.c: the Base-LCM parameter table: every tensor's reference name, shape, place in the one
 * parameter block, and initialisation rule (see docs/model.md, "Initialization" and
 * "Parameter names"). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/model.h"
#include "lcm/philox.h"

#define PARAM_ALIGN 16 /* elements: 64 bytes of fp32, 32 of bf16 */

int lcm_dims_from_config(lcm_dims *d, const lcm_model_config *mc, lcm_error *err) {
    memset(d, 0, sizeof *d);
    d->D = mc->sonar_dim;
    d->C = mc->model_dim;
    d->L = mc->num_layers;
    d->H = mc->num_heads;
    d->F = lcm_model_ffn_dim(mc);
    d->max_seq_len = mc->max_seq_len;
    d->dropout = mc->dropout;
    d->rope_theta = mc->rope_theta;
    d->eps = mc->norm_eps;
    if (d->D < 1 || d->C < 1 || d->L < 1 || d->H < 1 || d->F < 1)
        return lcm_fail(err, LCM_ERR_CONFIG, "model sizes must be positive (D %d, C %d, L %d, H %d, F %d)", d->D,
                        d->C, d->L, d->H, d->F);
    if (d->C % d->H != 0 || (d->C / d->H) % 2 != 0)
        return lcm_fail(err, LCM_ERR_CONFIG,
                        "model.model_dim (%d) must be a multiple of model.num_heads (%d) with an even head dim "
                        "(RoPE rotates pairs)", d->C, d->H);
    return 0;
}

typedef struct table_builder {
    lcm_param_table *t;
    int cap;
    int oom;
} table_builder;

/* Append a tensor. pad = 0 keeps the next tensor adjacent (inside a fused group such as q|k|v); pad = 1
 * rounds the next offset up to PARAM_ALIGN. */
static size_t add_tensor(table_builder *b, const char *name, int64_t rows, int64_t cols, lcm_init_rule init,
                         float gain, int fan_in, int fan_out, int pad) {
    lcm_param_table *t = b->t;
    if (t->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        lcm_param *p = realloc(t->params, (size_t)cap * sizeof *p);
        if (!p) {
            b->oom = 1;
            return 0;
        }
        t->params = p;
        b->cap = cap;
    }
    lcm_param *p = &t->params[t->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = cols > 0 ? 2 : 1;
    p->shape[0] = rows;
    p->shape[1] = cols;
    p->numel = (size_t)rows * (size_t)(cols > 0 ? cols : 1);
    p->offset = t->total;
    p->init = init;
    p->gain = gain;
    p->fan_in = fan_in;
    p->fan_out = fan_out;
    t->total += p->numel;
    if (pad) t->total = (t->total + PARAM_ALIGN - 1) / PARAM_ALIGN * PARAM_ALIGN;
    t->count += p->numel;
    return p->offset;
}

static size_t add(table_builder *b, const char *name, int64_t rows, int64_t cols, lcm_init_rule init, float gain,
                  int fan_in, int fan_out) {
    return add_tensor(b, name, rows, cols, init, gain, fan_in, fan_out, 1);
}

/* A Linear layer [out, in] with bias, kaiming-uniform(a = sqrt(5)) for both (PyTorch's default). */
static void add_linear(table_builder *b, const char *prefix, int out, int in, size_t *w, size_t *bias) {
    char name[96];
    snprintf(name, sizeof name, "%s.weight", prefix);
    *w = add(b, name, out, in, LCM_INIT_KAIMING_UNIFORM, 1.0f, in, out);
    snprintf(name, sizeof name, "%s.bias", prefix);
    *bias = add(b, name, out, 0, LCM_INIT_KAIMING_UNIFORM, 1.0f, in, out);
}

int lcm_param_table_build(lcm_param_table *t, const lcm_dims *d, lcm_error *err) {
    memset(t, 0, sizeof *t);
    t->layers = calloc((size_t)d->L, sizeof *t->layers);
    if (!t->layers) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory building the parameter table");
    table_builder b = {.t = t};
    const int C = d->C, F = d->F, D = d->D;
    const float qkv_gain = (float)(1.0 / sqrt(2.0));
    char name[96];

    add_linear(&b, "frontend.pre_linear", C, D, &t->pre_w, &t->pre_b);
    for (int l = 0; l < d->L; l++) {
        lcm_layer_offsets *o = &t->layers[l];
        o->begin = t->total;
        snprintf(name, sizeof name, "lcm.layers.%d.self_attn_layer_norm.weight", l);
        o->attn_norm = add(&b, name, C, 0, LCM_INIT_ONES, 1.0f, C, C);
        /* q, k, v weights adjacent: one [3C, C] matmul; then their biases, adjacent: [3C]. */
        static const char *qkv[3] = {"q_proj", "k_proj", "v_proj"};
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "lcm.layers.%d.self_attn.%s.weight", l, qkv[i]);
            size_t off = add_tensor(&b, name, C, C, LCM_INIT_XAVIER_UNIFORM, qkv_gain, C, C, i == 2);
            if (i == 0) o->qkv_w = off;
        }
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "lcm.layers.%d.self_attn.%s.bias", l, qkv[i]);
            size_t off = add_tensor(&b, name, C, 0, LCM_INIT_ZEROS, 1.0f, C, C, i == 2);
            if (i == 0) o->qkv_b = off;
        }
        snprintf(name, sizeof name, "lcm.layers.%d.self_attn.output_proj.weight", l);
        o->attn_out_w = add(&b, name, C, C, LCM_INIT_XAVIER_UNIFORM, 1.0f, C, C);
        snprintf(name, sizeof name, "lcm.layers.%d.self_attn.output_proj.bias", l);
        o->attn_out_b = add(&b, name, C, 0, LCM_INIT_ZEROS, 1.0f, C, C);
        snprintf(name, sizeof name, "lcm.layers.%d.ffn_layer_norm.weight", l);
        o->ffn_norm = add(&b, name, C, 0, LCM_INIT_ONES, 1.0f, C, C);
        /* gate and inner weights adjacent: one [2F, C] matmul; then their biases: [2F]. */
        snprintf(name, sizeof name, "lcm.layers.%d.ffn.gate_proj.weight", l);
        o->gi_w = add_tensor(&b, name, F, C, LCM_INIT_KAIMING_UNIFORM, 1.0f, C, F, 0);
        snprintf(name, sizeof name, "lcm.layers.%d.ffn.inner_proj.weight", l);
        add(&b, name, F, C, LCM_INIT_KAIMING_UNIFORM, 1.0f, C, F);
        snprintf(name, sizeof name, "lcm.layers.%d.ffn.gate_proj.bias", l);
        o->gi_b = add_tensor(&b, name, F, 0, LCM_INIT_KAIMING_UNIFORM, 1.0f, C, F, 0);
        snprintf(name, sizeof name, "lcm.layers.%d.ffn.inner_proj.bias", l);
        add(&b, name, F, 0, LCM_INIT_KAIMING_UNIFORM, 1.0f, C, F);
        snprintf(name, sizeof name, "lcm.layers.%d.ffn.output_proj", l);
        add_linear(&b, name, C, F, &o->ffn_out_w, &o->ffn_out_b);
        o->end = t->total;
    }
    t->final_norm = add(&b, "lcm.layer_norm.weight", C, 0, LCM_INIT_ONES, 1.0f, C, C);
    add_linear(&b, "postnet.fc", D, C, &t->post_w, &t->post_b);
    if (b.oom) {
        lcm_param_table_free(t);
        return lcm_fail(err, LCM_ERR_NOMEM, "out of memory building the parameter table");
    }
    return 0;
}

void lcm_param_table_free(lcm_param_table *t) {
    free(t->params);
    free(t->layers);
    memset(t, 0, sizeof *t);
}

const lcm_param *lcm_param_find(const lcm_param_table *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->params[i].name, name) == 0) return &t->params[i];
    return NULL;
}

void lcm_params_init(const lcm_param_table *t, float *host, uint64_t seed) {
    memset(host, 0, t->total * sizeof *host);
    for (int i = 0; i < t->n; i++) {
        const lcm_param *p = &t->params[i];
        float *w = host + p->offset;
        double bound = 0;
        switch (p->init) {
        case LCM_INIT_ONES:
            for (size_t j = 0; j < p->numel; j++) w[j] = 1.0f;
            continue;
        case LCM_INIT_ZEROS:
            continue;
        case LCM_INIT_KAIMING_UNIFORM:
            /* kaiming_uniform_(a=sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in)
             * = 1 / sqrt(fan_in); PyTorch's Linear bias uses the same bound. */
            bound = 1.0 / sqrt((double)p->fan_in);
            break;
        case LCM_INIT_XAVIER_UNIFORM:
            bound = p->gain * sqrt(6.0 / (double)(p->fan_in + p->fan_out));
            break;
        }
        lcm_rng r;
        lcm_rng_init(&r, seed, (uint64_t)i + 1);
        for (size_t j = 0; j < p->numel; j++) w[j] = (float)(bound * (2.0 * lcm_rng_uniform(&r) - 1.0));
    }
}

void lcm_param_table_print(const lcm_param_table *t, FILE *f) {
    static const char *inits[] = {"ones", "zeros", "kaiming-uniform(a=sqrt(5))", "xavier-uniform"};
    fprintf(f, "%-52s %-14s %-14s %s\n", "name", "shape", "numel", "init");
    for (int i = 0; i < t->n; i++) {
        const lcm_param *p = &t->params[i];
        char shape[40];
        if (p->ndim == 2)
            snprintf(shape, sizeof shape, "[%lld, %lld]", (long long)p->shape[0], (long long)p->shape[1]);
        else
            snprintf(shape, sizeof shape, "[%lld]", (long long)p->shape[0]);
        char init[64];
        if (p->init == LCM_INIT_XAVIER_UNIFORM)
            snprintf(init, sizeof init, "%s gain %.4g", inits[p->init], p->gain);
        else
            snprintf(init, sizeof init, "%s", inits[p->init]);
        fprintf(f, "%-52s %-14s %-14zu %s\n", p->name, shape, p->numel, init);
    }
    fprintf(f, "total: %zu parameters (%.3f B) in %d tensors\n", t->count, (double)t->count / 1e9, t->n);
}

/* model.h: Base-LCM: the parameter table, initialisation, and the layer sequence (forward, loss,
 * backward) written once against the backend op table (include/lcm/backend.h).
 *
 * Parameters live in ONE allocation per buffer class (compute copy, fp32 master, fp32 gradients, two
 * fp32 AdamW moments), carved by the parameter table: one entry per reference tensor with its
 * state-dict name, [out, in] shape and init rule. Tensors the model multiplies together are adjacent
 * (q|k|v weights form one [3C, C] matrix, gate|inner one [2F, C]) so each is one matmul; every tensor
 * or fused group starts at a multiple of 16 elements (64-byte aligned fp32, 32-byte bf16); the padding
 * stays zero.
 *
 * Activations live in one act-dtype allocation and one fp32 allocation, sized once for the largest
 * micro-batch (max_tokens positions, max_rows rows, rows of at most max_T concepts): nothing is
 * allocated during a step. */
#ifndef LCM_MODEL_H
#define LCM_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "lcm/backend.h"
#include "lcm/config.h"
#include "lcm/normalizer.h"
#include "lcm/error.h"
#include "lcm/memplan.h"

typedef struct lcm_dims {
    int D;            /* sonar dim (input/output embedding size) */
    int C;            /* model dim */
    int L;            /* layers */
    int H;            /* heads; head dim = C / H */
    int F;            /* FFN inner dim */
    int max_seq_len;  /* longest row */
    float dropout;    /* residual dropout p used in training */
    float rope_theta;
    float eps;        /* RMSNorm epsilon */
} lcm_dims;

int lcm_dims_from_config(lcm_dims *d, const lcm_model_config *mc, lcm_error *err);

typedef enum {
    LCM_INIT_ONES,             /* RMSNorm gains */
    LCM_INIT_ZEROS,            /* attention biases */
    LCM_INIT_KAIMING_UNIFORM,  /* U(-1/sqrt(fan_in), 1/sqrt(fan_in)): kaiming-uniform a=sqrt(5), and its bias */
    LCM_INIT_XAVIER_UNIFORM,   /* U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)) */
} lcm_init_rule;

typedef struct lcm_param {
    char name[96];     /* reference state-dict name, e.g. lcm.layers.3.self_attn.q_proj.weight */
    int ndim;          /* 1 or 2 */
    int64_t shape[2];  /* [out, in] for weights, [n] for vectors */
    size_t offset;     /* elements from the start of the parameter block */
    size_t numel;
    lcm_init_rule init;
    float gain;        /* xavier gain */
    int fan_in, fan_out;
} lcm_param;

/* Offsets (in elements) of one decoder layer's tensors. */
typedef struct lcm_layer_offsets {
    size_t attn_norm;      /* [C] */
    size_t qkv_w, qkv_b;   /* [3C, C], [3C]: q | k | v */
    size_t attn_out_w, attn_out_b; /* [C, C], [C] */
    size_t ffn_norm;       /* [C] */
    size_t gi_w, gi_b;     /* [2F, C], [2F]: gate | inner */
    size_t ffn_out_w, ffn_out_b;   /* [C, F], [C] */
    size_t begin, end;     /* the layer's whole range (a gradient bucket) */
} lcm_layer_offsets;

typedef struct lcm_param_table {
    int n;
    lcm_param *params;     /* in memory order */
    size_t total;          /* elements in the block, padding included */
    size_t count;          /* real parameters (sum of numel) */
    size_t pre_w, pre_b;   /* [C, D], [C] */
    lcm_layer_offsets *layers; /* [L] */
    size_t final_norm;     /* [C] */
    size_t post_w, post_b; /* [D, C], [D] */
} lcm_param_table;

int lcm_param_table_build(lcm_param_table *t, const lcm_dims *d, lcm_error *err);
void lcm_param_table_free(lcm_param_table *t);
const lcm_param *lcm_param_find(const lcm_param_table *t, const char *name);
/* Reference initialisation into host[t->total] (padding zeroed). Each tensor draws from its own
 * Philox stream keyed by (seed, tensor index), so the result does not depend on anything else. */
void lcm_params_init(const lcm_param_table *t, float *host, uint64_t seed);
/* Print the table (name, shape, init) and the total. */
void lcm_param_table_print(const lcm_param_table *t, FILE *f);

/* Called during backward each time a contiguous range of gradients [begin, end) is final, in a fixed
 * order (postnet + final norm, layers L-1 .. 0, prenet): the trainer starts that bucket's all-reduce. */
typedef int (*lcm_grads_ready_fn)(void *ctx, size_t begin, size_t end, lcm_error *err);

/* What a model's buffers are sized for. recompute = layer keeps, per layer, only the residual input
 * (the backward recomputes the rest of the layer into one layer's worth of buffers). */
typedef struct lcm_model_shape {
    lcm_dims d;
    int64_t max_tokens;    /* positions per micro-batch */
    int max_rows, max_T;
    int training;          /* gradients, moments and backward buffers */
    lcm_recompute recompute;
    int shard_n, shard_rank; /* 0: the moments cover every parameter; else shard_rank's slice of shard_n */
    int grad_window;       /* gradients in a window of the largest bucket plus the slice (trainer.shard 2) */
} lcm_model_shape;

/* Bytes of each of the model's allocations, by memory class (the model's share of a memory plan). */
typedef struct lcm_model_bytes {
    size_t master, compute, grads, moments, acts, att_saved;
    size_t params;         /* elements of the flat parameter vector (P), padding included */
} lcm_model_bytes;

/* The sizes lcm_model_create_shape allocates, from the same carve tables, without a device. */
int lcm_model_plan(const lcm_model_shape *s, const lcm_backend_traits *bt, lcm_model_bytes *out, lcm_error *err);

typedef struct lcm_model {
    lcm_dims d;
    lcm_param_table t;
    lcm_backend *be;
    int training;          /* gradients, moments and backward buffers allocated */
    lcm_recompute recompute;
    int64_t max_tokens;    /* capacity: positions per micro-batch */
    int max_rows, max_T;

    /* parameters: one block each, carved by t */
    void *params;          /* compute copy (act dtype); == master when act_bytes == 4 */
    float *master;         /* fp32: every element, or (master_sliced) [opt_begin, opt_end) only:
                            * element i at lcm_model_master_at(m, i) */
    int master_sliced;     /* sharded with a separate compute copy (CUDA): the compute copy holds the
                            * weights, the master copy only what this device's AdamW updates */
    float *grads;          /* fp32 (training): element i at grads[i - grad_base] */
    size_t grad_base;      /* 0, or with a window: the first element of the bucket it holds */
    size_t grad_window;    /* 0: grads holds every element; else it holds one bucket at a time, this
                            * many elements at most: the backward zeroes it and moves it to each bucket
                            * before computing it, so the ready callback must have taken the bucket's
                            * sums out (or enqueued that on the comm stream) when it returns */
    float *grad_slice;     /* with a window: the reduced gradients of [opt_begin, opt_end), which the
                            * trainer's reduce-scatter fills */
    float *m, *v;          /* AdamW moments (training) of elements [opt_begin, opt_end): m[i - opt_begin] */
    size_t opt_begin, opt_end; /* all parameters, or the device's slice (lcm_model_create_shard) */
    float *center, *scale; /* [D] the SONAR normalizer */
    float *rope;           /* [max_T, hd/2, 2] the RoPE table (lcm/rope.h), filled at creation */

    /* inputs of the current micro-batch, filled by the caller (upload) */
    float *x;              /* [max_tokens, D] raw fp32 */
    int32_t *lens;         /* [max_rows] */
    float *loss;           /* [1] sum of squared errors of the last lcm_model_loss */
    float *y;              /* [max_tokens, D] the predictions (fp32 on every backend) */

    /* activations (act dtype) and fp32 statistics: see model.c for the carving table */
    void *acts;
    float *acts32;
    size_t act_cap;        /* positions per activation buffer (= max_tokens) */
    void *xn, *h, *anorm, *qkv, *attn, *fnorm, *gi, *sw, *branch, *hf;
    void *hmid;            /* recompute = layer: the recomputed layer's h_mid (otherwise in h) */
    float *att_saved_block; /* its own allocation: the memory plan's "saved attention values" */
    float *rstd_attn, *rstd_ffn, *rstd_final, *att_saved;
    size_t att_saved_cap;  /* fp32 per layer */
    /* backward scratch (training); dh, the residual gradient, is fp32 */
    float *dh;
    void *dy, *dbranch, *dtmp, *dbig, *dsw;
} lcm_model;

/* Allocate everything a step needs (before any collective). training = 0 builds an inference model
 * (no gradients, moments or backward buffers). */
int lcm_model_create(lcm_model *m, lcm_backend *be, const lcm_dims *d, int64_t max_tokens, int max_rows,
                     int max_T, int training, lcm_error *err);
int lcm_model_create_shape(lcm_model *m, lcm_backend *be, const lcm_model_shape *s, lcm_error *err);
/* A training model whose AdamW moments cover only device `rank`'s slice of n (include/lcm/shard.h):
 * the sharded optimizer state of trainer.shard >= 1; grad_window: gradients in a window of one bucket
 * (trainer.shard 2 with one micro-batch per step). */
int lcm_model_create_shard(lcm_model *m, lcm_backend *be, const lcm_dims *d, int64_t max_tokens, int max_rows,
                           int max_T, int n, int rank, int grad_window, lcm_error *err);
void lcm_model_destroy(lcm_model *m);
size_t lcm_model_device_bytes(const lcm_model *m);

/* Host fp32 [t.total] <-> the model's master weights (and compute copy). A sliced master copy takes
 * its slice of host (the compute copy all of it); get_params fails on one: the caller gathers the
 * slices from lcm_model_master_at. */
int lcm_model_set_params(lcm_model *m, const float *host, lcm_error *err);
int lcm_model_get_params(lcm_model *m, float *host, lcm_error *err);
/* Element i of the master weights (i in [opt_begin, opt_end) when they are sliced). */
float *lcm_model_master_at(const lcm_model *m, size_t i);
int lcm_model_set_normalizer(lcm_model *m, const lcm_normalizer *n, lcm_error *err);

/* Upload a micro-batch (host x[B*T*D], lens[B]). The host buffers must stay unchanged until the
 * backend's next sync (pinned staging on CUDA). */
int lcm_model_upload_batch(lcm_model *m, const float *x, const int32_t *lens, int B, int T, lcm_error *err);

/* The layer sequence. `key` identifies the micro-batch's dropout masks (layer and site are filled in
 * here); p is the residual dropout (0 for evaluation). */
void lcm_model_forward(lcm_model *m, int B, int T, float p, lcm_dropout_key key);
/* Masked squared error of the forward's predictions against the next concepts; the sum lands in
 * m->loss, dy = d(sum)/dy * grad_scale (grad_scale = 1 / global target count). */
void lcm_model_loss(lcm_model *m, int B, int T, float grad_scale);
/* The parameter gradients of the last forward/loss: assigned (accumulate = 0, the first micro-batch of
 * a step, so nothing needs zeroing before it) or added (1). With a gradient window they are always
 * added into the zeroed window. ready may be NULL. */
int lcm_model_backward(lcm_model *m, int B, int T, float p, lcm_dropout_key key, int accumulate,
                       lcm_grads_ready_fn ready, void *ctx, lcm_error *err);
/* The forward's predictions as fp32 on the host, out[B*T*D] (normalized space). */
int lcm_model_predictions(lcm_model *m, float *out, int B, int T, lcm_error *err);

/* ---- incremental inference (generation) ------------------------------------------------------- */

/* Keys and values of every layer for B rows of up to T positions, in the act dtype: k and v are
 * [L, B, T, C] each. Sized once, before generation starts. The cache reaches further than the model's
 * rows (max_T is the prefill chunk), so it holds the RoPE table for its T positions. */
typedef struct lcm_kv_cache {
    void *k, *v;
    float *rope;    /* [T, hd/2, 2] (lcm/rope.h) */
    int B, T;
    size_t bytes;   /* k, v and the table together */
} lcm_kv_cache;

size_t lcm_kv_cache_bytes(const lcm_model *m, int B, int T);
/* Fails with one line naming the size, the memory free on the device and what to lower when the cache
 * does not fit. */
int lcm_kv_cache_create(lcm_kv_cache *kv, lcm_model *m, int B, int T, lcm_error *err);
void lcm_kv_cache_destroy(lcm_kv_cache *kv, lcm_model *m);

/* Upload S new positions of B rows (host x[B*S*D], raw fp32) for lcm_model_forward_cached. Same
 * lifetime rule as lcm_model_upload_batch. */
int lcm_model_upload_positions(lcm_model *m, const float *x, int B, int S, lcm_error *err);
/* The inference forward (no dropout) of positions pos0 .. pos0+S-1 of B rows: their keys and values
 * enter the cache, earlier positions' come from it. Every row must be real up to pos0+S-1 (generation
 * feeds rows in lockstep). The predictions land where lcm_model_forward puts them (B rows of S). */
void lcm_model_forward_cached(lcm_model *m, lcm_kv_cache *kv, int B, int S, int pos0);
/* The prediction of the last of T positions of each of B rows, fp32 on the host, out[B*D]
 * (normalized space), after lcm_model_forward or lcm_model_forward_cached. */
int lcm_model_last_predictions(lcm_model *m, float *out, int B, int T, lcm_error *err);

/* FLOPs of forward + backward per concept (for throughput and MFU), at sequence length T:
 * 6 x (matmul parameters) + attention 6 x 2 x T x C / 2 x ... (see docs/performance.md). */
double lcm_model_flops_per_concept(const lcm_dims *d, int T);

#endif

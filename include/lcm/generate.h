/* generate.h: autoregressive generation with a trained Base-LCM (`lcm generate`), as the reference's
 * LCM generator does it (docs/generation.md):
 *
 *   each step: the model's prediction for the next position (normalized space), plus Gaussian noise
 *   times the temperature, denormalized, appended; a KV cache feeds one new concept per step.
 *   Prompts of different lengths share a batch (right padding): every row advances one position per
 *   step, and a row still inside its own prompt keeps the prompt's concept instead of the prediction.
 *   A row stops once it has generated min_gen_len concepts and the cosine (raw space) between the new
 *   concept and the end-of-text embedding reaches eos_threshold, or its cosine to the previous concept
 *   reaches repetition_threshold; at the latest after max_gen_len concepts, or at model.max_seq_len.
 *   The concept that triggered a stop stays in the output.
 *
 * The noise of prompt i's g-th generated concept is drawn from a Philox stream keyed by (seed, i, g):
 * the output does not depend on the batch size, the batch a prompt falls into, or the devices. */
#ifndef LCM_GENERATE_H
#define LCM_GENERATE_H

#include <stdint.h>
#include "lcm/backend.h"
#include "lcm/config.h"
#include "lcm/dataset.h"
#include "lcm/error.h"
#include "lcm/model.h"

typedef struct lcm_gen_options {
    int max_gen_len;             /* concepts generated per prompt at most */
    int min_gen_len;             /* no EOT or repetition stop before this many */
    float eos_threshold;         /* stop at cos(new, eot) >= this; > 1 never stops */
    float repetition_threshold;  /* stop at cos(new, previous) >= this; 0 = off */
    float temperature;           /* standard deviation of the noise in normalized space; 0 = none */
    uint64_t seed;
    int batch_size;              /* prompts per batch per device */
    int use_cache;               /* 0: a full forward over the growing prefix each step (benchmarks, tests) */
} lcm_gen_options;

void lcm_gen_options_from_config(lcm_gen_options *o, const lcm_generate_config *g);

typedef enum lcm_stop_reason {
    LCM_STOP_EOT,          /* cosine to the EOT embedding reached eos_threshold */
    LCM_STOP_REPETITION,   /* cosine to the previous concept reached repetition_threshold */
    LCM_STOP_MAX_GEN_LEN,  /* max_gen_len concepts generated */
    LCM_STOP_MAX_SEQ_LEN,  /* prompt + generated reached model.max_seq_len */
    LCM_STOP_COUNT
} lcm_stop_reason;

const char *lcm_stop_reason_name(lcm_stop_reason r); /* "eot", "repetition", "max_gen_len", "max_seq_len" */

/* Prompts: n documents of raw embeddings, prompt i = data[offsets[i] .. offsets[i+1]) rows of D. */
typedef struct lcm_gen_prompts {
    int64_t n;
    int D;
    const float *data;
    const uint64_t *offsets;   /* [n + 1] */
} lcm_gen_prompts;

/* One prompt's continuation (the generated concepts only, raw space). */
typedef struct lcm_gen_result {
    float *concepts;           /* [len * D], malloc'ed */
    int len;
    lcm_stop_reason reason;
} lcm_gen_result;

/* Everything but the device: one per device (worker thread). */
typedef struct lcm_generator {
    lcm_backend *be;
    lcm_model m;
    lcm_kv_cache kv;
    int have_model;
    lcm_gen_options o;
    const lcm_normalizer *norm;
    const float *eot;          /* [D] raw, or NULL (no EOT stop) */
    int B;                     /* rows per batch */
    int max_total;             /* prompt + generated concepts a row can reach (<= model.max_seq_len) */
    int chunk;                 /* positions per prefill forward */
    float *seq;                /* [B, max_total, D] host: the rows so far */
    float *x;                  /* staging for uploads (backend host memory) */
    float *pred;               /* [B, D] */
    int *plen, *active;        /* [B] each: prompt lengths, rows still generating */
    double *step_s;            /* optional, [max_total]: += seconds of each forward, at the last position it fed */
} lcm_generator;

/* A generator on backend be (the caller keeps it and destroys it after lcm_generator_free). weights:
 * host [t.total] fp32. max_prompt: the longest prompt it will see. */
int lcm_generator_init(lcm_generator *g, lcm_backend *be, const lcm_dims *d, const float *weights,
                       const lcm_normalizer *norm, const float *eot, const lcm_gen_options *o, int max_prompt,
                       lcm_error *err);
void lcm_generator_free(lcm_generator *g);

/* Generate for prompts first .. first+nb-1 (nb <= batch_size) into out[0 .. nb-1]. */
int lcm_generate_batch(lcm_generator *g, const lcm_gen_prompts *p, int64_t first, int nb, lcm_gen_result *out,
                       lcm_error *err);

/* The longest prompt and checks of every prompt against the model (D, not empty, room to generate). */
int lcm_gen_check_prompts(const lcm_gen_prompts *p, const lcm_dims *d, const lcm_gen_options *o, int *max_prompt,
                          lcm_error *err);

/* Every prompt on every device of `devices` (trainer.devices syntax): batches of batch_size prompts in
 * file order, batch k on device k mod n, one thread per device. out[p->n]. cpu_threads: BLAS threads in
 * total for CPU workers (0 = all cores). */
int lcm_generate_all(const char *devices, int cpu_threads, const lcm_dims *d, const float *weights,
                     const lcm_normalizer *norm, const float *eot, const lcm_gen_options *o, const lcm_gen_prompts *p,
                     lcm_gen_result *out, lcm_error *err);
void lcm_gen_results_free(lcm_gen_result *out, int64_t n);

/* `lcm generate --score`: prompt i is the first K concepts of document i of ds; its generated concept j
 * is compared with the document's concept K + j while both exist (raw space), and so is a constant
 * prediction, the mean of every true concept compared (the best constant for l2). Sums per generated
 * position (0-based; positions >= LCM_GEN_SCORE_POSITIONS share the last slot); [.][0] generated,
 * [.][1] the mean. */
#define LCM_GEN_SCORE_POSITIONS 10
typedef struct lcm_gen_score {
    double pairs[LCM_GEN_SCORE_POSITIONS + 1];
    double l2[LCM_GEN_SCORE_POSITIONS + 1][2];
    double cos[LCM_GEN_SCORE_POSITIONS + 1][2];
} lcm_gen_score;

int lcm_gen_score_compute(lcm_gen_score *s, const lcm_dataset *ds, int64_t K, const lcm_gen_result *r, int64_t n,
                          lcm_error *err);

#endif

/* generate.c: the generation loop of include/lcm/generate.h: one generator per device (model, KV cache,
 * host rows), the per-row stop rules, and the threads that share the prompts out over the devices.
 *
 * A batch of nb prompts (shortest Pmin, positions counted from 0):
 *   prefill positions 0 .. Pmin-1 (every row is inside its prompt there) in chunks of `chunk`;
 *   then for t = Pmin, Pmin+1, ...: row b takes its prompt's concept t while t < len_b, else the
 *   prediction (+ noise, denormalized) and checks its stop rules; the concepts of position t are fed
 *   (one new position per row, RoPE at t) and the next predictions read, until every row has stopped.
 * Rows that stopped keep being fed their last concept: attention never crosses rows, so they cannot
 * change the others, and the batch keeps one shape. Without the cache (use_cache = 0) every step runs
 * the training forward over positions 0 .. t instead: the same numbers the slow way. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/fileio.h"
#include "lcm/generate.h"
#include "lcm/log.h"
#include "lcm/train.h"

void lcm_gen_options_from_config(lcm_gen_options *o, const lcm_generate_config *g) {
    memset(o, 0, sizeof *o);
    o->max_gen_len = g->max_gen_len;
    o->min_gen_len = g->min_gen_len;
    o->eos_threshold = g->eos_threshold;
    o->repetition_threshold = g->repetition_threshold;
    o->temperature = g->temperature;
    o->seed = g->seed;
    o->batch_size = g->batch_size;
    o->use_cache = 1;
}

const char *lcm_stop_reason_name(lcm_stop_reason r) {
    static const char *const names[LCM_STOP_COUNT] = {"eot", "repetition", "max_gen_len", "max_seq_len"};
    return r >= 0 && r < LCM_STOP_COUNT ? names[r] : "?";
}

#define PREFILL_CHUNK 64 /* positions per prefill forward: bounds the activation buffers, not the prompt */

int lcm_gen_check_prompts(const lcm_gen_prompts *p, const lcm_dims *d, const lcm_gen_options *o, int *max_prompt,
                          lcm_error *err) {
    *max_prompt = 0;
    if (p->D != d->D)
        return lcm_fail(err, LCM_ERR_DATA, "the prompts are %d-dimensional but the model's concepts (model.sonar_dim) are %d",
                        p->D, d->D);
    if (p->n < 1) return lcm_fail(err, LCM_ERR_DATA, "there are no prompts");
    if (o->max_gen_len >= d->max_seq_len)
        return lcm_fail(err, LCM_ERR_CONFIG,
                        "generate.max_gen_len = %d leaves no room for a prompt in the model's %d positions "
                        "(model.max_seq_len); lower generate.max_gen_len",
                        o->max_gen_len, d->max_seq_len);
    for (int64_t i = 0; i < p->n; i++) {
        uint64_t len = p->offsets[i + 1] - p->offsets[i];
        if (len == 0)
            return lcm_fail(err, LCM_ERR_DATA, "prompt %lld is empty: every prompt needs at least one concept", (long long)i);
        if (len >= (uint64_t)d->max_seq_len)
            return lcm_fail(err, LCM_ERR_DATA,
                            "prompt %lld has %llu concepts but the model takes at most %d positions (model.max_seq_len) "
                            "and needs one to generate; cut the prompts with --prompt-len",
                            (long long)i, (unsigned long long)len, d->max_seq_len);
        if ((int)len > *max_prompt) *max_prompt = (int)len;
    }
    for (uint64_t k = 0; k < p->offsets[p->n] * (uint64_t)p->D; k++)
        if (!isfinite(p->data[k]))
            return lcm_fail(err, LCM_ERR_DATA, "prompt concept %llu holds a NaN or Inf",
                            (unsigned long long)(k / (uint64_t)p->D));
    return 0;
}

/* ---- one device ---------------------------------------------------------------------------------- */

void lcm_generator_free(lcm_generator *g) {
    if (g->have_model) {
        lcm_kv_cache_destroy(&g->kv, &g->m);
        lcm_model_destroy(&g->m);
    }
    if (g->x) g->be->ops->host_release(g->be, g->x);
    free(g->seq);
    free(g->pred);
    free(g->plen);
    memset(g, 0, sizeof *g);
}

int lcm_generator_init(lcm_generator *g, lcm_backend *be, const lcm_dims *d, const float *weights,
                       const lcm_normalizer *norm, const float *eot, const lcm_gen_options *o, int max_prompt,
                       lcm_error *err) {
    memset(g, 0, sizeof *g);
    g->be = be;
    g->o = *o;
    g->norm = norm;
    g->eot = eot;
    g->B = o->batch_size;
    g->max_total = max_prompt + o->max_gen_len;
    if (g->max_total > d->max_seq_len) g->max_total = d->max_seq_len;
    /* The last generated concept is never fed: max_total - 1 positions go through the model. */
    const int fed = g->max_total - 1;
    g->chunk = o->use_cache ? (max_prompt < PREFILL_CHUNK ? max_prompt : PREFILL_CHUNK) : fed;
    const int64_t tokens = (int64_t)g->B * g->chunk;
    int rc = lcm_model_create(&g->m, be, d, tokens, g->B, g->chunk, 0, err);
    if (rc) return rc;
    g->have_model = 1;
    rc = lcm_model_set_params(&g->m, weights, err);
    if (!rc) rc = lcm_model_set_normalizer(&g->m, norm, err);
    if (!rc && o->use_cache) rc = lcm_kv_cache_create(&g->kv, &g->m, g->B, fed, err);
    if (!rc) rc = be->ops->host_alloc(be, (void **)&g->x, (size_t)tokens * d->D * sizeof(float), err);
    if (!rc) {
        g->seq = malloc((size_t)g->B * g->max_total * d->D * sizeof(float));
        g->pred = malloc((size_t)g->B * d->D * sizeof(float));
        g->plen = malloc(2 * (size_t)g->B * sizeof(int));
        g->active = g->plen ? g->plen + g->B : NULL;
        if (!g->seq || !g->pred || !g->plen) rc = lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for the generated rows");
    }
    if (rc) lcm_generator_free(g);
    return rc;
}

static double cosine(const float *a, const float *b, int D) {
    double ab = 0, aa = 0, bb = 0;
    for (int k = 0; k < D; k++) {
        ab += (double)a[k] * b[k];
        aa += (double)a[k] * a[k];
        bb += (double)b[k] * b[k];
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0.0;
}

/* Standard normal draws (Box-Muller) from the stream of (seed, prompt, generated index). */
static void add_noise(float *v, int D, float temperature, uint64_t seed, int64_t prompt, int index) {
    lcm_rng r;
    lcm_rng_init(&r, seed, ((uint64_t)prompt << 24) ^ (uint64_t)index);
    for (int k = 0; k < D; k += 2) {
        double u1 = 1.0 - (double)lcm_rng_uniform(&r), u2 = lcm_rng_uniform(&r); /* u1 in (0, 1] */
        double rad = sqrt(-2.0 * log(u1));
        v[k] += temperature * (float)(rad * cos(2.0 * M_PI * u2));
        if (k + 1 < D) v[k + 1] += temperature * (float)(rad * sin(2.0 * M_PI * u2));
    }
}

/* Forward positions [pos, pos + S) of every row, predictions of position pos + S - 1 into g->pred. */
static int forward_positions(lcm_generator *g, int nb, int pos, int S, lcm_error *err);

/* forward_positions, timed into g->step_s when the caller asked for it (lcm generate --bench). */
static int feed(lcm_generator *g, int nb, int pos, int S, lcm_error *err) {
    if (!g->step_s) return forward_positions(g, nb, pos, S, err);
    double t0 = lcm_now();
    int rc = forward_positions(g, nb, pos, S, err); /* returns once the predictions are on the host */
    g->step_s[pos + S - 1] += lcm_now() - t0;
    return rc;
}

static int forward_positions(lcm_generator *g, int nb, int pos, int S, lcm_error *err) {
    const int D = g->m.d.D;
    if (g->o.use_cache) {
        for (int b = 0; b < nb; b++)
            memcpy(g->x + (size_t)b * S * D, g->seq + ((size_t)b * g->max_total + pos) * D, (size_t)S * D * sizeof(float));
        LCM_TRY(lcm_model_upload_positions(&g->m, g->x, nb, S, err));
        lcm_model_forward_cached(&g->m, &g->kv, nb, S, pos);
        return lcm_model_last_predictions(&g->m, g->pred, nb, S, err);
    }
    const int T = pos + S;
    int32_t *row_lens = malloc((size_t)nb * sizeof *row_lens);
    if (!row_lens) return lcm_fail(err, LCM_ERR_NOMEM, "out of host memory");
    for (int b = 0; b < nb; b++) {
        row_lens[b] = T;
        memcpy(g->x + (size_t)b * T * D, g->seq + (size_t)b * g->max_total * D, (size_t)T * D * sizeof(float));
    }
    int rc = lcm_model_upload_batch(&g->m, g->x, row_lens, nb, T, err);
    if (!rc) {
        lcm_dropout_key none = {0};
        lcm_model_forward(&g->m, nb, T, 0.0f, none);
        rc = lcm_model_last_predictions(&g->m, g->pred, nb, T, err);
    }
    free(row_lens);
    return rc;
}

int lcm_generate_batch(lcm_generator *g, const lcm_gen_prompts *p, int64_t first, int nb, lcm_gen_result *out,
                       lcm_error *err) {
    const int D = g->m.d.D;
    const lcm_gen_options *o = &g->o;
    if (nb < 1 || nb > g->B) return lcm_fail(err, LCM_ERR_INTERNAL, "batch of %d prompts for a generator of %d", nb, g->B);
    int *plen = g->plen, *active = g->active;
    int pmin = INT32_MAX;
    for (int b = 0; b < nb; b++) {
        const uint64_t lo = p->offsets[first + b], len = p->offsets[first + b + 1] - lo;
        if (len < 1 || len >= (uint64_t)g->max_total) /* lcm_gen_check_prompts rules this out */
            return lcm_fail(err, LCM_ERR_INTERNAL, "prompt %lld does not fit the generator", (long long)(first + b));
        plen[b] = (int)len;
        if (plen[b] < pmin) pmin = plen[b];
        memcpy(g->seq + (size_t)b * g->max_total * D, p->data + lo * D, (size_t)len * D * sizeof(float));
        active[b] = 1;
        out[b] = (lcm_gen_result){0};
        out[b].concepts = malloc((size_t)o->max_gen_len * D * sizeof(float));
        if (!out[b].concepts) return lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for the generated concepts");
    }
    /* Prefill: positions 0 .. pmin-1 (without the cache, the first step's forward covers them). */
    if (o->use_cache) {
        for (int pos = 0; pos < pmin; pos += g->chunk) {
            int S = pmin - pos < g->chunk ? pmin - pos : g->chunk;
            LCM_TRY(feed(g, nb, pos, S, err));
        }
    } else {
        LCM_TRY(feed(g, nb, 0, pmin, err));
    }
    int n_active = nb;
    for (int t = pmin; n_active > 0; t++) {
        for (int b = 0; b < nb; b++) {
            float *cur = g->seq + ((size_t)b * g->max_total + t) * D;
            const float *prev = cur - D;
            if (t < plen[b]) continue; /* inside its prompt: the ground truth is already there */
            if (!active[b]) {
                memcpy(cur, prev, (size_t)D * sizeof(float));
                continue;
            }
            lcm_gen_result *r = &out[b];
            memcpy(cur, g->pred + (size_t)b * D, (size_t)D * sizeof(float));
            if (o->temperature > 0) add_noise(cur, D, o->temperature, o->seed, first + b, r->len);
            for (int k = 0; k < D; k++) {
                cur[k] = cur[k] * g->norm->scale[k] + g->norm->center[k];
                if (!isfinite(cur[k]))
                    return lcm_fail(err, LCM_ERR_NUMERIC, "the model predicted NaN or Inf for prompt %lld, position %d: "
                                    "the weights have diverged or are damaged", (long long)(first + b), t);
            }
            memcpy(r->concepts + (size_t)r->len * D, cur, (size_t)D * sizeof(float));
            r->len++;
            int stop = 0;
            if (r->len >= o->min_gen_len && g->eot && cosine(cur, g->eot, D) >= o->eos_threshold) {
                r->reason = LCM_STOP_EOT, stop = 1;
            } else if (r->len >= o->min_gen_len && o->repetition_threshold > 0 &&
                       cosine(cur, prev, D) >= o->repetition_threshold) {
                r->reason = LCM_STOP_REPETITION, stop = 1;
            } else if (r->len >= o->max_gen_len) {
                r->reason = LCM_STOP_MAX_GEN_LEN, stop = 1;
            } else if (t + 1 >= g->max_total) {
                r->reason = LCM_STOP_MAX_SEQ_LEN, stop = 1;
            }
            if (stop) {
                active[b] = 0;
                n_active--;
            }
        }
        if (n_active > 0) LCM_TRY(feed(g, nb, o->use_cache ? t : 0, o->use_cache ? 1 : t + 1, err));
    }
    return 0;
}

void lcm_gen_results_free(lcm_gen_result *out, int64_t n) {
    if (!out) return;
    for (int64_t i = 0; i < n; i++) free(out[i].concepts);
}

/* ---- scoring against the true continuation ------------------------------------------------------ */

int lcm_gen_score_compute(lcm_gen_score *s, const lcm_dataset *ds, int64_t K, const lcm_gen_result *r, int64_t n,
                          lcm_error *err) {
    memset(s, 0, sizeof *s);
    const int D = ds->dim;
    if ((uint64_t)n > ds->n_docs)
        return lcm_fail(err, LCM_ERR_INTERNAL, "%lld results for %llu documents", (long long)n,
                        (unsigned long long)ds->n_docs);
    double *mean = calloc((size_t)D, sizeof(double));
    float *truth = malloc((size_t)D * sizeof(float)), *meanf = malloc((size_t)D * sizeof(float));
    int rc = 0;
    if (!mean || !truth || !meanf) rc = lcm_fail(err, LCM_ERR_NOMEM, "out of host memory");
    int64_t count = 0;
    /* pass 0: the mean of the true concepts compared; pass 1: the distances */
    for (int pass = 0; !rc && pass < 2; pass++) {
        for (int64_t i = 0; i < n; i++) {
            const uint64_t doc_len = lcm_dataset_doc_len(ds, (uint64_t)i);
            for (int j = 0; j < r[i].len && (uint64_t)(K + j) < doc_len; j++) {
                lcm_dataset_read(ds, ds->doc_offsets[i] + (uint64_t)(K + j), 1, truth);
                if (pass == 0) {
                    for (int k = 0; k < D; k++) mean[k] += truth[k];
                    count++;
                    continue;
                }
                const int b = j < LCM_GEN_SCORE_POSITIONS ? j : LCM_GEN_SCORE_POSITIONS;
                const float *pred[2] = {r[i].concepts + (size_t)j * D, meanf};
                for (int m = 0; m < 2; m++) {
                    double dd = 0;
                    for (int k = 0; k < D; k++) dd += ((double)pred[m][k] - truth[k]) * ((double)pred[m][k] - truth[k]);
                    s->l2[b][m] += sqrt(dd);
                    s->cos[b][m] += cosine(pred[m], truth, D);
                }
                s->pairs[b]++;
            }
        }
        if (pass == 0 && count > 0)
            for (int k = 0; k < D; k++) meanf[k] = (float)(mean[k] / (double)count);
        if (pass == 0 && count == 0) break;
    }
    free(mean);
    free(truth);
    free(meanf);
    return rc;
}

/* ---- every device -------------------------------------------------------------------------------- */

typedef struct gen_shared {
    const lcm_dims *d;
    const float *weights;
    const lcm_normalizer *norm;
    const float *eot;
    const lcm_gen_options *o;
    const lcm_gen_prompts *p;
    lcm_gen_result *out;
    int max_prompt;
    int n_dev;
    atomic_int failed;  /* set by the first worker that fails: the others stop at their next batch */
} gen_shared;

typedef struct gen_worker {
    gen_shared *sh;
    lcm_device dev;
    int rank;
    pthread_t thread;
    int rc;
    lcm_error err;
} gen_worker;

static int worker_run(gen_worker *w) {
    gen_shared *sh = w->sh;
    lcm_backend *be = NULL;
    if (w->dev.is_gpu)
        LCM_TRY(lcm_cuda_backend_create(&be, w->dev.index, &w->err));
    else
        LCM_TRY(lcm_cpu_backend_create(&be, w->dev.index, &w->err));
    lcm_generator g;
    int rc = lcm_generator_init(&g, be, sh->d, sh->weights, sh->norm, sh->eot, sh->o, sh->max_prompt, &w->err);
    if (!rc) {
        const int64_t bs = sh->o->batch_size, n_batches = (sh->p->n + bs - 1) / bs;
        for (int64_t k = w->rank; !rc && k < n_batches; k += sh->n_dev) {
            if (atomic_load(&sh->failed)) break;
            const int64_t first = k * bs;
            const int nb = (int)(sh->p->n - first < bs ? sh->p->n - first : bs);
            rc = lcm_generate_batch(&g, sh->p, first, nb, sh->out + first, &w->err);
        }
        lcm_generator_free(&g);
    }
    lcm_backend_destroy(be);
    return rc;
}

static void *worker_main(void *arg) {
    gen_worker *w = arg;
    w->rc = worker_run(w);
    if (w->rc) atomic_store(&w->sh->failed, 1);
    return NULL;
}

int lcm_generate_all(const char *devices, int cpu_threads, const lcm_dims *d, const float *weights,
                     const lcm_normalizer *norm, const float *eot, const lcm_gen_options *o, const lcm_gen_prompts *p,
                     lcm_gen_result *out, lcm_error *err) {
    gen_shared sh = {.d = d, .weights = weights, .norm = norm, .eot = eot, .o = o, .p = p, .out = out};
    atomic_init(&sh.failed, 0);
    LCM_TRY(lcm_gen_check_prompts(p, d, o, &sh.max_prompt, err));
    lcm_device dev[LCM_MAX_DEVICES];
    int n = 0;
    LCM_TRY(lcm_resolve_devices(devices, dev, &n, err));
    const int64_t n_batches = (p->n + o->batch_size - 1) / o->batch_size;
    if (n > n_batches) n = (int)n_batches; /* a device without a batch would only allocate */
    sh.n_dev = n;
    if (!dev[0].is_gpu) {
        int total = cpu_threads > 0 ? cpu_threads : lcm_cpu_count();
        lcm_cpu_set_blas_threads(total / n > 0 ? total / n : 1);
    }
    gen_worker *w = calloc((size_t)n, sizeof *w);
    if (!w) return lcm_fail(err, LCM_ERR_NOMEM, "out of host memory");
    int started = 0, rc = 0;
    for (int r = 0; r < n; r++) {
        w[r] = (gen_worker){.sh = &sh, .dev = dev[r], .rank = r};
        if (pthread_create(&w[r].thread, NULL, worker_main, &w[r]) != 0) {
            rc = lcm_fail(err, LCM_ERR_INTERNAL, "cannot start generation thread %d", r);
            atomic_store(&sh.failed, 1);
            break;
        }
        started++;
    }
    for (int r = 0; r < started; r++) pthread_join(w[r].thread, NULL);
    for (int r = 0; !rc && r < started; r++)
        if (w[r].rc) {
            *err = w[r].err;
            rc = w[r].rc;
        }
    free(w);
    return rc;
}

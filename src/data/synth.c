/* synth.c: `lcm data synth`: the synthetic dataset described in include/lcm/synth.h.
 *
 * Speed: documents are generated in chunks of a few thousand concepts; P u_t for a whole chunk is one
 * cblas_sgemm, and the observation noise (dim values per concept, by far the most random numbers)
 * comes from a 65536-entry table of standard-normal quantiles indexed by 16 random bits, two per
 * Philox word, instead of a Box-Muller transform per value. */
#include "lcm/synth.h"

#include <cblas.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lcm/philox.h"

#define TOPIC_SHARE 0.25 /* of the latent variance that is the document's fixed topic */
#define LEN_SIGMA 0.5    /* of log(length) */
#define MU_SCALE 0.01    /* standard deviation of the per-dimension means */
#define CHUNK_ROWS 4096
#define NOISE_TABLE 65536

int lcm_synth_validate(const lcm_synth_config *sc, lcm_error *err) {
    if (sc->dtype != LCM_F32 && sc->dtype != LCM_F16 && sc->dtype != LCM_BF16)
        return lcm_fail(err, LCM_ERR_CONFIG, "synth.dtype = %d: use f32, f16 or bf16", (int)sc->dtype);
    if (sc->dim < 1 || sc->dim > 65536)
        return lcm_fail(err, LCM_ERR_CONFIG, "synth.dim = %d: must be in [1, 65536]", sc->dim);
    if (sc->latent_dim < 1 || sc->latent_dim > sc->dim)
        return lcm_fail(err, LCM_ERR_CONFIG, "synth.latent_dim = %d: must be in [1, synth.dim = %d]", sc->latent_dim,
                        sc->dim);
    if (sc->train_docs < 1) return lcm_fail(err, LCM_ERR_CONFIG, "synth.train_docs = %lld: must be >= 1", (long long)sc->train_docs);
    if (sc->valid_docs < 0) return lcm_fail(err, LCM_ERR_CONFIG, "synth.valid_docs = %lld: must be >= 0", (long long)sc->valid_docs);
    if (sc->min_len < 1 || sc->max_len < sc->min_len)
        return lcm_fail(err, LCM_ERR_CONFIG, "synth.min_len = %d, synth.max_len = %d: need 1 <= min_len <= max_len",
                        sc->min_len, sc->max_len);
    if (!(sc->mean_len >= (float)sc->min_len && sc->mean_len <= (float)sc->max_len))
        return lcm_fail(err, LCM_ERR_CONFIG, "synth.mean_len = %g: must lie in [synth.min_len, synth.max_len] = [%d, %d]",
                        (double)sc->mean_len, sc->min_len, sc->max_len);
    if (!(sc->persistence >= 0.0f && sc->persistence <= 1.0f))
        return lcm_fail(err, LCM_ERR_CONFIG, "synth.persistence = %g: must be in [0, 1]", (double)sc->persistence);
    if (!(sc->noise >= 0.0f && sc->noise <= 100.0f))
        return lcm_fail(err, LCM_ERR_CONFIG, "synth.noise = %g: must be in [0, 100]", (double)sc->noise);
    if (!(sc->spread > 0.0f && sc->spread <= 1e6f))
        return lcm_fail(err, LCM_ERR_CONFIG, "synth.spread = %g: must be in (0, 1e6]", (double)sc->spread);
    return 0;
}

/* ---- random numbers ------------------------------------------------------------------------------ */

/* One standard normal (Box-Muller, the cosine half): for the few draws that are not observation noise. */
static double normal(lcm_rng *r) {
    double u1 = ((double)lcm_rng_u32(r) + 0.5) / 4294967296.0;
    double u2 = (double)lcm_rng_u32(r) / 4294967296.0;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* The standard normal quantile function (P. J. Acklam's rational approximation, relative error < 1.2e-9). */
static double normal_quantile(double p) {
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                               1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                               6.680131188771972e+01,  -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                               -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    if (p < 0.02425 || p > 1 - 0.02425) {
        double q = sqrt(-2 * log(p < 0.5 ? p : 1 - p));
        double x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
                   ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
        return p < 0.5 ? x : -x;
    }
    double q = p - 0.5, r = q * q;
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
           (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

/* Quantiles at the 65536 bin centres, rescaled to variance exactly 1 (the table's tails stop at
 * about 4.2 sigma, which noise does not miss). */
static void noise_table(float *t) {
    double ss = 0;
    for (int i = 0; i < NOISE_TABLE; i++) {
        double v = normal_quantile(((double)i + 0.5) / NOISE_TABLE);
        ss += v * v;
    }
    double k = 1.0 / sqrt(ss / NOISE_TABLE);
    for (int i = 0; i < NOISE_TABLE; i++) t[i] = (float)(k * normal_quantile(((double)i + 0.5) / NOISE_TABLE));
}

/* ---- the fixed model ----------------------------------------------------------------------------- */

typedef struct synth_model {
    int D, k;
    float *mu;    /* [D] */
    float *P;     /* [D, k], unit rows */
    double *R;    /* [k, k], orthogonal */
    float *eot;   /* [D] */
    float *table; /* [NOISE_TABLE] */
    double g;     /* spread / sqrt(1 + noise^2) */
} synth_model;

static void model_free(synth_model *m) {
    free(m->mu);
    free(m->P);
    free(m->R);
    free(m->eot);
    free(m->table);
    memset(m, 0, sizeof *m);
}

static int model_init(synth_model *m, const lcm_synth_config *sc, lcm_error *err) {
    memset(m, 0, sizeof *m);
    int D = sc->dim, k = sc->latent_dim;
    m->D = D;
    m->k = k;
    m->mu = malloc((size_t)D * sizeof *m->mu);
    m->P = malloc((size_t)D * (size_t)k * sizeof *m->P);
    m->R = malloc((size_t)k * (size_t)k * sizeof *m->R);
    m->eot = malloc((size_t)D * sizeof *m->eot);
    m->table = malloc(NOISE_TABLE * sizeof *m->table);
    if (!m->mu || !m->P || !m->R || !m->eot || !m->table) {
        model_free(m);
        return lcm_fail(err, LCM_ERR_NOMEM, "out of memory for the synthetic model (dim %d, latent_dim %d)", D, k);
    }
    m->g = sc->spread / sqrt(1.0 + (double)sc->noise * sc->noise);
    lcm_rng r;
    lcm_rng_init(&r, sc->seed, 0);
    for (int d = 0; d < D; d++) m->mu[d] = (float)(MU_SCALE * normal(&r));
    for (int d = 0; d < D; d++) {
        double ss = 0;
        for (int j = 0; j < k; j++) {
            double x = normal(&r);
            m->P[(size_t)d * k + j] = (float)x;
            ss += x * x;
        }
        double inv = 1.0 / sqrt(ss);
        for (int j = 0; j < k; j++) m->P[(size_t)d * k + j] = (float)(m->P[(size_t)d * k + j] * inv);
    }
    /* Modified Gram-Schmidt on the rows of a Gaussian matrix: a uniformly random orthogonal matrix. */
    for (int i = 0; i < k * k; i++) m->R[i] = normal(&r);
    for (int i = 0; i < k; i++) {
        double *ri = m->R + (size_t)i * k;
        for (int j = 0; j < i; j++) {
            const double *rj = m->R + (size_t)j * k;
            double dot = 0;
            for (int c = 0; c < k; c++) dot += ri[c] * rj[c];
            for (int c = 0; c < k; c++) ri[c] -= dot * rj[c];
        }
        double ss = 0;
        for (int c = 0; c < k; c++) ss += ri[c] * ri[c];
        double inv = 1.0 / sqrt(ss);
        for (int c = 0; c < k; c++) ri[c] *= inv;
    }
    for (int d = 0; d < D; d++) m->eot[d] = (float)(m->mu[d] + sc->spread * normal(&r));
    noise_table(m->table);
    return 0;
}

/* ---- documents ----------------------------------------------------------------------------------- */

static uint64_t doc_length(const lcm_synth_config *sc, lcm_rng *r) {
    double mean_log = log((double)sc->mean_len) - 0.5 * LEN_SIGMA * LEN_SIGMA;
    double len = floor(exp(mean_log + LEN_SIGMA * normal(r)) + 0.5);
    if (len < sc->min_len) len = sc->min_len;
    if (len > sc->max_len) len = sc->max_len;
    return (uint64_t)len;
}

static const char *const words[32] = {
    "amber", "river", "quiet", "falcon", "stone", "orbit", "lantern", "meadow", "copper", "signal", "harbor",
    "ember",  "glacier", "velvet", "thunder", "willow", "canyon", "prism", "saffron", "tide", "marble", "ridge",
    "cobalt", "fern", "beacon", "dune", "hollow", "ivory", "juniper", "kestrel", "lotus", "nectar"};

/* A made-up sentence that follows the concept: its three strongest latent directions, then the
 * document's topic; similar concepts get similar sentences. */
static int make_sentence(char *out, size_t cap, const double *u, const double *topic, int k) {
    int used[3] = {-1, -1, -1}, len = 0;
    for (int n = 0; n < 3 && n < k; n++) {
        int best = -1;
        for (int j = 0; j < k; j++)
            if (j != used[0] && j != used[1] && (best < 0 || fabs(u[j]) > fabs(u[best]))) best = j;
        used[n] = best;
        len += snprintf(out + len, cap - (size_t)len, "%s%s", n ? " " : "", words[(2 * best + (u[best] < 0)) % 32]);
    }
    int t = 0;
    for (int j = 1; j < k; j++)
        if (fabs(topic[j]) > fabs(topic[t])) t = j;
    len += snprintf(out + len, cap - (size_t)len, " of the %s.", words[(2 * t + (topic[t] < 0) + 7) % 32]);
    out[0] = (char)toupper((unsigned char)out[0]);
    return len;
}

typedef struct split_job {
    const lcm_synth_config *sc;
    const synth_model *m;
    uint64_t base_stream;
    lcm_dataset_writer *w;
    lcm_text_writer *tw;
    float *Z;            /* [cap, k] latent rows of the chunk */
    float *X;            /* [cap, D] */
    uint64_t cap;
    uint64_t rows;       /* rows in the chunk */
    uint64_t first_doc;  /* index of the chunk's first document */
    uint64_t *lens;      /* [cap] lengths of the chunk's documents */
    uint64_t n_docs;     /* documents in the chunk */
    double *s, *c, *tmp; /* [k] each */
} split_job;

/* Latent rows of one document into the chunk (and its sentences into the text file). */
static int gen_latents(split_job *j, uint64_t len, lcm_rng *r, lcm_error *err) {
    int k = j->m->k;
    double rho = j->sc->persistence, innov = sqrt(1.0 - rho * rho);
    double a = sqrt(TOPIC_SHARE), b = sqrt(1.0 - TOPIC_SHARE);
    for (int i = 0; i < k; i++) j->c[i] = normal(r);
    for (int i = 0; i < k; i++) j->s[i] = normal(r);
    for (uint64_t t = 0; t < len; t++) {
        float *z = j->Z + (j->rows + t) * (uint64_t)k;
        for (int i = 0; i < k; i++) {
            j->tmp[i] = a * j->c[i] + b * j->s[i];
            z[i] = (float)j->tmp[i];
        }
        if (j->tw) {
            char sent[160];
            int n = make_sentence(sent, sizeof sent, j->tmp, j->c, k);
            LCM_TRY(lcm_text_writer_add(j->tw, sent, (size_t)n, err));
        }
        for (int i = 0; i < k; i++) {
            const double *ri = j->m->R + (size_t)i * k;
            double acc = 0;
            for (int c = 0; c < k; c++) acc += ri[c] * j->s[c];
            j->tmp[i] = rho * acc + innov * normal(r);
        }
        memcpy(j->s, j->tmp, (size_t)k * sizeof *j->s);
    }
    return 0;
}

/* x = mu + g P u + g noise e for every row of the chunk, then the documents go to the writer. */
static int flush_chunk(split_job *j, lcm_error *err) {
    if (j->rows == 0) return 0;
    const synth_model *m = j->m;
    int D = m->D, k = m->k;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->rows, D, k, (float)m->g, j->Z, k, m->P, k, 0.0f,
                j->X, D);
    float gn = (float)(m->g * j->sc->noise);
    const float *T = m->table;
    uint64_t row = 0;
    for (uint64_t i = 0; i < j->n_docs; i++) {
        lcm_rng r;
        lcm_rng_init(&r, j->sc->seed, j->base_stream + 2 * (j->first_doc + i) + 1);
        float *x = j->X + row * (uint64_t)D;
        for (uint64_t t = 0; t < j->lens[i]; t++) {
            float *xt = x + t * (uint64_t)D;
            int d = 0;
            for (; d + 1 < D; d += 2) {
                uint32_t bits = lcm_rng_u32(&r);
                xt[d] += m->mu[d] + gn * T[bits & 0xffffu];
                xt[d + 1] += m->mu[d + 1] + gn * T[bits >> 16];
            }
            if (d < D) xt[d] += m->mu[d] + gn * T[lcm_rng_u32(&r) & 0xffffu];
        }
        LCM_TRY(lcm_dataset_writer_add(j->w, x, j->lens[i], err));
        row += j->lens[i];
    }
    j->first_doc += j->n_docs;
    j->rows = 0;
    j->n_docs = 0;
    return 0;
}

static int run_split(split_job *j, uint64_t n_docs, void (*progress)(void *, double), void *ctx, lcm_error *err) {
    for (uint64_t doc = 0; doc < n_docs; doc++) {
        lcm_rng r;
        lcm_rng_init(&r, j->sc->seed, j->base_stream + 2 * doc);
        uint64_t len = doc_length(j->sc, &r);
        if (j->rows + len > j->cap) {
            LCM_TRY(flush_chunk(j, err));
            if (progress) progress(ctx, (double)doc / (double)n_docs);
        }
        LCM_TRY(gen_latents(j, len, &r, err));
        j->lens[j->n_docs++] = len;
        j->rows += len;
    }
    LCM_TRY(flush_chunk(j, err));
    if (progress) progress(ctx, 1.0);
    return 0;
}

int lcm_synth_write_split(const lcm_synth_config *sc, int split, const char *path,
                          void (*progress)(void *ctx, double frac), void *ctx, lcm_error *err) {
    LCM_TRY(lcm_synth_validate(sc, err));
    const lcm_dtype dt = sc->dtype;
    uint64_t n_docs = (uint64_t)(split == 0 ? sc->train_docs : sc->valid_docs);
    synth_model m;
    LCM_TRY(model_init(&m, sc, err));
    split_job j;
    memset(&j, 0, sizeof j);
    j.sc = sc;
    j.m = &m;
    j.base_stream = (uint64_t)(split + 1) << 40;
    j.cap = (uint64_t)sc->max_len > CHUNK_ROWS ? (uint64_t)sc->max_len : CHUNK_ROWS;
    j.Z = malloc((size_t)j.cap * (size_t)m.k * sizeof *j.Z);
    j.X = malloc((size_t)j.cap * (size_t)m.D * sizeof *j.X);
    j.lens = malloc((size_t)j.cap * sizeof *j.lens);
    j.s = malloc((size_t)m.k * sizeof *j.s);
    j.c = malloc((size_t)m.k * sizeof *j.c);
    j.tmp = malloc((size_t)m.k * sizeof *j.tmp);
    char text_path[LCM_PATH_MAX];
    lcm_text_path_for(path, text_path, sizeof text_path);
    int rc = 0;
    if (!j.Z || !j.X || !j.lens || !j.s || !j.c || !j.tmp)
        rc = lcm_fail(err, LCM_ERR_NOMEM, "out of memory generating %s", path);
    if (rc == 0) rc = lcm_dataset_writer_open(&j.w, path, dt, sc->dim, err);
    if (rc == 0 && sc->with_text) rc = lcm_text_writer_open(&j.tw, text_path, err);
    if (rc == 0) rc = run_split(&j, n_docs, progress, ctx, err);
    if (rc == 0) rc = lcm_dataset_writer_set_eot(j.w, m.eot, err);
    if (rc == 0) {
        rc = lcm_dataset_writer_commit(j.w, err);
        j.w = NULL;
    }
    if (rc == 0 && j.tw) {
        rc = lcm_text_writer_commit(j.tw, err);
        j.tw = NULL;
    }
    /* A text file left by an earlier dataset of this name would describe other concepts. */
    if (rc == 0 && !sc->with_text && unlink(text_path) != 0 && errno != ENOENT)
        rc = lcm_fail(err, LCM_ERR_IO, "cannot remove the stale %s: %s", text_path, strerror(errno));
    lcm_dataset_writer_abort(j.w);
    lcm_text_writer_abort(j.tw);
    free(j.Z);
    free(j.X);
    free(j.lens);
    free(j.s);
    free(j.c);
    free(j.tmp);
    model_free(&m);
    return rc;
}

typedef struct progress_share {
    void (*fn)(void *ctx, double frac);
    void *ctx;
    double offset, weight;
} progress_share;

static void share_progress(void *ctx, double frac) {
    progress_share *p = ctx;
    p->fn(p->ctx, p->offset + p->weight * frac);
}

/* Fitted on the training split like a real dataset's, rather than from the model's known mean and
 * spread, so that training on synthetic data exercises the same path. */
static int write_normalizer(const lcm_synth_config *sc, const char *dir, const char *train_path, lcm_error *err) {
    char path[LCM_PATH_MAX];
    if (lcm_path_join(path, sizeof path, dir, "normalizer.safetensors") != 0)
        return lcm_fail(err, LCM_ERR_IO, "%s: path too long", dir);
    lcm_dataset ds;
    LCM_TRY(lcm_dataset_open(&ds, train_path, err));
    lcm_normalizer nz;
    int rc = lcm_normalizer_fit(&nz, &ds, 1000000, sc->seed, err);
    if (rc == 0) {
        rc = lcm_normalizer_save(&nz, path, err);
        lcm_normalizer_free(&nz);
    }
    lcm_dataset_close(&ds);
    return rc;
}

int lcm_synth_write(const lcm_synth_config *sc, const char *dir, void (*progress)(void *ctx, double frac), void *ctx,
                    lcm_error *err) {
    LCM_TRY(lcm_synth_validate(sc, err));
    LCM_TRY(lcm_mkdir_p(dir, err));
    char path[LCM_PATH_MAX];
    double total = (double)sc->train_docs + (double)sc->valid_docs;
    progress_share share = {progress, ctx, 0.0, (double)sc->train_docs / total};
    if (lcm_path_join(path, sizeof path, dir, "train.lcmd") != 0)
        return lcm_fail(err, LCM_ERR_IO, "%s: path too long", dir);
    LCM_TRY(lcm_synth_write_split(sc, 0, path, progress ? share_progress : NULL, &share, err));
    LCM_TRY(write_normalizer(sc, dir, path, err));
    if (sc->valid_docs > 0) {
        share.offset = share.weight;
        share.weight = 1.0 - share.offset;
        if (lcm_path_join(path, sizeof path, dir, "valid.lcmd") != 0)
            return lcm_fail(err, LCM_ERR_IO, "%s: path too long", dir);
        LCM_TRY(lcm_synth_write_split(sc, 1, path, progress ? share_progress : NULL, &share, err));
    }
    return 0;
}

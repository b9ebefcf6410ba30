/* eval_metrics.c: the next-concept evaluation metrics of one micro-batch, on the host (loss in
 * normalized space, l2 and contrastive accuracy in raw space), and the predict-the-mean baseline of an
 * evaluation split (see include/lcm/eval.h and docs/model.md, "Evaluation").
 *
 * Raw predictions are pred_raw = pred * scale + center rounded to fp32 (the dtype a prediction is
 * denormalized in); l2 and every CA distance are measured from that fp32 vector, in double.
 *
 * Contrastive accuracy is Meta's mse_constrative_accuracy: per micro-batch, a target's distractors are
 * the TARGETS (real positions 1 .. len-1) of the micro-batch's OTHER ROWS, rows of the same document
 * included, so the same targets split into different micro-batches see different distractor sets (loss
 * and l2 do not depend on the split). A distractor counts when it is STRICTLY farther than the true
 * next concept; a tie counts as not farther. Ties are not rare: the EOT concept ends every document,
 * so the target "EOT" has every other row's final EOT in the batch as an exact tie, and predicting it
 * exactly does not earn those.
 *
 * Distances to distractors come from one fp32 GEMM per block of targets, ||p||^2 + ||c||^2 - 2 p.c,
 * on vectors with the normalizer's center subtracted (distances do not change; the cancellation in
 * that formula shrinks when the embeddings share a large offset). The GEMM's rounding is bounded
 * (|fl(p.c) - p.c| <= gamma_D ||p|| ||c||, gamma_D ~ D * 2^-24 for any summation order), so a
 * comparison is decided from the GEMM only when the margin exceeds that bound; the few pairs inside
 * it (near-ties, exact ties) are recomputed directly in double. The CA is therefore the one a
 * double-precision direct computation gives, independent of the BLAS kernel and its thread count:
 * the same inputs give the same bits. */
#include "lcm/eval.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Targets per GEMM block: the dot-product block is EVAL_BLOCK x (B*T) floats (7 MB for B*T = 7168),
 * large enough for GEMM efficiency, small enough to keep the scratch bounded. */
#define EVAL_BLOCK 256

static size_t eval_block_rows(size_t n_pos) { return n_pos < EVAL_BLOCK ? n_pos : EVAL_BLOCK; }

size_t lcm_eval_scratch_floats(int B, int T, int D) {
    size_t n_pos = (size_t)B * (size_t)T;
    /* centered predictions and concepts [n_pos, D] each, one raw prediction [D], concept squared norms
     * and norms [n_pos] each, dot products [block, n_pos] */
    return 2 * n_pos * (size_t)D + (size_t)D + 2 * n_pos + eval_block_rows(n_pos) * n_pos;
}

static double sq_norm_f64(const float *a, int D) {
    double s = 0;
    for (int i = 0; i < D; i++) s += (double)a[i] * (double)a[i];
    return s;
}

static double sq_dist_f64(const float *a, const float *b, int D) {
    double s = 0;
    for (int i = 0; i < D; i++) {
        double d = (double)a[i] - (double)b[i];
        s += d * d;
    }
    return s;
}

/* The raw prediction: the normalized one denormalized, in fp32. */
static void raw_prediction(float *out, const float *pred_n, const float *center, const float *scale, int D) {
    for (int i = 0; i < D; i++) out[i] = pred_n[i] * scale[i] + center[i];
}

/* The next target after (b, t) in row-major order (t < lens[b] - 1); *b == B when there is none. */
static void next_target(int *b, int *t, const int32_t *lens, int B) {
    if (*t + 2 < lens[*b]) {
        (*t)++;
        return;
    }
    *t = 0;
    do (*b)++;
    while (*b < B && lens[*b] < 2);
}

static int first_target_row(const int32_t *lens, int B) {
    int b = 0;
    while (b < B && lens[b] < 2) b++;
    return b;
}

/* CA needs targets in at least two rows: a target's distractors are the other rows' targets. */
static int has_two_target_rows(const int32_t *lens, int B) {
    int rows = 0;
    for (int b = 0; b < B; b++) rows += lens[b] >= 2;
    return rows >= 2;
}

/* What the CA of a block of targets reads: the micro-batch and the GEMM's operands and result. */
typedef struct ca_inputs {
    const float *pred, *x, *center, *scale;
    const int32_t *lens;
    int B, T, D;
    size_t n_concepts; /* real concepts, compacted row-major: concept k of row c is column start(c) + u */
    const float *pc;   /* [n_targets, D] centered raw predictions, p - center rounded to fp32 */
    const float *cn;   /* [n_concepts] ||x - center||^2 */
    const float *clen; /* [n_concepts] ||x - center|| */
    float *raw;        /* [D] the current target's raw prediction */
} ca_inputs;

/* Contrastive accuracy of targets [i0, i1), the first at row *b, position *t (advanced past them).
 * dots[i - i0][k] = pc[i] . (concept k - center). */
static void ca_block(lcm_eval_sums *s, const ca_inputs *in, const float *dots, size_t i0, size_t i1, int *b,
                     int *t) {
    int B = in->B, T = in->T, D = in->D;
    /* |fl(p.c) - p.c| <= (gamma_D + 2u) ||p|| ||c||, u = 2^-24, gamma_D = D u / (1 - D u): the GEMM's
     * rounding plus the fp32 rounding of the centered operands; 1.01 covers the stored norms. */
    double gamma = 1.01 * (double)(D + 4) * 0x1p-24;
    for (size_t i = i0; i < i1; i++, next_target(b, t, in->lens, B)) {
        const float *p = in->pc + i * (size_t)D;
        const float *target = in->x + ((size_t)*b * T + (size_t)*t + 1) * D;
        const float *dot_row = dots + (i - i0) * in->n_concepts;
        raw_prediction(in->raw, in->pred + ((size_t)*b * T + (size_t)*t) * D, in->center, in->scale, D);
        double pn = sq_norm_f64(p, D), plen = sqrt(pn);
        double d_true = sq_dist_f64(in->raw, target, D);
        int64_t farther = 0, count = 0;
        size_t k0 = 0; /* the first column of row c */
        for (int c = 0; c < B; k0 += (size_t)in->lens[c], c++) {
            if (c == *b || in->lens[c] < 2) continue;
            count += in->lens[c] - 1;
            if (!isfinite(d_true)) continue; /* a NaN/Inf prediction has no farther distractor */
            for (int u = 1; u < in->lens[c]; u++) {
                size_t k = k0 + (size_t)u;
                double margin = pn + (double)in->cn[k] - 2.0 * (double)dot_row[k] - d_true;
                double bound = 2.0 * gamma * plen * (double)in->clen[k] + 0x1p-22 * (pn + (double)in->cn[k] + d_true);
                if (margin > bound) {
                    farther++;
                } else if (margin >= -bound) {
                    const float *distractor = in->x + ((size_t)c * T + (size_t)u) * D;
                    farther += sq_dist_f64(in->raw, distractor, D) > d_true;
                }
            }
        }
        if (count > 0) {
            s->ca_sum += (double)farther / (double)count;
            s->ca_count += 1;
        }
    }
}

void lcm_eval_accumulate(lcm_eval_sums *s, const float *pred, const float *x, const int32_t *lens,
                         const uint64_t *docs, int B, int T, int D, const float *center, const float *scale,
                         float *scratch) {
    size_t n_pos = (size_t)B * (size_t)T;
    float *pc = scratch;                  /* [n_targets, D], targets in row-major order */
    float *cc = pc + n_pos * (size_t)D;   /* [n_concepts, D] */
    float *raw = cc + n_pos * (size_t)D;  /* [D] */
    float *cn = raw + D;                  /* [n_concepts] */
    float *clen = cn + n_pos;             /* [n_concepts] */
    float *dots = clen + n_pos;           /* [block, n_concepts] */

    size_t n_targets = 0;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t + 1 < lens[b]; t++) {
            const float *pn = pred + ((size_t)b * T + (size_t)t) * D;
            const float *target = x + ((size_t)b * T + (size_t)t + 1) * D;
            float *p = pc + n_targets * (size_t)D;
            double loss = 0;
            for (int i = 0; i < D; i++) {
                double e = (double)pn[i] - ((double)target[i] - (double)center[i]) / (double)scale[i];
                loss += e * e;
            }
            raw_prediction(raw, pn, center, scale, D);
            for (int i = 0; i < D; i++) p[i] = raw[i] - center[i];
            s->loss_sum += loss;
            s->l2_sum += sqrt(sq_dist_f64(raw, target, D));
            n_targets++;
        }
    }
    s->n_targets += (double)n_targets;
    if (n_targets == 0 || !has_two_target_rows(lens, B)) return;

    size_t n_concepts = 0;
    for (int c = 0; c < B; c++) {
        for (int u = 0; u < lens[c]; u++, n_concepts++) {
            const float *xv = x + ((size_t)c * T + (size_t)u) * D;
            float *cv = cc + n_concepts * (size_t)D;
            for (int i = 0; i < D; i++) cv[i] = xv[i] - center[i];
            double n2 = sq_norm_f64(cv, D);
            cn[n_concepts] = (float)n2;
            clen[n_concepts] = (float)sqrt(n2);
        }
    }
    ca_inputs in = {pred, x, center, scale, lens, B, T, D, n_concepts, pc, cn, clen, raw};
    size_t block = eval_block_rows(n_pos);
    int b = first_target_row(lens, B), t = 0;
    for (size_t i0 = 0; i0 < n_targets; i0 += block) {
        size_t i1 = i0 + block < n_targets ? i0 + block : n_targets;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(i1 - i0), (int)n_concepts, D, 1.0f,
                    pc + i0 * (size_t)D, D, cc, D, 0.0f, dots, (int)n_concepts);
        ca_block(s, &in, dots, i0, i1, &b, &t);
    }
}

void lcm_eval_finish(const lcm_eval_sums *s, lcm_eval_result *out) {
    out->loss = s->n_targets > 0 ? s->loss_sum / s->n_targets : 0;
    out->l2 = s->n_targets > 0 ? s->l2_sum / s->n_targets : 0;
    out->ca = s->ca_count > 0 ? s->ca_sum / s->ca_count : 0;
    out->n_targets = (int64_t)s->n_targets;
}

/* ---- the predict-the-mean baseline ---------------------------------------------------------------- */

typedef struct baseline_bufs {
    lcm_row *rows;
    int row_cap;
    int32_t *lens;
    float *x;
    size_t x_cap; /* floats */
} baseline_bufs;

/* One pass over the plan's micro-batches. mean == NULL: acc[D] += normalized targets. Otherwise
 * acc[0] += ||target - mean||^2 over targets. *n_targets counts the targets seen. */
static int baseline_pass(const lcm_dataset *ds, lcm_plan *plan, int append_eot, const float *center,
                         const float *scale, const double *mean, double *acc, int64_t *n_targets,
                         baseline_bufs *bb, lcm_error *err) {
    int D = ds->dim;
    uint64_t n_mb;
    LCM_TRY(lcm_plan_epoch_size(plan, 0, &n_mb, err));
    *n_targets = 0;
    for (uint64_t k = 0; k < n_mb; k++) {
        lcm_microbatch mb;
        LCM_TRY(lcm_plan_get(plan, 0, k, &mb, bb->rows, (size_t)bb->row_cap, err));
        size_t need = (size_t)mb.n_rows * (size_t)mb.max_len * (size_t)D;
        if (need > bb->x_cap) {
            float *x = realloc(bb->x, need * sizeof *x);
            if (!x)
                return lcm_fail(err, LCM_ERR_NOMEM, "mean baseline: cannot allocate %zu MB for a micro-batch",
                                need * sizeof *x >> 20);
            bb->x = x;
            bb->x_cap = need;
        }
        lcm_batch_fill(ds, &mb, append_eot, bb->x, bb->lens, NULL);
        for (int r = 0; r < mb.n_rows; r++) {
            for (int t = 1; t < bb->lens[r]; t++) {
                const float *target = bb->x + ((size_t)r * mb.max_len + (size_t)t) * D;
                double d2 = 0;
                for (int i = 0; i < D; i++) {
                    double tn = ((double)target[i] - (double)center[i]) / (double)scale[i];
                    if (mean) {
                        d2 += (tn - mean[i]) * (tn - mean[i]);
                    } else {
                        acc[i] += tn;
                    }
                }
                if (mean) acc[0] += d2;
                (*n_targets)++;
            }
        }
    }
    return 0;
}

int lcm_eval_mean_baseline(const lcm_dataset *ds, lcm_plan *plan, int append_eot, const float *center,
                           const float *scale, double *out, lcm_error *err) {
    int D = ds->dim;
    baseline_bufs bb = {0};
    bb.row_cap = lcm_plan_max_rows(plan);
    bb.rows = malloc((size_t)bb.row_cap * sizeof *bb.rows);
    bb.lens = malloc((size_t)bb.row_cap * sizeof *bb.lens);
    double *mean = calloc((size_t)D, sizeof *mean);
    int rc = 0;
    if (!bb.rows || !bb.lens || !mean) {
        rc = lcm_fail(err, LCM_ERR_NOMEM, "mean baseline: cannot allocate buffers for %d rows of dim %d",
                      bb.row_cap, D);
        goto done;
    }
    int64_t n = 0;
    rc = baseline_pass(ds, plan, append_eot, center, scale, NULL, mean, &n, &bb, err);
    if (rc) goto done;
    if (n == 0) {
        rc = lcm_fail(err, LCM_ERR_DATA, "%s: the evaluation split has no targets (every row has fewer than 2 "
                      "concepts); give it documents of at least 2 concepts", ds->path);
        goto done;
    }
    for (int i = 0; i < D; i++) mean[i] /= (double)n;
    double sum = 0;
    rc = baseline_pass(ds, plan, append_eot, center, scale, mean, &sum, &n, &bb, err);
    if (rc) goto done;
    *out = sum / (double)n;
done:
    free(bb.rows);
    free(bb.lens);
    free(bb.x);
    free(mean);
    return rc;
}

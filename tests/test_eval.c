/* test_eval.c: the evaluation metrics (loss, raw-space l2, contrastive accuracy) of a micro-batch
 * against a direct double-precision oracle written here, their edge cases (perfect prediction, ties,
 * rows sharing a document, which targets are distractors, splits, NaN), determinism, and the predict-the-mean baseline of a split. */
#include <cblas.h>
#include <stdint.h>

#include "harness.h"
#include "lcm/eval.h"
#include "lcm/plan.h"

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *s) { return (double)(splitmix(s) >> 11) * 0x1p-53; }

static double gaussian(uint64_t *s) {
    double u = uniform(s), v = uniform(s);
    return sqrt(-2.0 * log(u + 0x1p-60)) * cos(6.283185307179586 * v);
}

/* ---- micro-batches ------------------------------------------------------------------------------ */

typedef struct batch {
    int B, T, D;
    float *pred;   /* [B, T, D] normalized predictions */
    float *x;      /* [B, T, D] raw concepts, padding zero */
    int32_t *lens; /* [B] */
    uint64_t *docs;
    float *center, *scale; /* [D] */
} batch;

/* Raw concepts x = center + shift + scale * z (z standard normal, center ~ N(0, 0.01^2), scale in
 * [0.005, 0.02], shift ~ N(0, shift_sd^2) per dimension); predictions pred = 0.5 * z_next +
 * shift / scale + noise * N(0, 1), so that the CA lands strictly between 0 and 1. A shift the
 * normalizer does not remove makes distances small next to the vectors' norms, which is where
 * ||p||^2 + ||c||^2 - 2 p.c in fp32 loses the most digits. */
static batch make_batch_shifted(uint64_t seed, int B, int T, int D, const int32_t *lens, const uint64_t *docs,
                                double noise, double shift_sd) {
    uint64_t s = seed;
    batch bt = {B, T, D, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t n = (size_t)B * T * D;
    bt.pred = calloc(n, sizeof *bt.pred);
    bt.x = calloc(n, sizeof *bt.x);
    bt.lens = malloc((size_t)B * sizeof *bt.lens);
    bt.docs = malloc((size_t)B * sizeof *bt.docs);
    bt.center = malloc((size_t)D * sizeof *bt.center);
    bt.scale = malloc((size_t)D * sizeof *bt.scale);
    double *shift = malloc((size_t)D * sizeof *shift);
    memcpy(bt.lens, lens, (size_t)B * sizeof *lens);
    memcpy(bt.docs, docs, (size_t)B * sizeof *docs);
    for (int i = 0; i < D; i++) {
        bt.center[i] = (float)(0.01 * gaussian(&s));
        bt.scale[i] = (float)(0.005 + 0.015 * uniform(&s));
        shift[i] = shift_sd * gaussian(&s);
    }
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < lens[b]; t++) {
            float *xv = bt.x + ((size_t)b * T + t) * D;
            for (int i = 0; i < D; i++) xv[i] = (float)(bt.center[i] + shift[i] + bt.scale[i] * gaussian(&s));
        }
        for (int t = 0; t + 1 < lens[b]; t++) {
            float *p = bt.pred + ((size_t)b * T + t) * D;
            const float *next = bt.x + ((size_t)b * T + t + 1) * D;
            for (int i = 0; i < D; i++) {
                double z = (next[i] - bt.center[i] - shift[i]) / bt.scale[i];
                p[i] = (float)(0.5 * z + shift[i] / bt.scale[i] + noise * gaussian(&s));
            }
        }
    }
    free(shift);
    return bt;
}

static batch make_batch(uint64_t seed, int B, int T, int D, const int32_t *lens, const uint64_t *docs,
                        double noise) {
    return make_batch_shifted(seed, B, T, D, lens, docs, noise, 0.0);
}

static void free_batch(batch *bt) {
    free(bt->pred);
    free(bt->x);
    free(bt->lens);
    free(bt->docs);
    free(bt->center);
    free(bt->scale);
}

static float *xat(const batch *bt, int b, int t) { return bt->x + ((size_t)b * bt->T + t) * bt->D; }
static float *pat(const batch *bt, int b, int t) { return bt->pred + ((size_t)b * bt->T + t) * bt->D; }

/* Predict concept (b2, t2) exactly from position (b, t): its normalized value. */
static void predict_concept(batch *bt, int b, int t, int b2, int t2) {
    const float *c = xat(bt, b2, t2);
    float *p = pat(bt, b, t);
    for (int i = 0; i < bt->D; i++) p[i] = (c[i] - bt->center[i]) / bt->scale[i];
}

static lcm_eval_sums run_eval(const batch *bt) {
    lcm_eval_sums s;
    memset(&s, 0, sizeof s);
    size_t n = lcm_eval_scratch_floats(bt->B, bt->T, bt->D);
    float *scratch = malloc(n * sizeof *scratch);
    for (size_t i = 0; i < n; i++) scratch[i] = NAN; /* the result must not read stale scratch */
    lcm_eval_accumulate(&s, bt->pred, bt->x, bt->lens, bt->docs, bt->B, bt->T, bt->D, bt->center, bt->scale,
                        scratch);
    free(scratch);
    return s;
}

/* ---- the oracle: the definitions of eval.h, directly, in double --------------------------------- */

typedef struct oracle_out {
    lcm_eval_sums s;
    double min_tie_gap; /* smallest |d(distractor) - d(true)| / d(true) over all pairs */
} oracle_out;

/* The raw prediction is defined as the fp32 vector pred * scale + center (eval_metrics.c's header);
 * every distance from it is taken in double, which is what makes the CA comparison exact. */
static oracle_out oracle(const batch *bt) {
    int B = bt->B, D = bt->D;
    oracle_out o;
    memset(&o, 0, sizeof o);
    o.min_tie_gap = INFINITY;
    float *raw = malloc((size_t)D * sizeof *raw);
    for (int b = 0; b < B; b++) {
        for (int t = 0; t + 1 < bt->lens[b]; t++) {
            const float *p = pat(bt, b, t), *y = xat(bt, b, t + 1);
            double loss = 0, d_true = 0;
            for (int i = 0; i < D; i++) {
                double yn = ((double)y[i] - bt->center[i]) / bt->scale[i];
                loss += (p[i] - yn) * (p[i] - yn);
                raw[i] = p[i] * bt->scale[i] + bt->center[i];
                d_true += ((double)raw[i] - y[i]) * ((double)raw[i] - y[i]);
            }
            o.s.loss_sum += loss;
            o.s.l2_sum += sqrt(d_true);
            o.s.n_targets += 1;
            int64_t farther = 0, count = 0;
            for (int c = 0; c < B; c++) {
                if (c == b) continue;
                for (int u = 1; u < bt->lens[c]; u++) {
                    const float *d = xat(bt, c, u);
                    double dd = 0;
                    for (int i = 0; i < D; i++) dd += ((double)raw[i] - d[i]) * ((double)raw[i] - d[i]);
                    farther += dd > d_true;
                    count++;
                    double gap = fabs(dd - d_true) / d_true;
                    if (gap < o.min_tie_gap) o.min_tie_gap = gap;
                }
            }
            if (count > 0) {
                o.s.ca_sum += (double)farther / (double)count;
                o.s.ca_count += 1;
            }
        }
    }
    free(raw);
    return o;
}

static double rel_diff(double a, double b) {
    double m = fmax(fabs(a), fabs(b));
    return m == 0 ? 0 : fabs(a - b) / m;
}

/* loss and l2 sums within 1e-6 relative: both sides add the same double terms of the same fp32 inputs,
 * so they differ by double rounding (~1e-13 here), while one wrong or missing target moves a sum by
 * ~1/n_targets > 1e-4. ca_sum and the counts must be equal: see oracle(). */
static void check_against_oracle(const batch *bt, const char *what) {
    lcm_eval_sums got = run_eval(bt);
    oracle_out want = oracle(bt);
    CHECKF(rel_diff(got.loss_sum, want.s.loss_sum) <= 1e-6, "%s: loss_sum %.12g vs %.12g", what, got.loss_sum,
           want.s.loss_sum);
    CHECKF(rel_diff(got.l2_sum, want.s.l2_sum) <= 1e-6, "%s: l2_sum %.12g vs %.12g", what, got.l2_sum,
           want.s.l2_sum);
    CHECKF(got.ca_sum == want.s.ca_sum, "%s: ca_sum %.17g vs %.17g", what, got.ca_sum, want.s.ca_sum);
    CHECKF(got.ca_count == want.s.ca_count, "%s: ca_count %g vs %g", what, got.ca_count, want.s.ca_count);
    CHECKF(got.n_targets == want.s.n_targets, "%s: n_targets %g vs %g", what, got.n_targets,
           want.s.n_targets);
}

/* ---- tests -------------------------------------------------------------------------------------- */

/* Padding, empty and one-concept rows, rows sharing a document, and enough targets (> 256) for
 * several GEMM blocks. */
TEST(matches_oracle_random_batches) {
    int32_t lens1[12] = {40, 37, 1, 40, 0, 22, 40, 39, 2, 40, 33, 40};
    uint64_t docs1[12] = {7, 7, 3, 9, 4, 9, 11, 12, 12, 13, 14, 7};
    batch bt = make_batch(1, 12, 40, 96, lens1, docs1, 3.0);
    oracle_out o = oracle(&bt);
    CHECK(o.s.n_targets > 256);
    CHECK(o.s.ca_sum > 0.55 * o.s.ca_count && o.s.ca_sum < 0.99 * o.s.ca_count); /* not a trivial CA */
    check_against_oracle(&bt, "B=12 T=40 D=96");
    free_batch(&bt);

    /* The SONAR dimension. */
    int32_t lens2[6] = {50, 50, 48, 50, 17, 50};
    uint64_t docs2[6] = {1, 2, 2, 3, 4, 5};
    batch bt2 = make_batch(2, 6, 50, 1024, lens2, docs2, 3.0);
    check_against_oracle(&bt2, "B=6 T=50 D=1024");
    free_batch(&bt2);

    /* Squared distances ~1e-3 of the squared norms: the GEMM's cancellation is at its worst and
     * thousands of pairs fall inside its rounding bound, to be decided by the recheck. */
    batch bt3 = make_batch_shifted(3, 6, 50, 1024, lens2, docs2, 3.0, 1.0);
    check_against_oracle(&bt3, "B=6 T=50 D=1024, shifted");
    free_batch(&bt3);
}

/* The random data above has pairs closer than fp32 GEMM resolution only by chance; here every target
 * has distractors at exactly its distance (a copy of the true concept in another row, like the
 * EOT that ends every document) and within rounding of it (the mirror image of the true concept
 * through the prediction, rounded to fp32), so the result rests on the exact recheck of those pairs. */
TEST(matches_oracle_with_exact_and_near_ties) {
    int B = 4, T = 20, D = 64;
    int32_t lens[4] = {20, 20, 20, 20};
    uint64_t docs[4] = {0, 1, 2, 3};
    batch bt = make_batch_shifted(3, B, T, D, lens, docs, 2.0, 1.0);
    for (int t = 0; t + 1 < T; t++) {
        const float *y = xat(&bt, 0, t + 1);
        float *copy = xat(&bt, 1, t + 1), *mirror = xat(&bt, 2, t + 1); /* targets of rows 1 and 2 */
        const float *p = pat(&bt, 0, t);
        for (int i = 0; i < D; i++) {
            float raw = p[i] * bt.scale[i] + bt.center[i];
            copy[i] = y[i];
            mirror[i] = 2.0f * raw - y[i];
        }
    }
    oracle_out o = oracle(&bt);
    CHECK(o.min_tie_gap < 1e-6); /* the construction made (near-)ties */
    check_against_oracle(&bt, "ties");
    free_batch(&bt);
}

TEST(perfect_predictor) {
    int32_t lens[5] = {16, 9, 16, 1, 12};
    uint64_t docs[5] = {0, 1, 1, 2, 3};
    batch bt = make_batch(4, 5, 16, 128, lens, docs, 1.0);
    for (int b = 0; b < 5; b++)
        for (int t = 0; t + 1 < lens[b]; t++) predict_concept(&bt, b, t, b, t + 1);
    lcm_eval_result r;
    lcm_eval_sums s = run_eval(&bt);
    lcm_eval_finish(&s, &r);
    /* The normalized prediction is the fp32 rounding of the normalized target (relative error 2^-24 per
     * element, values of order 1, D = 128): loss <= 128 * (4 * 2^-24)^2 ~ 7e-12; the raw prediction is
     * within a few ulps of the concept (|x| ~ 0.05): l2 <= sqrt(128) * 4 * 2^-24 * 0.1 ~ 3e-7. */
    CHECK(r.loss < 1e-10);
    CHECK(r.l2 < 1e-6);
    CHECK(r.ca == 1.0);
    CHECK(r.n_targets == 15 + 8 + 15 + 11);
    CHECK(s.ca_count == s.n_targets);
    free_batch(&bt);
}

/* Predicting a distractor exactly: that distractor is nearer than the true concept, so the target's
 * fraction drops below 1 and with it the CA. */
TEST(predicting_a_distractor_lowers_ca) {
    int32_t lens[3] = {10, 10, 10};
    uint64_t docs[3] = {0, 1, 2};
    batch bt = make_batch(5, 3, 10, 32, lens, docs, 1.0);
    for (int b = 0; b < 3; b++)
        for (int t = 0; t + 1 < 10; t++) predict_concept(&bt, b, t, b, t + 1);
    lcm_eval_result perfect, wrong;
    lcm_eval_sums s = run_eval(&bt);
    lcm_eval_finish(&s, &perfect);
    predict_concept(&bt, 0, 4, 2, 7);
    s = run_eval(&bt);
    lcm_eval_finish(&s, &wrong);
    CHECK(perfect.ca == 1.0);
    CHECK(wrong.ca < 1.0);
    /* Only target (0, 4) changed: its fraction is at most 17/18 (the predicted distractor, a target of
     * row 2, is nearer). */
    CHECK(s.ca_sum <= 26.0 + 17.0 / 18.0);
    check_against_oracle(&bt, "one distractor predicted");
    free_batch(&bt);
}

/* A distractor at exactly the true concept's distance is not farther: with a perfect predictor and
 * one copy of the true concept among the other row's targets, that target scores (count - 1) / count. */
TEST(ties_count_as_not_farther) {
    int32_t lens[2] = {4, 6};
    uint64_t docs[2] = {0, 1};
    batch bt = make_batch(6, 2, 6, 16, lens, docs, 1.0);
    /* An identity normalizer makes the raw prediction equal the concept bit for bit (with another,
     * pred * scale + center lands within ulps of it, not on it). */
    for (int i = 0; i < 16; i++) {
        bt.center[i] = 0;
        bt.scale[i] = 1;
    }
    memcpy(xat(&bt, 1, 5), xat(&bt, 0, 3), 16 * sizeof(float)); /* both rows end on the same concept */
    for (int b = 0; b < 2; b++)
        for (int t = 0; t + 1 < lens[b]; t++) predict_concept(&bt, b, t, b, t + 1);
    lcm_eval_sums s = run_eval(&bt);
    /* Targets of row 0: 3, each with row 1's 5 targets as distractors; of row 1: 5 with row 0's 3. The
     * two targets that are the shared concept each have one tie. */
    CHECK(s.ca_count == 8);
    CHECK_NEAR(s.ca_sum, 2.0 + 4.0 / 5.0 + 4.0 + 2.0 / 3.0, 1e-12); /* a sum of 8 fractions */
    check_against_oracle(&bt, "tie");
    free_batch(&bt);
}

/* Meta's definition is per row: another row of the same document is a distractor like any other. */
TEST(rows_of_one_document_are_distractors) {
    int32_t lens[3] = {8, 8, 5};
    uint64_t docs[3] = {42, 42, 42};
    batch bt = make_batch(7, 3, 8, 24, lens, docs, 1.0);
    lcm_eval_sums s = run_eval(&bt);
    CHECK(s.n_targets == 7 + 7 + 4);
    CHECK(s.ca_count == s.n_targets);
    check_against_oracle(&bt, "one document");
    free_batch(&bt);
}

/* The distractors are the other rows' TARGETS: a row's first concept (an input only) is not one, and
 * neither are the target's own row's concepts. A copy of the true concept at either place leaves a
 * perfect predictor's CA at 1; the same copy at a target position of another row makes a tie. */
TEST(only_other_rows_targets_are_distractors) {
    int32_t lens[3] = {6, 6, 6};
    uint64_t docs[3] = {0, 1, 2};
    batch bt = make_batch(11, 3, 6, 16, lens, docs, 1.0);
    for (int i = 0; i < 16; i++) {
        bt.center[i] = 0;
        bt.scale[i] = 1;
    }
    memcpy(xat(&bt, 1, 0), xat(&bt, 0, 3), 16 * sizeof(float)); /* row 1's first concept */
    memcpy(xat(&bt, 0, 5), xat(&bt, 0, 3), 16 * sizeof(float)); /* row 0 repeats its own concept */
    for (int b = 0; b < 3; b++)
        for (int t = 0; t + 1 < lens[b]; t++) predict_concept(&bt, b, t, b, t + 1);
    lcm_eval_sums s = run_eval(&bt);
    CHECK(s.ca_count == 15 && s.ca_sum == 15.0);
    memcpy(xat(&bt, 2, 4), xat(&bt, 0, 3), 16 * sizeof(float)); /* a target of row 2 */
    for (int b = 0; b < 3; b++)
        for (int t = 0; t + 1 < lens[b]; t++) predict_concept(&bt, b, t, b, t + 1);
    s = run_eval(&bt);
    CHECK(s.ca_sum < 15.0);
    check_against_oracle(&bt, "first concepts and own row");
    free_batch(&bt);
}

/* Loss, l2 and target counts add over micro-batches; CA does not, because each part's distractors
 * are only its own other rows' targets (the metric is per micro-batch, like the reference's). */
TEST(split_batches_add_except_ca) {
    int B = 8, T = 24, D = 48;
    int32_t lens[8] = {24, 20, 24, 3, 24, 18, 24, 24};
    uint64_t docs[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    batch whole = make_batch(8, B, T, D, lens, docs, 3.0);
    lcm_eval_sums sw = run_eval(&whole);
    lcm_eval_sums parts;
    memset(&parts, 0, sizeof parts);
    int split = 3;
    batch half[2];
    for (int h = 0; h < 2; h++) {
        int b0 = h ? split : 0, nb = h ? B - split : split;
        half[h] = (batch){nb, T, D, whole.pred + (size_t)b0 * T * D, whole.x + (size_t)b0 * T * D,
                          whole.lens + b0, whole.docs + b0, whole.center, whole.scale};
        lcm_eval_sums sh = run_eval(&half[h]);
        parts.loss_sum += sh.loss_sum;
        parts.l2_sum += sh.l2_sum;
        parts.ca_sum += sh.ca_sum;
        parts.ca_count += sh.ca_count;
        parts.n_targets += sh.n_targets;
        check_against_oracle(&half[h], "half");
    }
    /* Same terms, summed in two groups: only the order of the double additions differs. */
    CHECK(rel_diff(parts.loss_sum, sw.loss_sum) <= 1e-12);
    CHECK(rel_diff(parts.l2_sum, sw.l2_sum) <= 1e-12);
    CHECK(parts.n_targets == sw.n_targets);
    CHECK(parts.ca_count == sw.ca_count);
    CHECK(parts.ca_sum != sw.ca_sum); /* fewer distractors per part: a different, not wrong, value */
    check_against_oracle(&whole, "whole");
    free_batch(&whole);
}

/* Same inputs, same bits, whatever the scratch held and however many threads OpenBLAS uses. */
TEST(deterministic) {
    int32_t lens[6] = {30, 30, 25, 30, 30, 12};
    uint64_t docs[6] = {0, 1, 1, 2, 3, 4};
    batch bt = make_batch(9, 6, 30, 256, lens, docs, 3.0);
    int threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    lcm_eval_sums a = run_eval(&bt);
#if !defined(__SANITIZE_THREAD__) /* OpenBLAS's own threads are not instrumented: TSan runs BLAS on one */
    openblas_set_num_threads(2);
#endif
    lcm_eval_sums b = run_eval(&bt);
    lcm_eval_sums c = run_eval(&bt);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    CHECK(memcmp(&b, &c, sizeof b) == 0);
    openblas_set_num_threads(threads);
    free_batch(&bt);
}

TEST(nan_prediction_does_not_count_as_farther) {
    int32_t lens[2] = {5, 5};
    uint64_t docs[2] = {0, 1};
    batch bt = make_batch(10, 2, 5, 8, lens, docs, 1.0);
    pat(&bt, 0, 1)[3] = NAN;
    lcm_eval_sums s = run_eval(&bt);
    CHECK(isnan(s.loss_sum));
    CHECK(s.ca_count == 8);
    oracle_out o = oracle(&bt);
    CHECK(s.ca_sum == o.s.ca_sum);
    free_batch(&bt);
}

TEST(finish_divides_and_handles_empty) {
    lcm_eval_sums s = {6.0, 3.0, 1.5, 2.0, 4.0, 3.0, 2.0};
    lcm_eval_result r;
    lcm_eval_finish(&s, &r);
    CHECK(r.loss == 1.5 && r.l2 == 0.75 && r.ca == 0.75 && r.n_targets == 4 && r.par == 1.5);
    lcm_eval_sums zero = {0, 0, 0, 0, 0, 0, 0};
    lcm_eval_finish(&zero, &r);
    CHECK(r.loss == 0 && r.l2 == 0 && r.ca == 0 && r.n_targets == 0 && r.par == 0);
    CHECK(LCM_EVAL_NSUMS * sizeof(double) == sizeof(lcm_eval_sums));
}

/* PAR by hand, D = 2, identity normalizer: concepts x0 = (1, 0), x1 = (0, 1), x2 = (1, 1) in both rows.
 * Target x1 (context {x0}): cos(x1, x0) = 0, so the ratio is undefined and the target not counted.
 * Target x2 (context {x0, x1}): the true concept's best cosine is 1/sqrt(2). Row 0 predicts (1, 0), whose
 * best cosine is 1 (to x0): PAR sqrt(2), the prediction copies its context more than the data does.
 * Row 1 predicts x2 itself: PAR 1. The mean over the two counted targets is (sqrt(2) + 1) / 2. */
TEST(paraphrasing_ratio_by_hand) {
    enum { B = 2, T = 3, D = 2 };
    float x[B * T * D] = {1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1};
    float pred[B * T * D] = {0, 1, 1, 0, 9, 9, 0, 1, 1, 1, 9, 9}; /* position 2 predicts nothing */
    int32_t lens[B] = {3, 3};
    uint64_t docs[B] = {0, 1};
    float center[D] = {0, 0}, scale[D] = {1, 1};
    float *scratch = malloc(lcm_eval_scratch_floats(B, T, D) * sizeof(float));
    lcm_eval_sums s = {0};
    lcm_eval_accumulate(&s, pred, x, lens, docs, B, T, D, center, scale, scratch);
    lcm_eval_result r;
    lcm_eval_finish(&s, &r);
    CHECK(s.n_targets == 4);
    CHECK(s.par_count == 2);
    /* float inputs, double arithmetic, norms stored in fp32: relative error ~1e-7 */
    CHECK(fabs(s.par_sum - (sqrt(2.0) + 1.0)) < 1e-6);
    CHECK(fabs(r.par - (sqrt(2.0) + 1.0) / 2) < 1e-6);
    free(scratch);
}

/* The scratch is bounded: centered copies of the predictions and concepts plus O(B*T) per GEMM block
 * row, not a (B*T)^2 matrix (51M floats for a 7168-concept micro-batch). */
TEST(scratch_is_bounded) {
    size_t n_pos = 56 * 128;
    size_t n = lcm_eval_scratch_floats(56, 128, 1024);
    CHECK(n >= 2 * n_pos * 1024);
    CHECK(n <= 2 * n_pos * 1024 + 1024 + 300 * n_pos);
    CHECK(n < n_pos * n_pos);
}

/* ---- the predict-the-mean baseline ---------------------------------------------------------------- */

/* An f32 dataset in memory (no file format involved): random concepts, the given document lengths, an
 * EOT concept. */
static lcm_dataset memory_dataset(uint64_t seed, uint64_t n_docs, const uint64_t *doc_lens, int dim) {
    uint64_t s = seed;
    lcm_dataset ds;
    memset(&ds, 0, sizeof ds);
    snprintf(ds.path, sizeof ds.path, "mem.lcmd");
    ds.dtype = LCM_F32;
    ds.dim = dim;
    ds.n_docs = n_docs;
    uint64_t *off = malloc((n_docs + 1) * sizeof *off);
    off[0] = 0;
    for (uint64_t i = 0; i < n_docs; i++) off[i + 1] = off[i] + doc_lens[i];
    ds.n_concepts = off[n_docs];
    ds.doc_offsets = off;
    float *pay = malloc((ds.n_concepts * (uint64_t)dim + 1) * sizeof *pay);
    for (uint64_t i = 0; i < ds.n_concepts * (uint64_t)dim; i++) pay[i] = (float)(0.3 + 0.02 * gaussian(&s));
    ds.payload = (const uint8_t *)pay;
    float *eot = malloc((size_t)dim * sizeof *eot);
    for (int j = 0; j < dim; j++) eot[j] = (float)(0.1 * j / dim);
    ds.eot = eot;
    return ds;
}

static void free_memory_dataset(lcm_dataset *ds) {
    free((void *)ds->doc_offsets);
    free((void *)ds->payload);
    free((void *)ds->eot);
}

/* The baseline from its definition: every document (+ EOT) wrapped into rows of max_seq_len
 * concepts; the targets are the concepts of each row after its first; the mean normalized target, then
 * the mean summed squared distance to it. */
static double direct_baseline(const lcm_dataset *ds, int max_seq_len, int append_eot, const float *center,
                              const float *scale) {
    int D = ds->dim;
    const float *pay = (const float *)ds->payload;
    double *mean = calloc((size_t)D, sizeof *mean);
    double sum = 0;
    int64_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (uint64_t d = 0; d < ds->n_docs; d++) {
            uint64_t len = lcm_dataset_doc_len(ds, d) + (uint64_t)append_eot;
            for (uint64_t k = 0; k < len; k++) {
                if (k % (uint64_t)max_seq_len == 0) continue; /* a row's first concept is no target */
                const float *c = k < lcm_dataset_doc_len(ds, d) ? pay + (ds->doc_offsets[d] + k) * (uint64_t)D
                                                                 : ds->eot;
                double d2 = 0;
                for (int i = 0; i < D; i++) {
                    double tn = ((double)c[i] - center[i]) / scale[i];
                    if (pass == 0) mean[i] += tn;
                    else d2 += (tn - mean[i]) * (tn - mean[i]);
                }
                sum += d2;
                n += pass == 0;
            }
        }
        if (pass == 0)
            for (int i = 0; i < D; i++) mean[i] /= (double)n;
    }
    free(mean);
    return sum / (double)n;
}

/* Documents of 0, 1, 2, max_seq_len - 1, max_seq_len, several rows, with and without EOT, over
 * several micro-batches. The two computations add the same terms in the same dataset order but group
 * the additions differently; 1e-10 relative is far above double rounding over ~400 targets and far
 * below any wrong target (one target more or less moves the result by ~1/400). */
TEST(mean_baseline_matches_direct) {
    int D = 16, msl = 8;
    uint64_t doc_lens[12] = {5, 0, 1, 2, 7, 8, 20, 33, 3, 9, 15, 16};
    lcm_dataset ds = memory_dataset(11, 12, doc_lens, D);
    float center[16], scale[16];
    uint64_t s = 12;
    for (int i = 0; i < D; i++) {
        center[i] = (float)(0.3 + 0.01 * gaussian(&s));
        scale[i] = (float)(0.01 + 0.02 * uniform(&s));
    }
    for (int append_eot = 0; append_eot <= 1; append_eot++) {
        lcm_error err = {0};
        lcm_plan_config pc = {LCM_PLAN_EVAL, msl, 24, 2, 0, append_eot, 1};
        lcm_plan *plan = NULL;
        CHECK_OK(lcm_plan_create(&plan, &ds, &pc, &err), &err);
        if (!plan) continue;
        uint64_t n_mb = 0;
        CHECK_OK(lcm_plan_epoch_size(plan, 0, &n_mb, &err), &err);
        CHECK(n_mb > 3);
        double got = -1;
        CHECK_OK(lcm_eval_mean_baseline(&ds, plan, append_eot, center, scale, &got, &err), &err);
        double want = direct_baseline(&ds, msl, append_eot, center, scale);
        CHECKF(rel_diff(got, want) <= 1e-10, "append_eot %d: %.15g vs %.15g", append_eot, got, want);
        CHECK(got > 0);
        lcm_plan_free(plan);
    }
    free_memory_dataset(&ds);
}

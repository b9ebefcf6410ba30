/* eval.h: next-concept evaluation metrics (teacher forced), computed on the host from a micro-batch's
 * predictions (see docs/model.md, "Evaluation"):
 *  - loss: per-target summed squared error in normalized space (the training objective);
 *  - l2: mean over targets of ||pred - target||_2 in RAW (denormalized) space;
 *  - contrastive accuracy (CA): for each target, the fraction of distractors (the targets of the
 *    micro-batch's OTHER rows) that are farther (squared L2, raw space) from the prediction than the
 *    true next concept; 0.5 is chance (Meta's mse_constrative_accuracy);
 *  - paraphrasing ratio (PAR): for each target, the largest cosine (raw space) of the prediction to a
 *    concept of its context (the row's concepts up to the predicting position), divided by the same
 *    for the true next concept; above 1, the model leans towards repeating its context more than the
 *    data does. Averaged over the targets whose denominator is positive.
 * Sums are accumulated per micro-batch and combined over micro-batches and devices by adding the
 * lcm_eval_sums fields, so the result does not depend on how the set was split. */
#ifndef LCM_EVAL_H
#define LCM_EVAL_H

#include <stdint.h>
#include "lcm/dataset.h"
#include "lcm/error.h"
#include "lcm/plan.h"

typedef struct lcm_eval_sums {
    double loss_sum;    /* sum over targets of ||pred - target||^2 (normalized space) */
    double l2_sum;      /* sum over targets of ||pred_raw - target_raw|| */
    double ca_sum;      /* sum over targets with >= 1 distractor of the fraction of farther distractors */
    double ca_count;    /* targets that had >= 1 distractor */
    double n_targets;
    double par_sum;     /* sum over targets with a positive denominator of their paraphrasing ratio */
    double par_count;   /* those targets */
} lcm_eval_sums;

#define LCM_EVAL_NSUMS 7 /* the fields above, in order, as doubles (for one sum_f64 collective) */

typedef struct lcm_eval_result {
    double loss, l2, ca, par;
    int64_t n_targets;
    double baseline;    /* lcm_evaluate: the split's predict-the-mean loss (lcm_eval_mean_baseline) */
} lcm_eval_result;

/* Accumulate one micro-batch. pred: [B, T, D] predictions in normalized space (position t predicts
 * concept t+1); x: [B, T, D] raw inputs; lens [B]; docs [B] the document of each row (no metric reads
 * it since CA follows Meta's per-row definition; kept so that callers are unchanged); center/scale:
 * the normalizer [D]. `scratch` must hold
 * lcm_eval_scratch_floats(B, T, D) floats (allocate once, before training starts). */
void lcm_eval_accumulate(lcm_eval_sums *s, const float *pred, const float *x, const int32_t *lens,
                         const uint64_t *docs, int B, int T, int D, const float *center, const float *scale,
                         float *scratch);
size_t lcm_eval_scratch_floats(int B, int T, int D);
void lcm_eval_finish(const lcm_eval_sums *s, lcm_eval_result *out);

/* The predict-the-mean baseline of a split: the loss of always predicting the mean normalized target
 * (sum over targets of ||target - mean||^2 / n_targets), over the rows of an EVAL plan. */
int lcm_eval_mean_baseline(const lcm_dataset *ds, lcm_plan *plan, int append_eot, const float *center,
                           const float *scale, double *out, lcm_error *err);

#endif

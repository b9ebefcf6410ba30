/* eval.h: next-concept evaluation metrics (teacher forced), computed on the host from a micro-batch's
 * predictions (see docs/model.md, "Evaluation"):
 *  - loss: per-target summed squared error in normalized space (the training objective);
 *  - l2: mean over targets of ||pred - target||_2 in RAW (denormalized) space;
 *  - contrastive accuracy (CA): for each target, the fraction of distractors (every real concept of the
 *    micro-batch's OTHER documents) that are farther (squared L2, raw space) from the prediction than
 *    the true next concept; 0.5 is chance.
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
} lcm_eval_sums;

#define LCM_EVAL_NSUMS 5 /* the fields above, in order, as doubles (for one sum_f64 collective) */

typedef struct lcm_eval_result {
    double loss, l2, ca;
    int64_t n_targets;
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

/* checkpoint.h: checkpoints that a crash cannot damage, and weights that PyTorch can read.
 *
 * A checkpoint is a directory <run>/checkpoints/step_<NNNNNNNNN>/ holding
 *   model.safetensors        fp32 weights under the reference parameter names, plus the normalizer
 *                            (frontend.sonar_normalizer.center/scale); loadable by safetensors/PyTorch
 *   train_state.safetensors  AdamW moments (adamw.exp_avg, adamw.exp_avg_sq as flat [total] tensors in
 *                            the parameter block's layout) and, as metadata, the step, data cursor,
 *                            bad-step counters, config hash and the effective config.
 * Both files carry a CRC-32C per tensor and one of the header in their metadata (st_checksum.h).
 *
 * A save refuses a non-finite state (weights, moments, second moments < 0) before writing anything. It
 * writes step_<N>.tmp/ (every file fsync'ed), reads it back and verifies it, renames it to step_<N>/ and
 * fsyncs the directory: only complete, verified checkpoints carry the final name. Older ones beyond
 * keep_last are removed only after that, and never the new one. Every load verifies the checksums and
 * re-validates everything (strict safetensors, names, shapes, every train_state field), so a damaged
 * checkpoint is an error message naming the file and what is wrong, never a crash or a silent wrong
 * resume. Errors of a save end with what is true on disk ("the last checkpoint, <dir>, is intact
 * (verified)" only after verifying it). */
#ifndef LCM_CHECKPOINT_H
#define LCM_CHECKPOINT_H

#include <stdint.h>
#include "lcm/error.h"
#include "lcm/model.h"
#include "lcm/plan.h"

typedef struct lcm_train_state {
    int64_t step;              /* completed optimizer steps */
    lcm_cursor cursor;         /* the next micro-batch of the training plan */
    int64_t bad_in_row;        /* consecutive skipped (NaN/Inf) steps */
    int64_t bad_total;
    int64_t concepts_seen;     /* training targets processed */
    double elapsed_s;          /* training time before this checkpoint, over all runs */
    uint64_t config_hash;      /* lcm_config_model_hash of the run */
    int64_t step_microbatches; /* micro-batches per optimizer step (devices x grad_accum); 0 = not recorded */
} lcm_train_state;

/* Write a checkpoint of host copies (each [t->total] fp32; m and v may be NULL for weights only).
 * On success the directory written is in out_dir (cap bytes). */
int lcm_checkpoint_save(const char *run_dir, const lcm_param_table *t, const float *master, const float *m,
                        const float *v, const lcm_normalizer *norm, const lcm_train_state *s,
                        const char *config_text, int keep_last, char *out_dir, size_t cap, lcm_error *err);

/* The newest complete checkpoint under <run>/checkpoints (*found = 0 when there is none). Leftover
 * step_*.tmp directories of interrupted writes are removed (and a step_N.old that a rerun of step N
 * moved aside is put back when the rerun died before committing). */
int lcm_checkpoint_latest(const char *run_dir, char *out_dir, size_t cap, int *found, lcm_error *err);
/* The same, but the newest that verifies (checksums, finite weights, every train_state field): each
 * newer one is skipped with a warning naming it and why. An error when checkpoints exist but none
 * verifies; *found = 0 when there are none. */
int lcm_checkpoint_latest_verified(const char *run_dir, char *out_dir, size_t cap, int *found, lcm_error *err);
/* "the last checkpoint, <dir>, is intact (verified)", or what is true instead, for error messages. */
void lcm_checkpoint_describe_intact(const char *run_dir, char *out, size_t cap);

/* Load a checkpoint directory into host arrays [t->total] (m and v may be NULL); the normalizer is
 * allocated (free with lcm_normalizer_free). Checksums, names, shapes and every metadata field are
 * checked. */
int lcm_checkpoint_load(const char *dir, const lcm_param_table *t, float *master, float *m, float *v,
                        lcm_normalizer *norm, lcm_train_state *s, lcm_error *err);
/* The loaded cursor lies within this run's training plan (an error naming dir and the field if not). */
int lcm_checkpoint_check_cursor(const char *dir, const lcm_train_state *s, lcm_plan *plan, lcm_error *err);

/* The effective config text stored in a checkpoint (malloc'ed), for `lcm eval`. */
int lcm_checkpoint_config_text(const char *dir, char **out, lcm_error *err);

/* Weights in the reference layout (checksums verified when the file has them; names checked both
 * ways: a clear error lists what is missing, extra or of the wrong shape). norm may be NULL; when the file has normalizer tensors and norm is not
 * NULL they are loaded into it (norm->dim is 0 when absent). */
int lcm_weights_load(const char *path, const lcm_param_table *t, float *master, lcm_normalizer *norm,
                     lcm_error *err);
int lcm_weights_save(const char *path, const lcm_param_table *t, const float *master, const lcm_normalizer *norm,
                     const char *config_text, lcm_error *err);

#endif

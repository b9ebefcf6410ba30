/* plan.h: the batch plan: which rows form each micro-batch, in which order, for every epoch.
 *
 * A document (plus the dataset's EOT concept) is wrapped into rows of at most max_seq_len concepts.
 * Training epochs: rows are shuffled (seed, epoch), cut into buckets of >= bucket_factor * max_tokens
 * concepts, sorted by length inside each bucket, grouped greedily (within each bucket) into micro-batches
 * of at most max_tokens padded concepts (rows x longest row), and the micro-batch order is shuffled.
 * src/data/plan.c states the exact rules.
 * Evaluation: all rows in dataset order, grouped greedily, no shuffle.
 *
 * The plan is a pure function of (dataset, settings, seed, epoch), so every worker thread computes the
 * same micro-batches, and a cursor (epoch, index) saved in a checkpoint restores the exact rest.
 * A global step of N devices with grad_accum A consumes N*A consecutive micro-batches; device r takes
 * micro-batches r*A .. r*A+A-1 of the step. Thread-safe. */
#ifndef LCM_PLAN_H
#define LCM_PLAN_H

#include <stdint.h>
#include <stddef.h>
#include "lcm/config.h"
#include "lcm/dataset.h"
#include "lcm/error.h"

typedef struct lcm_row {
    uint64_t doc;
    uint32_t start; /* first concept of the row within the document (+EOT) sequence */
    uint32_t len;   /* concepts in the row (>= 2: a row of one concept has no target and is dropped) */
} lcm_row;

typedef enum { LCM_PLAN_TRAIN, LCM_PLAN_EVAL } lcm_plan_mode;

typedef struct lcm_plan_config {
    lcm_plan_mode mode;
    int max_seq_len;
    int64_t max_tokens;
    int bucket_factor;
    int shuffle;       /* TRAIN only */
    int append_eot;
    uint64_t seed;
} lcm_plan_config;

/* The settings a run uses: the data.* keys, seed = trainer.seed; shuffle applies to TRAIN only. Training,
 * evaluation and `lcm data batches` all take them from here, so the printed plan is the trained one. */
void lcm_plan_config_from(lcm_plan_config *pc, const lcm_config *cfg, lcm_plan_mode mode);

typedef struct lcm_microbatch {
    uint64_t epoch;
    uint64_t index;     /* within the epoch */
    int n_rows;
    int max_len;        /* T: the longest row */
    int64_t n_targets;  /* sum over rows of (len - 1) */
    const lcm_row *rows;
} lcm_microbatch;

typedef struct lcm_cursor {
    uint64_t epoch;
    uint64_t index;     /* the next micro-batch of that epoch */
} lcm_cursor;

typedef struct lcm_plan lcm_plan;

/* The plan keeps a pointer to ds, which must outlive it. */
int lcm_plan_create(lcm_plan **out, const lcm_dataset *ds, const lcm_plan_config *pc, lcm_error *err);
void lcm_plan_free(lcm_plan *p);

uint64_t lcm_plan_num_rows(const lcm_plan *p);
uint64_t lcm_plan_num_dropped(const lcm_plan *p);    /* rows of one concept (no target), left out */
int64_t lcm_plan_num_targets(const lcm_plan *p);     /* per epoch */
/* Micro-batches in an epoch (grouping depends on the epoch's shuffle). */
int lcm_plan_epoch_size(lcm_plan *p, uint64_t epoch, uint64_t *n, lcm_error *err);
/* Upper bound on rows in one micro-batch, for sizing buffers. */
int lcm_plan_max_rows(const lcm_plan *p);

/* Micro-batch `index` of `epoch`; its rows are copied into row_buf (capacity row_cap rows). */
int lcm_plan_get(lcm_plan *p, uint64_t epoch, uint64_t index, lcm_microbatch *out,
                 lcm_row *row_buf, size_t row_cap, lcm_error *err);
/* The next n micro-batches from *cur (crossing into the next epoch when one ends), advancing *cur.
 * Rows of all n go into row_buf one after another (out[i].rows points into it), so row_cap must be
 * at least n * lcm_plan_max_rows. A cursor left at the end of an epoch moves to the next epoch on the
 * next take; a cursor past the end (saved with other data settings) is an error. */
int lcm_plan_take(lcm_plan *p, lcm_cursor *cur, int n, lcm_microbatch *out,
                  lcm_row *row_buf, size_t row_cap, lcm_error *err);

/* Copy a micro-batch out of the dataset: x[n_rows, T, D] raw fp32 (T = mb->max_len, padding zero),
 * lens[n_rows], docs[n_rows] (document index of each row; docs may be NULL). */
void lcm_batch_fill(const lcm_dataset *ds, const lcm_microbatch *mb, int append_eot,
                    float *x, int32_t *lens, uint64_t *docs);

#endif

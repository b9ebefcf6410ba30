/* plan.c: the batch plan: which rows form each micro-batch, in which order, for every epoch.
 *
 * Rows. Document i (in dataset order) is the sequence of its concepts followed, when append_eot, by
 * the dataset's EOT concept. That sequence is wrapped into consecutive rows of max_seq_len concepts;
 * the remainder is the last row. A row of fewer than 2 concepts has no target and is dropped (counted
 * in lcm_plan_num_dropped). The kept rows, in document order, are the plan's base rows.
 *
 * Training epoch e (mode TRAIN):
 *   1. if shuffle, the base rows are permuted by Fisher-Yates with the generator keyed (seed, e, rows);
 *   2. the row sequence is cut into buckets of consecutive rows: a bucket closes as soon as it holds
 *      >= bucket_factor * max_tokens concepts (the last bucket may hold fewer);
 *   3. each bucket is sorted by length, longest first, stably (equal lengths keep their order);
 *   4. each bucket is grouped greedily: a micro-batch starts with the next row and takes further rows
 *      while (rows + 1) * (its first row's length) <= max_tokens. Micro-batches never cross a bucket
 *      boundary, so the first row is always the longest and rows x longest row <= max_tokens;
 *   5. if shuffle, the micro-batch order is permuted by Fisher-Yates keyed (seed, e, batches).
 *   Without shuffle steps 1 and 5 are skipped and every epoch is the same.
 * Evaluation (mode EVAL): the base rows in dataset order, grouped greedily: a micro-batch takes the
 *   next row while (rows + 1) * max(its longest row, the next row's length) <= max_tokens. No sorting,
 *   no shuffle; every epoch is the same.
 *
 * So micro-batch i of epoch e is a pure function of (dataset, settings, seed, e), and a cursor
 * (epoch, index) is all a checkpoint needs to continue exactly.
 *
 * Threads: every worker calls lcm_plan_get/take on one shared plan. Epochs that do not depend on e
 * (no shuffle, EVAL) are computed once in lcm_plan_create and are read-only afterwards. Shuffled
 * epochs are computed on demand, outside the lock (two threads may compute the same epoch; the second
 * result is discarded), and the most recent PLAN_CACHE_EPOCHS of them are kept in a cache under a
 * mutex. Rows are copied out of a cached epoch while the mutex is held, so an epoch is never freed
 * while another thread reads it. */
#include "lcm/plan.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/half.h"
#include "lcm/philox.h"

/* Workers are at most one step apart, so at most two epochs are in use at once; one more spares a
 * recomputation when a step straddles an epoch boundary while a slow thread still reads the old one. */
#define PLAN_CACHE_EPOCHS 3

/* Generator streams: distinct from the small stream numbers parameter initialisation uses. */
#define PLAN_STREAM_ROWS 0x706c616e726f7773ull    /* "planrows" */
#define PLAN_STREAM_BATCHES 0x706c616e62617463ull /* "planbatc" */

/* One epoch's grouping: micro-batch k (after the order permutation) is the rows
 * base[order[mb_start[k]]] .. base[order[mb_start[k+1] - 1]]. */
typedef struct plan_epoch {
    uint64_t epoch;
    uint64_t *order;    /* [n_rows] indices into the base rows; NULL = identity */
    uint64_t *mb_start; /* [n_mb + 1] */
    uint64_t *mb_order; /* [n_mb] position k of the epoch is grouped micro-batch mb_order[k]; NULL = identity */
    uint64_t n_mb;
    uint64_t last_use;  /* for evicting the least recently used cache slot */
} plan_epoch;

struct lcm_plan {
    const lcm_dataset *ds;
    lcm_plan_config pc;
    lcm_row *rows; /* [n_rows] base rows in dataset order */
    uint64_t n_rows;
    uint64_t n_dropped;
    int64_t n_targets;
    int max_rows;
    plan_epoch *fixed; /* the epoch of a plan whose epochs are all alike; NULL for shuffled training */
    pthread_mutex_t lock;
    plan_epoch *cache[PLAN_CACHE_EPOCHS];
    uint64_t use_clock;
};

static void epoch_free(plan_epoch *e) {
    if (!e) return;
    free(e->order);
    free(e->mb_start);
    free(e->mb_order);
    free(e);
}

/* Uniform in [0, bound), bound >= 1, without modulo bias: draws below 2^64 mod bound are rejected, so
 * the accepted range is a whole number of copies of [0, bound). */
static uint64_t rng_below(lcm_rng *r, uint64_t bound) {
    uint64_t reject_below = (0 - bound) % bound;
    for (;;) {
        uint64_t x = lcm_rng_u64(r);
        if (x >= reject_below) return x % bound;
    }
}

static void shuffle_u64(uint64_t *a, uint64_t n, uint64_t seed, uint64_t stream) {
    lcm_rng r;
    lcm_rng_init(&r, seed, stream);
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = rng_below(&r, i);
        uint64_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

static uint64_t *identity_u64(uint64_t n) {
    uint64_t *a = malloc((n ? n : 1) * sizeof *a);
    if (a)
        for (uint64_t i = 0; i < n; i++) a[i] = i;
    return a;
}

/* ---- building the base rows --------------------------------------------------------------------- */

static int check_config(const lcm_dataset *ds, const lcm_plan_config *pc, lcm_error *err) {
    if (pc->mode != LCM_PLAN_TRAIN && pc->mode != LCM_PLAN_EVAL)
        return lcm_fail(err, LCM_ERR_INTERNAL, "batch plan: unknown mode %d", (int)pc->mode);
    if (pc->max_seq_len < 2)
        return lcm_fail(err, LCM_ERR_CONFIG,
                        "data.max_seq_len = %d: a row needs at least 2 concepts (an input and a target); "
                        "set data.max_seq_len >= 2", pc->max_seq_len);
    if (pc->max_tokens < pc->max_seq_len)
        return lcm_fail(err, LCM_ERR_CONFIG,
                        "data.max_tokens = %lld is smaller than data.max_seq_len = %d, so a full row would "
                        "not fit in one micro-batch; raise data.max_tokens or lower data.max_seq_len",
                        (long long)pc->max_tokens, pc->max_seq_len);
    if (pc->mode == LCM_PLAN_TRAIN && pc->bucket_factor < 1)
        return lcm_fail(err, LCM_ERR_CONFIG, "data.bucket_factor = %d: a length bucket must hold at least "
                        "one micro-batch's worth of concepts; set data.bucket_factor >= 1", pc->bucket_factor);
    if (pc->append_eot && !ds->eot)
        return lcm_fail(err, LCM_ERR_DATA,
                        "dataset %s has no end-of-text (EOT) vector, but data.append_eot is on; re-import the "
                        "dataset with --eot, or set data.append_eot=false",
                        ds->path[0] ? ds->path : "(in memory)");
    return 0;
}

/* Wraps one document sequence of n concepts into rows (written to out when it is not NULL); returns
 * the rows kept and adds the dropped ones to *dropped. Counting and filling share this one rule. */
static uint64_t wrap_document(uint64_t doc, uint64_t n, uint64_t max_seq_len, lcm_row *out, uint64_t *dropped) {
    uint64_t kept = 0;
    for (uint64_t start = 0; start < n; start += max_seq_len) {
        uint64_t len = n - start < max_seq_len ? n - start : max_seq_len;
        if (len < 2) {
            (*dropped)++;
            continue;
        }
        if (out) out[kept] = (lcm_row){doc, (uint32_t)start, (uint32_t)len};
        kept++;
    }
    return kept;
}

static int build_rows(lcm_plan *p, lcm_error *err) {
    const lcm_dataset *ds = p->ds;
    const char *name = ds->path[0] ? ds->path : "(in memory)";
    uint64_t msl = (uint64_t)p->pc.max_seq_len, eot = p->pc.append_eot ? 1 : 0;
    uint64_t kept = 0, dropped = 0;
    for (uint64_t d = 0; d < ds->n_docs; d++) {
        uint64_t n = lcm_dataset_doc_len(ds, d) + eot;
        if (n > UINT32_MAX)
            return lcm_fail(err, LCM_ERR_DATA, "dataset %s: document %llu has %llu concepts, more than the "
                            "batch plan's limit of 2^32 - 1 per document; split it before import",
                            name, (unsigned long long)d, (unsigned long long)n);
        kept += wrap_document(d, n, msl, NULL, &dropped);
    }
    if (kept == 0)
        return lcm_fail(err, LCM_ERR_DATA, "dataset %s (%llu documents) has no row of at least 2 concepts: "
                        "there is nothing to predict; check the dataset or data.append_eot",
                        name, (unsigned long long)ds->n_docs);
    p->rows = malloc(kept * sizeof *p->rows);
    if (!p->rows)
        return lcm_fail(err, LCM_ERR_NOMEM, "out of memory for the batch plan's %llu rows",
                        (unsigned long long)kept);
    p->n_rows = 0;
    p->n_dropped = 0;
    for (uint64_t d = 0; d < ds->n_docs; d++)
        p->n_rows += wrap_document(d, lcm_dataset_doc_len(ds, d) + eot, msl, p->rows + p->n_rows, &p->n_dropped);
    int64_t targets = 0;
    uint32_t min_len = UINT32_MAX;
    for (uint64_t i = 0; i < p->n_rows; i++) {
        targets += (int64_t)p->rows[i].len - 1;
        if (p->rows[i].len < min_len) min_len = p->rows[i].len;
    }
    p->n_targets = targets;
    /* Every micro-batch holds rows x (a length >= min_len) <= max_tokens concepts. */
    uint64_t bound = (uint64_t)p->pc.max_tokens / min_len;
    if (bound > p->n_rows) bound = p->n_rows;
    if (bound > INT_MAX)
        return lcm_fail(err, LCM_ERR_CONFIG, "data.max_tokens = %lld allows micro-batches of more than %d rows; "
                        "lower data.max_tokens", (long long)p->pc.max_tokens, INT_MAX);
    p->max_rows = (int)bound;
    return 0;
}

/* ---- grouping an epoch ---------------------------------------------------------------------------- */

/* Sort order[0..n) by row length, longest first, keeping the order of equal lengths: a counting sort
 * over lengths 2..max_seq_len. count[] has max_seq_len + 1 entries; tmp has room for n indices. */
static void sort_bucket(const lcm_row *rows, uint64_t *order, uint64_t n, int max_seq_len,
                        uint64_t *count, uint64_t *tmp) {
    memset(count, 0, ((size_t)max_seq_len + 1) * sizeof *count);
    for (uint64_t i = 0; i < n; i++) count[rows[order[i]].len]++;
    uint64_t at = 0;
    for (int len = max_seq_len; len >= 0; len--) {
        uint64_t c = count[len];
        count[len] = at;
        at += c;
    }
    for (uint64_t i = 0; i < n; i++) tmp[count[rows[order[i]].len]++] = order[i];
    memcpy(order, tmp, n * sizeof *order);
}

/* Training grouping of order[0..n) into micro-batches (steps 2-4 of the header). */
static int group_train(const lcm_plan *p, plan_epoch *e) {
    const lcm_row *rows = p->rows;
    uint64_t n = p->n_rows;
    int64_t max_tokens = p->pc.max_tokens;
    int64_t bucket_concepts = max_tokens > INT64_MAX / p->pc.bucket_factor
                                  ? INT64_MAX : max_tokens * p->pc.bucket_factor;
    uint64_t *count = malloc(((size_t)p->pc.max_seq_len + 1) * sizeof *count);
    uint64_t *tmp = malloc(n * sizeof *tmp);
    e->mb_start = malloc((n + 1) * sizeof *e->mb_start);
    if (!count || !tmp || !e->mb_start) {
        free(count);
        free(tmp);
        return LCM_ERR_NOMEM;
    }
    uint64_t n_mb = 0;
    uint64_t b0 = 0;
    while (b0 < n) {
        uint64_t b1 = b0;
        int64_t concepts = 0;
        while (b1 < n && concepts < bucket_concepts) concepts += rows[e->order[b1++]].len;
        sort_bucket(rows, e->order + b0, b1 - b0, p->pc.max_seq_len, count, tmp);
        uint64_t i = b0;
        while (i < b1) {
            int64_t first_len = rows[e->order[i]].len;
            int64_t taken = 1;
            e->mb_start[n_mb++] = i++;
            while (i < b1 && (taken + 1) * first_len <= max_tokens) {
                taken++;
                i++;
            }
        }
        b0 = b1;
    }
    e->mb_start[n_mb] = n;
    e->n_mb = n_mb;
    free(count);
    free(tmp);
    return 0;
}

/* Evaluation grouping of the base rows in dataset order. */
static int group_eval(const lcm_plan *p, plan_epoch *e) {
    uint64_t n = p->n_rows;
    e->mb_start = malloc((n + 1) * sizeof *e->mb_start);
    if (!e->mb_start) return LCM_ERR_NOMEM;
    uint64_t n_mb = 0, i = 0;
    while (i < n) {
        int64_t longest = p->rows[i].len;
        int64_t taken = 1;
        e->mb_start[n_mb++] = i++;
        while (i < n) {
            int64_t next = p->rows[i].len > longest ? p->rows[i].len : longest;
            if ((taken + 1) * next > p->pc.max_tokens) break;
            longest = next;
            taken++;
            i++;
        }
    }
    e->mb_start[n_mb] = n;
    e->n_mb = n_mb;
    return 0;
}

static int epoch_compute(const lcm_plan *p, uint64_t epoch, plan_epoch **out, lcm_error *err) {
    *out = NULL;
    plan_epoch *e = calloc(1, sizeof *e);
    if (!e) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory for the batch plan of epoch %llu",
                            (unsigned long long)epoch);
    e->epoch = epoch;
    int shuffled = p->pc.mode == LCM_PLAN_TRAIN && p->pc.shuffle;
    int rc;
    if (p->pc.mode == LCM_PLAN_EVAL) {
        rc = group_eval(p, e);
    } else {
        e->order = identity_u64(p->n_rows);
        if (!e->order) {
            rc = LCM_ERR_NOMEM;
        } else {
            if (shuffled) shuffle_u64(e->order, p->n_rows, p->pc.seed, PLAN_STREAM_ROWS ^ epoch);
            rc = group_train(p, e);
        }
    }
    if (rc == 0 && shuffled) {
        e->mb_order = identity_u64(e->n_mb);
        if (!e->mb_order) rc = LCM_ERR_NOMEM;
        else shuffle_u64(e->mb_order, e->n_mb, p->pc.seed, PLAN_STREAM_BATCHES ^ epoch);
    }
    if (rc != 0) {
        epoch_free(e);
        return lcm_fail(err, LCM_ERR_NOMEM, "out of memory grouping the batch plan of epoch %llu (%llu rows)",
                        (unsigned long long)epoch, (unsigned long long)p->n_rows);
    }
    *out = e;
    return 0;
}

/* ---- the cache -------------------------------------------------------------------------------- */

static plan_epoch *cache_find(lcm_plan *p, uint64_t epoch) {
    for (int i = 0; i < PLAN_CACHE_EPOCHS; i++)
        if (p->cache[i] && p->cache[i]->epoch == epoch) {
            p->cache[i]->last_use = ++p->use_clock;
            return p->cache[i];
        }
    return NULL;
}

/* Put a freshly computed epoch into the cache (unless another thread already did) and return the
 * cached one. Called with the lock held. */
static plan_epoch *cache_insert(lcm_plan *p, plan_epoch *e) {
    plan_epoch *have = cache_find(p, e->epoch);
    if (have) {
        epoch_free(e);
        return have;
    }
    int slot = 0;
    for (int i = 0; i < PLAN_CACHE_EPOCHS; i++) {
        if (!p->cache[i]) {
            slot = i;
            break;
        }
        if (p->cache[i]->last_use < p->cache[slot]->last_use) slot = i;
    }
    epoch_free(p->cache[slot]);
    e->last_use = ++p->use_clock;
    p->cache[slot] = e;
    return e;
}

/* Runs fn(epoch data) with the epoch available: directly for a fixed plan, under the lock otherwise. */
typedef int (*epoch_fn)(const lcm_plan *p, const plan_epoch *e, void *arg, lcm_error *err);

static int with_epoch(lcm_plan *p, uint64_t epoch, epoch_fn fn, void *arg, lcm_error *err) {
    if (p->fixed) return fn(p, p->fixed, arg, err);
    pthread_mutex_lock(&p->lock);
    plan_epoch *e = cache_find(p, epoch);
    if (!e) {
        pthread_mutex_unlock(&p->lock);
        plan_epoch *fresh;
        LCM_TRY(epoch_compute(p, epoch, &fresh, err));
        pthread_mutex_lock(&p->lock);
        e = cache_insert(p, fresh);
    }
    int rc = fn(p, e, arg, err);
    pthread_mutex_unlock(&p->lock);
    return rc;
}

/* ---- public ------------------------------------------------------------------------------------- */

void lcm_plan_config_from(lcm_plan_config *pc, const lcm_config *cfg, lcm_plan_mode mode) {
    memset(pc, 0, sizeof *pc);
    pc->mode = mode;
    pc->max_seq_len = cfg->data.max_seq_len;
    pc->max_tokens = cfg->data.max_tokens;
    pc->bucket_factor = cfg->data.bucket_factor;
    pc->shuffle = mode == LCM_PLAN_TRAIN && cfg->data.shuffle;
    pc->append_eot = cfg->data.append_eot;
    pc->seed = cfg->trainer.seed;
}

int lcm_plan_create(lcm_plan **out, const lcm_dataset *ds, const lcm_plan_config *pc, lcm_error *err) {
    *out = NULL;
    LCM_TRY(check_config(ds, pc, err));
    lcm_plan *p = calloc(1, sizeof *p);
    if (!p) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory for the batch plan");
    p->ds = ds;
    p->pc = *pc;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return lcm_fail(err, LCM_ERR_INTERNAL, "batch plan: pthread_mutex_init failed");
    }
    int rc = build_rows(p, err);
    if (rc == 0 && !(pc->mode == LCM_PLAN_TRAIN && pc->shuffle)) rc = epoch_compute(p, 0, &p->fixed, err);
    if (rc != 0) {
        lcm_plan_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void lcm_plan_free(lcm_plan *p) {
    if (!p) return;
    for (int i = 0; i < PLAN_CACHE_EPOCHS; i++) epoch_free(p->cache[i]);
    epoch_free(p->fixed);
    pthread_mutex_destroy(&p->lock);
    free(p->rows);
    free(p);
}

uint64_t lcm_plan_num_rows(const lcm_plan *p) { return p->n_rows; }
uint64_t lcm_plan_num_dropped(const lcm_plan *p) { return p->n_dropped; }
int64_t lcm_plan_num_targets(const lcm_plan *p) { return p->n_targets; }
int lcm_plan_max_rows(const lcm_plan *p) { return p->max_rows; }

static int size_of(const lcm_plan *p, const plan_epoch *e, void *arg, lcm_error *err) {
    *(uint64_t *)arg = e->n_mb;
    return 0;
}

int lcm_plan_epoch_size(lcm_plan *p, uint64_t epoch, uint64_t *n, lcm_error *err) {
    return with_epoch(p, epoch, size_of, n, err);
}

typedef struct copy_args {
    uint64_t epoch, index;
    lcm_microbatch *out;
    lcm_row *row_buf;
    size_t row_cap;
} copy_args;

static int copy_microbatch(const lcm_plan *p, const plan_epoch *e, void *arg, lcm_error *err) {
    copy_args *a = arg;
    if (a->index >= e->n_mb)
        return lcm_fail(err, LCM_ERR_INTERNAL, "batch plan: micro-batch %llu asked of epoch %llu, which has %llu",
                        (unsigned long long)a->index, (unsigned long long)a->epoch, (unsigned long long)e->n_mb);
    uint64_t k = e->mb_order ? e->mb_order[a->index] : a->index;
    uint64_t first = e->mb_start[k], n = e->mb_start[k + 1] - first;
    if (n > a->row_cap)
        return lcm_fail(err, LCM_ERR_INTERNAL, "batch plan: micro-batch %llu of epoch %llu has %llu rows but the "
                        "buffer holds %zu (size it with lcm_plan_max_rows)", (unsigned long long)a->index,
                        (unsigned long long)a->epoch, (unsigned long long)n, a->row_cap);
    int max_len = 0;
    int64_t targets = 0;
    for (uint64_t i = 0; i < n; i++) {
        lcm_row r = p->rows[e->order ? e->order[first + i] : first + i];
        a->row_buf[i] = r;
        if ((int)r.len > max_len) max_len = (int)r.len;
        targets += (int64_t)r.len - 1;
    }
    a->out->epoch = a->epoch;
    a->out->index = a->index;
    a->out->n_rows = (int)n;
    a->out->max_len = max_len;
    a->out->n_targets = targets;
    a->out->rows = a->row_buf;
    return 0;
}

int lcm_plan_get(lcm_plan *p, uint64_t epoch, uint64_t index, lcm_microbatch *out,
                 lcm_row *row_buf, size_t row_cap, lcm_error *err) {
    copy_args a = {epoch, index, out, row_buf, row_cap};
    return with_epoch(p, epoch, copy_microbatch, &a, err);
}

int lcm_plan_take(lcm_plan *p, lcm_cursor *cur, int n, lcm_microbatch *out,
                  lcm_row *row_buf, size_t row_cap, lcm_error *err) {
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        uint64_t size;
        LCM_TRY(lcm_plan_epoch_size(p, cur->epoch, &size, err));
        if (cur->index > size)
            return lcm_fail(err, LCM_ERR_DATA, "batch plan: the cursor (epoch %llu, micro-batch %llu) is past the "
                            "end of that epoch (%llu micro-batches): it was saved with another dataset or other "
                            "data.* settings; resume with those, or start a new run",
                            (unsigned long long)cur->epoch, (unsigned long long)cur->index, (unsigned long long)size);
        if (cur->index == size) {
            cur->epoch++;
            cur->index = 0;
        }
        LCM_TRY(lcm_plan_get(p, cur->epoch, cur->index, &out[i], row_buf + used, row_cap - used, err));
        used += (size_t)out[i].n_rows;
        cur->index++;
    }
    return 0;
}

/* ---- copying a micro-batch out of the dataset ----------------------------------------------------- */

static void convert_concepts(const lcm_dataset *ds, uint64_t first, uint64_t count, float *out) {
    size_t n = (size_t)count * (size_t)ds->dim;
    size_t esize = ds->dtype == LCM_F32 ? 4 : 2;
    const uint8_t *src = ds->payload + (size_t)first * (size_t)ds->dim * esize;
    if (ds->dtype == LCM_F32) {
        memcpy(out, src, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        out[i] = ds->dtype == LCM_F16 ? lcm_f16_to_f32(h) : lcm_bf16_to_f32(h);
    }
}

void lcm_batch_fill(const lcm_dataset *ds, const lcm_microbatch *mb, int append_eot,
                    float *x, int32_t *lens, uint64_t *docs) {
    size_t D = (size_t)ds->dim, T = (size_t)mb->max_len;
    for (int b = 0; b < mb->n_rows; b++) {
        const lcm_row *r = &mb->rows[b];
        float *xb = x + (size_t)b * T * D;
        uint64_t doc_len = lcm_dataset_doc_len(ds, r->doc);
        uint64_t in_doc = r->start >= doc_len ? 0 : doc_len - r->start;
        if (in_doc > r->len) in_doc = r->len;
        convert_concepts(ds, ds->doc_offsets[r->doc] + r->start, in_doc, xb);
        size_t t = (size_t)in_doc;
        /* The plan only makes a row reach past its document when it appended the EOT there. */
        if (t < r->len && append_eot && ds->eot) {
            memcpy(xb + t * D, ds->eot, D * sizeof(float));
            t++;
        }
        memset(xb + t * D, 0, (T - t) * D * sizeof(float));
        lens[b] = (int32_t)r->len;
        if (docs) docs[b] = r->doc;
    }
}

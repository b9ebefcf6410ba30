/* test_plan.c: the batch plan (rows, buckets, grouping, shuffle, cursor, device shares, threads) and
 * lcm_batch_fill, on datasets built in memory (no file format involved). */
#include <pthread.h>
#include <stdint.h>

#include "harness.h"
#include "lcm/plan.h"

/* ---- in-memory datasets ------------------------------------------------------------------------ */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Concept c, element j of an f32 test dataset holds c * dim + j (exact in fp32 for these sizes), so a
 * filled batch shows exactly which concept landed where. */
static lcm_dataset make_dataset(uint64_t n_docs, const uint64_t *lens, int dim, int with_eot) {
    lcm_dataset ds;
    memset(&ds, 0, sizeof ds);
    snprintf(ds.path, sizeof ds.path, "mem.lcmd");
    ds.dtype = LCM_F32;
    ds.dim = dim;
    ds.n_docs = n_docs;
    uint64_t *off = malloc((n_docs + 1) * sizeof *off);
    off[0] = 0;
    for (uint64_t i = 0; i < n_docs; i++) off[i + 1] = off[i] + lens[i];
    ds.n_concepts = off[n_docs];
    ds.doc_offsets = off;
    float *pay = malloc((ds.n_concepts * (uint64_t)dim + 1) * sizeof *pay);
    for (uint64_t i = 0; i < ds.n_concepts * (uint64_t)dim; i++) pay[i] = (float)i;
    ds.payload = (const uint8_t *)pay;
    if (with_eot) {
        float *eot = malloc((size_t)dim * sizeof *eot);
        for (int j = 0; j < dim; j++) eot[j] = -1.0f - (float)j;
        ds.eot = eot;
    }
    return ds;
}

/* Random document lengths, always including the edge cases: empty, 1 concept, exactly max_seq_len,
 * one more, and documents several rows long. */
static lcm_dataset random_dataset(uint64_t seed, uint64_t n_docs, int max_seq_len) {
    uint64_t *lens = malloc(n_docs * sizeof *lens);
    uint64_t s = seed;
    uint64_t fixed[] = {0, 1, 2, (uint64_t)max_seq_len, (uint64_t)max_seq_len - 1, (uint64_t)max_seq_len + 1,
                        3 * (uint64_t)max_seq_len + 1, 5 * (uint64_t)max_seq_len};
    for (uint64_t i = 0; i < n_docs; i++)
        lens[i] = i < 8 ? fixed[i] : splitmix(&s) % (4 * (uint64_t)max_seq_len);
    for (uint64_t i = n_docs - 1; i > 0; i--) { /* scatter the edge cases */
        uint64_t j = splitmix(&s) % (i + 1), t = lens[i];
        lens[i] = lens[j];
        lens[j] = t;
    }
    lcm_dataset ds = make_dataset(n_docs, lens, 3, 1);
    free(lens);
    return ds;
}

static void free_dataset(lcm_dataset *ds) {
    free((void *)ds->doc_offsets);
    free((void *)ds->payload);
    free((void *)ds->eot);
}

static lcm_plan_config train_config(int max_seq_len, int64_t max_tokens, uint64_t seed) {
    lcm_plan_config pc = {LCM_PLAN_TRAIN, max_seq_len, max_tokens, 2, 1, 1, seed};
    return pc;
}

/* The rows the spec asks for, written independently of plan.c: wrap doc (+EOT) into rows of
 * max_seq_len, drop rows of one concept. Returns the count; *dropped gets the dropped ones. */
static uint64_t expected_rows(const lcm_dataset *ds, int max_seq_len, int append_eot, lcm_row *out,
                              uint64_t *dropped) {
    uint64_t k = 0;
    *dropped = 0;
    for (uint64_t d = 0; d < ds->n_docs; d++) {
        uint64_t n = lcm_dataset_doc_len(ds, d) + (uint64_t)append_eot;
        for (uint64_t s = 0; s < n; s += (uint64_t)max_seq_len) {
            uint64_t len = n - s < (uint64_t)max_seq_len ? n - s : (uint64_t)max_seq_len;
            if (len == 1) {
                (*dropped)++;
                continue;
            }
            if (out) out[k] = (lcm_row){d, (uint32_t)s, (uint32_t)len};
            k++;
        }
    }
    return k;
}

/* ---- epochs as flat lists ---------------------------------------------------------------------- */

typedef struct flat_epoch {
    uint64_t n_mb;
    uint64_t *mb_first; /* [n_mb + 1] offsets into rows */
    int *max_len;       /* [n_mb] */
    int64_t *targets;   /* [n_mb] */
    lcm_row *rows;
    uint64_t n_rows;
} flat_epoch;

static int flat_get(lcm_plan *p, uint64_t epoch, flat_epoch *f) {
    lcm_error err = {0};
    memset(f, 0, sizeof *f);
    if (lcm_plan_epoch_size(p, epoch, &f->n_mb, &err) != 0) return -1;
    uint64_t nr = lcm_plan_num_rows(p);
    f->mb_first = malloc((f->n_mb + 1) * sizeof *f->mb_first);
    f->max_len = malloc(f->n_mb * sizeof *f->max_len);
    f->targets = malloc(f->n_mb * sizeof *f->targets);
    f->rows = malloc(nr * sizeof *f->rows);
    for (uint64_t i = 0; i < f->n_mb; i++) {
        lcm_microbatch mb;
        f->mb_first[i] = f->n_rows;
        if (lcm_plan_get(p, epoch, i, &mb, f->rows + f->n_rows, nr - f->n_rows, &err) != 0) return -1;
        if (mb.epoch != epoch || mb.index != i || mb.rows != f->rows + f->n_rows) return -1;
        f->max_len[i] = mb.max_len;
        f->targets[i] = mb.n_targets;
        f->n_rows += (uint64_t)mb.n_rows;
    }
    f->mb_first[f->n_mb] = f->n_rows;
    return 0;
}

static void flat_free(flat_epoch *f) {
    free(f->mb_first);
    free(f->max_len);
    free(f->targets);
    free(f->rows);
}

static int same_rows(const lcm_row *a, const lcm_row *b, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (a[i].doc != b[i].doc || a[i].start != b[i].start || a[i].len != b[i].len) return 0;
    return 1;
}

static int flat_equal(const flat_epoch *a, const flat_epoch *b) {
    if (a->n_mb != b->n_mb || a->n_rows != b->n_rows) return 0;
    for (uint64_t i = 0; i <= a->n_mb; i++)
        if (a->mb_first[i] != b->mb_first[i]) return 0;
    return same_rows(a->rows, b->rows, a->n_rows);
}

static int row_cmp(const void *x, const void *y) {
    const lcm_row *a = x, *b = y;
    if (a->doc != b->doc) return a->doc < b->doc ? -1 : 1;
    return a->start < b->start ? -1 : a->start > b->start;
}

/* Every invariant one epoch must satisfy; returns the number of violations (and prints the first). */
static int check_epoch(lcm_plan *p, const lcm_dataset *ds, const lcm_plan_config *pc, uint64_t epoch) {
    flat_epoch f;
    if (flat_get(p, epoch, &f) != 0) {
        fprintf(stderr, "  could not read epoch %llu\n", (unsigned long long)epoch);
        return 1;
    }
    int bad = 0;
    uint64_t dropped;
    uint64_t n_exp = expected_rows(ds, pc->max_seq_len, pc->append_eot, NULL, &dropped);
    lcm_row *exp = malloc((n_exp + 1) * sizeof *exp);
    expected_rows(ds, pc->max_seq_len, pc->append_eot, exp, &dropped);
    CHECK(lcm_plan_num_rows(p) == n_exp);
    CHECK(lcm_plan_num_dropped(p) == dropped);
    int64_t all_targets = 0;
    for (uint64_t i = 0; i < f.n_mb; i++) {
        const lcm_row *r = f.rows + f.mb_first[i];
        uint64_t n = f.mb_first[i + 1] - f.mb_first[i];
        int longest = 0;
        int64_t targets = 0;
        for (uint64_t j = 0; j < n; j++) {
            if ((int)r[j].len > longest) longest = (int)r[j].len;
            targets += r[j].len - 1;
            /* Training micro-batches come out of a length-sorted bucket: longest first. */
            if (pc->mode == LCM_PLAN_TRAIN && j > 0 && r[j].len > r[j - 1].len) bad++;
        }
        all_targets += targets;
        if (n < 1 || (int64_t)n * longest > pc->max_tokens || (int)n > lcm_plan_max_rows(p) ||
            longest != f.max_len[i] || targets != f.targets[i]) {
            if (!bad) fprintf(stderr, "  epoch %llu micro-batch %llu: %llu rows x %d > %lld or bad sizes\n",
                              (unsigned long long)epoch, (unsigned long long)i, (unsigned long long)n, longest,
                              (long long)pc->max_tokens);
            bad++;
        }
    }
    CHECK(all_targets == lcm_plan_num_targets(p));
    /* Each expected row exactly once: sorted by (doc, start) the epoch is the expected list. */
    CHECK(f.n_rows == n_exp);
    if (f.n_rows == n_exp) {
        if (pc->mode == LCM_PLAN_EVAL && !same_rows(f.rows, exp, n_exp)) {
            fprintf(stderr, "  EVAL epoch is not in dataset order\n");
            bad++;
        }
        qsort(f.rows, f.n_rows, sizeof *f.rows, row_cmp);
        if (!same_rows(f.rows, exp, n_exp)) {
            fprintf(stderr, "  epoch %llu: rows are not each expected row once\n", (unsigned long long)epoch);
            bad++;
        }
    }
    free(exp);
    flat_free(&f);
    return bad;
}

/* ---- tests ------------------------------------------------------------------------------------- */

TEST(rows_wrap_documents_exactly) {
    /* Hand-checked case: msl 4, docs of 0, 1, 3, 4, 9 concepts, with EOT: sequences of 1, 2, 4, 5, 10
     * -> rows (doc 1: 0+2), (doc 2: 0+4), (doc 3: 0+4, 4+1 dropped), (doc 4: 0+4, 4+4, 8+2);
     * doc 0 (EOT only) dropped. */
    uint64_t lens[] = {0, 1, 3, 4, 9};
    lcm_dataset ds = make_dataset(5, lens, 2, 1);
    lcm_plan_config pc = {LCM_PLAN_EVAL, 4, 100, 1, 0, 1, 0};
    lcm_plan *p = NULL;
    lcm_error err = {0};
    CHECK_OK(lcm_plan_create(&p, &ds, &pc, &err), &err);
    if (!p) return;
    CHECK(lcm_plan_num_rows(p) == 6);
    CHECK(lcm_plan_num_dropped(p) == 2);
    CHECK(lcm_plan_num_targets(p) == 1 + 3 + 3 + 3 + 3 + 1);
    flat_epoch f;
    CHECK(flat_get(p, 0, &f) == 0);
    lcm_row want[] = {{1, 0, 2}, {2, 0, 4}, {3, 0, 4}, {4, 0, 4}, {4, 4, 4}, {4, 8, 2}};
    CHECK(f.n_rows == 6 && same_rows(f.rows, want, 6));
    flat_free(&f);
    lcm_plan_free(p);
    /* Without EOT the same documents give 0, 1, 3, 4, 9 concepts. */
    pc.append_eot = 0;
    CHECK_OK(lcm_plan_create(&p, &ds, &pc, &err), &err);
    if (!p) return;
    CHECK(lcm_plan_num_rows(p) == 4);   /* (2: 0+3) (3: 0+4) (4: 0+4, 4+4), 8+1 dropped */
    CHECK(lcm_plan_num_dropped(p) == 2); /* doc 1 and the tail of doc 4 */
    lcm_plan_free(p);
    free_dataset(&ds);
}

TEST(invariants_on_random_datasets) {
    int msls[] = {2, 3, 8, 16};
    int64_t toks[] = {16, 24, 40, 100};
    for (int k = 0; k < 8; k++) {
        int msl = msls[k % 4];
        lcm_dataset ds = random_dataset(100 + (uint64_t)k, 40 + 10 * (uint64_t)k, msl);
        for (int mode = 0; mode < 2; mode++)
            for (int shuffle = 0; shuffle < 2; shuffle++)
                for (int eot = 0; eot < 2; eot++) {
                    lcm_plan_config pc = train_config(msl, toks[(k / 2) % 4], 7 + (uint64_t)k);
                    pc.mode = mode ? LCM_PLAN_EVAL : LCM_PLAN_TRAIN;
                    pc.shuffle = shuffle;
                    pc.append_eot = eot;
                    pc.bucket_factor = 1 + k % 3;
                    lcm_plan *p = NULL;
                    lcm_error err = {0};
                    CHECK_OK(lcm_plan_create(&p, &ds, &pc, &err), &err);
                    if (!p) continue;
                    for (uint64_t e = 0; e < 3; e++)
                        CHECKF(check_epoch(p, &ds, &pc, e) == 0, "dataset %d mode %d shuffle %d eot %d epoch %llu",
                               k, mode, shuffle, eot, (unsigned long long)e);
                    lcm_plan_free(p);
                }
        free_dataset(&ds);
    }
}

/* ---- independent reference groupings (no shuffle), straight from the spec ----------------------- */

static const lcm_row *ref_rows_base;
static int ref_len_desc_stable(const void *x, const void *y) {
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    if (ref_rows_base[a].len != ref_rows_base[b].len) return ref_rows_base[a].len > ref_rows_base[b].len ? -1 : 1;
    return a < b ? -1 : a > b;
}

/* Unshuffled training: buckets of >= bf * max_tokens concepts, sorted longest first (stable),
 * micro-batches while (rows + 1) * first length <= max_tokens. Returns micro-batch count, fills
 * rows_out (in epoch order) and mb_first. */
static uint64_t ref_train(const lcm_row *rows, uint64_t n, const lcm_plan_config *pc, lcm_row *rows_out,
                          uint64_t *mb_first) {
    uint64_t *idx = malloc(n * sizeof *idx);
    uint64_t n_mb = 0, b0 = 0, out = 0;
    ref_rows_base = rows;
    while (b0 < n) {
        uint64_t b1 = b0, nb = 0;
        int64_t c = 0;
        while (b1 < n && c < pc->bucket_factor * pc->max_tokens) {
            c += rows[b1].len;
            idx[nb++] = b1++;
        }
        qsort(idx, nb, sizeof *idx, ref_len_desc_stable);
        for (uint64_t i = 0; i < nb;) {
            int64_t first = rows[idx[i]].len, taken = 0;
            mb_first[n_mb++] = out;
            while (i < nb && (taken + 1) * first <= pc->max_tokens) {
                rows_out[out++] = rows[idx[i++]];
                taken++;
            }
        }
        b0 = b1;
    }
    mb_first[n_mb] = out;
    free(idx);
    return n_mb;
}

static uint64_t ref_eval(const lcm_row *rows, uint64_t n, int64_t max_tokens, uint64_t *mb_first) {
    uint64_t n_mb = 0;
    for (uint64_t i = 0; i < n;) {
        int64_t longest = 0, taken = 0;
        mb_first[n_mb++] = i;
        while (i < n) {
            int64_t l = rows[i].len > longest ? rows[i].len : longest;
            if ((taken + 1) * l > max_tokens) break;
            longest = l;
            taken++;
            i++;
        }
    }
    mb_first[n_mb] = n;
    return n_mb;
}

TEST(unshuffled_grouping_matches_the_spec) {
    for (int k = 0; k < 4; k++) {
        int msl = 3 + 4 * k;
        lcm_dataset ds = random_dataset(500 + (uint64_t)k, 60, msl);
        uint64_t dropped;
        uint64_t n = expected_rows(&ds, msl, 1, NULL, &dropped);
        lcm_row *rows = malloc(n * sizeof *rows), *ref = malloc(n * sizeof *ref);
        uint64_t *ref_first = malloc((n + 1) * sizeof *ref_first);
        expected_rows(&ds, msl, 1, rows, &dropped);
        for (int mode = 0; mode < 2; mode++) {
            lcm_plan_config pc = train_config(msl, 2 * msl + 5 * k, 1);
            pc.shuffle = 0;
            pc.bucket_factor = 1 + k;
            pc.mode = mode ? LCM_PLAN_EVAL : LCM_PLAN_TRAIN;
            uint64_t n_mb;
            if (mode) {
                n_mb = ref_eval(rows, n, pc.max_tokens, ref_first);
                memcpy(ref, rows, n * sizeof *ref);
            } else {
                n_mb = ref_train(rows, n, &pc, ref, ref_first);
            }
            lcm_plan *p = NULL;
            lcm_error err = {0};
            CHECK_OK(lcm_plan_create(&p, &ds, &pc, &err), &err);
            if (!p) continue;
            for (uint64_t e = 0; e < 2; e++) {
                flat_epoch f;
                CHECK(flat_get(p, e, &f) == 0);
                CHECKF(f.n_mb == n_mb && f.n_rows == n && same_rows(f.rows, ref, n) &&
                           memcmp(f.mb_first, ref_first, (n_mb + 1) * sizeof *ref_first) == 0,
                       "dataset %d mode %d epoch %llu: %llu micro-batches, reference %llu", k, mode,
                       (unsigned long long)e, (unsigned long long)f.n_mb, (unsigned long long)n_mb);
                flat_free(&f);
            }
            lcm_plan_free(p);
        }
        free(rows);
        free(ref);
        free(ref_first);
        free_dataset(&ds);
    }
}

TEST(seed_and_epoch_decide_the_order) {
    lcm_dataset ds = random_dataset(42, 80, 8);
    lcm_plan_config pc = train_config(8, 32, 1234);
    lcm_plan *a = NULL, *b = NULL, *c = NULL;
    lcm_error err = {0};
    CHECK_OK(lcm_plan_create(&a, &ds, &pc, &err), &err);
    CHECK_OK(lcm_plan_create(&b, &ds, &pc, &err), &err);
    pc.seed = 1235;
    CHECK_OK(lcm_plan_create(&c, &ds, &pc, &err), &err);
    if (!a || !b || !c) return;
    flat_epoch fa[3], fb[3], fc[3];
    /* b reads its epochs in another order, so its cache holds other epochs when it computes them. */
    for (uint64_t e = 0; e < 3; e++) CHECK(flat_get(a, e, &fa[e]) == 0);
    for (int e = 2; e >= 0; e--) CHECK(flat_get(b, (uint64_t)e, &fb[e]) == 0);
    for (uint64_t e = 0; e < 3; e++) CHECK(flat_get(c, e, &fc[e]) == 0);
    for (int e = 0; e < 3; e++) {
        CHECKF(flat_equal(&fa[e], &fb[e]), "epoch %d differs between two plans with one seed", e);
        CHECKF(!flat_equal(&fa[e], &fc[e]), "epoch %d is the same for seeds 1234 and 1235", e);
        CHECKF(!flat_equal(&fa[e], &fa[(e + 1) % 3]), "epochs %d and %d are the same", e, (e + 1) % 3);
    }
    /* Recomputing an evicted epoch (read 5 later ones first) gives the same epoch again. */
    for (uint64_t e = 3; e < 8; e++) {
        uint64_t n;
        CHECK_OK(lcm_plan_epoch_size(a, e, &n, &err), &err);
    }
    flat_epoch again;
    CHECK(flat_get(a, 0, &again) == 0);
    CHECK(flat_equal(&again, &fa[0]));
    flat_free(&again);
    for (int e = 0; e < 3; e++) {
        flat_free(&fa[e]);
        flat_free(&fb[e]);
        flat_free(&fc[e]);
    }
    lcm_plan_free(a);
    lcm_plan_free(b);
    lcm_plan_free(c);
    free_dataset(&ds);
}

/* How many micro-batches of a also occur in b, as the same rows in the same order. */
static uint64_t shared_microbatches(const flat_epoch *a, const flat_epoch *b) {
    uint64_t shared = 0;
    for (uint64_t i = 0; i < a->n_mb; i++)
        for (uint64_t j = 0; j < b->n_mb; j++) {
            uint64_t n = a->mb_first[i + 1] - a->mb_first[i];
            if (n == b->mb_first[j + 1] - b->mb_first[j] &&
                same_rows(a->rows + a->mb_first[i], b->rows + b->mb_first[j], n)) {
                shared++;
                break;
            }
        }
    return shared;
}

TEST(each_epoch_reshuffles_rows_and_batch_order) {
    lcm_dataset ds = random_dataset(8, 120, 8);
    lcm_error err = {0};
    /* Rows: a new row permutation per epoch regroups the rows, so most micro-batches of epoch 1 are
     * not micro-batches of epoch 0 (shuffling only the batch order would keep all of them). */
    lcm_plan_config pc = train_config(8, 32, 17);
    lcm_plan *p = NULL;
    CHECK_OK(lcm_plan_create(&p, &ds, &pc, &err), &err);
    if (!p) return;
    flat_epoch e0, e1;
    CHECK(flat_get(p, 0, &e0) == 0);
    CHECK(flat_get(p, 1, &e1) == 0);
    CHECKF(shared_microbatches(&e1, &e0) < e1.n_mb / 2, "%llu of %llu micro-batches recur in the next epoch",
           (unsigned long long)shared_microbatches(&e1, &e0), (unsigned long long)e1.n_mb);
    flat_free(&e0);
    flat_free(&e1);
    lcm_plan_free(p);
    /* Batch order: with one bucket holding every row, the grouped micro-batches come out longest
     * first whatever the row permutation, so their shapes in epoch order show the batch permutation:
     * it must not be the sorted order, nor the same in two epochs. */
    pc.bucket_factor = 1000000;
    CHECK_OK(lcm_plan_create(&p, &ds, &pc, &err), &err);
    if (!p) return;
    CHECK(flat_get(p, 0, &e0) == 0);
    CHECK(flat_get(p, 1, &e1) == 0);
    int rises = 0, same_shapes = e0.n_mb == e1.n_mb;
    for (uint64_t i = 0; i + 1 < e0.n_mb; i++) rises += e0.max_len[i + 1] > e0.max_len[i];
    for (uint64_t i = 0; same_shapes && i < e0.n_mb; i++)
        same_shapes = e0.max_len[i] == e1.max_len[i] &&
                      e0.mb_first[i + 1] - e0.mb_first[i] == e1.mb_first[i + 1] - e1.mb_first[i];
    CHECK(rises > 0);
    CHECK(!same_shapes);
    flat_free(&e0);
    flat_free(&e1);
    lcm_plan_free(p);
    free_dataset(&ds);
}

TEST(without_shuffle_every_epoch_is_the_same) {
    lcm_dataset ds = random_dataset(9, 50, 6);
    lcm_plan_config pc = train_config(6, 30, 1);
    pc.shuffle = 0;
    lcm_plan *a = NULL, *b = NULL;
    lcm_error err = {0};
    CHECK_OK(lcm_plan_create(&a, &ds, &pc, &err), &err);
    pc.seed = 2; /* the seed plays no part without shuffle */
    CHECK_OK(lcm_plan_create(&b, &ds, &pc, &err), &err);
    if (!a || !b) return;
    flat_epoch f0, f1, g;
    CHECK(flat_get(a, 0, &f0) == 0);
    CHECK(flat_get(a, 5, &f1) == 0);
    CHECK(flat_get(b, 0, &g) == 0);
    CHECK(flat_equal(&f0, &f1));
    CHECK(flat_equal(&f0, &g));
    flat_free(&f0);
    flat_free(&f1);
    flat_free(&g);
    lcm_plan_free(a);
    lcm_plan_free(b);
    free_dataset(&ds);
}

/* The sequence of micro-batches as one device sees it with take(1), over `count` micro-batches. */
typedef struct mb_seq {
    lcm_microbatch *mb;
    lcm_row *rows;
    int n;
} mb_seq;

static void seq_take_one_by_one(lcm_plan *p, int count, mb_seq *s) {
    lcm_error err = {0};
    int cap = lcm_plan_max_rows(p);
    s->mb = malloc((size_t)count * sizeof *s->mb);
    s->rows = malloc((size_t)count * (size_t)cap * sizeof *s->rows);
    s->n = count;
    lcm_cursor cur = {0, 0};
    for (int i = 0; i < count; i++) {
        CHECK_OK(lcm_plan_take(p, &cur, 1, &s->mb[i], s->rows + (size_t)i * (size_t)cap, (size_t)cap, &err), &err);
        s->mb[i].rows = s->rows + (size_t)i * (size_t)cap; /* stays valid as the buffer is per micro-batch */
    }
}

static void seq_free(mb_seq *s) {
    free(s->mb);
    free(s->rows);
}

static int same_microbatch(const lcm_microbatch *a, const lcm_microbatch *b) {
    return a->epoch == b->epoch && a->index == b->index && a->n_rows == b->n_rows && a->max_len == b->max_len &&
           a->n_targets == b->n_targets && same_rows(a->rows, b->rows, (uint64_t)a->n_rows);
}

TEST(device_shares_partition_each_step) {
    lcm_dataset ds = random_dataset(77, 30, 5);
    lcm_plan_config pc = train_config(5, 20, 99);
    lcm_plan *p = NULL;
    lcm_error err = {0};
    CHECK_OK(lcm_plan_create(&p, &ds, &pc, &err), &err);
    if (!p) return;
    uint64_t epoch_mb;
    CHECK_OK(lcm_plan_epoch_size(p, 0, &epoch_mb, &err), &err);
    const int steps = 2 * (int)epoch_mb / 3 + 3; /* with N*A >= 3 this crosses into epoch 1 and beyond */
    mb_seq ref;
    seq_take_one_by_one(p, steps * 12, &ref);
    int cap = lcm_plan_max_rows(p);
    for (int N = 1; N <= 4; N++)
        for (int A = 1; A <= 3; A++) {
            int per_step = N * A;
            lcm_microbatch *out = malloc((size_t)per_step * sizeof *out);
            lcm_row *buf = malloc((size_t)per_step * (size_t)cap * sizeof *buf);
            lcm_cursor cur = {0, 0};
            int next = 0, bad = 0;
            for (int s = 0; s < steps; s++) {
                CHECK_OK(lcm_plan_take(p, &cur, per_step, out, buf, (size_t)per_step * (size_t)cap, &err), &err);
                /* Device r's share is out[r*A .. r*A+A-1]; reading the shares device by device must
                 * walk the one-device sequence with no gap and no repeat. */
                for (int r = 0; r < N; r++)
                    for (int a = 0; a < A; a++)
                        if (!same_microbatch(&out[r * A + a], &ref.mb[next++])) bad++;
            }
            CHECKF(bad == 0, "N=%d A=%d: %d micro-batches differ from the one-device sequence", N, A, bad);
            if (per_step >= 2) CHECKF(cur.epoch >= 1, "N=%d A=%d: the run did not reach epoch 1", N, A);
            free(out);
            free(buf);
        }
    seq_free(&ref);
    lcm_plan_free(p);
    free_dataset(&ds);
}

TEST(take_crosses_epochs_in_one_call) {
    lcm_dataset ds = random_dataset(5, 20, 4);
    lcm_plan_config pc = train_config(4, 12, 3);
    lcm_plan *p = NULL;
    lcm_error err = {0};
    CHECK_OK(lcm_plan_create(&p, &ds, &pc, &err), &err);
    if (!p) return;
    uint64_t n0, n1;
    CHECK_OK(lcm_plan_epoch_size(p, 0, &n0, &err), &err);
    CHECK_OK(lcm_plan_epoch_size(p, 1, &n1, &err), &err);
    /* From 2 before the end of epoch 0, through all of epoch 1, into epoch 2. */
    int n = (int)n1 + 4;
    int cap = lcm_plan_max_rows(p);
    lcm_microbatch *out = malloc((size_t)n * sizeof *out);
    lcm_row *buf = malloc((size_t)n * (size_t)cap * sizeof *buf);
    lcm_cursor cur = {0, n0 - 2};
    CHECK_OK(lcm_plan_take(p, &cur, n, out, buf, (size_t)n * (size_t)cap, &err), &err);
    for (int i = 0; i < n; i++) {
        uint64_t want_e = i < 2 ? 0 : (uint64_t)i - 2 < n1 ? 1 : 2;
        uint64_t want_i = i < 2 ? n0 - 2 + (uint64_t)i : want_e == 1 ? (uint64_t)i - 2 : (uint64_t)i - 2 - n1;
        CHECKF(out[i].epoch == want_e && out[i].index == want_i, "take %d: got (%llu, %llu), want (%llu, %llu)", i,
               (unsigned long long)out[i].epoch, (unsigned long long)out[i].index, (unsigned long long)want_e,
               (unsigned long long)want_i);
        lcm_microbatch g;
        lcm_row gb[64];
        CHECK_OK(lcm_plan_get(p, out[i].epoch, out[i].index, &g, gb, 64, &err), &err);
        CHECK(same_microbatch(&out[i], &g));
    }
    CHECK(cur.epoch == 2 && cur.index == 2);
    /* A cursor past the end of an epoch (saved with other data settings) is refused. */
    lcm_cursor bad = {0, n0 + 1};
    CHECK_FAILS(lcm_plan_take(p, &bad, 1, out, buf, (size_t)cap, &err), &err, LCM_ERR_DATA, "past the end");
    /* A row buffer too small for the batch is an error, not an overflow. */
    lcm_cursor c0 = {0, 0};
    CHECK_FAILS(lcm_plan_take(p, &c0, 1, out, buf, 0, &err), &err, LCM_ERR_INTERNAL, "lcm_plan_max_rows");
    free(out);
    free(buf);
    lcm_plan_free(p);
    free_dataset(&ds);
}

TEST(cursor_resume_continues_exactly) {
    lcm_dataset ds = random_dataset(31, 25, 5);
    lcm_plan_config pc = train_config(5, 15, 2024);
    const int per_step = 6, steps = 40; /* epochs here are ~20-40 micro-batches: several boundaries */
    lcm_plan *p = NULL;
    lcm_error err = {0};
    CHECK_OK(lcm_plan_create(&p, &ds, &pc, &err), &err);
    if (!p) return;
    int cap = lcm_plan_max_rows(p);
    size_t stride = (size_t)per_step * (size_t)cap;
    lcm_microbatch *full = malloc((size_t)steps * per_step * sizeof *full);
    lcm_row *full_rows = malloc((size_t)steps * stride * sizeof *full_rows);
    lcm_cursor cur = {0, 0};
    for (int s = 0; s < steps; s++)
        CHECK_OK(lcm_plan_take(p, &cur, per_step, full + s * per_step, full_rows + (size_t)s * stride, stride, &err),
                 &err);
    CHECK(cur.epoch >= 2);
    lcm_plan_free(p);
    for (int stop = 1; stop < steps; stop += 7) {
        /* Run `stop` steps, keep only the cursor (as a checkpoint does), rebuild the plan, continue. */
        lcm_microbatch out[6];
        lcm_row *buf = malloc(stride * sizeof *buf);
        lcm_cursor saved = {0, 0};
        CHECK_OK(lcm_plan_create(&p, &ds, &pc, &err), &err);
        for (int s = 0; s < stop; s++) CHECK_OK(lcm_plan_take(p, &saved, per_step, out, buf, stride, &err), &err);
        lcm_plan_free(p);
        CHECK_OK(lcm_plan_create(&p, &ds, &pc, &err), &err);
        int bad = 0;
        for (int s = stop; s < steps; s++) {
            CHECK_OK(lcm_plan_take(p, &saved, per_step, out, buf, stride, &err), &err);
            for (int i = 0; i < per_step; i++) bad += !same_microbatch(&out[i], &full[s * per_step + i]);
        }
        CHECKF(bad == 0, "resumed after %d steps: %d micro-batches differ", stop, bad);
        CHECK(saved.epoch == cur.epoch && saved.index == cur.index);
        lcm_plan_free(p);
        free(buf);
    }
    free(full);
    free(full_rows);
    free_dataset(&ds);
}

static void set_f16(lcm_dataset *ds, const uint16_t *bits, lcm_dtype t) {
    ds->dtype = t;
    free((void *)ds->payload);
    uint16_t *pay = malloc(ds->n_concepts * (uint64_t)ds->dim * sizeof *pay);
    for (uint64_t i = 0; i < ds->n_concepts * (uint64_t)ds->dim; i++) pay[i] = bits[i % 4];
    ds->payload = (const uint8_t *)pay;
}

TEST(batch_fill_places_eot_pads_and_converts) {
    /* msl 4, with EOT: doc 0 (3 concepts) -> row 0+4 ends with the EOT; doc 1 (6) -> rows 0+4 and 4+3,
     * the EOT at position 2 of the second; doc 2 (4) -> row 0+4 of concepts and a dropped EOT row. */
    uint64_t lens[] = {3, 6, 4};
    const int D = 2;
    lcm_dataset ds = make_dataset(3, lens, D, 1);
    lcm_plan_config pc = {LCM_PLAN_EVAL, 4, 1000, 1, 0, 1, 0};
    lcm_plan *p = NULL;
    lcm_error err = {0};
    CHECK_OK(lcm_plan_create(&p, &ds, &pc, &err), &err);
    if (!p) return;
    lcm_microbatch mb;
    lcm_row rows[16];
    CHECK_OK(lcm_plan_get(p, 0, 0, &mb, rows, 16, &err), &err);
    CHECK(mb.n_rows == 4 && mb.max_len == 4);
    /* Widen T to 6 to see padding after every row, not only after the short one. */
    lcm_microbatch wide = mb;
    wide.max_len = 6;
    float x[4 * 6 * 2];
    int32_t lens_out[4];
    uint64_t docs[4];
    memset(x, 0x7f, sizeof x); /* garbage that must be overwritten */
    lcm_batch_fill(&ds, &wide, 1, x, lens_out, docs);
    /* expected concept (global index) at each (row, t); -1 = EOT, -2 = zero padding */
    int want[4][6] = {{0, 1, 2, -1, -2, -2}, {3, 4, 5, 6, -2, -2}, {7, 8, -1, -2, -2, -2}, {9, 10, 11, 12, -2, -2}};
    int want_len[4] = {4, 4, 3, 4};
    uint64_t want_doc[4] = {0, 1, 1, 2};
    int bad = 0;
    for (int b = 0; b < 4; b++) {
        CHECK(lens_out[b] == want_len[b] && docs[b] == want_doc[b]);
        for (int t = 0; t < 6; t++)
            for (int j = 0; j < D; j++) {
                float v = x[(b * 6 + t) * D + j];
                float w = want[b][t] >= 0 ? (float)(want[b][t] * D + j) : want[b][t] == -1 ? ds.eot[j] : 0.0f;
                bad += v != w;
            }
    }
    CHECKF(bad == 0, "%d values misplaced", bad);
    lcm_batch_fill(&ds, &mb, 1, x, lens_out, NULL); /* docs may be NULL */
    CHECK(x[(2 * 4 + 2) * D] == ds.eot[0]);

    /* f16 and bf16 payloads: bit patterns with hand-computed values (one, negative, a fraction that
     * needs every mantissa bit, and the smallest f16 subnormal / the smallest bf16 normal). */
    const uint16_t f16_bits[4] = {0x3C00, 0xC000, 0x3555, 0x0001};
    const float f16_vals[4] = {1.0f, -2.0f, 0.333251953125f, 5.9604644775390625e-8f};
    const uint16_t bf16_bits[4] = {0x3F80, 0xC040, 0x3EAB, 0x0080};
    const float bf16_vals[4] = {1.0f, -3.0f, 0.333984375f, 1.1754943508222875e-38f};
    for (int k = 0; k < 2; k++) {
        set_f16(&ds, k ? bf16_bits : f16_bits, k ? LCM_BF16 : LCM_F16);
        const float *vals = k ? bf16_vals : f16_vals;
        lcm_batch_fill(&ds, &mb, 1, x, lens_out, docs);
        bad = 0;
        for (int b = 0; b < 4; b++)
            for (int t = 0; t < 4; t++)
                for (int j = 0; j < D; j++) {
                    float v = x[(b * 4 + t) * D + j];
                    float w = want[b][t] >= 0 ? vals[(want[b][t] * D + j) % 4] : want[b][t] == -1 ? ds.eot[j] : 0.0f;
                    bad += v != w;
                }
        CHECKF(bad == 0, "%s: %d values wrong", k ? "bf16" : "f16", bad);
    }
    lcm_plan_free(p);
    free_dataset(&ds);
}

TEST(bad_settings_are_errors) {
    uint64_t lens[] = {5, 1};
    lcm_dataset ds = make_dataset(2, lens, 2, 0);
    lcm_plan *p = NULL;
    lcm_error err = {0};
    lcm_plan_config pc = train_config(4, 16, 1);
    CHECK_FAILS(lcm_plan_create(&p, &ds, &pc, &err), &err, LCM_ERR_DATA, "data.append_eot=false");
    CHECK(p == NULL);
    pc.append_eot = 0;
    pc.max_tokens = 3;
    CHECK_FAILS(lcm_plan_create(&p, &ds, &pc, &err), &err, LCM_ERR_CONFIG, "data.max_tokens");
    pc.max_tokens = 16;
    pc.max_seq_len = 1;
    CHECK_FAILS(lcm_plan_create(&p, &ds, &pc, &err), &err, LCM_ERR_CONFIG, "data.max_seq_len");
    pc.max_seq_len = 4;
    pc.bucket_factor = 0;
    CHECK_FAILS(lcm_plan_create(&p, &ds, &pc, &err), &err, LCM_ERR_CONFIG, "data.bucket_factor");
    uint64_t ones[] = {1, 0, 1};
    lcm_dataset tiny = make_dataset(3, ones, 2, 0);
    pc.bucket_factor = 1;
    CHECK_FAILS(lcm_plan_create(&p, &tiny, &pc, &err), &err, LCM_ERR_DATA, "no row of at least 2");
    free_dataset(&tiny);
    free_dataset(&ds);
}

/* ---- threads ------------------------------------------------------------------------------------- */

typedef struct worker {
    lcm_plan *plan;
    int steps, per_step, cap;
    lcm_microbatch *mb; /* [steps * per_step] */
    lcm_row *rows;      /* [steps * per_step * cap] */
    int rc;
} worker;

static void *worker_main(void *arg) {
    worker *w = arg;
    lcm_error err = {0};
    lcm_cursor cur = {0, 0};
    size_t stride = (size_t)w->per_step * (size_t)w->cap;
    for (int s = 0; s < w->steps && w->rc == 0; s++)
        w->rc = lcm_plan_take(w->plan, &cur, w->per_step, w->mb + s * w->per_step, w->rows + (size_t)s * stride,
                              stride, &err);
    return NULL;
}

TEST(four_threads_see_the_same_steps) {
    lcm_dataset ds = random_dataset(321, 30, 6);
    lcm_plan_config pc = train_config(6, 18, 55);
    lcm_plan *shared = NULL, *alone = NULL;
    lcm_error err = {0};
    CHECK_OK(lcm_plan_create(&shared, &ds, &pc, &err), &err);
    CHECK_OK(lcm_plan_create(&alone, &ds, &pc, &err), &err);
    if (!shared || !alone) return;
    /* Free-running threads drift apart by several epochs, so cached epochs get evicted and
     * recomputed while others read: the races the cache must survive. */
    const int steps = 60, per_step = 4;
    worker w[5];
    pthread_t th[4];
    for (int i = 0; i < 5; i++) {
        w[i].plan = i < 4 ? shared : alone;
        w[i].steps = steps;
        w[i].per_step = per_step;
        w[i].cap = lcm_plan_max_rows(shared);
        w[i].mb = malloc((size_t)steps * per_step * sizeof *w[i].mb);
        w[i].rows = malloc((size_t)steps * per_step * (size_t)w[i].cap * sizeof *w[i].rows);
        w[i].rc = 0;
    }
    for (int i = 0; i < 4; i++) CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
    worker_main(&w[4]);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    CHECK(w[4].mb[steps * per_step - 1].epoch >= 3);
    for (int i = 0; i < 4; i++) {
        CHECK(w[i].rc == 0);
        int bad = 0;
        for (int k = 0; k < steps * per_step; k++) bad += !same_microbatch(&w[i].mb[k], &w[4].mb[k]);
        CHECKF(bad == 0, "thread %d: %d micro-batches differ from a single-threaded run", i, bad);
    }
    for (int i = 0; i < 5; i++) {
        free(w[i].mb);
        free(w[i].rows);
    }
    lcm_plan_free(shared);
    lcm_plan_free(alone);
    free_dataset(&ds);
}

TEST(plan_config_from_the_run_config) {
    lcm_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.data.max_seq_len = 96;
    cfg.data.max_tokens = 5000;
    cfg.data.bucket_factor = 3;
    cfg.data.shuffle = 1;
    cfg.data.append_eot = 1;
    cfg.trainer.seed = 77;
    lcm_plan_config pc;
    lcm_plan_config_from(&pc, &cfg, LCM_PLAN_TRAIN);
    CHECK(pc.mode == LCM_PLAN_TRAIN && pc.max_seq_len == 96 && pc.max_tokens == 5000 && pc.bucket_factor == 3 &&
          pc.shuffle == 1 && pc.append_eot == 1 && pc.seed == 77);
    lcm_plan_config_from(&pc, &cfg, LCM_PLAN_EVAL);
    CHECK(pc.mode == LCM_PLAN_EVAL && pc.shuffle == 0 && pc.max_tokens == 5000);
}

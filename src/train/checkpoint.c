/* checkpoint.c: checkpoint directories (atomic, validated, rotated) and reference-layout weights
 * files. See include/lcm/checkpoint.h for the layout and the guarantees. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/checkpoint.h"
#include "lcm/escape.h"
#include "lcm/fileio.h"
#include "lcm/safetensors.h"
#include "lcm/sbuf.h"

#define CKPT_FORMAT "1"
static const char *norm_center = "frontend.sonar_normalizer.center";
static const char *norm_scale = "frontend.sonar_normalizer.scale";

/* ---- weights ---------------------------------------------------------------------------------- */

static int add_weights(lcm_st_writer *w, const lcm_param_table *t, const float *master, const lcm_normalizer *norm,
                       lcm_error *err) {
    for (int i = 0; i < t->n; i++) {
        const lcm_param *p = &t->params[i];
        LCM_TRY(lcm_st_add(w, p->name, LCM_ST_F32, p->ndim, p->shape, master + p->offset, err));
    }
    if (norm && norm->dim > 0) {
        int64_t shape[1] = {norm->dim};
        LCM_TRY(lcm_st_add(w, norm_center, LCM_ST_F32, 1, shape, norm->center, err));
        LCM_TRY(lcm_st_add(w, norm_scale, LCM_ST_F32, 1, shape, norm->scale, err));
    }
    return 0;
}

int lcm_weights_save(const char *path, const lcm_param_table *t, const float *master, const lcm_normalizer *norm,
                     const char *config_text, lcm_error *err) {
    lcm_st_writer *w = lcm_st_writer_new();
    if (!w) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory writing %s", path);
    int rc = lcm_st_add_meta(w, "format", "pt", err);
    if (!rc) rc = lcm_st_add_meta(w, "producer", "lcm " LCM_VERSION, err);
    if (!rc && config_text) rc = lcm_st_add_meta(w, "lcm_config", config_text, err);
    if (!rc) rc = add_weights(w, t, master, norm, err);
    if (!rc) rc = lcm_st_write(w, path, err);
    lcm_st_writer_free(w);
    return rc;
}

static void shape_str(char *out, size_t cap, int ndim, const int64_t *shape) {
    int n = snprintf(out, cap, "[");
    for (int i = 0; i < ndim && n > 0 && (size_t)n < cap; i++)
        n += snprintf(out + n, cap - (size_t)n, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (n > 0 && (size_t)n < cap) snprintf(out + n, cap - (size_t)n, "]");
}

/* Append "name" (escaped: tensor names come from the file) to a bounded, comma-separated list,
 * counting what did not fit. */
static void list_add(char *list, size_t cap, int *count, const char *item) {
    size_t len = strlen(list);
    char shown[LCM_ESC_CAP];
    lcm_escape_str(shown, sizeof shown, item);
    if (*count < 4 && len + strlen(shown) + 3 < cap) snprintf(list + len, cap - len, "%s%s", len ? ", " : "", shown);
    (*count)++;
}

/* "3 missing (a, b, c, ...)" */
static void describe(lcm_sbuf *b, int n, const char *what, const char *list) {
    if (n == 0) return;
    lcm_sbuf_printf(b, "%s%d %s (%s%s)", b->len ? ", " : "", n, what, list, n > 4 ? ", ..." : "");
}

static int load_normalizer_tensors(const lcm_st_file *f, lcm_normalizer *norm, lcm_error *err) {
    norm->dim = 0;
    norm->center = norm->scale = NULL;
    const lcm_st_tensor *c = lcm_st_find(f, norm_center), *s = lcm_st_find(f, norm_scale);
    if (!c && !s) return 0;
    if (!c || !s || c->ndim != 1 || s->ndim != 1 || c->numel != s->numel || c->numel == 0)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: the normalizer tensors %s and %s must both be present, 1-D, same size",
                        f->path, norm_center, norm_scale);
    norm->dim = (int)c->numel;
    norm->center = malloc(c->numel * sizeof(float));
    norm->scale = malloc(s->numel * sizeof(float));
    if (!norm->center || !norm->scale) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory reading %s", f->path);
    LCM_TRY(lcm_st_to_f32(c, norm->center, err));
    return lcm_st_to_f32(s, norm->scale, err);
}

static int load_weights_from(const lcm_st_file *f, const lcm_param_table *t, float *master, lcm_normalizer *norm,
                             lcm_error *err) {
    char missing[512] = "", extra[512] = "", badshape[512] = "";
    int n_missing = 0, n_extra = 0, n_bad = 0;
    for (int i = 0; i < t->n; i++) {
        const lcm_param *p = &t->params[i];
        const lcm_st_tensor *x = lcm_st_find(f, p->name);
        if (!x) {
            list_add(missing, sizeof missing, &n_missing, p->name);
            continue;
        }
        int same = x->ndim == p->ndim && x->numel == p->numel;
        for (int k = 0; same && k < p->ndim; k++) same = x->shape[k] == p->shape[k];
        if (!same) {
            char a[64], b[64], item[256];
            shape_str(a, sizeof a, x->ndim, x->shape);
            shape_str(b, sizeof b, p->ndim, p->shape);
            snprintf(item, sizeof item, "%s is %s, model needs %s", p->name, a, b);
            list_add(badshape, sizeof badshape, &n_bad, item);
        }
    }
    for (int i = 0; i < f->n; i++) {
        const char *name = f->tensors[i].name;
        if (strcmp(name, norm_center) == 0 || strcmp(name, norm_scale) == 0) continue;
        if (!lcm_param_find(t, name)) list_add(extra, sizeof extra, &n_extra, name);
    }
    if (n_missing || n_extra || n_bad) {
        lcm_sbuf msg = {0};
        describe(&msg, n_missing, "missing", missing);
        describe(&msg, n_extra, "unexpected", extra);
        describe(&msg, n_bad, "of the wrong shape", badshape);
        lcm_fail(err, LCM_ERR_FORMAT, "%s does not match the model config: %s; check model.* against the model that "
                 "wrote the file", f->path, msg.s ? msg.s : "");
        lcm_sbuf_free(&msg);
        return LCM_ERR_FORMAT;
    }
    memset(master, 0, t->total * sizeof(float));
    for (int i = 0; i < t->n; i++) {
        const lcm_param *p = &t->params[i];
        LCM_TRY(lcm_st_to_f32(lcm_st_find(f, p->name), master + p->offset, err));
    }
    for (size_t k = 0; k < t->total; k++)
        if (!(master[k] - master[k] == 0))
            return lcm_fail(err, LCM_ERR_DATA, "%s holds NaN or Inf weights; it cannot be trained from", f->path);
    return norm ? load_normalizer_tensors(f, norm, err) : 0;
}

int lcm_weights_load(const char *path, const lcm_param_table *t, float *master, lcm_normalizer *norm, lcm_error *err) {
    lcm_st_file f;
    LCM_TRY(lcm_st_open(&f, path, err));
    int rc = load_weights_from(&f, t, master, norm, err);
    lcm_st_close(&f);
    return rc;
}

/* ---- checkpoint directories ------------------------------------------------------------------ */

static int ckpt_root(const char *run_dir, char *out, size_t cap) { return lcm_path_join(out, cap, run_dir, "checkpoints"); }

/* step_<digits> exactly (not .tmp, not .old): returns the step or -1. */
static int64_t parse_step_dir(const char *name) {
    if (strncmp(name, "step_", 5) != 0 || !name[5]) return -1;
    int64_t v = 0;
    for (const char *p = name + 5; *p; p++) {
        if (*p < '0' || *p > '9' || v > INT64_MAX / 10) return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

typedef struct step_list {
    int n, cap;
    int64_t *steps;
} step_list;

/* The complete checkpoints' steps, ascending; removes step_*.tmp leftovers when clean_tmp. */
static int list_checkpoints(const char *root, step_list *l, int clean_tmp, lcm_error *err) {
    memset(l, 0, sizeof *l);
    DIR *d = opendir(root);
    if (!d) return errno == ENOENT ? 0 : lcm_fail(err, LCM_ERR_IO, "cannot read %s: %s", root, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (clean_tmp && strncmp(e->d_name, "step_", 5) == 0 && len > 4 &&
            (strcmp(e->d_name + len - 4, ".tmp") == 0 || strcmp(e->d_name + len - 4, ".old") == 0)) {
            char path[LCM_PATH_MAX];
            if (lcm_path_join(path, sizeof path, root, e->d_name) == 0) rc = lcm_rm_rf(path, err);
            continue;
        }
        int64_t s = parse_step_dir(e->d_name);
        if (s < 0) continue;
        if (l->n == l->cap) {
            int cap = l->cap ? 2 * l->cap : 16;
            int64_t *p = realloc(l->steps, (size_t)cap * sizeof *p);
            if (!p) {
                rc = lcm_fail(err, LCM_ERR_NOMEM, "out of memory listing %s", root);
                break;
            }
            l->steps = p;
            l->cap = cap;
        }
        l->steps[l->n++] = s;
    }
    closedir(d);
    for (int i = 1; i < l->n; i++) /* insertion sort: a handful of entries */
        for (int j = i; j > 0 && l->steps[j - 1] > l->steps[j]; j--) {
            int64_t tmp = l->steps[j];
            l->steps[j] = l->steps[j - 1];
            l->steps[j - 1] = tmp;
        }
    return rc;
}

static void step_dir(char *out, size_t cap, const char *root, int64_t step, const char *suffix) {
    snprintf(out, cap, "%s/step_%09" PRId64 "%s", root, step, suffix);
}

static int write_train_state(const char *path, const lcm_param_table *t, const float *m, const float *v,
                             const lcm_train_state *s, const char *config_text, lcm_error *err) {
    lcm_st_writer *w = lcm_st_writer_new();
    if (!w) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory writing %s", path);
    char buf[64];
    int rc = 0;
#define META(key, fmt, val) \
    if (!rc) { snprintf(buf, sizeof buf, fmt, val); rc = lcm_st_add_meta(w, key, buf, err); }
    META("format", "%s", "lcm-train-state");
    META("format_version", "%s", CKPT_FORMAT);
    META("step", "%" PRId64, s->step);
    META("cursor_epoch", "%" PRIu64, s->cursor.epoch);
    META("cursor_index", "%" PRIu64, s->cursor.index);
    META("bad_in_row", "%" PRId64, s->bad_in_row);
    META("bad_total", "%" PRId64, s->bad_total);
    META("concepts_seen", "%" PRId64, s->concepts_seen);
    META("elapsed_s", "%.17g", s->elapsed_s);
    META("config_hash", "%016" PRIx64, s->config_hash);
    META("param_total", "%zu", t->total);
#undef META
    if (!rc && config_text) rc = lcm_st_add_meta(w, "lcm_config", config_text, err);
    int64_t shape[1] = {(int64_t)t->total};
    if (!rc && m) rc = lcm_st_add(w, "adamw.exp_avg", LCM_ST_F32, 1, shape, m, err);
    if (!rc && v) rc = lcm_st_add(w, "adamw.exp_avg_sq", LCM_ST_F32, 1, shape, v, err);
    if (!rc) rc = lcm_st_write(w, path, err);
    lcm_st_writer_free(w);
    return rc;
}

int lcm_checkpoint_save(const char *run_dir, const lcm_param_table *t, const float *master, const float *m,
                        const float *v, const lcm_normalizer *norm, const lcm_train_state *s, const char *config_text,
                        int keep_last, char *out_dir, size_t cap, lcm_error *err) {
    char root[LCM_PATH_MAX], tmp[LCM_PATH_MAX + 32], final[LCM_PATH_MAX + 32], old[LCM_PATH_MAX + 32];
    char file[LCM_PATH_MAX + 64];
    if (ckpt_root(run_dir, root, sizeof root) != 0) return lcm_fail(err, LCM_ERR_IO, "%s: path too long", run_dir);
    LCM_TRY(lcm_mkdir_p(root, err));
    step_dir(tmp, sizeof tmp, root, s->step, ".tmp");
    step_dir(final, sizeof final, root, s->step, "");
    step_dir(old, sizeof old, root, s->step, ".old");
    LCM_TRY(lcm_rm_rf(tmp, err));
    LCM_TRY(lcm_mkdir_p(tmp, err));
    snprintf(file, sizeof file, "%s/model.safetensors", tmp);
    LCM_TRY(lcm_weights_save(file, t, master, norm, config_text, err));
    snprintf(file, sizeof file, "%s/train_state.safetensors", tmp);
    LCM_TRY(write_train_state(file, t, m, v, s, config_text, err));
    LCM_TRY(lcm_fsync_dir(tmp, err));
    /* The commit point: the rename. A checkpoint of the same step already there (a rerun) is moved
     * aside first and removed after. */
    if (lcm_file_exists(final)) {
        LCM_TRY(lcm_rm_rf(old, err));
        if (rename(final, old) != 0) return lcm_fail(err, LCM_ERR_IO, "renaming %s: %s", final, strerror(errno));
    }
    if (rename(tmp, final) != 0) return lcm_fail(err, LCM_ERR_IO, "renaming %s to %s: %s", tmp, final, strerror(errno));
    LCM_TRY(lcm_fsync_dir(root, err));
    LCM_TRY(lcm_rm_rf(old, err));
    if (out_dir) snprintf(out_dir, cap, "%s", final);

    step_list l;
    LCM_TRY(list_checkpoints(root, &l, 0, err));
    int rc = 0;
    for (int i = 0; !rc && i + keep_last < l.n; i++) {
        if (l.steps[i] == s->step) continue;
        char victim[LCM_PATH_MAX + 32];
        step_dir(victim, sizeof victim, root, l.steps[i], "");
        rc = lcm_rm_rf(victim, err);
    }
    free(l.steps);
    return rc;
}

int lcm_checkpoint_latest(const char *run_dir, char *out_dir, size_t cap, int *found, lcm_error *err) {
    *found = 0;
    char root[LCM_PATH_MAX];
    if (ckpt_root(run_dir, root, sizeof root) != 0) return lcm_fail(err, LCM_ERR_IO, "%s: path too long", run_dir);
    step_list l;
    LCM_TRY(list_checkpoints(root, &l, 1, err));
    if (l.n > 0) {
        step_dir(out_dir, cap, root, l.steps[l.n - 1], "");
        *found = 1;
    }
    free(l.steps);
    return 0;
}

/* Strict unsigned/signed integer metadata. */
static int meta_i64(const lcm_st_file *f, const char *key, int64_t *out, lcm_error *err) {
    const char *s = lcm_st_meta(f, key);
    if (!s || !*s) return lcm_fail(err, LCM_ERR_FORMAT, "%s: metadata '%s' is missing; the checkpoint is damaged", f->path, key);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    char shown[LCM_ESC_CAP];
    if (*end || errno)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: metadata %s = '%s' is not an integer", f->path, key,
                        lcm_escape_str(shown, sizeof shown, s));
    *out = v;
    return 0;
}

int lcm_checkpoint_load(const char *dir, const lcm_param_table *t, float *master, float *m, float *v,
                        lcm_normalizer *norm, lcm_train_state *s, lcm_error *err) {
    char path[LCM_PATH_MAX + 64];
    memset(s, 0, sizeof *s);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    LCM_TRY(lcm_weights_load(path, t, master, norm, err));
    snprintf(path, sizeof path, "%s/train_state.safetensors", dir);
    lcm_st_file f;
    LCM_TRY(lcm_st_open(&f, path, err));
    int rc = 0;
    const char *fmt = lcm_st_meta(&f, "format");
    if (!fmt || strcmp(fmt, "lcm-train-state") != 0)
        rc = lcm_fail(err, LCM_ERR_FORMAT, "%s is not an lcm training state", path);
    int64_t tmp = 0;
    if (!rc) rc = meta_i64(&f, "step", &s->step, err);
    if (!rc && !(rc = meta_i64(&f, "cursor_epoch", &tmp, err))) s->cursor.epoch = (uint64_t)tmp;
    if (!rc && !(rc = meta_i64(&f, "cursor_index", &tmp, err))) s->cursor.index = (uint64_t)tmp;
    if (!rc) rc = meta_i64(&f, "bad_in_row", &s->bad_in_row, err);
    if (!rc) rc = meta_i64(&f, "bad_total", &s->bad_total, err);
    if (!rc) rc = meta_i64(&f, "concepts_seen", &s->concepts_seen, err);
    if (!rc && !(rc = meta_i64(&f, "param_total", &tmp, err)) && (size_t)tmp != t->total)
        rc = lcm_fail(err, LCM_ERR_FORMAT, "%s holds optimizer state for %lld parameters, the model has %zu", path,
                      (long long)tmp, t->total);
    if (!rc) {
        const char *e = lcm_st_meta(&f, "elapsed_s"), *h = lcm_st_meta(&f, "config_hash");
        char *end1 = NULL, *end2 = NULL;
        if (e) s->elapsed_s = strtod(e, &end1);
        if (h) s->config_hash = strtoull(h, &end2, 16);
        if (!e || !h || *end1 || *end2) rc = lcm_fail(err, LCM_ERR_FORMAT, "%s: bad elapsed_s/config_hash metadata", path);
    }
    float *dst[2] = {m, v};
    const char *names[2] = {"adamw.exp_avg", "adamw.exp_avg_sq"};
    for (int i = 0; i < 2 && !rc; i++) {
        if (!dst[i]) continue;
        const lcm_st_tensor *x = lcm_st_find(&f, names[i]);
        if (!x || x->dtype != LCM_ST_F32 || x->numel != t->total)
            rc = lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor %s is missing or of the wrong size", path, names[i]);
        else
            rc = lcm_st_to_f32(x, dst[i], err);
    }
    lcm_st_close(&f);
    return rc;
}

int lcm_checkpoint_config_text(const char *dir, char **out, lcm_error *err) {
    char path[LCM_PATH_MAX + 64];
    *out = NULL;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!lcm_file_exists(path)) snprintf(path, sizeof path, "%s", dir); /* a weights file given directly */
    lcm_st_file f;
    LCM_TRY(lcm_st_open(&f, path, err));
    const char *text = lcm_st_meta(&f, "lcm_config");
    int rc = 0;
    if (!text)
        rc = lcm_fail(err, LCM_ERR_FORMAT, "%s carries no lcm config; pass the model's config file too", path);
    else if (!(*out = strdup(text)))
        rc = lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    lcm_st_close(&f);
    return rc;
}

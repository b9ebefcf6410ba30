/* checkpoint.c: checkpoint directories (atomic, verified, rotated) and reference-layout weights
 * files. See include/lcm/checkpoint.h for the layout and the guarantees. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/checkpoint.h"
#include "lcm/escape.h"
#include "lcm/fileio.h"
#include "lcm/log.h"
#include "lcm/safetensors.h"
#include "lcm/sbuf.h"
#include "lcm/st_checksum.h"

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
    if (!rc) rc = lcm_st_add_checksums(w, err);
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

/* Open and check the checksums (a file without any loads with a notice that it is unverified). */
static int open_verified(lcm_st_file *f, const char *path, lcm_st_verify_scope scope, lcm_error *err) {
    LCM_TRY(lcm_st_open(f, path, err));
    int rc = lcm_st_verify(f, scope, NULL, err);
    if (rc) lcm_st_close(f);
    return rc;
}

int lcm_weights_load(const char *path, const lcm_param_table *t, float *master, lcm_normalizer *norm, lcm_error *err) {
    lcm_st_file f;
    if (norm) memset(norm, 0, sizeof *norm); /* an output: freed again if the load fails */
    LCM_TRY(open_verified(&f, path, LCM_ST_VERIFY_ALL, err));
    int rc = load_weights_from(&f, t, master, norm, err);
    lcm_st_close(&f);
    if (rc && norm) lcm_normalizer_free(norm);
    return rc;
}

/* ---- checkpoint directories ------------------------------------------------------------------ */

static int ckpt_root(const char *run_dir, char *out, size_t cap) { return lcm_path_join(out, cap, run_dir, "checkpoints"); }

/* step_<digits><suffix> exactly: returns the step or -1. */
static int64_t parse_step_name(const char *name, const char *suffix) {
    size_t len = strlen(name), slen = strlen(suffix);
    if (strncmp(name, "step_", 5) != 0 || len <= 5 + slen || strcmp(name + len - slen, suffix) != 0) return -1;
    int64_t v = 0;
    for (const char *p = name + 5; p < name + len - slen; p++) {
        if (*p < '0' || *p > '9' || v > INT64_MAX / 10) return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

static void step_dir(char *out, size_t cap, const char *root, int64_t step, const char *suffix) {
    snprintf(out, cap, "%s/step_%09" PRId64 "%s", root, step, suffix);
}

typedef struct step_list {
    int n, cap;
    int64_t *steps;
} step_list;

static int step_list_add(step_list *l, int64_t step) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        int64_t *p = realloc(l->steps, (size_t)cap * sizeof *p);
        if (!p) return -1;
        l->steps = p;
        l->cap = cap;
    }
    l->steps[l->n++] = step;
    return 0;
}

static int step_list_has(const step_list *l, int64_t step) {
    for (int i = 0; i < l->n; i++)
        if (l->steps[i] == step) return 1;
    return 0;
}

/* Leftovers of interrupted saves (clean_tmp): step_N.tmp is an unfinished write and is removed.
 * step_N.old is a checkpoint that a rerun of step N moved aside just before committing its own: if the
 * run died between the two renames, step_N.old is the only copy and is put back; otherwise it is
 * removed. */
static int clean_leftovers(const char *root, step_list *l, step_list *tmp, step_list *old, lcm_error *err) {
    char path[LCM_PATH_MAX + 32], final[LCM_PATH_MAX + 32];
    for (int i = 0; i < old->n; i++) {
        step_dir(path, sizeof path, root, old->steps[i], ".old");
        step_dir(final, sizeof final, root, old->steps[i], "");
        if (!step_list_has(l, old->steps[i]) && rename(path, final) == 0) {
            if (step_list_add(l, old->steps[i]) != 0) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
            lcm_warn("restored %s: a save of the same step was interrupted", final);
            continue;
        }
        LCM_TRY(lcm_rm_rf(path, err));
    }
    for (int i = 0; i < tmp->n; i++) {
        step_dir(path, sizeof path, root, tmp->steps[i], ".tmp");
        LCM_TRY(lcm_rm_rf(path, err));
    }
    return 0;
}

/* The complete checkpoints' steps, ascending (leftovers of interrupted saves handled when clean_tmp). */
static int list_checkpoints(const char *root, step_list *l, int clean_tmp, lcm_error *err) {
    memset(l, 0, sizeof *l);
    step_list tmp = {0}, old = {0};
    DIR *d = opendir(root);
    if (!d) return errno == ENOENT ? 0 : lcm_fail(err, LCM_ERR_IO, "cannot read %s: %s", root, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d)) != NULL) {
        int64_t s;
        int added = 0;
        if ((s = parse_step_name(e->d_name, "")) >= 0) added = step_list_add(l, s);
        else if ((s = parse_step_name(e->d_name, ".tmp")) >= 0) added = step_list_add(&tmp, s);
        else if ((s = parse_step_name(e->d_name, ".old")) >= 0) added = step_list_add(&old, s);
        if (added != 0) rc = lcm_fail(err, LCM_ERR_NOMEM, "out of memory listing %s", root);
    }
    closedir(d);
    if (!rc && clean_tmp) rc = clean_leftovers(root, l, &tmp, &old, err);
    free(tmp.steps);
    free(old.steps);
    for (int i = 1; i < l->n; i++) /* insertion sort: a handful of entries */
        for (int j = i; j > 0 && l->steps[j - 1] > l->steps[j]; j--) {
            int64_t t = l->steps[j];
            l->steps[j] = l->steps[j - 1];
            l->steps[j - 1] = t;
        }
    return rc;
}

/* ---- the training state: written, read, validated ---------------------------------------------- */

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
    META("step_microbatches", "%" PRId64, s->step_microbatches);
#undef META
    if (!rc && config_text) rc = lcm_st_add_meta(w, "lcm_config", config_text, err);
    int64_t shape[1] = {(int64_t)t->total};
    if (!rc && m) rc = lcm_st_add(w, "adamw.exp_avg", LCM_ST_F32, 1, shape, m, err);
    if (!rc && v) rc = lcm_st_add(w, "adamw.exp_avg_sq", LCM_ST_F32, 1, shape, v, err);
    if (!rc) rc = lcm_st_add_checksums(w, err);
    if (!rc) rc = lcm_st_write(w, path, err);
    lcm_st_writer_free(w);
    return rc;
}

static int damaged(const lcm_st_file *f, const char *key, const char *value, const char *why, lcm_error *err) {
    char shown[LCM_ESC_CAP]; /* the value comes from the file */
    return lcm_fail(err, LCM_ERR_FORMAT, "%s: %s = '%.64s' %s: the training state is damaged; resume from another "
                    "checkpoint", f->path, key, value ? lcm_escape_str(shown, sizeof shown, value) : "(missing)", why);
}

/* A decimal integer in [lo, hi]. */
static int meta_int(const lcm_st_file *f, const char *key, int64_t lo, int64_t hi, int64_t *out, lcm_error *err) {
    const char *s = lcm_st_meta(f, key);
    if (!s || !*s) return damaged(f, key, NULL, "is missing", err);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno) return damaged(f, key, s, "is not an integer", err);
    if (v < lo || v > hi) {
        char why[128];
        if (hi == INT64_MAX) snprintf(why, sizeof why, "is out of range (must be >= %" PRId64 ")", lo);
        else snprintf(why, sizeof why, "is out of range (must be %" PRId64 " to %" PRId64 ")", lo, hi);
        return damaged(f, key, s, why, err);
    }
    *out = v;
    return 0;
}

/* The first value of a stored F32 tensor that is not finite (or negative, with nonneg); 0 when none. */
static int find_bad_f32(const lcm_st_tensor *x, int nonneg, uint64_t *at, float *val) {
    for (uint64_t i = 0; i < x->numel; i++) {
        float f;
        memcpy(&f, x->data + 4 * i, 4);
        if (!isfinite(f) || (nonneg && f < 0)) {
            *at = i;
            *val = f;
            return 1;
        }
    }
    return 0;
}

typedef struct state_file {
    lcm_train_state s;
    size_t param_total;
    const lcm_st_tensor *m, *v; /* NULL when the file holds no moments */
} state_file;

/* Every field of train_state.safetensors, checked against the others: a value that no run can have
 * written (a negative step, more skipped steps than steps, a non-finite or negative second moment) is
 * an error naming the field, never a silently wrong resume. */
static int read_state(const lcm_st_file *f, state_file *out, lcm_error *err) {
    memset(out, 0, sizeof *out);
    lcm_train_state *s = &out->s;
    const char *fmt = lcm_st_meta(f, "format"), *ver = lcm_st_meta(f, "format_version");
    if (!fmt || strcmp(fmt, "lcm-train-state") != 0)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s is not an lcm training state (metadata format = '%.64s')", f->path,
                        fmt ? fmt : "(missing)");
    if (!ver || strcmp(ver, CKPT_FORMAT) != 0)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s: format_version = '%.64s'; this lcm reads version " CKPT_FORMAT
                        " (a newer lcm wrote it?)", f->path, ver ? ver : "(missing)");
    int64_t epoch, index, total;
    LCM_TRY(meta_int(f, "step", 0, INT64_MAX, &s->step, err));
    LCM_TRY(meta_int(f, "bad_total", 0, s->step, &s->bad_total, err));
    LCM_TRY(meta_int(f, "bad_in_row", 0, s->bad_total, &s->bad_in_row, err));
    /* Every step trains on at least one target, and every epoch holds at least one. */
    LCM_TRY(meta_int(f, "concepts_seen", s->step, INT64_MAX, &s->concepts_seen, err));
    LCM_TRY(meta_int(f, "cursor_epoch", 0, s->concepts_seen, &epoch, err));
    LCM_TRY(meta_int(f, "cursor_index", 0, INT64_MAX, &index, err));
    LCM_TRY(meta_int(f, "param_total", 1, INT64_MAX, &total, err));
    /* The global batch, for the resume notice; checkpoints of earlier versions do not record it. */
    if (lcm_st_meta(f, "step_microbatches"))
        LCM_TRY(meta_int(f, "step_microbatches", 0, INT64_MAX, &s->step_microbatches, err));
    s->cursor.epoch = (uint64_t)epoch;
    s->cursor.index = (uint64_t)index;
    out->param_total = (size_t)total;
    const char *e = lcm_st_meta(f, "elapsed_s"), *h = lcm_st_meta(f, "config_hash");
    char *end = NULL;
    if (e) s->elapsed_s = strtod(e, &end);
    if (!e || !*e || *end || !isfinite(s->elapsed_s) || s->elapsed_s < 0)
        return damaged(f, "elapsed_s", e, "is not a finite number >= 0", err);
    int hex_ok = h && strlen(h) == 16;
    for (int i = 0; hex_ok && i < 16; i++) hex_ok = (h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f');
    if (!hex_ok) return damaged(f, "config_hash", h, "is not 16 hex digits", err);
    s->config_hash = strtoull(h, NULL, 16);
    const char *names[2] = {"adamw.exp_avg", "adamw.exp_avg_sq"};
    const lcm_st_tensor *x[2];
    for (int i = 0; i < 2; i++) {
        x[i] = lcm_st_find(f, names[i]);
        if (x[i] && (x[i]->dtype != LCM_ST_F32 || x[i]->ndim != 1 || x[i]->numel != out->param_total))
            return lcm_fail(err, LCM_ERR_FORMAT, "%s: tensor %s must be F32 [%zu] (param_total); the training state is "
                            "damaged", f->path, names[i], out->param_total);
    }
    if (!x[0] != !x[1] || f->n != (x[0] ? 2 : 0))
        return lcm_fail(err, LCM_ERR_FORMAT, "%s must hold exactly the tensors adamw.exp_avg and adamw.exp_avg_sq "
                        "(it holds %d tensors); the training state is damaged", f->path, f->n);
    for (int i = 0; x[0] && i < 2; i++) {
        uint64_t at;
        float val;
        if (find_bad_f32(x[i], i == 1, &at, &val))
            return lcm_fail(err, LCM_ERR_FORMAT, "%s: %s[%" PRIu64 "] = %g (%s): the training state is damaged; resume "
                            "from another checkpoint", f->path, names[i], at, (double)val,
                            i == 1 ? "a second moment must be finite and >= 0" : "a moment must be finite");
    }
    out->m = x[0];
    out->v = x[1];
    return 0;
}

/* The two files of one checkpoint were written together, from the same config. */
static int same_run(const lcm_st_file *model, const lcm_st_file *state, lcm_error *err) {
    const char *a = lcm_st_meta(model, "lcm_config"), *b = lcm_st_meta(state, "lcm_config");
    if (a && b && strcmp(a, b) != 0)
        return lcm_fail(err, LCM_ERR_FORMAT, "%s and %s were written by different runs (their lcm_config metadata "
                        "differ): the checkpoint directory is damaged", model->path, state->path);
    return 0;
}

/* Everything that can be checked without the model config: checksums of both files, finite weights,
 * every train_state field. The check resume=auto applies before choosing a checkpoint, and the save
 * applies to the new checkpoint before committing it. */
static int verify_dir(const char *dir, lcm_error *err) {
    char path[LCM_PATH_MAX + 64];
    lcm_st_file model, state;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    LCM_TRY(open_verified(&model, path, LCM_ST_VERIFY_ALL, err));
    int rc = 0;
    for (int i = 0; !rc && i < model.n; i++) {
        uint64_t at;
        float val;
        if (model.tensors[i].dtype == LCM_ST_F32 && find_bad_f32(&model.tensors[i], 0, &at, &val))
            rc = lcm_fail(err, LCM_ERR_DATA, "%s: %.200s[%" PRIu64 "] = %g: the weights are not finite", path,
                          model.tensors[i].name, at, (double)val);
    }
    snprintf(path, sizeof path, "%s/train_state.safetensors", dir);
    if (!rc && !(rc = open_verified(&state, path, LCM_ST_VERIFY_ALL, err))) {
        state_file sf;
        rc = read_state(&state, &sf, err);
        if (!rc) rc = same_run(&model, &state, err);
        lcm_st_close(&state);
    }
    lcm_st_close(&model);
    return rc;
}

/* ---- saving ------------------------------------------------------------------------------------ */

/* What is true of the checkpoints on disk, for error messages that say so: "the last checkpoint,
 * <dir>, is intact (verified)" only after verifying it. */
void lcm_checkpoint_describe_intact(const char *run_dir, char *out, size_t cap) {
    char root[LCM_PATH_MAX], dir[LCM_PATH_MAX + 32];
    step_list l;
    lcm_error e = {0};
    if (ckpt_root(run_dir, root, sizeof root) != 0 || list_checkpoints(root, &l, 0, &e) != 0) {
        snprintf(out, cap, "the checkpoints under %s could not be listed", run_dir);
        return;
    }
    snprintf(out, cap, l.n ? "no checkpoint under %s verifies" : "no checkpoint has been written to %s yet", root);
    for (int i = l.n - 1; i >= 0; i--) {
        step_dir(dir, sizeof dir, root, l.steps[i], "");
        lcm_error_clear(&e);
        if (verify_dir(dir, &e) == 0) {
            snprintf(out, cap, "the last checkpoint, %s, is intact (verified)", dir);
            break;
        }
    }
    free(l.steps);
}

/* Append "; <what is intact>" to an error. */
static int with_intact(lcm_error *err, int rc, const char *run_dir, const char *fmt, ...) {
    if (!err) return rc;
    char what[256], intact[LCM_PATH_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    lcm_checkpoint_describe_intact(run_dir, intact, sizeof intact);
    size_t len = strlen(err->msg);
    snprintf(err->msg + len, sizeof err->msg - len, "; %s; %s", what, intact);
    return rc;
}

/* The first non-finite value of a host array, named by parameter. */
static int check_finite(const lcm_param_table *t, const float *x, const char *what, int nonneg, int64_t step,
                        lcm_error *err) {
    if (!x) return 0;
    for (size_t k = 0; k < t->total; k++) {
        if (isfinite(x[k]) && !(nonneg && x[k] < 0)) continue;
        const char *name = "(padding)";
        size_t at = k;
        for (int i = 0; i < t->n; i++)
            if (k >= t->params[i].offset && k < t->params[i].offset + t->params[i].numel) {
                name = t->params[i].name;
                at = k - t->params[i].offset;
            }
        return lcm_fail(err, LCM_ERR_NUMERIC, "step %" PRId64 ": the %s hold %s[%zu] = %g (must be finite%s)", step,
                        what, name, at, (double)x[k], nonneg ? " and >= 0" : "");
    }
    return 0;
}

/* Write and verify step_<N>.tmp/ (removed again when anything fails). */
static int write_tmp(const char *tmp, const lcm_param_table *t, const float *master, const float *m, const float *v,
                     const lcm_normalizer *norm, const lcm_train_state *s, const char *config_text, lcm_error *err) {
    char file[LCM_PATH_MAX + 64];
    LCM_TRY(lcm_rm_rf(tmp, err));
    int rc = lcm_mkdir_p(tmp, err);
    snprintf(file, sizeof file, "%s/model.safetensors", tmp);
    if (!rc) rc = lcm_weights_save(file, t, master, norm, config_text, err);
    snprintf(file, sizeof file, "%s/train_state.safetensors", tmp);
    if (!rc) rc = write_train_state(file, t, m, v, s, config_text, err);
    if (!rc) rc = lcm_fsync_dir(tmp, err);
    if (!rc && (rc = verify_dir(tmp, err)) != 0) lcm_error_context(err, "reading back the new checkpoint");
    if (rc) {
        lcm_error ignored = {0};
        lcm_rm_rf(tmp, &ignored);
    }
    return rc;
}

int lcm_checkpoint_save(const char *run_dir, const lcm_param_table *t, const float *master, const float *m,
                        const float *v, const lcm_normalizer *norm, const lcm_train_state *s, const char *config_text,
                        int keep_last, char *out_dir, size_t cap, lcm_error *err) {
    char root[LCM_PATH_MAX], tmp[LCM_PATH_MAX + 32], final[LCM_PATH_MAX + 32], old[LCM_PATH_MAX + 32];
    if (ckpt_root(run_dir, root, sizeof root) != 0) return lcm_fail(err, LCM_ERR_IO, "%s: path too long", run_dir);
    /* A non-finite state is never committed: it would replace, and then rotate away, the good ones. */
    int rc = check_finite(t, master, "weights", 0, s->step, err);
    if (!rc) rc = check_finite(t, m, "AdamW first moments", 0, s->step, err);
    if (!rc) rc = check_finite(t, v, "AdamW second moments", 1, s->step, err);
    if (rc) return with_intact(err, rc, run_dir, "this state is not checkpointed");
    LCM_TRY(lcm_mkdir_p(root, err));
    step_dir(tmp, sizeof tmp, root, s->step, ".tmp");
    step_dir(final, sizeof final, root, s->step, "");
    step_dir(old, sizeof old, root, s->step, ".old");
    rc = write_tmp(tmp, t, master, m, v, norm, s, config_text, err);
    if (rc) return with_intact(err, rc, run_dir, "checkpoint step %" PRId64 " was not committed", s->step);
    /* The commit point: the rename. A checkpoint of the same step already there (a rerun) is moved
     * aside first and removed after (a crash in between: lcm_checkpoint_latest puts it back). */
    if (lcm_file_exists(final)) {
        LCM_TRY(lcm_rm_rf(old, err));
        if (rename(final, old) != 0) return lcm_fail(err, LCM_ERR_IO, "renaming %s: %s", final, strerror(errno));
    }
    if (rename(tmp, final) != 0) return lcm_fail(err, LCM_ERR_IO, "renaming %s to %s: %s", tmp, final, strerror(errno));
    LCM_TRY(lcm_fsync_dir(root, err));
    LCM_TRY(lcm_rm_rf(old, err));
    if (out_dir) snprintf(out_dir, cap, "%s", final);

    /* Rotation, only now that the new checkpoint is verified and committed; it is never a victim. */
    step_list l;
    LCM_TRY(list_checkpoints(root, &l, 0, err));
    for (int i = 0; !rc && i + keep_last < l.n; i++) {
        if (l.steps[i] == s->step) continue;
        char victim[LCM_PATH_MAX + 32];
        step_dir(victim, sizeof victim, root, l.steps[i], "");
        rc = lcm_rm_rf(victim, err);
    }
    free(l.steps);
    return rc;
}

/* ---- finding and loading ----------------------------------------------------------------------- */

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

int lcm_checkpoint_latest_verified(const char *run_dir, char *out_dir, size_t cap, int *found, lcm_error *err) {
    *found = 0;
    char root[LCM_PATH_MAX], dir[LCM_PATH_MAX + 32];
    if (ckpt_root(run_dir, root, sizeof root) != 0) return lcm_fail(err, LCM_ERR_IO, "%s: path too long", run_dir);
    step_list l;
    LCM_TRY(list_checkpoints(root, &l, 1, err));
    lcm_error first = {0};
    for (int i = l.n - 1; i >= 0 && !*found; i--) {
        step_dir(dir, sizeof dir, root, l.steps[i], "");
        lcm_error e = {0};
        if (verify_dir(dir, &e) == 0) {
            snprintf(out_dir, cap, "%s", dir);
            *found = 1;
        } else {
            lcm_warn("resume: skipping %s: %s", dir, e.msg);
            if (!first.code) first = e;
        }
    }
    int n = l.n;
    free(l.steps);
    if (n > 0 && !*found)
        return lcm_fail(err, first.code, "none of the %d checkpoint%s under %s verifies (the newest: %s); move them "
                        "aside to start over, or set trainer.resume to a checkpoint directory", n, n > 1 ? "s" : "",
                        root, first.msg);
    return 0;
}

int lcm_checkpoint_load(const char *dir, const lcm_param_table *t, float *master, float *m, float *v,
                        lcm_normalizer *norm, lcm_train_state *s, lcm_error *err) {
    char path[LCM_PATH_MAX + 64];
    memset(s, 0, sizeof *s);
    if (norm) memset(norm, 0, sizeof *norm);
    lcm_st_file model, state;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    LCM_TRY(open_verified(&model, path, LCM_ST_VERIFY_ALL, err));
    int rc = load_weights_from(&model, t, master, norm, err);
    snprintf(path, sizeof path, "%s/train_state.safetensors", dir);
    if (!rc && !(rc = open_verified(&state, path, LCM_ST_VERIFY_ALL, err))) {
        state_file sf;
        rc = read_state(&state, &sf, err);
        if (!rc && sf.param_total != t->total)
            rc = lcm_fail(err, LCM_ERR_FORMAT, "%s holds optimizer state for %zu parameters, the model has %zu", path,
                          sf.param_total, t->total);
        if (!rc && (m || v) && !sf.m)
            rc = lcm_fail(err, LCM_ERR_FORMAT, "%s holds no optimizer moments (adamw.exp_avg, adamw.exp_avg_sq)", path);
        if (!rc) rc = same_run(&model, &state, err);
        if (!rc) {
            *s = sf.s;
            if (m) memcpy(m, sf.m->data, t->total * sizeof(float));
            if (v) memcpy(v, sf.v->data, t->total * sizeof(float));
        }
        lcm_st_close(&state);
    }
    lcm_st_close(&model);
    if (rc && norm) lcm_normalizer_free(norm); /* a failed load leaves nothing to free */
    return rc;
}

int lcm_checkpoint_check_cursor(const char *dir, const lcm_train_state *s, lcm_plan *plan, lcm_error *err) {
    uint64_t size = 0;
    LCM_TRY(lcm_plan_epoch_size(plan, s->cursor.epoch, &size, err));
    if (s->cursor.index > size)
        return lcm_fail(err, LCM_ERR_DATA, "%s/train_state.safetensors: cursor_index = %" PRIu64 " is past the end of "
                        "epoch %" PRIu64 " (%" PRIu64 " micro-batches with this data): the checkpoint was written with "
                        "another dataset or other data.* settings (resume with those), or it is damaged", dir,
                        s->cursor.index, s->cursor.epoch, size);
    return 0;
}

int lcm_checkpoint_config_text(const char *dir, char **out, lcm_error *err) {
    char path[LCM_PATH_MAX + 64];
    *out = NULL;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!lcm_file_exists(path)) snprintf(path, sizeof path, "%s", dir); /* a weights file given directly */
    lcm_st_file f;
    LCM_TRY(open_verified(&f, path, LCM_ST_VERIFY_HEADER, err));
    const char *text = lcm_st_meta(&f, "lcm_config");
    int rc = 0;
    if (!text)
        rc = lcm_fail(err, LCM_ERR_FORMAT, "%s carries no lcm config; pass the model's config file too", path);
    else if (!(*out = strdup(text)))
        rc = lcm_fail(err, LCM_ERR_NOMEM, "out of memory");
    lcm_st_close(&f);
    return rc;
}

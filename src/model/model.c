/* model.c: the Base-LCM layer sequence, written once against the backend op table, and the buffers
 * it runs on. Which op follows which lives here and nowhere else; the backends only implement ops.
 *
 * Forward, for a micro-batch of B rows of T positions (N = B*T; see docs/model.md, "Model"):
 *   xn = (x - center) / scale;  h0 = xn W_pre^T + b_pre
 *   per layer l:  a = rmsnorm(h_l);  qkv = a W_qkv^T + b_qkv;  rope(q, k);  o = attention(qkv)
 *                 h_mid = h_l + dropout(o W_o^T + b_o)
 *                 f = rmsnorm(h_mid);  gi = f W_gi^T + b_gi;  s = silu(gate) * inner
 *                 h_{l+1} = h_mid + dropout(s W_out^T + b_out)
 *   y = rmsnorm(h_L) W_post^T + b_post  (fp32 on every backend, as the loss that reads it)
 * The residual stream keeps every state (h0, h_mid and h_{l+1} of each layer) for the norms' backward;
 * with trainer.recompute = layer it keeps h0 .. h_L only, and the backward reruns layer l's forward (the
 * same ops, written once in layer_forward) into one layer's buffers just before layer l's backward.
 * Backward walks the same sequence in reverse with one residual-gradient buffer dh (fp32: it sums 2L + 1
 * contributions, which bf16 would round at each step): each branch's gradient leaves dropout_backward,
 * passes the branch, and is added back into dh by rmsnorm_backward. */
#include <stdlib.h>
#include <string.h>

#include "lcm/model.h"
#include "lcm/rope.h"
#include "lcm/shard.h"

/* ---- buffers ---------------------------------------------------------------------------------- */

typedef struct carve_item {
    void **ptr;
    size_t count; /* elements */
} carve_item;

/* Lay the items out one after another (each rounded up to `align` elements) from base; returns the
 * elements needed. With base == NULL it only measures. */
static size_t carve(carve_item *items, int n, void *base, size_t elem_bytes, size_t align) {
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (base) *items[i].ptr = (char *)base + off * elem_bytes;
        off += (items[i].count + align - 1) / align * align;
    }
    return off;
}

static size_t max_attention_saved(const lcm_backend_traits *bt, int64_t max_tokens, int max_rows, int max_T, int H) {
    size_t best = 0;
    for (int T = 1; T <= max_T; T++) {
        int64_t B = max_tokens / T;
        if (B > max_rows) B = max_rows;
        if (B < 1) break;
        size_t s = bt->attention_saved_floats((int)B, T, H);
        if (s > best) best = s;
    }
    return best;
}

/* Elements of the model's two activation blocks and of the saved attention values. */
typedef struct model_layout {
    size_t act_elems, f32_elems, saved_floats;
} model_layout;

/* The largest gradient bucket (see lcm_grads_ready_fn): the size of a gradient window. */
static size_t largest_bucket(const lcm_param_table *t, int L) {
    size_t big = t->total - t->final_norm;
    if (t->layers[0].begin > big) big = t->layers[0].begin;
    for (int l = 0; l < L; l++)
        if (t->layers[l].end - t->layers[l].begin > big) big = t->layers[l].end - t->layers[l].begin;
    return big;
}

/* THE carve tables: the model's activation buffers, laid out from acts (act dtype) and acts32 (fp32),
 * or only measured when those are NULL. lcm_model_create_shape allocates what this measures and
 * lcm_model_plan reports it, so the memory plan is the allocation. m holds the shape (d, max_tokens,
 * max_rows, max_T, training, recompute); its buffer pointers are filled in. */
static void layout(lcm_model *m, const lcm_backend_traits *bt, void *acts, float *acts32, model_layout *out) {
    const size_t N = (size_t)m->max_tokens, C = (size_t)m->d.C, D = (size_t)m->d.D, F = (size_t)m->d.F;
    const size_t L = (size_t)m->d.L, ab = bt->act_bytes;
    const int training = m->training, rc = m->recompute == LCM_RECOMPUTE_LAYER;
    /* Layers whose inner activations are kept at once: all of them, or the one being recomputed. */
    const size_t K = rc ? 1 : L;
    m->act_cap = N;
    m->att_saved_cap = max_attention_saved(bt, m->max_tokens, m->max_rows, m->max_T, m->d.H);
    void *dummy = NULL;
    carve_item act_items[] = {
        {&m->xn, N * D},
        {&m->h, (rc ? L + 1 : 2 * L + 1) * N * C}, /* h0, then h_mid (unless recomputed) and h_{l+1} of each layer */
        {&m->hmid, rc ? N * C : 0},
        {&m->anorm, K * N * C},
        {&m->qkv, K * N * 3 * C},
        {&m->attn, K * N * C},
        {&m->fnorm, K * N * C},
        {&m->gi, K * N * 2 * F},
        {&m->sw, K * N * F},
        {&m->branch, N * C},            /* a branch's projection before dropout_add; not kept */
        {&m->hf, N * C},
        {training ? &m->dy : &dummy, training ? N * D : 0},
        {training ? &m->dbranch : &dummy, training ? N * C : 0},
        {training ? &m->dtmp : &dummy, training ? N * C : 0},
        {training ? &m->dbig : &dummy, training ? N * (3 * C > 2 * F ? 3 * C : 2 * F) : 0},
        {training ? &m->dsw : &dummy, training ? N * F : 0},
    };
    out->act_elems = carve(act_items, (int)(sizeof act_items / sizeof act_items[0]), acts, ab, 32);
    if (!rc) m->hmid = NULL;

    /* fp32 side: inputs, normalizer, statistics, predictions, the residual gradient. */
    void *lens_slot = NULL, *dummy32 = NULL;
    carve_item f32_items[] = {
        {(void **)&m->x, N * D},
        {(void **)&m->y, N * D},
        {training ? (void **)&m->dh : &dummy32, training ? N * C : 0},
        {(void **)&m->center, D},
        {(void **)&m->scale, D},
        {(void **)&m->rope, lcm_rope_table_floats(m->max_T, m->d.C / m->d.H)},
        {(void **)&m->loss, 1},
        {(void **)&m->rstd_attn, K * N},
        {(void **)&m->rstd_ffn, K * N},
        {(void **)&m->rstd_final, N},
        {&lens_slot, (size_t)m->max_rows}, /* int32, same size as float */
    };
    out->f32_elems = carve(f32_items, (int)(sizeof f32_items / sizeof f32_items[0]), acts32, sizeof(float), 16);
    m->lens = lens_slot;
    out->saved_floats = K * m->att_saved_cap;
}

static int alloc_block(lcm_model *m, void **out, size_t bytes, const char *what, lcm_error *err) {
    *out = NULL;
    if (bytes == 0) return 0;
    return m->be->ops->alloc(m->be, out, bytes, what, err);
}

/* The RoPE table for positions 0 .. T-1 into dst (device), built once on the host. */
static int upload_rope_table(lcm_backend *be, float *dst, const lcm_dims *d, int T, lcm_error *err) {
    const size_t n = lcm_rope_table_floats(T, d->C / d->H);
    float *host = malloc(n * sizeof(float));
    if (!host)
        return lcm_fail(err, LCM_ERR_NOMEM, "out of host memory for the RoPE table (%zu bytes)", n * sizeof(float));
    lcm_rope_table(host, T, d->C / d->H, d->rope_theta);
    int rc = be->ops->upload(be, dst, host, n * sizeof(float), err);
    if (!rc) rc = be->ops->sync(be, err); /* the upload reads host until then */
    free(host);
    return rc;
}

/* The shape's fields of m, and the checks both planning and creating make. */
static int set_shape(lcm_model *m, const lcm_model_shape *s, const lcm_backend_traits *bt, lcm_error *err) {
    memset(m, 0, sizeof *m);
    m->d = s->d;
    m->training = s->training;
    m->recompute = s->training ? s->recompute : LCM_RECOMPUTE_NONE; /* nothing to recompute without a backward */
    m->max_tokens = s->max_tokens;
    m->max_rows = s->max_rows;
    m->max_T = s->max_T;
    if (s->max_T > s->d.max_seq_len)
        return lcm_fail(err, LCM_ERR_CONFIG, "rows of %d concepts exceed model.max_seq_len %d", s->max_T,
                        s->d.max_seq_len);
    if (s->shard_n < 0 || (s->shard_n > 0 && (s->shard_rank < 0 || s->shard_rank >= s->shard_n)))
        return lcm_fail(err, LCM_ERR_INTERNAL, "shard %d of %d devices does not exist", s->shard_rank, s->shard_n);
    LCM_TRY(lcm_param_table_build(&m->t, &s->d, err));
    /* The optimizer state: every parameter, or this device's slice (shard.h). */
    m->opt_end = m->t.total;
    if (m->training && s->shard_n > 0) {
        lcm_shard sh = lcm_shard_of(m->t.total, s->shard_n, s->shard_rank, LCM_SHARD_ALIGN);
        m->opt_begin = sh.begin;
        m->opt_end = sh.end;
        /* A separate compute copy holds every weight the forward needs, so the fp32 master copy is only
         * what AdamW updates: the slice. (An fp32 backend computes on the master copy: it stays whole.) */
        m->master_sliced = bt->act_bytes != sizeof(float);
    }
    m->grad_window = m->training && s->grad_window ? largest_bucket(&m->t, s->d.L) : 0;
    return 0;
}

/* Elements of the optimizer state this model holds; a device that owns nothing (a tiny model on many
 * devices) still gets one, so that every pointer is valid. */
static size_t opt_elems(const lcm_model *m) { return m->opt_end > m->opt_begin ? m->opt_end - m->opt_begin : 1; }

static void model_bytes(const lcm_model *m, const lcm_backend_traits *bt, const model_layout *lay, lcm_model_bytes *b) {
    const size_t P = m->t.total;
    b->params = P;
    b->master = (m->master_sliced ? opt_elems(m) : P) * sizeof(float);
    b->compute = bt->act_bytes == sizeof(float) ? 0 : P * bt->act_bytes; /* fp32 compute aliases the master */
    /* gradients: all of them, or (trainer.shard 2, one micro-batch) a window of one bucket and the slice */
    b->grads = !m->training ? 0 : (m->grad_window ? m->grad_window + opt_elems(m) : P) * sizeof(float);
    b->moments = m->training ? 2 * opt_elems(m) * sizeof(float) : 0;
    b->acts = lay->act_elems * bt->act_bytes + lay->f32_elems * sizeof(float);
    b->att_saved = lay->saved_floats * sizeof(float);
}

int lcm_model_plan(const lcm_model_shape *s, const lcm_backend_traits *bt, lcm_model_bytes *out, lcm_error *err) {
    lcm_model m;
    LCM_TRY(set_shape(&m, s, bt, err));
    model_layout lay;
    layout(&m, bt, NULL, NULL, &lay);
    model_bytes(&m, bt, &lay, out);
    lcm_param_table_free(&m.t);
    return 0;
}

int lcm_model_create(lcm_model *m, lcm_backend *be, const lcm_dims *d, int64_t max_tokens, int max_rows, int max_T,
                     int training, lcm_error *err) {
    lcm_model_shape s = {*d, max_tokens, max_rows, max_T, training, LCM_RECOMPUTE_NONE, 0, 0, 0};
    return lcm_model_create_shape(m, be, &s, err);
}

int lcm_model_create_shape(lcm_model *m, lcm_backend *be, const lcm_model_shape *s, lcm_error *err) {
    const lcm_backend_traits *bt = be->traits;
    LCM_TRY(set_shape(m, s, bt, err));
    m->be = be;
    model_layout lay;
    layout(m, bt, NULL, NULL, &lay);
    lcm_model_bytes b;
    model_bytes(m, bt, &lay, &b);
    int rc;

    /* Parameters: the compute copy aliases the master copy when the backend computes in fp32. */
    if ((rc = alloc_block(m, (void **)&m->master, b.master, "master weights", err))) goto fail;
    if (b.compute == 0) {
        m->params = m->master;
    } else if ((rc = alloc_block(m, &m->params, b.compute, "weights (compute copy)", err))) {
        goto fail;
    }
    if (m->training) {
        const size_t slice = m->grad_window ? opt_elems(m) * sizeof(float) : 0;
        if ((rc = alloc_block(m, (void **)&m->grads, b.grads - slice, "gradients", err))) goto fail;
        if ((rc = alloc_block(m, (void **)&m->grad_slice, slice, "gradient slice", err))) goto fail;
        if ((rc = alloc_block(m, (void **)&m->m, b.moments / 2, "AdamW first moments", err))) goto fail;
        if ((rc = alloc_block(m, (void **)&m->v, b.moments / 2, "AdamW second moments", err))) goto fail;
    }
    if ((rc = alloc_block(m, &m->acts, lay.act_elems * bt->act_bytes, "activations", err))) goto fail;
    if ((rc = alloc_block(m, (void **)&m->acts32, lay.f32_elems * sizeof(float), "activation statistics", err)))
        goto fail;
    if ((rc = alloc_block(m, (void **)&m->att_saved_block, b.att_saved, "saved attention values", err))) goto fail;
    layout(m, bt, m->acts, m->acts32, &lay);
    m->att_saved = m->att_saved_block;
    if ((rc = upload_rope_table(be, m->rope, &m->d, m->max_T, err))) goto fail;
    return 0;
fail:
    lcm_model_destroy(m);
    return rc;
}

int lcm_model_create_shard(lcm_model *m, lcm_backend *be, const lcm_dims *d, int64_t max_tokens, int max_rows,
                           int max_T, int n, int rank, int grad_window, lcm_error *err) {
    lcm_model_shape s = {*d, max_tokens, max_rows, max_T, 1, LCM_RECOMPUTE_NONE, n, rank, grad_window};
    return lcm_model_create_shape(m, be, &s, err);
}

void lcm_model_destroy(lcm_model *m) {
    if (!m->be) {
        lcm_param_table_free(&m->t);
        return;
    }
    lcm_backend *be = m->be;
    if (m->params && m->params != m->master) be->ops->release(be, m->params);
    void *blocks[] = {m->master, m->grads, m->grad_slice, m->m, m->v, m->acts, m->acts32, m->att_saved_block};
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++)
        if (blocks[i]) be->ops->release(be, blocks[i]);
    lcm_param_table_free(&m->t);
    memset(m, 0, sizeof *m);
}

size_t lcm_model_device_bytes(const lcm_model *m) {
    const model_layout no_activations = {0, 0, 0};
    lcm_model_bytes b;
    model_bytes(m, m->be->traits, &no_activations, &b);
    return b.master + b.compute + b.grads + b.moments;
}

float *lcm_model_master_at(const lcm_model *m, size_t i) {
    return m->master_sliced ? m->master + (i - m->opt_begin) : m->master + i;
}

int lcm_model_set_params(lcm_model *m, const float *host, lcm_error *err) {
    lcm_backend *be = m->be;
    const size_t P = m->t.total;
    if (!m->master_sliced) {
        LCM_TRY(be->ops->upload(be, m->master, host, P * sizeof(float), err));
        if (m->params != m->master) be->ops->f32_to_act(be, m->params, m->master, P);
        return be->ops->sync(be, err);
    }
    /* The compute copy of every weight passes through the slice's buffer, a slice at a time (uploads
     * and conversions are ordered on one stream), then the buffer takes the slice's own values. */
    const size_t chunk = opt_elems(m);
    for (size_t off = 0; off < P; off += chunk) {
        const size_t n = P - off < chunk ? P - off : chunk;
        LCM_TRY(be->ops->upload(be, m->master, host + off, n * sizeof(float), err));
        be->ops->f32_to_act(be, lcm_act_at(be, m->params, off), m->master, n);
    }
    LCM_TRY(be->ops->upload(be, m->master, host + m->opt_begin, (m->opt_end - m->opt_begin) * sizeof(float), err));
    return be->ops->sync(be, err);
}

int lcm_model_get_params(lcm_model *m, float *host, lcm_error *err) {
    if (m->master_sliced)
        return lcm_fail(err, LCM_ERR_INTERNAL, "this device holds the master weights of [%zu, %zu) only: gather the "
                        "slices (lcm_model_master_at)", m->opt_begin, m->opt_end);
    return m->be->ops->download(m->be, host, m->master, m->t.total * sizeof(float), err);
}

int lcm_model_set_normalizer(lcm_model *m, const lcm_normalizer *n, lcm_error *err) {
    if (n->dim != m->d.D)
        return lcm_fail(err, LCM_ERR_CONFIG, "the normalizer has dimension %d but model.sonar_dim is %d", n->dim, m->d.D);
    lcm_backend *be = m->be;
    LCM_TRY(be->ops->upload(be, m->center, n->center, (size_t)n->dim * sizeof(float), err));
    LCM_TRY(be->ops->upload(be, m->scale, n->scale, (size_t)n->dim * sizeof(float), err));
    return be->ops->sync(be, err);
}

int lcm_model_upload_batch(lcm_model *m, const float *x, const int32_t *lens, int B, int T, lcm_error *err) {
    if (B < 1 || T < 1 || B > m->max_rows || T > m->max_T || (int64_t)B * T > m->max_tokens)
        return lcm_fail(err, LCM_ERR_INTERNAL, "micro-batch %d x %d exceeds the model's buffers (%d rows, %d long, %lld positions)",
                        B, T, m->max_rows, m->max_T, (long long)m->max_tokens);
    lcm_backend *be = m->be;
    LCM_TRY(be->ops->upload(be, m->x, x, (size_t)B * T * m->d.D * sizeof(float), err));
    return be->ops->upload(be, m->lens, lens, (size_t)B * sizeof(int32_t), err);
}

/* ---- the layer sequence ----------------------------------------------------------------------- */

/* Views of layer l's buffers for a micro-batch of N positions. */
typedef struct layer_view {
    void *h_in, *h_mid, *h_out;     /* residual states [N, C] */
    void *anorm, *qkv, *attn, *fnorm, *gi, *sw;
    float *rstd_attn, *rstd_ffn, *saved;
    const void *attn_norm, *qkv_w, *qkv_b, *attn_out_w, *attn_out_b;
    const void *ffn_norm, *gi_w, *gi_b, *ffn_out_w, *ffn_out_b;
    float *g_attn_norm, *g_qkv_w, *g_qkv_b, *g_attn_out_w, *g_attn_out_b;
    float *g_ffn_norm, *g_gi_w, *g_gi_b, *g_ffn_out_w, *g_ffn_out_b;
} layer_view;

/* The gradient of parameter element `off`: in the full buffer, or in the window of the bucket being
 * computed (NULL outside it: the forward builds views it never uses the gradients of). */
static float *grad_at(const lcm_model *m, size_t off) {
    if (!m->grads || off < m->grad_base || (m->grad_window && off - m->grad_base >= m->grad_window)) return NULL;
    return m->grads + (off - m->grad_base);
}

/* Windowed gradients: the next bucket [begin, end) takes the window, zeroed (the backward adds into
 * it). The previous bucket's reduction may still read it on the comm stream: wait for that first. */
static void grad_window_at(lcm_model *m, size_t begin, size_t end) {
    if (!m->grad_window) return;
    m->be->ops->compute_wait_comm(m->be);
    m->grad_base = begin;
    m->be->ops->zero(m->be, m->grads, (end - begin) * sizeof(float));
}

static layer_view view_layer(lcm_model *m, int l) {
    lcm_backend *be = m->be;
    const size_t cap = m->act_cap, C = (size_t)m->d.C, F = (size_t)m->d.F;
    const lcm_layer_offsets *o = &m->t.layers[l];
    layer_view v;
    /* recompute = layer: the residual keeps h_0 .. h_L, and every layer's inner buffers are slot 0 */
    const size_t k = m->recompute == LCM_RECOMPUTE_LAYER ? 0 : (size_t)l;
    if (m->recompute == LCM_RECOMPUTE_LAYER) {
        v.h_in = lcm_act_at(be, m->h, (size_t)l * cap * C);
        v.h_mid = m->hmid;
        v.h_out = lcm_act_at(be, m->h, ((size_t)l + 1) * cap * C);
    } else {
        v.h_in = lcm_act_at(be, m->h, (2 * (size_t)l) * cap * C);
        v.h_mid = lcm_act_at(be, m->h, (2 * (size_t)l + 1) * cap * C);
        v.h_out = lcm_act_at(be, m->h, (2 * (size_t)l + 2) * cap * C);
    }
    v.anorm = lcm_act_at(be, m->anorm, k * cap * C);
    v.qkv = lcm_act_at(be, m->qkv, k * cap * 3 * C);
    v.attn = lcm_act_at(be, m->attn, k * cap * C);
    v.fnorm = lcm_act_at(be, m->fnorm, k * cap * C);
    v.gi = lcm_act_at(be, m->gi, k * cap * 2 * F);
    v.sw = lcm_act_at(be, m->sw, k * cap * F);
    v.rstd_attn = m->rstd_attn + k * cap;
    v.rstd_ffn = m->rstd_ffn + k * cap;
    v.saved = m->att_saved + k * m->att_saved_cap;
    v.attn_norm = lcm_act_at(be, m->params, o->attn_norm);
    v.qkv_w = lcm_act_at(be, m->params, o->qkv_w);
    v.qkv_b = lcm_act_at(be, m->params, o->qkv_b);
    v.attn_out_w = lcm_act_at(be, m->params, o->attn_out_w);
    v.attn_out_b = lcm_act_at(be, m->params, o->attn_out_b);
    v.ffn_norm = lcm_act_at(be, m->params, o->ffn_norm);
    v.gi_w = lcm_act_at(be, m->params, o->gi_w);
    v.gi_b = lcm_act_at(be, m->params, o->gi_b);
    v.ffn_out_w = lcm_act_at(be, m->params, o->ffn_out_w);
    v.ffn_out_b = lcm_act_at(be, m->params, o->ffn_out_b);
    v.g_attn_norm = grad_at(m, o->attn_norm);
    v.g_qkv_w = grad_at(m, o->qkv_w);
    v.g_qkv_b = grad_at(m, o->qkv_b);
    v.g_attn_out_w = grad_at(m, o->attn_out_w);
    v.g_attn_out_b = grad_at(m, o->attn_out_b);
    v.g_ffn_norm = grad_at(m, o->ffn_norm);
    v.g_gi_w = grad_at(m, o->gi_w);
    v.g_gi_b = grad_at(m, o->gi_b);
    v.g_ffn_out_w = grad_at(m, o->ffn_out_w);
    v.g_ffn_out_b = grad_at(m, o->ffn_out_b);
    return v;
}

static lcm_dropout_key site_key(lcm_dropout_key key, int layer, int site) {
    key.layer = (uint32_t)layer;
    key.site = (uint32_t)site;
    return key;
}

static void *h_final(lcm_model *m) {
    const size_t states = m->recompute == LCM_RECOMPUTE_LAYER ? (size_t)m->d.L : 2 * (size_t)m->d.L;
    return lcm_act_at(m->be, m->h, states * m->act_cap * (size_t)m->d.C);
}

/* Layer l's forward from v->h_in. whole = 0 stops where the layer's backward no longer needs anything
 * (after SwiGLU): that is the recomputation, which must not touch the residual state h_out. The ops and
 * their inputs are the forward's, so on a deterministic backend the recomputed buffers are the same bits. */
static void layer_forward(lcm_model *m, const layer_view *v, int l, int B, int T, float p, lcm_dropout_key key,
                          int whole) {
    lcm_backend *be = m->be;
    const lcm_backend_ops *op = be->ops;
    const int N = B * T, C = m->d.C, F = m->d.F, H = m->d.H;
    const size_t nC = (size_t)N * C;
    op->rmsnorm_forward(be, v->anorm, v->rstd_attn, v->h_in, v->attn_norm, N, C, m->d.eps);
    op->linear_forward(be, v->qkv, v->anorm, v->qkv_w, v->qkv_b, N, C, 3 * C);
    op->rope_forward(be, v->qkv, m->rope, B, T, C, H);
    op->attention_forward(be, v->attn, v->saved, v->qkv, m->lens, B, T, C, H);
    op->linear_forward(be, m->branch, v->attn, v->attn_out_w, v->attn_out_b, N, C, C);
    op->dropout_add(be, v->h_mid, v->h_in, m->branch, nC, p, site_key(key, l, 0));

    op->rmsnorm_forward(be, v->fnorm, v->rstd_ffn, v->h_mid, v->ffn_norm, N, C, m->d.eps);
    op->linear_forward(be, v->gi, v->fnorm, v->gi_w, v->gi_b, N, C, 2 * F);
    op->swiglu_forward(be, v->sw, v->gi, N, F);
    if (!whole) return;
    op->linear_forward(be, m->branch, v->sw, v->ffn_out_w, v->ffn_out_b, N, F, C);
    op->dropout_add(be, v->h_out, v->h_mid, m->branch, nC, p, site_key(key, l, 1));
}

void lcm_model_forward(lcm_model *m, int B, int T, float p, lcm_dropout_key key) {
    lcm_backend *be = m->be;
    const lcm_backend_ops *op = be->ops;
    const int N = B * T, C = m->d.C, D = m->d.D;

    op->normalize(be, m->xn, m->x, m->center, m->scale, N, D);
    op->linear_forward(be, m->h, m->xn, lcm_act_at(be, m->params, m->t.pre_w), lcm_act_at(be, m->params, m->t.pre_b),
                       N, D, C);
    for (int l = 0; l < m->d.L; l++) {
        layer_view v = view_layer(m, l);
        layer_forward(m, &v, l, B, T, p, key, 1);
    }
    op->rmsnorm_forward(be, m->hf, m->rstd_final, h_final(m), lcm_act_at(be, m->params, m->t.final_norm), N, C,
                        m->d.eps);
    op->linear_forward_f32(be, m->y, m->hf, lcm_act_at(be, m->params, m->t.post_w),
                           lcm_act_at(be, m->params, m->t.post_b), N, C, D);
}

void lcm_model_loss(lcm_model *m, int B, int T, float grad_scale) {
    lcm_backend *be = m->be;
    be->ops->mse_loss(be, m->dy, m->loss, m->y, m->x, m->center, m->scale, m->lens, B, T, m->d.D, grad_scale);
}

int lcm_model_backward(lcm_model *m, int B, int T, float p, lcm_dropout_key key, int accumulate,
                       lcm_grads_ready_fn ready, void *ctx, lcm_error *err) {
    if (!m->training) return lcm_fail(err, LCM_ERR_INTERNAL, "backward on a model built for inference");
    lcm_backend *be = m->be;
    const lcm_backend_ops *op = be->ops;
    const int N = B * T, C = m->d.C, D = m->d.D, F = m->d.F, H = m->d.H;
    const size_t nC = (size_t)N * C;
    const lcm_param_table *t = &m->t;
    /* A window is zeroed per bucket (and reused by every bucket, so its padding is not this bucket's):
     * its ops add. */
    const int acc = accumulate || m->grad_window;

    /* PostNet and the final norm; dh starts as zero and collects the residual gradient. */
    grad_window_at(m, t->final_norm, t->total);
    op->linear_backward(be, m->dtmp, grad_at(m, t->post_w), grad_at(m, t->post_b), m->dy, m->hf, lcm_act_at(be, m->params, t->post_w),
                        N, C, D, acc);
    op->zero(be, m->dh, nC * sizeof(float));
    op->rmsnorm_backward(be, m->dh, grad_at(m, t->final_norm), m->dtmp, h_final(m), lcm_act_at(be, m->params, t->final_norm),
                         m->rstd_final, N, C, acc);
    if (ready) LCM_TRY(ready(ctx, t->final_norm, t->total, err));

    for (int l = m->d.L - 1; l >= 0; l--) {
        grad_window_at(m, t->layers[l].begin, t->layers[l].end);
        layer_view v = view_layer(m, l);
        if (m->recompute == LCM_RECOMPUTE_LAYER) layer_forward(m, &v, l, B, T, p, key, 0);
        /* FFN branch: h_out = h_mid + dropout(ffn(rmsnorm(h_mid))) */
        op->dropout_backward(be, m->dbranch, m->dh, nC, p, site_key(key, l, 1));
        op->linear_backward(be, m->dsw, v.g_ffn_out_w, v.g_ffn_out_b, m->dbranch, v.sw, v.ffn_out_w, N, F, C, acc);
        op->swiglu_backward(be, m->dbig, m->dsw, v.gi, N, F);
        op->linear_backward(be, m->dtmp, v.g_gi_w, v.g_gi_b, m->dbig, v.fnorm, v.gi_w, N, C, 2 * F, acc);
        op->rmsnorm_backward(be, m->dh, v.g_ffn_norm, m->dtmp, v.h_mid, v.ffn_norm, v.rstd_ffn, N, C, acc);
        /* attention branch: h_mid = h_in + dropout(attention(rmsnorm(h_in))) */
        op->dropout_backward(be, m->dbranch, m->dh, nC, p, site_key(key, l, 0));
        op->linear_backward(be, m->dtmp, v.g_attn_out_w, v.g_attn_out_b, m->dbranch, v.attn, v.attn_out_w, N, C, C,
                            acc);
        op->attention_backward(be, m->dbig, m->dtmp, v.qkv, v.attn, v.saved, m->lens, B, T, C, H);
        op->rope_backward(be, m->dbig, m->rope, B, T, C, H);
        op->linear_backward(be, m->dtmp, v.g_qkv_w, v.g_qkv_b, m->dbig, v.anorm, v.qkv_w, N, C, 3 * C, acc);
        op->rmsnorm_backward(be, m->dh, v.g_attn_norm, m->dtmp, v.h_in, v.attn_norm, v.rstd_attn, N, C, acc);
        if (ready) LCM_TRY(ready(ctx, t->layers[l].begin, t->layers[l].end, err));
    }
    grad_window_at(m, 0, t->layers[0].begin);
    /* The matmul reads activations: dh as is on an fp32 backend, else converted. */
    void *dh_act = m->dh;
    if (be->act_bytes != sizeof(float)) {
        op->f32_to_act(be, m->dbranch, m->dh, nC);
        dh_act = m->dbranch;
    }
    op->linear_backward(be, NULL, grad_at(m, t->pre_w), grad_at(m, t->pre_b), dh_act, m->xn,
                        lcm_act_at(be, m->params, t->pre_w), N, D, C, acc);
    if (ready) LCM_TRY(ready(ctx, 0, t->layers[0].begin, err));
    return 0;
}

int lcm_model_predictions(lcm_model *m, float *out, int B, int T, lcm_error *err) {
    lcm_backend *be = m->be;
    return be->ops->download(be, out, m->y, (size_t)B * T * m->d.D * sizeof(float), err);
}

/* ---- incremental inference ------------------------------------------------------------------- */

size_t lcm_kv_cache_bytes(const lcm_model *m, int B, int T) {
    return 2 * (size_t)m->d.L * B * T * m->d.C * m->be->act_bytes;
}

int lcm_kv_cache_create(lcm_kv_cache *kv, lcm_model *m, int B, int T, lcm_error *err) {
    memset(kv, 0, sizeof *kv);
    lcm_backend *be = m->be;
    const size_t half = lcm_kv_cache_bytes(m, B, T) / 2;
    size_t free_b = 0, total_b = 0;
    be->ops->mem_info(be, &free_b, &total_b);
    if (total_b > 0 && 2 * half > free_b)
        return lcm_fail(err, LCM_ERR_NOMEM,
                        "the KV cache for %d rows of %d positions needs %.2f GiB but %s %d has %.2f GiB free; lower "
                        "generate.batch_size or generate.max_gen_len (or shorten the prompts with --prompt-len)",
                        B, T, 2 * half / 1073741824.0, be->name, be->device, free_b / 1073741824.0);
    const size_t rope_bytes = lcm_rope_table_floats(T, m->d.C / m->d.H) * sizeof(float);
    if (alloc_block(m, &kv->k, half, "the KV cache (keys)", err) ||
        alloc_block(m, &kv->v, half, "the KV cache (values)", err) ||
        alloc_block(m, (void **)&kv->rope, rope_bytes, "the KV cache's RoPE table", err) ||
        upload_rope_table(be, kv->rope, &m->d, T, err)) {
        lcm_kv_cache_destroy(kv, m);
        return err->code;
    }
    kv->B = B;
    kv->T = T;
    kv->bytes = 2 * half + rope_bytes;
    return 0;
}

void lcm_kv_cache_destroy(lcm_kv_cache *kv, lcm_model *m) {
    if (kv->k) m->be->ops->release(m->be, kv->k);
    if (kv->v) m->be->ops->release(m->be, kv->v);
    if (kv->rope) m->be->ops->release(m->be, kv->rope);
    memset(kv, 0, sizeof *kv);
}

int lcm_model_upload_positions(lcm_model *m, const float *x, int B, int S, lcm_error *err) {
    if (B < 1 || S < 1 || B > m->max_rows || S > m->max_T || (int64_t)B * S > m->max_tokens)
        return lcm_fail(err, LCM_ERR_INTERNAL, "%d x %d new positions exceed the model's buffers (%d rows, %d long, %lld positions)",
                        B, S, m->max_rows, m->max_T, (long long)m->max_tokens);
    return m->be->ops->upload(m->be, m->x, x, (size_t)B * S * m->d.D * sizeof(float), err);
}

/* lcm_model_forward's sequence at p = 0, with RoPE at the absolute positions and attention over the
 * cache; layer l's cache is the l-th [B, T, C] block of kv->k and kv->v. */
void lcm_model_forward_cached(lcm_model *m, lcm_kv_cache *kv, int B, int S, int pos0) {
    lcm_backend *be = m->be;
    const lcm_backend_ops *op = be->ops;
    const int N = B * S, C = m->d.C, D = m->d.D, F = m->d.F, H = m->d.H;
    const size_t nC = (size_t)N * C, layer_cache = (size_t)kv->B * kv->T * C;
    const lcm_dropout_key no_dropout = {0};

    op->normalize(be, m->xn, m->x, m->center, m->scale, N, D);
    op->linear_forward(be, m->h, m->xn, lcm_act_at(be, m->params, m->t.pre_w), lcm_act_at(be, m->params, m->t.pre_b),
                       N, D, C);
    for (int l = 0; l < m->d.L; l++) {
        layer_view v = view_layer(m, l);
        void *kc = lcm_act_at(be, kv->k, (size_t)l * layer_cache), *vc = lcm_act_at(be, kv->v, (size_t)l * layer_cache);
        op->rmsnorm_forward(be, v.anorm, v.rstd_attn, v.h_in, v.attn_norm, N, C, m->d.eps);
        op->linear_forward(be, v.qkv, v.anorm, v.qkv_w, v.qkv_b, N, C, 3 * C);
        op->rope_forward_at(be, v.qkv, kv->rope, B, S, C, H, pos0);
        op->kv_store(be, kc, vc, v.qkv, B, S, C, pos0, kv->T);
        op->attention_cached(be, v.attn, v.qkv, kc, vc, B, S, C, H, pos0, kv->T);
        op->linear_forward(be, m->branch, v.attn, v.attn_out_w, v.attn_out_b, N, C, C);
        op->dropout_add(be, v.h_mid, v.h_in, m->branch, nC, 0.0f, no_dropout);

        op->rmsnorm_forward(be, v.fnorm, v.rstd_ffn, v.h_mid, v.ffn_norm, N, C, m->d.eps);
        op->linear_forward(be, v.gi, v.fnorm, v.gi_w, v.gi_b, N, C, 2 * F);
        op->swiglu_forward(be, v.sw, v.gi, N, F);
        op->linear_forward(be, m->branch, v.sw, v.ffn_out_w, v.ffn_out_b, N, F, C);
        op->dropout_add(be, v.h_out, v.h_mid, m->branch, nC, 0.0f, no_dropout);
    }
    op->rmsnorm_forward(be, m->hf, m->rstd_final, h_final(m), lcm_act_at(be, m->params, m->t.final_norm), N, C,
                        m->d.eps);
    op->linear_forward_f32(be, m->y, m->hf, lcm_act_at(be, m->params, m->t.post_w),
                           lcm_act_at(be, m->params, m->t.post_b), N, C, D);
}

int lcm_model_last_predictions(lcm_model *m, float *out, int B, int T, lcm_error *err) {
    lcm_backend *be = m->be;
    const size_t D = (size_t)m->d.D;
    for (int b = 0; b < B; b++)
        LCM_TRY(be->ops->download(be, out + (size_t)b * D, m->y + ((size_t)b * T + T - 1) * D, D * sizeof(float), err));
    return 0;
}

double lcm_model_flops_per_concept(const lcm_dims *d, int T) {
    const double C = d->C, F = d->F, D = d->D, L = d->L;
    const double matmul_params = L * (4 * C * C + 3 * C * F) + 2 * C * D;
    /* Forward: 2 flops per weight; QK^T and PV: 2 * 2 * C per (query, key) pair, over (T+1)/2 keys on
     * average under the causal mask. Backward costs twice the forward. */
    return 3.0 * (2.0 * matmul_params + L * 4.0 * C * (T + 1) / 2.0);
}

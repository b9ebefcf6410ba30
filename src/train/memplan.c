/* memplan.c: the memory plan (include/lcm/memplan.h) and the step's accumulation from the global
 * batch. Every figure comes from the code that sizes the allocation: the model's carve tables
 * (lcm_model_plan, for the model the worker creates, sharded or not), the loader's ring
 * (lcm_staging_bytes), the backend traits' workspaces. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "lcm/memplan.h"
#include "lcm/model.h"
#include "lcm/shard.h"
#include "lcm/train.h"

const char *lcm_mem_class_name(lcm_mem_class c) {
    static const char *const names[LCM_MEM_NCLASSES] = {
        "master weights", "compute weights", "gradients", "AdamW moments", "activations",
        "saved attention values", "staging ring", "workspaces", "communication buffers",
    };
    return (unsigned)c < LCM_MEM_NCLASSES ? names[c] : "?";
}

/* ---- the global batch ------------------------------------------------------------------------- */

int lcm_step_accum(const lcm_config *cfg, int devices, int *accum, lcm_error *err) {
    const int64_t G = cfg->data.global_batch_tokens, mt = cfg->data.max_tokens;
    if (G == 0) {
        *accum = cfg->trainer.grad_accum;
        return 0;
    }
    if (G % ((int64_t)devices * mt) == 0 && G / ((int64_t)devices * mt) <= 65536) {
        *accum = (int)(G / ((int64_t)devices * mt));
        return 0;
    }
    /* The device counts that divide G / max_tokens, nearest below and above this one. */
    char counts[160] = "", tokens[200] = "";
    if (G % mt == 0) {
        const int64_t M = G / mt;
        int below = 0, above = 0;
        for (int n = devices - 1; n >= 1 && !below; n--) below = M % n == 0 ? n : 0;
        for (int n = devices + 1; n <= LCM_MAX_DEVICES && n <= M && !above; n++) above = M % n == 0 ? n : 0;
        if (below && above) snprintf(counts, sizeof counts, "%d or %d devices", below, above);
        else if (below || above) snprintf(counts, sizeof counts, "%d devices", below ? below : above);
    }
    /* The max_tokens values that divide G / devices, nearest below and above, each >= data.max_seq_len. */
    int64_t lo = 0, hi = 0;
    if (G % devices == 0) {
        const int64_t per = G / devices;
        for (int64_t a = 1; a <= per && a <= 65536; a++) {
            if (per % a) continue;
            const int64_t t = per / a;
            if (t < cfg->data.max_seq_len) break;
            if (t < mt && !lo) lo = t;
            if (t > mt) hi = t;
        }
    }
    if (lo && hi)
        snprintf(tokens, sizeof tokens, "data.max_tokens=%" PRId64 " (grad_accum %" PRId64 ") or %" PRId64
                 " (grad_accum %" PRId64 ")", lo, G / devices / lo, hi, G / devices / hi);
    else if (lo || hi)
        snprintf(tokens, sizeof tokens, "data.max_tokens=%" PRId64 " (grad_accum %" PRId64 ")", lo ? lo : hi,
                 G / devices / (lo ? lo : hi));
    char options[400];
    if (counts[0] && tokens[0])
        snprintf(options, sizeof options, "it divides evenly on %s, or use %s", counts, tokens);
    else if (counts[0])
        snprintf(options, sizeof options, "it divides evenly on %s", counts);
    else if (tokens[0])
        snprintf(options, sizeof options, "use %s", tokens);
    else
        snprintf(options, sizeof options, "choose a multiple of %d x %" PRId64, devices, mt);
    return lcm_fail(err, LCM_ERR_CONFIG,
                    "data.global_batch_tokens = %" PRId64 " is not a whole number of micro-batches of data.max_tokens = %"
                    PRId64 " on %d device%s: %s", G, mt, devices, devices > 1 ? "s" : "", options);
}

/* ---- the plan --------------------------------------------------------------------------------- */

/* The fused attention's workspace (the backend grows it to the largest call's plan): the most any
 * micro-batch shape it runs can ask, B rows of T positions with B x T <= max_tokens, T >= min_T. */
static size_t attention_workspace(const lcm_backend_traits *bt, int64_t max_tokens, int max_rows, int min_T,
                                  int max_T, int H, int hd) {
    size_t best = 0;
    for (int T = min_T; T <= max_T; T++) {
        int64_t B = max_tokens / T;
        if (B > max_rows) B = max_rows;
        if (B < 1) break;
        size_t s = bt->attention_workspace_bytes((int)B, T, H, hd);
        if (s > best) best = s;
    }
    return best;
}

int lcm_memplan_compute(const lcm_memplan_input *in, lcm_memplan *out, lcm_error *err) {
    const lcm_config *cfg = in->cfg;
    memset(out, 0, sizeof *out);
    if (in->shard < 0 || in->shard > 2)
        return lcm_fail(err, LCM_ERR_CONFIG, "shard level %d: use 0 (replicated), 1 or 2", in->shard);
    lcm_dims d;
    LCM_TRY(lcm_dims_from_config(&d, &cfg->model, err));
    LCM_TRY(lcm_step_accum(cfg, in->devices, &out->accum, err));
    const int64_t mt = cfg->data.max_tokens;
    const int max_rows = in->max_rows > 0 ? in->max_rows : (int)(mt < INT32_MAX ? mt : INT32_MAX);
    /* The model the worker creates (worker.c setup): sharded, its slice is rank 0's, the largest. */
    const int sharded = in->shard > 0 && in->devices > 1, window = sharded && in->shard == 2 && out->accum == 1;
    lcm_model_shape shape = {d, mt, max_rows, cfg->data.max_seq_len, 1, cfg->trainer.recompute,
                             sharded ? in->devices : 0, 0, window};
    lcm_model_bytes mb;
    LCM_TRY(lcm_model_plan(&shape, in->bt, &mb, err));
    const size_t P = mb.params;
    out->params = P;
    /* The process's own host memory, P fp32 each: the initial weights every worker reads (trainer.c);
     * rank 0's checkpoint staging of weights and both moments (worker.c), which sharded ranks fill with
     * their slices while every model is alive (a replicated run: at every checkpoint but the last); and
     * the read-back of the checkpoint just written (checkpoint.c verifies both files through mmap, so
     * their pages are resident until it unmaps them: clean page cache the kernel could drop, but
     * resident, and so in the peak a user sees). */
    out->host = 7 * P * sizeof(float);
    out->slice = sharded ? lcm_shard_of(P, in->devices, 0, LCM_SHARD_ALIGN).slice : P;
    size_t *b = out->bytes;
    b[LCM_MEM_MASTER] = mb.master;
    b[LCM_MEM_COMPUTE] = mb.compute;
    b[LCM_MEM_GRADS] = mb.grads;
    b[LCM_MEM_MOMENTS] = mb.moments;
    b[LCM_MEM_ACTS] = mb.acts;
    b[LCM_MEM_ATT_SAVED] = mb.att_saved;
    b[LCM_MEM_STAGING] = lcm_staging_bytes(out->accum, in->validation, mt, max_rows, d.D);
    b[LCM_MEM_WORKSPACE] = in->bt->workspace_bytes(cfg->data.max_seq_len);
    if (cfg->model.attention != LCM_ATTENTION_NATIVE) {
        const int min_T = cfg->model.attention == LCM_ATTENTION_AUTO ? LCM_CUDNN_AUTO_MIN_T : 1;
        b[LCM_MEM_WORKSPACE] += attention_workspace(in->bt, mt, max_rows, min_T, cfg->data.max_seq_len, d.H, d.C / d.H);
    }
    /* the bf16 copy of what is reduced (worker.c): the gradient window and slice, or all gradients */
    if (in->devices > 1 && cfg->trainer.grad_reduce_dtype == LCM_GRAD_REDUCE_BF16)
        b[LCM_MEM_COMM] = mb.grads / sizeof(float) * sizeof(uint16_t);
    for (int c = 0; c < LCM_MEM_NCLASSES; c++) out->total += b[c];
    return 0;
}

static double gb(size_t bytes) { return (double)bytes / 1e9; }

void lcm_memplan_print(const lcm_memplan *p, const lcm_memplan_input *in, FILE *f) {
    const lcm_config *cfg = in->cfg;
    fprintf(f, "memory plan: %s backend, %d device%s, shard %d, recompute %s, data.max_tokens %" PRId64
            ", grad_accum %d\n", in->bt->name, in->devices, in->devices > 1 ? "s" : "", in->shard,
            cfg->trainer.recompute == LCM_RECOMPUTE_LAYER ? "layer" : "none", cfg->data.max_tokens, p->accum);
    fprintf(f, "  parameters         %zu (slice per device %zu)\n", p->params, p->slice);
    fprintf(f, "  per device:\n");
    for (int c = 0; c < LCM_MEM_NCLASSES; c++)
        fprintf(f, "    %-24s %15zu bytes  %8.3f GB\n", lcm_mem_class_name((lcm_mem_class)c), p->bytes[c], gb(p->bytes[c]));
    fprintf(f, "    %-24s %15zu bytes  %8.3f GB\n", "total", p->total, gb(p->total));
    fprintf(f, "  host, once per process (initial weights, checkpoint staging and read-back): %.3f GB\n", gb(p->host));
    if (in->bt->act_bytes == sizeof(float)) /* CPU workers: the devices are the host */
        fprintf(f, "  process total (%d CPU worker%s and the host buffers) %15zu bytes  %8.3f GB\n", in->devices,
                in->devices > 1 ? "s" : "", lcm_memplan_process(p, in), gb(lcm_memplan_process(p, in)));
}

size_t lcm_memplan_process(const lcm_memplan *p, const lcm_memplan_input *in) {
    return p->total * (size_t)in->devices + p->host;
}

/* ---- recomputation that buys nothing ----------------------------------------------------------- */

/* trainer.recompute = layer only trades time (one more forward of every layer per step) for memory, so
 * a run needs it exactly when the same run without it does not fit. That is a fact of the plan and
 * the memory free, not of the model: the same model needs it at 7168 tokens on a 24 GB card and not
 * at 2048 on an 80 GB one. A notice, never a refusal: the run is valid, only slower. */
int lcm_memplan_recompute_note(const lcm_memplan_input *in, size_t avail, char *out, size_t cap, lcm_error *err) {
    out[0] = '\0';
    if (in->cfg->trainer.recompute != LCM_RECOMPUTE_LAYER || avail == 0) return 0;
    lcm_config c = *in->cfg;
    c.trainer.recompute = LCM_RECOMPUTE_NONE;
    lcm_memplan_input ni = *in;
    ni.cfg = &c;
    lcm_memplan with, without;
    LCM_TRY(lcm_memplan_compute(in, &with, err));
    LCM_TRY(lcm_memplan_compute(&ni, &without, err));
    const int host = in->bt->act_bytes == sizeof(float); /* CPU workers: the process holds it all */
    const size_t need = host ? lcm_memplan_process(&without, &ni) : without.total;
    if (need > avail) return 0;
    snprintf(out, cap, "trainer.recompute=layer is not needed here: without it this run needs %.2f GB%s and %.2f GB "
             "are available; recomputation saves %.2f GB per device at the cost of one more forward of every layer "
             "per step (trainer.recompute=none is faster)", gb(need), host ? " on the host" : " per device",
             gb(avail), gb(without.total - with.total));
    return 0;
}

/* ---- advice ----------------------------------------------------------------------------------- */

typedef struct change {
    int shard;
    int recompute;         /* lcm_recompute */
    int64_t max_tokens;
} change;

int lcm_memplan_advice(const lcm_memplan_input *in, size_t avail, char *out, size_t cap, lcm_error *err) {
    out[0] = '\0';
    const lcm_config *cfg = in->cfg;
    int accum0;
    LCM_TRY(lcm_step_accum(cfg, in->devices, &accum0, err));
    /* Cheapest first: recomputation (one more forward), then sharding (more communication), then smaller
     * micro-batches with more accumulation (the same global batch in more, slower pieces). */
    change tries[64];
    int n = 0;
    const int max_shard = in->devices > 1 ? 2 : 0;
    for (int64_t mt = cfg->data.max_tokens, k = 0; k < 4 && mt >= cfg->data.max_seq_len; k++, mt /= 2)
        for (int s = in->shard; s <= max_shard; s++)
            for (int r = (int)cfg->trainer.recompute; r <= LCM_RECOMPUTE_LAYER; r++)
                if (k > 0 || s != in->shard || r != (int)cfg->trainer.recompute)
                    tries[n++] = (change){s, r, mt};
    /* within one micro-batch size: recompute before sharding */
    for (int i = 0; i < n; i++) {
        lcm_config c = *cfg;
        c.trainer.recompute = (lcm_recompute)tries[i].recompute;
        c.data.max_tokens = tries[i].max_tokens;
        const int shrink = (int)(cfg->data.max_tokens / tries[i].max_tokens);
        if (cfg->data.global_batch_tokens == 0) c.trainer.grad_accum = accum0 * shrink;
        lcm_memplan_input ci = *in;
        ci.cfg = &c;
        ci.shard = tries[i].shard;
        lcm_memplan p;
        lcm_error e = {0};
        if (lcm_memplan_compute(&ci, &p, &e) != 0 || p.total > avail) continue;
        char what[160] = "";
        size_t len = 0;
        if (tries[i].shard != in->shard)
            len += (size_t)snprintf(what + len, sizeof what - len, "trainer.shard=%d ", tries[i].shard);
        if (tries[i].recompute != (int)cfg->trainer.recompute)
            len += (size_t)snprintf(what + len, sizeof what - len, "trainer.recompute=layer ");
        if (shrink > 1)
            len += (size_t)snprintf(what + len, sizeof what - len, "data.max_tokens=%" PRId64 " with grad_accum %d ",
                                    tries[i].max_tokens, p.accum);
        snprintf(out, cap, "%sneeds %.1f GB", what, gb(p.total));
        return 0;
    }
    return 0;
}

/* cuda_cudnn.cpp: cuDNN's fused (flash) attention, forward and backward, through the cuDNN frontend's
 * SDPA graph nodes, behind the C interface of cuda_cudnn.h. One C++ file, so that the rest of the
 * backend stays C and CUDA C, and so that a build without cuDNN leaves this file out and nothing else.
 *
 * Layout: cuDNN takes Q, K, V as [B, H, T, hd] tensors with arbitrary strides, so it reads our qkv
 * [B, T, 3C] in place (row stride 3C, head stride hd, Q/K/V at column offsets 0, C, 2C) and writes out
 * [B, T, C] and dqkv [B, T, 3C] the same way: no transposes.
 *
 * Masking: causal (top-left diagonal: key s <= query t) plus the padding mask with seq_len_q = T for every
 * row and seq_len_kv = lens[b]. Every query is "real" to cuDNN, so the outputs and statistics of padding
 * queries are written as the native kernels write them (they attend keys 0 .. lens[b]-1), never left
 * undefined: a NaN there would reach the weight gradients through 0 * NaN.
 *
 * Determinism: the backward asks for cuDNN's deterministic algorithm (set_deterministic_algorithm); its
 * cost is the dP workspace, B x H x T x T bf16, counted by the memory plan (traits.c).
 *
 * Plans: one forward and one backward graph per (B, T, H, hd), built on the first call with that shape
 * and kept for the backend's life; a shape cuDNN cannot take is remembered as such (with why), so the
 * caller falls back or fails once, not on every step.
 *
 * Loading: the frontend's dynamic-loading mode. lcm is not linked against libcudnn (nor NVRTC, which the
 * frontend also uses): libcudnn.so.9 is opened when a backend first asks for cuDNN, so that a binary built
 * with cuDNN starts on machines without it, where model.attention = auto runs the native kernels and says
 * why. */
#define NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING 1

#include <cuda_runtime.h>
#include <cudnn.h>
#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>

#include <cudnn_frontend.h>

#include "cuda_cudnn.h"

extern "C" {
#include "lcm/log.h"
#include "lcm/memplan.h"
}

namespace fe = cudnn_frontend;

/* The frontend's handle on the cuDNN library in dynamic-loading mode (it declares it, the user defines it). */
namespace cudnn_frontend {
void *cudnn_dlhandle = nullptr;
}

namespace {

/* Opens libcudnn.so.9 once per process (the frontend caches the symbols it looks up in it, so the handle
 * must be set before any frontend call and never change). Returns "" or why it could not. */
const std::string &load_cudnn() {
    static std::once_flag once;
    static std::string why;
    std::call_once(once, [] {
        dlerror();
        void *h = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_LOCAL);
        if (h) {
            fe::cudnn_dlhandle = h;
        } else {
            const char *e = dlerror();
            why = std::string("cannot load libcudnn.so.9 (") + (e ? e : "not found") +
                  "): install cuDNN 9, or add the directory that holds it to LD_LIBRARY_PATH";
        }
    });
    return why;
}

enum uid : int64_t { Q_UID = 1, K_UID, V_UID, O_UID, STATS_UID, DO_UID, DQ_UID, DK_UID, DV_UID, SEQ_Q_UID, SEQ_KV_UID };

typedef std::tuple<int, int, int, int> shape_key; /* B, T, H, hd */

struct shape_plans {
    std::shared_ptr<fe::graph::Graph> fwd, bwd;
    int32_t *seq_q = nullptr; /* device int32 [B], all T: every query is real */
    std::string unsupported;  /* non-empty: cuDNN cannot take this shape, and why */
};

void put(char *why, size_t cap, const std::string &s) {
    if (cap) snprintf(why, cap, "%s", s.c_str());
}

/* [B, H, T, hd] over a buffer of rows of `row` elements, head h at column h * hd. */
fe::graph::Tensor_attributes bhtd(const char *name, int64_t id, int B, int T, int H, int hd, int64_t row) {
    return fe::graph::Tensor_attributes()
        .set_name(name)
        .set_uid(id)
        .set_dim({B, H, T, hd})
        .set_stride({(int64_t)T * row, hd, row, 1});
}

fe::graph::Tensor_attributes stats_tensor(int B, int T, int H) {
    return fe::graph::Tensor_attributes()
        .set_name("stats")
        .set_uid(STATS_UID)
        .set_dim({B, H, T, 1})
        .set_stride({(int64_t)H * T, T, 1, 1})
        .set_data_type(fe::DataType_t::FLOAT);
}

fe::graph::Tensor_attributes lens_tensor(const char *name, int64_t id, int B) {
    return fe::graph::Tensor_attributes()
        .set_name(name)
        .set_uid(id)
        .set_dim({B, 1, 1, 1})
        .set_stride({1, 1, 1, 1})
        .set_data_type(fe::DataType_t::INT32);
}

std::shared_ptr<fe::graph::Graph> new_graph() {
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    return g;
}

/* validate .. build_plans; returns the frontend's message on failure. */
std::string finish(fe::graph::Graph &g, cudnnHandle_t h) {
    fe::error_t e = g.validate();
    if (e.is_good()) e = g.build_operation_graph(h);
    if (e.is_good()) e = g.create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK});
    if (e.is_good()) e = g.check_support(h);
    if (e.is_good()) e = g.build_plans(h);
    return e.is_good() ? std::string() : e.get_message();
}

} // namespace

struct lcm_cudnn {
    cudnnHandle_t handle = nullptr;
    cudaStream_t stream = nullptr;
    void *workspace = nullptr;
    size_t workspace_bytes = 0;
    std::map<shape_key, shape_plans> plans;
};

/* Grows the workspace to `need` bytes. cudaFree waits for the device, so work still queued on the old
 * buffer finishes first. */
static int reserve(lcm_cudnn *c, size_t need, char *why, size_t cap) {
    if (need <= c->workspace_bytes) return 0;
    if (c->workspace) cudaFree(c->workspace);
    c->workspace = nullptr;
    c->workspace_bytes = 0;
    cudaError_t e = cudaMalloc(&c->workspace, need);
    if (e != cudaSuccess) {
        cudaGetLastError();
        put(why, cap, "allocating " + std::to_string(need) + " bytes of cuDNN attention workspace: " +
                          cudaGetErrorString(e));
        return LCM_CUDNN_FAILED;
    }
    c->workspace_bytes = need;
    return 0;
}

static void build_forward(shape_plans &p, cudnnHandle_t h, int B, int T, int H, int hd) {
    const int64_t C = (int64_t)H * hd;
    auto g = new_graph();
    auto q = g->tensor(bhtd("Q", Q_UID, B, T, H, hd, 3 * C));
    auto k = g->tensor(bhtd("K", K_UID, B, T, H, hd, 3 * C));
    auto v = g->tensor(bhtd("V", V_UID, B, T, H, hd, 3 * C));
    auto sq = g->tensor(lens_tensor("seq_q", SEQ_Q_UID, B));
    auto skv = g->tensor(lens_tensor("seq_kv", SEQ_KV_UID, B));
    auto opts = fe::graph::SDPA_attributes()
                    .set_name("attention")
                    .set_generate_stats(true)
                    .set_attn_scale((float)(1.0 / std::sqrt((double)hd)))
                    .set_causal_mask(true)
                    .set_padding_mask(true)
                    .set_seq_len_q(sq)
                    .set_seq_len_kv(skv);
    auto [o, stats] = g->sdpa(q, k, v, opts);
    o->set_output(true).set_uid(O_UID).set_dim({B, H, T, hd}).set_stride({(int64_t)T * C, hd, C, 1});
    stats->set_output(true)
        .set_uid(STATS_UID)
        .set_data_type(fe::DataType_t::FLOAT)
        .set_dim({B, H, T, 1})
        .set_stride({(int64_t)H * T, T, 1, 1});
    std::string why = finish(*g, h);
    if (!why.empty())
        p.unsupported = "forward: " + why;
    else
        p.fwd = g;
}

static void build_backward(shape_plans &p, cudnnHandle_t h, int B, int T, int H, int hd) {
    const int64_t C = (int64_t)H * hd;
    auto g = new_graph();
    auto q = g->tensor(bhtd("Q", Q_UID, B, T, H, hd, 3 * C));
    auto k = g->tensor(bhtd("K", K_UID, B, T, H, hd, 3 * C));
    auto v = g->tensor(bhtd("V", V_UID, B, T, H, hd, 3 * C));
    auto o = g->tensor(bhtd("O", O_UID, B, T, H, hd, C));
    auto dout = g->tensor(bhtd("dO", DO_UID, B, T, H, hd, C));
    auto stats = g->tensor(stats_tensor(B, T, H));
    auto sq = g->tensor(lens_tensor("seq_q", SEQ_Q_UID, B));
    auto skv = g->tensor(lens_tensor("seq_kv", SEQ_KV_UID, B));
    auto opts = fe::graph::SDPA_backward_attributes()
                    .set_name("attention_backward")
                    .set_attn_scale((float)(1.0 / std::sqrt((double)hd)))
                    .set_causal_mask(true)
                    .set_padding_mask(true)
                    .set_seq_len_q(sq)
                    .set_seq_len_kv(skv)
                    .set_deterministic_algorithm(true);
    auto [dq, dk, dv] = g->sdpa_backward(q, k, v, o, dout, stats, opts);
    const std::vector<int64_t> dims = {B, H, T, hd}, strides = {(int64_t)T * 3 * C, hd, 3 * C, 1};
    dq->set_output(true).set_uid(DQ_UID).set_dim(dims).set_stride(strides);
    dk->set_output(true).set_uid(DK_UID).set_dim(dims).set_stride(strides);
    dv->set_output(true).set_uid(DV_UID).set_dim(dims).set_stride(strides);
    std::string why = finish(*g, h);
    if (!why.empty())
        p.unsupported = "backward (deterministic): " + why;
    else
        p.bwd = g;
}

/* The plans of one shape, built on first use: both directions at once, so that a shape runs either
 * entirely on cuDNN or entirely on the native kernels. NULL with why filled when it failed outright;
 * an entry with `unsupported` set when cuDNN cannot take the shape. */
static shape_plans *plans_for(lcm_cudnn *c, int B, int T, int H, int hd, char *why, size_t cap) {
    shape_key key(B, T, H, hd);
    auto it = c->plans.find(key);
    if (it != c->plans.end()) return &it->second;
    shape_plans p;
    if (!LCM_CUDNN_HEAD_DIM_OK(hd)) p.unsupported = "head dim " + std::to_string(hd) + " (cuDNN: multiples of 8 up to 128)";
    if (p.unsupported.empty()) build_forward(p, c->handle, B, T, H, hd);
    if (p.unsupported.empty()) build_backward(p, c->handle, B, T, H, hd);
    if (p.unsupported.empty()) {
        int64_t wf = 0, wb = 0;
        if (p.fwd->get_workspace_size(wf).is_bad() || p.bwd->get_workspace_size(wb).is_bad()) {
            put(why, cap, "cuDNN attention: cannot read the plans' workspace size");
            return nullptr;
        }
        const size_t need = (size_t)(wf > wb ? wf : wb);
        const size_t planned = lcm_cuda_traits.attention_workspace_bytes(B, T, H, hd);
        /* what the first GPU runs must compare with the plan's bound (docs/performance.md) */
        lcm_debug("cuDNN attention plans for %d rows of %d, %d heads of %d: workspace %zu bytes (forward %lld, "
                  "backward %lld), the memory plan's bound %zu", B, T, H, hd, need, (long long)wf, (long long)wb,
                  planned);
        if (need > planned)
            p.unsupported = "its plans ask " + std::to_string(need) + " bytes of workspace, more than the memory plan's " +
                            std::to_string(planned);
        else if (reserve(c, need, why, cap) != 0)
            return nullptr;
    }
    if (p.unsupported.empty()) {
        std::vector<int32_t> all_t((size_t)B, T);
        cudaError_t e = cudaMalloc(&p.seq_q, (size_t)B * sizeof(int32_t));
        if (e == cudaSuccess) e = cudaMemcpy(p.seq_q, all_t.data(), (size_t)B * sizeof(int32_t), cudaMemcpyHostToDevice);
        if (e != cudaSuccess) {
            cudaGetLastError();
            if (p.seq_q) cudaFree(p.seq_q);
            put(why, cap, std::string("cuDNN attention: sequence lengths: ") + cudaGetErrorString(e));
            return nullptr;
        }
    }
    return &c->plans.emplace(key, std::move(p)).first->second;
}

/* Runs one graph; the shape's plans are looked up (or built) by the caller. */
static int run(lcm_cudnn *c, const fe::graph::Graph &g, std::unordered_map<int64_t, void *> &pack, const char *what,
               char *why, size_t cap) {
    cudnnStatus_t s = fe::detail::set_stream(c->handle, c->stream);
    if (s != CUDNN_STATUS_SUCCESS) {
        put(why, cap, std::string("cudnnSetStream: ") + fe::detail::get_error_string(s));
        return LCM_CUDNN_FAILED;
    }
    fe::error_t e = g.execute(c->handle, pack, c->workspace);
    if (e.is_bad()) {
        put(why, cap, std::string(what) + ": " + e.get_message());
        return LCM_CUDNN_FAILED;
    }
    return LCM_CUDNN_OK;
}

/* The entry points catch everything: an exception must not cross into C (the frontend's JSON and
 * allocation paths can throw). */
#define GUARD_BEGIN try {
#define GUARD_END                                                                                                  \
    }                                                                                                              \
    catch (const std::exception &ex) {                                                                             \
        put(why, cap, std::string("cuDNN frontend: ") + ex.what());                                                \
        return LCM_CUDNN_FAILED;                                                                                   \
    }                                                                                                              \
    catch (...) {                                                                                                  \
        put(why, cap, "cuDNN frontend: unknown exception");                                                        \
        return LCM_CUDNN_FAILED;                                                                                   \
    }

extern "C" int lcm_cudnn_create(lcm_cudnn **out, int gpu, cudaStream_t stream, char *why, size_t cap) {
    *out = nullptr;
    GUARD_BEGIN
    /* The flash attention engines start at Ampere; older GPUs run the native kernels. */
    int major = 0;
    cudaError_t ce = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, gpu);
    if (ce != cudaSuccess) {
        cudaGetLastError();
        put(why, cap, std::string("reading the GPU's compute capability: ") + cudaGetErrorString(ce));
        return LCM_CUDNN_FAILED;
    }
    if (major < 8) {
        put(why, cap, "GPU " + std::to_string(gpu) + " is sm_" + std::to_string(major) +
                          "x; cuDNN's fused attention needs sm_80 (Ampere) or later");
        return LCM_CUDNN_UNSUPPORTED;
    }
    const std::string &load = load_cudnn();
    if (!load.empty()) {
        put(why, cap, load);
        return LCM_CUDNN_UNSUPPORTED;
    }
    /* The padding mask with causal masking and the deterministic backward need cuDNN 9. */
    if (fe::detail::get_backend_version() < 90000) {
        char v[32];
        lcm_cudnn_version(v, sizeof v);
        put(why, cap, std::string("the cuDNN library loaded is ") + v + "; lcm needs cuDNN 9 or later");
        return LCM_CUDNN_UNSUPPORTED;
    }
    auto c = std::make_unique<lcm_cudnn>();
    cudnnStatus_t s = fe::detail::create_handle(&c->handle);
    if (s != CUDNN_STATUS_SUCCESS) {
        c->handle = nullptr;
        put(why, cap, std::string("cudnnCreate: ") + fe::detail::get_error_string(s));
        return LCM_CUDNN_FAILED;
    }
    c->stream = stream;
    *out = c.release();
    return LCM_CUDNN_OK;
    GUARD_END
}

extern "C" void lcm_cudnn_destroy(lcm_cudnn *c) {
    if (!c) return;
    for (auto &kv : c->plans)
        if (kv.second.seq_q) cudaFree(kv.second.seq_q);
    if (c->workspace) cudaFree(c->workspace);
    if (c->handle) fe::detail::destroy_handle(c->handle);
    delete c;
}

extern "C" void lcm_cudnn_version(char *out, size_t cap) {
    if (!load_cudnn().empty()) {
        snprintf(out, cap, "(not loaded)");
        return;
    }
    size_t v = fe::detail::get_backend_version(); /* major * 10000 + minor * 100 + patch since cuDNN 9 */
    snprintf(out, cap, "%zu.%zu.%zu", v / 10000, v / 100 % 100, v % 100);
}

/* plans_for's plans when cuDNN supports this shape; else NULL with *rc LCM_CUDNN_FAILED (why says) or
 * LCM_CUDNN_UNSUPPORTED (why says what cuDNN lacks). */
static shape_plans *usable_plans(lcm_cudnn *c, int B, int T, int H, int hd, char *why, size_t cap, int *rc) {
    shape_plans *p = plans_for(c, B, T, H, hd, why, cap);
    if (!p) {
        *rc = LCM_CUDNN_FAILED;
        return NULL;
    }
    if (!p->unsupported.empty()) {
        put(why, cap, p->unsupported);
        *rc = LCM_CUDNN_UNSUPPORTED;
        return NULL;
    }
    return p;
}

extern "C" int lcm_cudnn_attention_forward(lcm_cudnn *c, void *out, float *stats, const void *qkv,
                                           const int32_t *lens, int B, int T, int C, int H, char *why, size_t cap) {
    GUARD_BEGIN
    const int hd = C / H;
    int rc = LCM_CUDNN_FAILED;
    shape_plans *p = usable_plans(c, B, T, H, hd, why, cap, &rc);
    if (!p) return rc;
    char *x = (char *)const_cast<void *>(qkv);
    const size_t part = (size_t)C * 2; /* bytes of C bf16 values: Q | K | V within a row */
    std::unordered_map<int64_t, void *> pack = {
        {Q_UID, x}, {K_UID, x + part}, {V_UID, x + 2 * part}, {O_UID, out}, {STATS_UID, stats},
        {SEQ_Q_UID, p->seq_q}, {SEQ_KV_UID, const_cast<int32_t *>(lens)}};
    return run(c, *p->fwd, pack, "cuDNN attention forward", why, cap);
    GUARD_END
}

extern "C" int lcm_cudnn_attention_backward(lcm_cudnn *c, void *dqkv, const void *dout, const void *qkv,
                                            const void *out, const float *stats, const int32_t *lens, int B, int T,
                                            int C, int H, char *why, size_t cap) {
    GUARD_BEGIN
    const int hd = C / H;
    int rc = LCM_CUDNN_FAILED;
    shape_plans *p = usable_plans(c, B, T, H, hd, why, cap, &rc);
    if (!p) return rc;
    /* Keys past lens[b] get zero gradients from the native kernels; cuDNN may skip those rows instead of
     * writing zeros, so the whole of dqkv starts at zero (one memset, small beside the attention). */
    cudaError_t ce = cudaMemsetAsync(dqkv, 0, (size_t)B * T * 3 * C * 2, c->stream);
    if (ce != cudaSuccess) {
        put(why, cap, std::string("clearing dqkv: ") + cudaGetErrorString(ce));
        return LCM_CUDNN_FAILED;
    }
    char *x = (char *)const_cast<void *>(qkv), *dx = (char *)dqkv;
    const size_t part = (size_t)C * 2;
    std::unordered_map<int64_t, void *> pack = {
        {Q_UID, x}, {K_UID, x + part}, {V_UID, x + 2 * part}, {O_UID, const_cast<void *>(out)},
        {DO_UID, const_cast<void *>(dout)}, {STATS_UID, const_cast<float *>(stats)},
        {DQ_UID, dx}, {DK_UID, dx + part}, {DV_UID, dx + 2 * part},
        {SEQ_Q_UID, p->seq_q}, {SEQ_KV_UID, const_cast<int32_t *>(lens)}};
    return run(c, *p->bwd, pack, "cuDNN attention backward", why, cap);
    GUARD_END
}

/* cuda_matmul.cu: the linear layer on the GPU through cuBLASLt (bf16 inputs, fp32 accumulation): the
 * forward with its bias fused into the epilogue, the backward's dinp and dw (in fp32, assigned on a
 * step's first contribution and accumulated after it), the bias gradient (from the dw matmul's BGRADB
 * epilogue on a first contribution, else a deterministic column sum, cuda_reduce.cu), and the cache of
 * matmul plans per shape.
 *
 * Row-major to column-major. cuBLASLt is column-major; a row-major [R, C] matrix in memory is the
 * column-major [C, R] matrix (its transpose) with leading dimension C. So, with row-major
 * inp [N, IC], w [OC, IC], out/dout [N, OC], dinp [N, IC], dw [OC, IC] and D = op(A) op(B) (m x n, k):
 *
 *   forward  out = inp w^T   ->  out^T [OC x N]  = (w^T)^T      inp^T    m = OC, n = N,  k = IC
 *            A = w    stored [IC x OC] ld IC, op T      B = inp  stored [IC x N] ld IC, op N
 *            D = out  [OC x N] ld OC (bf16); the bias [OC] runs along D's rows: EPILOGUE_BIAS.
 *            The postnet's forward is the same product with D in fp32 (linear_forward_f32).
 *   dinp     dinp = dout w   ->  dinp^T [IC x N] = w^T          dout^T   m = IC, n = N,  k = OC
 *            A = w    stored [IC x OC] ld IC, op N      B = dout stored [OC x N] ld OC, op N
 *            D = dinp [IC x N] ld IC (bf16), beta = 0.
 *   dw       dw += dout^T inp ->  dw^T [IC x OC] = inp^T        dout     m = IC, n = OC, k = N
 *            A = inp  stored [IC x N] ld IC, op N       B = dout stored [OC x N] ld OC, op T
 *            C = D = dw [IC x OC] ld IC (fp32), beta = 1 (0 on a first contribution: no zeroing pass):
 *            bf16 A/B with fp32 C/D is a supported cuBLASLt combination, so the gradient accumulates in
 *            fp32 without a bf16 round trip.
 *            dbias [OC] is the sum of op(B) = dout over the GEMM's k (= N) for each of D's n (= OC)
 *            columns: exactly CUBLASLT_EPILOGUE_BGRADB, in C's type (fp32). The epilogue STORES it
 *            whatever beta is, so it serves only beta = 0; an accumulating call (the second and later
 *            micro-batches of a step) uses the column-sum kernel, and so does a shape for which
 *            cuBLASLt offers no BGRADB algorithm (logged once).
 *
 * cuBLAS gives the same bits for the same call on the same GPU model (its split-K schemes reduce in a
 * fixed order); plans are cached, so a shape always runs the same algorithm. */
#include "cuda_backend.cuh"
#include "cuda_kernels.cuh"
extern "C" {
#include "lcm/log.h"
}

/* The largest power of two (up to 256, cuBLASLt's default assumption) that divides the address. */
static uint32_t alignment_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a % al) != 0) al >>= 1;
    return al;
}

static void destroy_plan(matmul_plan *p) {
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->c) cublasLtMatrixLayoutDestroy(p->c);
    if (p->d) cublasLtMatrixLayoutDestroy(p->d);
    memset(p, 0, sizeof *p);
}

void cuda_matmul_cache_clear(cuda_backend *cb) {
    for (int i = 0; i < MATMUL_CACHE_SIZE; i++) destroy_plan(&cb->plans[i]);
    cb->next_plan = 0;
}

/* Build the descriptors and pick the algorithm; returns 0, 1 with the failure recorded, or 2 (nothing
 * recorded) when a MATMUL_DW_BGRADB has no algorithm: the caller then takes the unfused path. bias is
 * the (gradient) pointer of an epilogue kind. */
static int build_plan(cuda_backend *cb, const char *op, matmul_plan *p, const void *bias) {
    cublasOperation_t opa = CUBLAS_OP_N, opb = CUBLAS_OP_N;
    cudaDataType_t cd_type = CUDA_R_16BF;
    uint64_t a_rows, a_cols, b_rows, b_cols;
    int64_t lda, ldb;
    switch (p->kind) {
    case MATMUL_FORWARD_F32:
        cd_type = CUDA_R_32F;
        [[fallthrough]];
    case MATMUL_FORWARD:
    case MATMUL_FORWARD_BIAS:
        opa = CUBLAS_OP_T;
        a_rows = p->k; a_cols = p->m; lda = p->k;
        b_rows = p->k; b_cols = p->n; ldb = p->k;
        break;
    case MATMUL_DINP:
        a_rows = p->m; a_cols = p->k; lda = p->m;
        b_rows = p->k; b_cols = p->n; ldb = p->k;
        break;
    case MATMUL_DW:
    case MATMUL_DW_BGRADB:
    default:
        opb = CUBLAS_OP_T;
        cd_type = CUDA_R_32F;
        a_rows = p->m; a_cols = p->k; lda = p->m;
        b_rows = p->n; b_cols = p->k; ldb = p->n;
        break;
    }
    if (LT_NOTE(cb, op, cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F)) ||
        LT_NOTE(cb, op, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa)) ||
        LT_NOTE(cb, op, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb)))
        return 1;
    if (p->kind == MATMUL_FORWARD_BIAS || p->kind == MATMUL_DW_BGRADB) {
        cublasLtEpilogue_t epi = p->kind == MATMUL_FORWARD_BIAS ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_BGRADB;
        if (LT_NOTE(cb, op, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi)))
            return 1;
        /* The heuristic reads the pointer's alignment (cublasLt.h): give it the one the plan is for. */
        if (LT_NOTE(cb, op, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                           sizeof bias)))
            return 1;
    }
    if (LT_NOTE(cb, op, cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, a_rows, a_cols, lda)) ||
        LT_NOTE(cb, op, cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, b_rows, b_cols, ldb)) ||
        LT_NOTE(cb, op, cublasLtMatrixLayoutCreate(&p->c, cd_type, p->m, p->n, p->m)) ||
        LT_NOTE(cb, op, cublasLtMatrixLayoutCreate(&p->d, cd_type, p->m, p->n, p->m)))
        return 1;

    cublasLtMatmulPreference_t pref = NULL;
    if (LT_NOTE(cb, op, cublasLtMatmulPreferenceCreate(&pref))) return 1;
    int failed =
        LT_NOTE(cb, op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                             &cb->lt_workspace_bytes, sizeof cb->lt_workspace_bytes)) ||
        LT_NOTE(cb, op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                             &p->align[0], sizeof p->align[0])) ||
        LT_NOTE(cb, op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                             &p->align[1], sizeof p->align[1])) ||
        LT_NOTE(cb, op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                             &p->align[2], sizeof p->align[2])) ||
        LT_NOTE(cb, op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                             &p->align[3], sizeof p->align[3]));
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    cublasStatus_t hs = CUBLAS_STATUS_SUCCESS;
    if (!failed) hs = cublasLtMatmulAlgoGetHeuristic(cb->lt, p->desc, p->a, p->b, p->c, p->d, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (failed) return 1;
    if (p->kind == MATMUL_DW_BGRADB && (hs != CUBLAS_STATUS_SUCCESS || found < 1)) return 2;
    if (LT_NOTE(cb, op, hs)) return 1;
    if (found < 1) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "cuBLASLt has no algorithm for a %d x %d x %d bf16 matmul (kind %d, alignments %u/%u/%u/%u)", p->m,
                 p->n, p->k, (int)p->kind, p->align[0], p->align[1], p->align[2], p->align[3]);
        cuda_note_msg(cb, LCM_ERR_DEVICE, op, msg);
        return 1;
    }
    p->algo = result.algo;
    return 0;
}

/* Frees what slot p holds and gives it this key (the cache's lookup compares these fields). */
static void reset_plan(matmul_plan *p, matmul_kind kind, int m, int n, int k, const uint32_t align[4],
                       uint32_t bias_align) {
    destroy_plan(p);
    p->kind = kind;
    p->m = m;
    p->n = n;
    p->k = k;
    memcpy(p->align, align, sizeof p->align);
    p->bias_align = bias_align;
}

/* The cached plan for this shape and these pointer alignments (built on first use); NULL on failure.
 * bias: the epilogue's (gradient) pointer for MATMUL_FORWARD_BIAS and MATMUL_DW_BGRADB, else NULL. A
 * MATMUL_DW_BGRADB plan may come back `unsupported`. */
static matmul_plan *get_plan(cuda_backend *cb, const char *op, matmul_kind kind, int m, int n, int k,
                             const void *A, const void *B, const void *C, const void *D, const void *bias) {
    uint32_t align[4] = {alignment_of(A), alignment_of(B), alignment_of(C), alignment_of(D)};
    uint32_t bias_align = bias ? alignment_of(bias) : 0;
    for (int i = 0; i < MATMUL_CACHE_SIZE; i++) {
        matmul_plan *p = &cb->plans[i];
        if (p->used && p->kind == kind && p->m == m && p->n == n && p->k == k &&
            memcmp(p->align, align, sizeof align) == 0 && p->bias_align == bias_align)
            return p;
    }
    matmul_plan *p = &cb->plans[cb->next_plan];
    cb->next_plan = (cb->next_plan + 1) % MATMUL_CACHE_SIZE;
    reset_plan(p, kind, m, n, k, align, bias_align);
    int rc = build_plan(cb, op, p, bias);
    if (rc == 2) {
        lcm_info("cuda %d: cuBLASLt has no BGRADB epilogue for the %d x %d x %d dw matmul; its bias gradient "
                 "uses the column-sum kernel", cb->gpu, m, n, k);
        reset_plan(p, kind, m, n, k, align, bias_align);
        p->unsupported = 1; /* cached, so the heuristic is asked once per shape */
    } else if (rc) {
        destroy_plan(p);
        return NULL;
    }
    p->used = 1;
    return p;
}

static void run_plan(cuda_backend *cb, const char *op, matmul_plan *p, const void *A, const void *B, float beta,
                     const void *C, void *D) {
    float alpha = 1.0f;
    LT_NOTE(cb, op, cublasLtMatmul(cb->lt, p->desc, &alpha, A, p->a, B, p->b, &beta, C, p->c, D, p->d, &p->algo,
                                   cb->lt_workspace, cb->lt_workspace_bytes, cb->compute));
}

/* out[n, c] += bias[c]: for a bias that is not 16-byte aligned, where the fused epilogue may refuse it,
 * and for an fp32 output, whose epilogue would want an fp32 bias. */
template <typename T> __global__ void add_bias_kernel(T *out, const bf16 *bias, int N, int OC) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * OC) return;
    store1(out + i, load1(out + i) + load1(bias + i % OC));
}

template <typename T> static void add_bias(cuda_backend *cb, const char *op, T *out, const void *bias, int N, int OC) {
    size_t n = (size_t)N * OC;
    add_bias_kernel<T><<<grid_for(n, 1, 256), 256, 0, cb->compute>>>(out, (const bf16 *)bias, N, OC);
    cuda_check_launch(cb, op);
}

void cuda_linear_forward(lcm_backend *be, void *out, const void *inp, const void *w, const void *bias, int N,
                         int IC, int OC) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "linear_forward";
    cuda_enter(cb, op);
    if (N <= 0 || OC <= 0) return;
    if (IC <= 0) { /* an empty sum: out is the bias alone */
        CUDA_NOTE(cb, op, cudaMemsetAsync(out, 0, (size_t)N * OC * sizeof(bf16), cb->compute));
        if (bias) add_bias(cb, op, (bf16 *)out, bias, N, OC);
        return;
    }
    int fuse = bias && aligned16(bias);
    matmul_plan *p = get_plan(cb, op, fuse ? MATMUL_FORWARD_BIAS : MATMUL_FORWARD, OC, N, IC, w, inp, out, out,
                              fuse ? bias : NULL);
    if (!p) return;
    if (fuse && LT_NOTE(cb, op, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                               sizeof bias)))
        return;
    run_plan(cb, op, p, w, inp, 0.0f, out, out);
    if (bias && !fuse) add_bias(cb, op, (bf16 *)out, bias, N, OC);
}

/* The forward with D in fp32 (bf16 A/B with fp32 C/D, as dw): the postnet, so that the prediction the
 * loss reads is not rounded to bf16. The bias is added by its own small kernel ([N, OC] = [N, D]). */
void cuda_linear_forward_f32(lcm_backend *be, float *out, const void *inp, const void *w, const void *bias, int N,
                             int IC, int OC) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "linear_forward_f32";
    cuda_enter(cb, op);
    if (N <= 0 || OC <= 0) return;
    if (IC <= 0) {
        CUDA_NOTE(cb, op, cudaMemsetAsync(out, 0, (size_t)N * OC * sizeof(float), cb->compute));
    } else {
        matmul_plan *p = get_plan(cb, op, MATMUL_FORWARD_F32, OC, N, IC, w, inp, out, out, NULL);
        if (!p) return;
        run_plan(cb, op, p, w, inp, 0.0f, out, out);
    }
    if (bias) add_bias(cb, op, out, bias, N, OC);
}

void cuda_linear_backward(lcm_backend *be, void *dinp, float *dw, float *dbias, const void *dout,
                          const void *inp, const void *w, int N, int IC, int OC, int accumulate) {
    cuda_backend *cb = cuda_of(be);
    const char *op = "linear_backward";
    cuda_enter(cb, op);
    if (N <= 0 || IC <= 0 || OC <= 0) {
        /* Empty sums: dinp is still assigned, and so are dw and dbias on a first contribution. */
        if (dinp && N > 0 && IC > 0)
            CUDA_NOTE(cb, op, cudaMemsetAsync(dinp, 0, (size_t)N * IC * sizeof(bf16), cb->compute));
        if (!accumulate && IC > 0 && OC > 0)
            CUDA_NOTE(cb, op, cudaMemsetAsync(dw, 0, (size_t)OC * IC * sizeof(float), cb->compute));
        if (!accumulate && dbias && OC > 0)
            CUDA_NOTE(cb, op, cudaMemsetAsync(dbias, 0, (size_t)OC * sizeof(float), cb->compute));
        return;
    }
    if (dinp) {
        matmul_plan *p = get_plan(cb, op, MATMUL_DINP, IC, N, OC, w, dout, dinp, dinp, NULL);
        if (p) run_plan(cb, op, p, w, dout, 0.0f, dinp, dinp);
    }
    const float beta = accumulate ? 1.0f : 0.0f;
    if (dbias && !accumulate && aligned16(dbias)) {
        matmul_plan *p = get_plan(cb, op, MATMUL_DW_BGRADB, IC, OC, N, inp, dout, dw, dw, dbias);
        if (!p) return;
        if (!p->unsupported) {
            if (LT_NOTE(cb, op, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &dbias,
                                                               sizeof dbias)))
                return;
            run_plan(cb, op, p, inp, dout, beta, dw, dw);
            return;
        }
    }
    matmul_plan *p = get_plan(cb, op, MATMUL_DW, IC, OC, N, inp, dout, dw, dw, NULL);
    if (p) run_plan(cb, op, p, inp, dout, beta, dw, dw);
    if (dbias) cuda_column_sums(cb, op, dbias, (const bf16 *)dout, NULL, NULL, N, OC, accumulate);
}

/* cpu_attention.c: causal multi-head self-attention with key padding, softmax(q k^T / sqrt(hd)) v.
 *
 * Query t of row b attends key s iff s <= t and s < lens[b]. Every query has at least key 0
 * (lens[b] >= 1), padded queries included, so no softmax row is empty. Per (row, head) the two
 * products go through sgemm over the first lens[b] keys only: padded keys and values are never read,
 * so whatever the padding holds cannot reach a real position. The probabilities are saved (zero
 * where masked) and the backward works from them. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "cpu_ops.h"

void cpu_attention_forward(float *out, float *att, const float *qkv, const int32_t *lens, int B, int T, int C,
                           int H) {
    int hd = C / H;
    float scale = (float)(1.0 / sqrt((double)hd));
    for (int b = 0; b < B; b++) {
        int len = lens[b];
        for (int h = 0; h < H; h++) {
            const float *q = qkv + (size_t)b * T * 3 * C + h * hd; /* (T, hd), row stride 3C */
            const float *k = q + C;
            const float *v = q + 2 * C;
            float *p = att + ((size_t)b * H + h) * T * T;          /* (T, T) */
            float *o = out + (size_t)b * T * C + h * hd;           /* (T, hd), row stride C */
            /* p[t, s] = scale * q[t] . k[s] for the keys s < len */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, len, hd, scale, q, 3 * C, k, 3 * C,
                        0.0f, p, T);
            for (int t = 0; t < T; t++) {
                float *pr = p + (size_t)t * T;
                int nk = t + 1 < len ? t + 1 : len; /* keys 0 .. nk-1 are visible */
                float mx = pr[0];
                for (int s = 1; s < nk; s++) mx = pr[s] > mx ? pr[s] : mx;
                double sum = 0.0;
                for (int s = 0; s < nk; s++) {
                    pr[s] = expf(pr[s] - mx);
                    sum += pr[s];
                }
                float inv = (float)(1.0 / sum);
                for (int s = 0; s < nk; s++) pr[s] *= inv;
                for (int s = nk; s < T; s++) pr[s] = 0.0f;
            }
            /* o = p[:, :len] @ v[:len] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, len, 1.0f, p, T, v, 3 * C, 0.0f, o,
                        C);
        }
    }
}

/* With P = softmax(S), S = scale * q k^T and dP = dout v^T:
 *   dS[t, s] = P[t, s] (dP[t, s] - sum_s' P[t, s'] dP[t, s']),
 *   dq = scale dS k,  dk = scale dS^T q,  dv = P^T dout.
 * `scratch` holds dP, then scale * dS, over the first len keys. */
void cpu_attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *att,
                            const int32_t *lens, int B, int T, int C, int H) {
    int hd = C / H;
    float scale = (float)(1.0 / sqrt((double)hd));
    for (int b = 0; b < B; b++) {
        int len = lens[b];
        for (int h = 0; h < H; h++) {
            size_t off = (size_t)b * T * 3 * C + h * hd;
            const float *q = qkv + off, *k = q + C, *v = q + 2 * C;   /* (T, hd), row stride 3C */
            float *dq = dqkv + off, *dk = dq + C, *dv = dq + 2 * C;
            const float *p = att + ((size_t)b * H + h) * T * T;       /* (T, T) */
            const float *dp_out = dout + (size_t)b * T * C + h * hd;  /* (T, hd), row stride C */
            float *ds = scratch;                                       /* (T, T), first len columns */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, len, hd, 1.0f, dp_out, C, v, 3 * C, 0.0f,
                        ds, T);
            for (int t = 0; t < T; t++) {
                const float *pr = p + (size_t)t * T;
                float *dr = ds + (size_t)t * T;
                int nk = t + 1 < len ? t + 1 : len;
                double dot = 0.0;
                for (int s = 0; s < nk; s++) dot += (double)pr[s] * dr[s];
                float fdot = (float)dot;
                for (int s = 0; s < nk; s++) dr[s] = scale * pr[s] * (dr[s] - fdot);
                for (int s = nk; s < len; s++) dr[s] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, len, 1.0f, ds, T, k, 3 * C, 0.0f, dq,
                        3 * C);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, len, hd, T, 1.0f, ds, T, q, 3 * C, 0.0f, dk,
                        3 * C);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, len, hd, T, 1.0f, p, T, dp_out, C, 0.0f, dv,
                        3 * C);
            for (int s = len; s < T; s++) { /* padded keys and values had no influence */
                float *dks = dk + (size_t)s * 3 * C, *dvs = dv + (size_t)s * 3 * C;
                for (int i = 0; i < hd; i++) dks[i] = dvs[i] = 0.0f;
            }
        }
    }
}

void cpu_kv_store(float *kc, float *vc, const float *qkv, int B, int S, int C, int pos0, int Tcap) {
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < S; t++) {
            const float *src = qkv + ((size_t)b * S + t) * 3 * C;
            size_t dst = ((size_t)b * Tcap + pos0 + t) * C;
            memcpy(kc + dst, src + C, (size_t)C * sizeof(float));
            memcpy(vc + dst, src + 2 * C, (size_t)C * sizeof(float));
        }
    }
}

/* The forward's computation with the keys and values read from the cache: the same sgemm products and
 * the same softmax (max, expf, double sum), so a cached step differs from a full forward only by the
 * blocking of the products. */
void cpu_attention_cached(float *out, float *scores, const float *qkv, const float *kc, const float *vc, int B,
                          int S, int C, int H, int pos0, int Tcap) {
    int hd = C / H, nk_all = pos0 + S;
    float scale = (float)(1.0 / sqrt((double)hd));
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const float *q = qkv + (size_t)b * S * 3 * C + h * hd;   /* (S, hd), row stride 3C */
            const float *k = kc + (size_t)b * Tcap * C + h * hd;     /* (nk_all, hd), row stride C */
            const float *v = vc + (size_t)b * Tcap * C + h * hd;
            float *o = out + (size_t)b * S * C + h * hd;             /* (S, hd), row stride C */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, nk_all, hd, scale, q, 3 * C, k, C, 0.0f,
                        scores, nk_all);
            for (int t = 0; t < S; t++) {
                float *pr = scores + (size_t)t * nk_all;
                int nk = pos0 + t + 1;
                float mx = pr[0];
                for (int s = 1; s < nk; s++) mx = pr[s] > mx ? pr[s] : mx;
                double sum = 0.0;
                for (int s = 0; s < nk; s++) {
                    pr[s] = expf(pr[s] - mx);
                    sum += pr[s];
                }
                float inv = (float)(1.0 / sum);
                for (int s = 0; s < nk; s++) pr[s] *= inv;
                for (int s = nk; s < nk_all; s++) pr[s] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, hd, nk_all, 1.0f, scores, nk_all, v, C, 0.0f,
                        o, C);
        }
    }
}

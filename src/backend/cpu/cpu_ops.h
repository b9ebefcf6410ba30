/* cpu_ops.h: the CPU backend's fp32 math, one free function per op (private to src/backend/cpu/).
 *
 * These are the readable ground truth of the op table in include/lcm/backend.h: plain fp32 arrays,
 * explicit outputs before inputs, integer shapes, the same conventions (parameter gradients +=,
 * activation gradients =, except rmsnorm's dinp +=). cpu_backend.c wraps them into the table. Nothing
 * here allocates or keeps state, so any number of threads may call them at once.
 * Outputs must not overlap inputs (the definitions use restrict), except where a comment says so:
 * dropout_add's h_out may be h_in, RoPE works in place, mse_loss's dy may be y. */
#ifndef LCM_CPU_OPS_H
#define LCM_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "lcm/backend.h"
#include "lcm/philox.h"

/* ---- cpu_loss.c: the SONAR normalizer and the next-concept loss ---- */
void cpu_normalize(float *xn,            /* (N, D) out */
                   const float *x,       /* (N, D) */
                   const float *center,  /* (D) */
                   const float *scale,   /* (D) */
                   int N, int D);
void cpu_mse_loss(float *dy,             /* (B, T, D) out: 2 d grad_scale at targets, 0 elsewhere */
                  float *loss_sum,       /* (1) out */
                  const float *y,        /* (B, T, D) predictions */
                  const float *x,        /* (B, T, D) raw inputs; targets are x[b, t+1] normalized */
                  const float *center, const float *scale, /* (D) */
                  const int32_t *lens,   /* (B) */
                  int B, int T, int D, float grad_scale);

/* ---- cpu_linear.c ---- */
void cpu_linear_forward(float *out,         /* (N, OC) */
                        const float *inp,   /* (N, IC) */
                        const float *w,     /* (OC, IC) */
                        const float *bias,  /* (OC) */
                        int N, int IC, int OC);
void cpu_linear_backward(float *dinp,        /* (N, IC) assigned; NULL to skip */
                         float *dw,          /* (OC, IC) += (accumulate) or = */
                         float *dbias,       /* (OC) += (accumulate) or = */
                         const float *dout,  /* (N, OC) */
                         const float *inp,   /* (N, IC) */
                         const float *w,     /* (OC, IC) */
                         int N, int IC, int OC, int accumulate);

/* ---- cpu_rmsnorm.c ---- */
void cpu_rmsnorm_forward(float *out,         /* (N, C) */
                         float *rstd,        /* (N) */
                         const float *inp,   /* (N, C) */
                         const float *gain,  /* (C) */
                         int N, int C, float eps);
void cpu_rmsnorm_backward(float *dinp,        /* (N, C) += */
                          float *dgain,       /* (C) += (accumulate) or = */
                          const float *dout,  /* (N, C) */
                          const float *inp,   /* (N, C) */
                          const float *gain,  /* (C) */
                          const float *rstd,  /* (N) from the forward */
                          int N, int C, int accumulate);

/* ---- cpu_rope.c: in place on the q and k parts of qkv (B, T, 3C); rope is the model's angle table
 * (include/lcm/rope.h) ---- */
void cpu_rope_forward(float *qkv, const float *rope, int B, int T, int C, int H);
void cpu_rope_backward(float *dqkv, const float *rope, int B, int T, int C, int H);
/* Positions pos0 .. pos0+T-1 instead of 0 .. T-1 (incremental inference). */
void cpu_rope_forward_at(float *qkv, const float *rope, int B, int T, int C, int H, int pos0);

/* ---- cpu_attention.c ---- */
void cpu_attention_forward(float *out,           /* (B, T, C) */
                           float *att,           /* (B, H, T, T) probabilities, 0 where masked */
                           const float *qkv,     /* (B, T, 3C) after RoPE */
                           const int32_t *lens,  /* (B) */
                           int B, int T, int C, int H);
void cpu_attention_backward(float *dqkv,          /* (B, T, 3C) assigned */
                            float *scratch,       /* (T, T) */
                            const float *dout,    /* (B, T, C) */
                            const float *qkv,     /* (B, T, 3C) */
                            const float *att,     /* (B, H, T, T) from the forward */
                            const int32_t *lens,  /* (B) */
                            int B, int T, int C, int H);

/* Incremental inference: S new positions from pos0 against the layer's KV cache (Tcap per row). */
void cpu_kv_store(float *kc,             /* (B, Tcap, C) k cache; positions pos0 .. pos0+S-1 written */
                  float *vc,             /* (B, Tcap, C) v cache */
                  const float *qkv,      /* (B, S, 3C) after RoPE */
                  int B, int S, int C, int pos0, int Tcap);
void cpu_attention_cached(float *out,         /* (B, S, C) */
                          float *scores,      /* (S, pos0 + S) scratch */
                          const float *qkv,   /* (B, S, 3C) after RoPE: the queries */
                          const float *kc,    /* (B, Tcap, C) keys 0 .. pos0+S-1 */
                          const float *vc,    /* (B, Tcap, C) values */
                          int B, int S, int C, int H, int pos0, int Tcap);

/* ---- cpu_swiglu.c ---- */
void cpu_swiglu_forward(float *out,        /* (N, F) */
                        const float *gi,   /* (N, 2F): gate | inner */
                        int N, int F);
void cpu_swiglu_backward(float *dgi,        /* (N, 2F) assigned */
                         const float *dout, /* (N, F) */
                         const float *gi,   /* (N, 2F) */
                         int N, int F);

/* ---- cpu_dropout.c: residual dropout, masks from lcm_dropout_keep ---- */
void cpu_dropout_add(float *h_out,          /* (n); may equal h_in */
                     const float *h_in,     /* (n) */
                     const float *branch,   /* (n) */
                     size_t n, float p, lcm_dropout_key key);
void cpu_dropout_backward(float *dbranch,   /* (n) assigned */
                          const float *dh,  /* (n) */
                          size_t n, float p, lcm_dropout_key key);

/* ---- cpu_optim.c: gradient norm, clipping, AdamW ---- */
double cpu_sumsq(const float *x, size_t n);
void cpu_scale(float *x, float s, size_t n);
void cpu_adamw(float *master, const float *grad, float *m, float *v, size_t n, const lcm_adamw_args *a);

#endif

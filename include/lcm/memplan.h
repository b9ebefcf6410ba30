/* memplan.h: the memory plan. What a device holds, by class, computed BEFORE anything is allocated by
 * the same layout code that sizes the real allocations (the model's carve tables in src/model/model.c,
 * the loader's staging ring, the backends' fixed workspaces), so that `lcm plan`, lcm train's check and
 * the allocations cannot disagree.
 *
 * A backend is described for planning by its traits (activation dtype, saved attention values, fixed
 * workspaces); the backends read the same traits, so a plan for a GPU can be made on a machine without
 * one. */
#ifndef LCM_MEMPLAN_H
#define LCM_MEMPLAN_H

#include <stddef.h>
#include <stdio.h>

#include "lcm/config.h"
#include "lcm/error.h"

typedef struct lcm_backend_traits {
    const char *name;      /* "cpu" or "cuda" */
    size_t act_bytes;      /* activation / compute-weight dtype */
    /* fp32 values attention_forward saves for its backward, for B rows of T positions and H heads */
    size_t (*attention_saved_floats)(int B, int T, int H);
    /* workspaces the backend allocates for itself, for rows of at most max_T positions */
    size_t (*workspace_bytes)(int max_T);
    /* the most workspace the fused (cuDNN) attention may take for one call on B rows of T positions, H
     * heads of hd; 0 where there is none (the CPU, a build without cuDNN). The CUDA backend refuses a
     * cuDNN plan that asks for more, so that the memory plan stays an upper bound. */
    size_t (*attention_workspace_bytes)(int B, int T, int H, int hd);
} lcm_backend_traits;

extern const lcm_backend_traits lcm_cpu_traits, lcm_cuda_traits;

/* The CUDA backend's fixed workspaces: cuBLASLt's (its recommendation for Hopper) and the deterministic
 * reductions' partial sums. */
#define LCM_CUDA_LT_WORKSPACE_BYTES ((size_t)32 << 20)
#define LCM_CUDA_SCRATCH_BYTES ((size_t)16 << 20)

/* Head dims the fused (cuDNN) attention is used for: multiples of 8 up to 128, what its flash kernels
 * take on every GPU from sm_80 on; other head dims run the native kernels. */
#define LCM_CUDNN_HEAD_DIM_OK(hd) ((hd) > 0 && (hd) % 8 == 0 && (hd) <= 128)
/* Under model.attention = auto, rows shorter than this run the native kernels: cuDNN pads a row to its
 * 64-position tiles (compute, and the backward's workspace), so for short rows it is waste, not speed. */
#define LCM_CUDNN_AUTO_MIN_T 64

typedef enum lcm_mem_class {
    LCM_MEM_MASTER,        /* fp32 master weights */
    LCM_MEM_COMPUTE,       /* the compute copy of the weights (none when it aliases the master copy) */
    LCM_MEM_GRADS,         /* fp32 gradients */
    LCM_MEM_MOMENTS,       /* both AdamW moments */
    LCM_MEM_ACTS,          /* activations, their statistics and the backward's scratch */
    LCM_MEM_ATT_SAVED,     /* what attention saves for its backward */
    LCM_MEM_STAGING,       /* the loader's ring of micro-batch slots (pinned host memory on CUDA) */
    LCM_MEM_WORKSPACE,     /* the backend's own workspaces */
    LCM_MEM_COMM,          /* communication buffers (the bf16 copy of the gradients reduced) */
    LCM_MEM_NCLASSES
} lcm_mem_class;

const char *lcm_mem_class_name(lcm_mem_class c);

/* What the plan is for: the run's settings plus what only the run knows (devices, the shard level,
 * the longest micro-batch in rows). */
typedef struct lcm_memplan_input {
    const lcm_config *cfg;
    const lcm_backend_traits *bt;
    int devices;
    int shard;             /* trainer.shard: 0 replicated, 1 moments sliced, 2 also gradients (one micro-batch) */
    int max_rows;          /* rows per micro-batch; 0: the bound max_tokens (a row holds at least one concept) */
    int validation;        /* the run validates: one more staging slot */
} lcm_memplan_input;

typedef struct lcm_memplan {
    size_t bytes[LCM_MEM_NCLASSES]; /* per device */
    size_t total;
    size_t params;         /* P: elements of the flat parameter vector, padding included */
    size_t slice;          /* elements of it each device owns (P when not sharded) */
    int accum;             /* micro-batches per device per step */
    size_t host;           /* host memory once per process, not in total: the initial weights (P fp32),
                            * rank 0's checkpoint staging (3 P fp32) and the mapped read-back of the
                            * checkpoint it wrote (3 P fp32) */
} lcm_memplan;

/* Micro-batches per device per step on `devices` devices: data.global_batch_tokens / (devices x
 * data.max_tokens) when that key is set (an error naming the device counts and max_tokens values that
 * divide it when the division is not exact), else trainer.grad_accum. */
int lcm_step_accum(const lcm_config *cfg, int devices, int *accum, lcm_error *err);

/* The staging slots of one device (loader.c, which allocates exactly this): the loader's ring, and the
 * validation context's slot when the run validates. */
size_t lcm_staging_bytes(int accum, int validation, int64_t max_tokens, int max_rows, int D);

int lcm_memplan_compute(const lcm_memplan_input *in, lcm_memplan *out, lcm_error *err);
void lcm_memplan_print(const lcm_memplan *p, const lcm_memplan_input *in, FILE *f);
/* What the process holds with CPU workers, whose devices are the host: devices x total + host. */
size_t lcm_memplan_process(const lcm_memplan *p, const lcm_memplan_input *in);

/* With trainer.recompute = layer: a one-line notice in out when the same run without recomputation
 * fits in `avail` bytes (per device on GPUs, the process's on CPU workers), else out empty. */
int lcm_memplan_recompute_note(const lcm_memplan_input *in, size_t avail, char *out, size_t cap, lcm_error *err);

/* The cheapest change that makes the plan fit in `avail` bytes per device: "trainer.recompute=layer
 * needs 11.4 GB", "data.max_tokens=2048 with trainer.grad_accum=4 needs ...". 0 and *out empty when
 * nothing tried fits. */
int lcm_memplan_advice(const lcm_memplan_input *in, size_t avail, char *out, size_t cap, lcm_error *err);

#endif

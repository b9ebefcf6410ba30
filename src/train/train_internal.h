/* train_internal.h: what the trainer's files share: the run (read-only once workers start), the
 * per-device workers, and the per-worker batch loader. Not a public interface. */
#ifndef LCM_TRAIN_INTERNAL_H
#define LCM_TRAIN_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>

#include "lcm/backend.h"
#include "lcm/checkpoint.h"
#include "lcm/comm.h"
#include "lcm/config.h"
#include "lcm/dataset.h"
#include "lcm/eval.h"
#include "lcm/model.h"
#include "lcm/shard.h"
#include "lcm/plan.h"
#include "lcm/train.h"

typedef struct lcm_run lcm_run;
typedef struct lcm_worker lcm_worker;

/* What a worker runs once its backend and model exist: prepare allocates what the loop needs (before
 * the first collective, like every allocation), run is the loop, release frees what prepare made
 * (before the backend goes; also after a failed prepare). lcm_train uses lcm_train_loop (worker.c),
 * lcm bench its own (bench.c). */
typedef struct lcm_worker_loop {
    int (*prepare)(lcm_worker *w, lcm_error *err);
    int (*run)(lcm_worker *w, lcm_error *err);
    void (*release)(lcm_worker *w);
} lcm_worker_loop;

/* A dataset opened for training or evaluation (split.c). */
typedef struct lcm_split {
    lcm_dataset ds;
    int open;              /* ds is mapped */
    lcm_plan *plan;
} lcm_split;

/* One micro-batch in host staging memory (pinned on CUDA), with what the step needs to know. */
typedef struct lcm_slot {
    float *x;              /* [max_tokens * D] raw embeddings, zero-padded */
    int32_t *lens;         /* [max_rows] */
    uint64_t *docs;        /* [max_rows] */
    int B, T;
    int64_t step;          /* the global step this micro-batch belongs to */
    uint32_t microbatch;   /* its index within the global step (dropout key) */
    int64_t step_targets;  /* targets in the whole global step (all devices) */
    int64_t step_concepts; /* real concepts in the whole global step */
    double step_flops;     /* model FLOPs of the whole global step */
    lcm_cursor cursor_after; /* the plan cursor once the step is done */
} lcm_slot;

/* What one evaluation pass needs: a model (the training model during validation, an inference model
 * in `lcm eval`), the split, and the host buffers sized by the model's capacity (allocated once, before
 * training starts). */
typedef struct lcm_eval_ctx {
    lcm_model *model;
    const lcm_split *split;
    int append_eot;
    const lcm_normalizer *norm;
    lcm_slot slot;         /* staging for one micro-batch */
    lcm_row *rows;
    float *pred;           /* [max_tokens * D] host predictions */
    float *scratch;
    atomic_llong *beats;   /* a worker's heartbeat, advanced once per batch (the watchdog), or NULL */
} lcm_eval_ctx;

/* Fills this worker's micro-batches, a step ahead, in its own thread. */
typedef struct lcm_loader {
    lcm_run *run;
    int rank;
    lcm_backend *be;
    lcm_slot *slots;
    int n_slots;
    uint64_t produced, consumed, released;
    lcm_cursor cursor;
    int64_t next_step;
    lcm_microbatch *mbs;   /* the global step's micro-batches [devices * grad_accum] */
    lcm_row *rows;         /* their rows */
    size_t rows_cap;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int started, failed;
    atomic_int stop;       /* set by lcm_loader_stop; read by the loader thread with and without mu */
    lcm_error err;
} lcm_loader;

/* What a worker is doing, for the watchdog's message (trainer.c names them). */
typedef enum lcm_phase {
    LCM_PHASE_SETUP,
    LCM_PHASE_LOADING,     /* waiting for its loader's next micro-batch */
    LCM_PHASE_FORWARD,
    LCM_PHASE_BACKWARD,
    LCM_PHASE_COLLECTIVE,  /* a barrier, all-reduce or host sum with the other workers */
    LCM_PHASE_OPTIMIZER,
    LCM_PHASE_VALIDATION,
    LCM_PHASE_CHECKPOINT,
} lcm_phase;

struct lcm_worker {
    lcm_run *run;
    int rank;
    lcm_device dev;
    lcm_backend *be;
    lcm_model model;
    lcm_comm *comm;
    lcm_loader loader;
    lcm_eval_ctx eval;     /* validation (when the run has a validation split) */
    void *loop_state;      /* the loop's own (lcm bench: its slots of random rows) */
    uint16_t *grad_bf16;   /* device: gradients for the bf16 all-reduce option (windowed: the bucket's,
                            * then the slice's) */
    float *host_m, *host_v, *host_master; /* rank 0: checkpoint staging (sharded runs: every rank writes
                                           * its slice into rank 0's) */
    lcm_shard shard;       /* trainer.shard >= 1: the slice of the parameters this rank updates */
    pthread_t thread;
    int rc;
    lcm_error err;
    lcm_train_state state;
    double last_loss;
    /* The heartbeat the main thread's watchdog reads: beats advances at every phase change (and on
     * each validation batch), phase and heartbeat_step say where; done once the thread has cleaned up. */
    atomic_llong heartbeat_step;
    atomic_llong beats;
    atomic_int phase;
    atomic_int done;
    /* Who ends the loader thread: LCM_LOADER_NONE until it runs, LIVE once started (loader.thread is then
     * set), REAPED once the worker has stopped and joined it or the main thread, leaving a hung worker
     * behind, has detached it. The one that moves LIVE to REAPED does it, so it is done once. */
    atomic_int loader_state;
};

enum { LCM_LOADER_NONE, LCM_LOADER_LIVE, LCM_LOADER_REAPED };

static inline void lcm_worker_beat(lcm_worker *w, lcm_phase phase) {
    atomic_store_explicit(&w->phase, (int)phase, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->beats, 1, memory_order_release);
}

struct lcm_run {
    const lcm_config *cfg;
    int abandoned;         /* the watchdog gave up on a hung worker thread that is still running */
    int on_stack;          /* the caller keeps the run on its stack (lcm bench): never leave a thread behind */
    sigset_t sigmask;      /* the main thread's mask before SIGINT/SIGTERM were blocked for the workers */
    int sigmask_saved;     /* they are blocked in the main thread now */
    lcm_dims d;
    char run_dir[LCM_PATH_MAX];
    lcm_split train, valid; /* valid.open: the run validates */
    lcm_normalizer norm;
    int n;                 /* devices in all processes (the global ranks) */
    int local_n, rank0;    /* this process's devices (dev[0..local_n)) are global ranks rank0.. */
    lcm_device dev[LCM_MAX_DEVICES];
    int accum;             /* micro-batches per device per step */
    lcm_group *group;
    int64_t max_tokens;
    int max_rows, max_T;
    const lcm_worker_loop *loop;
    float *init_master, *init_m, *init_v; /* host initial state read by every worker */
    lcm_train_state start;
    char *config_text;
    FILE *metrics;         /* rank 0 writes metrics.jsonl */
    char metrics_path[LCM_PATH_MAX + 32];
    int metrics_errno;     /* the first write error on it (0: none) */
    double baseline;
    int have_baseline;
    double peak_tflops;    /* per device, for MFU (0 = unknown) */
    struct lcm_gpumon *gpumon; /* GPU runs with NVML: utilization etc. for the progress line (gpumon.h) */
    double t_start;
    lcm_worker *workers;
    lcm_train_summary *sum;
    void *loop_out;        /* what the loop reports (lcm bench: an lcm_bench_result, filled by rank 0) */
};

/* procs.c: several processes (include/lcm/mpi.h); no-ops in one. */
int lcm_run_join_processes(lcm_run *run, lcm_error *err);
int lcm_run_agree(const lcm_run *run, const char *ckpt, lcm_error *err);

/* loader.c */
int lcm_loader_start(lcm_loader *ld, lcm_run *run, int rank, lcm_backend *be, lcm_error *err);
int lcm_loader_next(lcm_loader *ld, lcm_slot **out, lcm_error *err);
void lcm_loader_release(lcm_loader *ld, int n);
void lcm_loader_stop(lcm_loader *ld);
int lcm_slot_alloc(lcm_slot *s, lcm_backend *be, int64_t max_tokens, int max_rows, int D, lcm_error *err);
void lcm_slot_free(lcm_slot *s, lcm_backend *be);

/* worker.c */
void *lcm_worker_main(void *arg);
extern const lcm_worker_loop lcm_train_loop;

/* One global step: this worker's micro-batches (slots[0..accum)) through forward, loss and backward,
 * the gradient all-reduce, clipping and AdamW. */
typedef struct lcm_step_result {
    double loss;          /* global objective (summed squared error / global targets) */
    double grad_norm;     /* before clipping */
    double lr;
    int skipped;          /* NaN/Inf: no update */
    int stop;             /* a stop was requested: checkpoint and end after this step */
} lcm_step_result;
int lcm_worker_step(lcm_worker *w, lcm_slot **slots, lcm_step_result *res, lcm_error *err);

/* trainer.c: what lcm_train and lcm_bench share */
int lcm_run_make_group(lcm_run *run, lcm_error *err);
int lcm_run_workers(lcm_run *run, lcm_error *err);
void lcm_run_free(lcm_run *run);
/* Append a line to metrics.jsonl; the first write error is warned about once and kept for the end. */
void lcm_run_metrics_line(lcm_run *run, const char *line);

/* split.c: open, check the dimension against D, scan for NaN/Inf (check_finite), build the plan. On an
 * error, lcm_split_close still releases what was opened. */
int lcm_split_open(lcm_split *s, const char *path, int D, int check_finite, const lcm_config *cfg, lcm_plan_mode mode,
                   lcm_error *err);
void lcm_split_close(lcm_split *s);

/* evaluate.c: the context's buffers for model m (its backend and capacity); then micro-batches rank,
 * rank + n_ranks, ... of the split's EVAL plan (at most max_batches of them when > 0) through the
 * model, accumulated into sums. */
int lcm_eval_ctx_init(lcm_eval_ctx *c, lcm_model *m, const lcm_split *split, int append_eot,
                      const lcm_normalizer *norm, lcm_error *err);
void lcm_eval_ctx_free(lcm_eval_ctx *c);
int lcm_eval_loop(lcm_eval_ctx *c, int rank, int n_ranks, int64_t max_batches, lcm_eval_sums *sums, lcm_error *err);

/* signals.c (lcm_signals_install/restore: train.h) */
/* on: a signal asks the workers to stop after the step; off: it removes temporary files and ends
 * the process by that signal. */
void lcm_signals_stop_mode(int on);
/* Block SIGINT/SIGTERM in the calling thread (and so in the threads it creates); old mask in *old. */
void lcm_signals_block(sigset_t *old);
int lcm_stop_requested(void);
/* The signal that asked the run to stop (SIGINT, SIGTERM), 0 = none. */
int lcm_stop_signal(void);

/* perf.c */
double lcm_peak_tflops(const char *device_name);

#endif

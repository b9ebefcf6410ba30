/* train.h: `lcm train`, `lcm eval` and `lcm bench` as library calls.
 *
 * One process, one worker thread per device (named lcm-gpu<N> / lcm-cpu<N>), all reading the one
 * memory-mapped dataset. For GPUs the communicators come from one ncclCommInitAll; CPU workers reduce
 * through shared memory. Each step: every device takes its share of the global step's micro-batches,
 * runs forward and backward, gradients are all-reduced in buckets while backward runs, the loss is
 * normalized by the GLOBAL target count (known to every worker from the shared plan, and checked by an
 * all-reduce), the global gradient norm is clipped, AdamW updates the fp32 master weights, and the LR
 * follows warmup + cosine. See docs/architecture.md. */
#ifndef LCM_TRAIN_H
#define LCM_TRAIN_H

#include <stdint.h>
#include "lcm/config.h"
#include "lcm/error.h"
#include "lcm/eval.h"
#include "lcm/fileio.h"

/* A device a worker runs on. */
typedef struct lcm_device {
    int is_gpu;
    int index;         /* GPU ordinal, or CPU worker index */
} lcm_device;

#define LCM_MAX_DEVICES 256

/* trainer.devices -> the device list ("auto": every visible GPU, one CPU worker on a machine without an
 * NVIDIA driver, an error naming the reason when a driver is there but CUDA cannot use it). */
int lcm_resolve_devices(const char *spec, lcm_device *out, int *n, lcm_error *err);
struct lcm_gpu_status;
/* The same for a given GPU status (lcm_gpu_status_get's; tests inject their own). */
int lcm_resolve_devices_for(const char *spec, const struct lcm_gpu_status *gpus, lcm_device *out, int *n,
                            lcm_error *err);

struct lcm_backend;
/* The backend of a device: CUDA for a GPU, the CPU backend for a CPU worker. */
int lcm_backend_for_device(struct lcm_backend **out, lcm_device dev, lcm_error *err);

/* The learning rate of 1-based step k (warmup from start_lr over warmup_steps, then cosine to
 * final_lr over max_steps - warmup_steps + 1 steps; or constant after warmup). */
double lcm_lr_at(const lcm_optim_config *o, int64_t max_steps, int64_t step);

/* What a finished run reports. */
typedef struct lcm_train_summary {
    int64_t steps_done;        /* steps completed by this invocation */
    int64_t final_step;
    double train_loss;         /* of the last step */
    int have_valid;
    lcm_eval_result valid;     /* last validation */
    double baseline;           /* predict-the-mean validation loss (when have_valid) */
    int interrupted;           /* stopped early (a signal, or trainer.stop_at_step) after writing a checkpoint */
    int stop_at_step_reached;  /* that stop, or a run with nothing to do, is trainer.stop_at_step's */
    int threads_left;          /* the watchdog gave up on a hung worker thread that still runs: the caller
                                * must end the process (_exit) without freeing anything */
    char write_error[LCM_PATH_MAX + 256]; /* the run finished, but metrics.jsonl or train.log could not be written */
    char checkpoint[LCM_PATH_MAX + 64]; /* last checkpoint written or resumed from */
} lcm_train_summary;

/* SIGINT/SIGTERM handling for commands that write files (lcm_train installs it itself): a signal
 * removes the temporary files of the atomic writes in progress, then ends the process by that signal
 * (exit status 128+N). lcm_signals_restore puts back the default actions. */
void lcm_signals_install(void);
void lcm_signals_restore(void);

/* Run (or resume) the training that cfg describes. */
int lcm_train(const lcm_config *cfg, lcm_train_summary *sum, lcm_error *err);

/* Evaluate a checkpoint directory (or a weights .safetensors file) on a dataset with the model that
 * cfg describes, on the first device of trainer.devices. */
int lcm_evaluate(const char *checkpoint, const char *dataset, const lcm_config *cfg, lcm_eval_result *out,
                 lcm_error *err);

/* What `lcm bench` measured (rank 0's view; all devices run the same shapes). */
typedef struct lcm_bench_result {
    int devices;
    int is_gpu;
    char device_name[256];
    int B, T;              /* micro-batch shape per device */
    int accum;
    double step_s;         /* mean time of a timed step */
    double concepts_per_s; /* all devices */
    double tflops;         /* achieved model TFLOP/s, all devices */
    double mfu;            /* tflops / (devices * peak); < 0 when the peak is unknown */
    double peak_tflops;
    double mem_gb;         /* device memory in use on rank 0's GPU (model + activations + workspace) */
    double model_gb;       /* parameters, gradients, master weights and moments */
    double flops_per_concept;
    size_t params;
} lcm_bench_result;

/* Warm-up then timed training steps on random full-length rows (data.max_seq_len long, as many as
 * data.max_tokens allows), through the same step code as training. */
int lcm_bench(const lcm_config *cfg, lcm_bench_result *out, lcm_error *err);

#endif

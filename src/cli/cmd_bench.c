/* cmd_bench.c: `lcm bench [config.ini] [key=value ...]`: training-step speed and memory. */
#include <stdio.h>

#include "lcm/cli.h"
#include "lcm/train.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lcm bench [config.ini] [key=value ...]\n\n"
            "Times bench.warmup_steps + bench.steps training steps (forward, backward, gradient all-reduce,\n"
            "AdamW) on random rows of data.max_seq_len concepts, as many per device as data.max_tokens allows,\n"
            "on trainer.devices. Prints step time, concepts/s, achieved TFLOP/s, MFU (against bench.peak_tflops,\n"
            "or the device's datasheet bf16 dense peak) and memory. Example:\n"
            "  lcm bench conf/model/base_lcm_1_6b.ini data.max_tokens=7168\n");
}

int lcm_cmd_bench(int argc, char **argv) {
    if (argc > 1 && lcm_cli_is_help(argv[1])) {
        usage(stdout);
        return 0;
    }
    lcm_error err = {0};
    static lcm_config cfg;
    lcm_bench_result r;
    int rc = 0;
    if (lcm_cli_load_config(argc - 1, argv + 1, "bench", &cfg, &err) != 0 || lcm_bench(&cfg, &r, &err) != 0) {
        rc = lcm_cli_report(&err);
    } else {
        printf("bench: %s, %zu parameters, %d device%s (%s)\n", cfg.source, r.params, r.devices,
               r.devices > 1 ? "s" : "", r.device_name);
        printf("  micro-batch    %d rows x %d concepts per device, grad_accum %d\n", r.B, r.T, r.accum);
        printf("  step time      %.4f s\n", r.step_s);
        printf("  throughput     %.0f concepts/s\n", r.concepts_per_s);
        printf("  model FLOPs    %.3g per concept, %.2f TFLOP/s achieved\n", r.flops_per_concept, r.tflops);
        if (r.mfu >= 0)
            printf("  MFU            %.1f%% of %.0f TFLOP/s per device\n", 100 * r.mfu, r.peak_tflops);
        if (r.mem_gb >= 0) printf("  memory         %.2f GB in use on the first GPU (%.2f GB model state)\n", r.mem_gb, r.model_gb);
        else printf("  model state    %.2f GB (weights, gradients, AdamW moments)\n", r.model_gb);
    }
    return rc;
}

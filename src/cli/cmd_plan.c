/* cmd_plan.c: `lcm plan [config.ini] [key=value ...] [--devices N] [--shard 0|1|2] [--device-memory SIZE]
 * [--backend cpu|cuda]`: the memory plan of a training run, per device and class, before anything is
 * allocated, and the cheapest change that fits when it does not. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lcm/backend.h"
#include "lcm/cli.h"
#include "lcm/memplan.h"
#include "lcm/train.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lcm plan [config.ini] [key=value ...] [--devices N] [--shard 0|1|2]\n"
            "                [--device-memory SIZE] [--backend cpu|cuda]\n\n"
            "The memory a training run needs on each device, by class (master weights, compute weights,\n"
            "gradients, AdamW moments, activations, saved attention values, staging ring, workspaces,\n"
            "communication buffers), computed by the code that sizes the real allocations. On a machine\n"
            "with GPUs it also prints the smallest free memory among them and whether the run fits.\n\n"
            "  --devices N           plan for N devices (default: what trainer.devices resolves to here)\n"
            "  --shard L             trainer.shard: 0 replicated, 1 AdamW moments split over the devices, 2\n"
            "                        also the gradients (default: the config's trainer.shard)\n"
            "  --device-memory SIZE  a device you do not have: 24GB, 16GiB, 24e9 (implies --backend cuda)\n"
            "  --backend B           cpu (fp32) or cuda (bf16 compute); default: cuda on GPUs or with\n"
            "                        --device-memory, else cpu\n\n"
            "Example: lcm plan conf/pretrain_mse.ini --devices 2 --shard 2 trainer.recompute=layer "
            "--device-memory 24GB\n");
}

/* "24GB" (1e9), "16GiB" (2^30), "512MB", "512MiB", or plain bytes; 0 when unreadable. */
static size_t parse_size(const char *s) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v > 0)) return 0;
    double unit = 1;
    if (!strcasecmp(end, "GB") || !strcasecmp(end, "G")) unit = 1e9;
    else if (!strcasecmp(end, "GiB")) unit = 1073741824.0;
    else if (!strcasecmp(end, "MB") || !strcasecmp(end, "M")) unit = 1e6;
    else if (!strcasecmp(end, "MiB")) unit = 1048576.0;
    else if (!strcasecmp(end, "TB")) unit = 1e12;
    else if (*end) return 0;
    double bytes = v * unit;
    return bytes >= 1 && bytes < 1e18 ? (size_t)bytes : 0;
}

int lcm_cmd_plan(int argc, char **argv) {
    if (argc >= 2 && lcm_cli_is_help(argv[1])) {
        usage(stdout);
        return 0;
    }
    uint64_t devices = 0, shard = 0;
    int shard_given = 0;
    const char *mem_s = NULL, *backend = NULL;
    const lcm_cli_opt opts[] = {
        {"--devices", .number = &devices, .max = LCM_MAX_DEVICES},
        {"--shard", .number = &shard, .max = 2, .flag = &shard_given},
        {"--device-memory", .value = &mem_s},
        {"--backend", .value = &backend},
    };
    const lcm_cli_cmd cmd = {"plan", 1, 0, NULL, opts, 4};
    lcm_error err = {0};
    const lcm_cli_args *a = lcm_cli_parse(&cmd, argc - 1, argv + 1, &err);
    if (!a) return lcm_cli_report(&err);
    static lcm_config cfg;
    if (lcm_config_load(&cfg, a->config_path, a->n_overrides, a->overrides, &err) != 0) return lcm_cli_report(&err);
    if (!shard_given) shard = (uint64_t)cfg.trainer.shard;
    size_t given = 0;
    if (mem_s && !(given = parse_size(mem_s))) {
        lcm_cli_usage(&err, "plan", "--device-memory '%s' is not a size (e.g. 24GB, 16GiB, 24e9)", mem_s);
        return lcm_cli_report(&err);
    }
    if (backend && strcmp(backend, "cpu") != 0 && strcmp(backend, "cuda") != 0) {
        lcm_cli_usage(&err, "plan", "--backend '%s': use cpu or cuda", backend);
        return lcm_cli_report(&err);
    }
    /* The devices here, unless the plan is for a machine given on the command line. */
    lcm_device dev[LCM_MAX_DEVICES];
    int n_here = 0, gpus_here = 0;
    if (!given || !devices) {
        if (lcm_resolve_devices(cfg.trainer.devices, dev, &n_here, &err) != 0) return lcm_cli_report(&err);
        gpus_here = n_here > 0 && dev[0].is_gpu;
    }
    if (devices == 0) devices = (uint64_t)n_here;
    if (devices == 0) {
        lcm_cli_usage(&err, "plan", "--devices must be at least 1");
        return lcm_cli_report(&err);
    }
    const int cuda = backend ? strcmp(backend, "cuda") == 0 : (given || gpus_here);
    /* validation as lcm train would run it: a validation set given, or one synthesized */
    const int validation = cfg.trainer.validate_every > 0 &&
                           (cfg.data.valid[0] || (cfg.data.synthesize && !cfg.data.train[0] && cfg.synth.valid_docs > 0));
    lcm_memplan_input in = {&cfg, cuda ? &lcm_cuda_traits : &lcm_cpu_traits, (int)devices, (int)shard, 0, validation};
    if (shard > 0 && devices == 1) {
        lcm_fail(&err, LCM_ERR_CONFIG, "--shard %d on one device: there is nothing to split it with; use --shard 0 "
                 "or more --devices", (int)shard);
        return lcm_cli_report(&err);
    }
    lcm_memplan p;
    if (lcm_memplan_compute(&in, &p, &err) != 0) return lcm_cli_report(&err);
    size_t avail = given;
    char where[96] = "";
    if (given) {
        snprintf(where, sizeof where, "%.3f GB per device (--device-memory)", given / 1e9);
    } else if (gpus_here && cuda) {
        for (int i = 0; i < n_here; i++) {
            size_t f = 0, t = 0;
            if (lcm_cuda_device_memory(dev[i].index, &f, &t, &err) != 0) return lcm_cli_report(&err);
            if (i == 0 || f < avail) {
                avail = f;
                snprintf(where, sizeof where, "%.3f GB free on GPU %d (the least of %d)", f / 1e9, dev[i].index, n_here);
            }
        }
    }
    lcm_memplan_print(&p, &in, stdout);
    if (!avail) return 0;
    if (p.total <= avail) {
        printf("  device memory: %s: fits\n", where);
        char note[384];
        if (lcm_memplan_recompute_note(&in, avail, note, sizeof note, &err) != 0) return lcm_cli_report(&err);
        if (note[0]) printf("  note: %s\n", note);
        return 0;
    }
    char advice[256];
    if (lcm_memplan_advice(&in, avail, advice, sizeof advice, &err) != 0) return lcm_cli_report(&err);
    printf("  device memory: %s: does NOT fit; %s\n", where,
           advice[0] ? advice : "no cheaper setting fits: more devices, more memory, or a smaller model");
    return 0;
}

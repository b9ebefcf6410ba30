/* cmd_eval.c: `lcm eval <checkpoint | run dir> <dataset.lcmd> [config.ini] [key=value ...] [--json FILE]`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lcm/checkpoint.h"
#include "lcm/cli.h"
#include "lcm/train.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lcm eval <checkpoint-dir | run-dir | weights.safetensors> <dataset.lcmd> [config.ini]\n"
            "                [key=value ...] [--json FILE]\n\n"
            "Next-concept metrics of a trained model on a dataset (teacher forced): loss (summed squared error\n"
            "per target, normalized space) beside the predict-the-mean baseline of the dataset, l2 (mean\n"
            "distance in raw embedding space), contrastive accuracy (CA, 0.5 = chance) and paraphrasing ratio\n"
            "(PAR). A run directory means its newest checkpoint that verifies. The model config comes from the\n"
            "checkpoint's metadata unless a config file is given; overrides apply on top (e.g.\n"
            "trainer.devices=cpu, data.max_tokens=4096). Prints a JSON line on stdout, and writes it to FILE\n"
            "with --json. Generation-based numbers: `lcm generate --score`.\n");
}

int lcm_cmd_eval(int argc, char **argv) {
    if (argc < 2 || lcm_cli_is_help(argv[1])) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *json_path = NULL;
    const lcm_cli_opt opts[] = {{"--json", .value = &json_path}};
    const lcm_cli_cmd cmd = {"eval", 1, 2, "a checkpoint and a dataset", opts, 1};
    lcm_error err = {0};
    const lcm_cli_args *a = lcm_cli_parse(&cmd, argc - 1, argv + 1, &err);
    int rc = a ? 0 : (int)err.code;
    static lcm_config cfg;
    lcm_eval_result res;
    char weights[LCM_PATH_MAX + 64];
    if (!rc) rc = lcm_cli_resolve_weights(a->operands[0], weights, sizeof weights, &err);
    if (!rc && !lcm_file_exists(a->operands[1]))
        rc = lcm_fail(&err, LCM_ERR_IO, "dataset '%s' does not exist", a->operands[1]);
    if (!rc) {
        if (a->config_path)
            rc = lcm_config_load(&cfg, a->config_path, a->n_overrides, a->overrides, &err);
        else
            rc = lcm_cli_load_stored_config(&cfg, weights, a, &err);
    }
    if (!rc) rc = lcm_evaluate(weights, a->operands[1], &cfg, &res, &err);
    if (rc) return lcm_cli_report(&err);
    char line[1024];
    snprintf(line, sizeof line,
             "{\"checkpoint\":\"%s\",\"dataset\":\"%s\",\"loss\":%.9g,\"baseline\":%.9g,\"l2\":%.9g,\"ca\":%.9g,"
             "\"par\":%.9g,\"n_targets\":%lld}",
             a->operands[0], a->operands[1], res.loss, res.baseline, res.l2, res.ca, res.par, (long long)res.n_targets);
    fprintf(stderr, "loss %.4f (predict-the-mean baseline %.4f) | l2 %.4f | CA %.2f%% | PAR %.3f | %lld targets\n",
            res.loss, res.baseline, res.l2, 100 * res.ca, res.par, (long long)res.n_targets);
    printf("%s\n", line);
    if (json_path) {
        char buf[sizeof line + 1];
        snprintf(buf, sizeof buf, "%s\n", line);
        if (lcm_write_file_atomic(json_path, buf, strlen(buf), &err) != 0) return lcm_cli_report(&err);
    }
    return 0;
}

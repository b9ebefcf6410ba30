/* main.c: the lcm binary. Dispatches to a subcommand; everything else lives in src/cli/. */
#include <stdio.h>
#include <string.h>

#include "lcm/blas_kernels.h"
#include "lcm/cli.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"train", lcm_cmd_train, "train a Base-LCM (the embedded default when no config is given)"},
    {"eval", lcm_cmd_eval, "next-concept metrics (loss, l2, contrastive accuracy) of a checkpoint"},
    {"generate", lcm_cmd_generate, "continue prompts (concept sequences) with a trained model, KV-cached"},
    {"plan", lcm_cmd_plan, "the memory a training run needs per device, by class, and what fits"},
    {"bench", lcm_cmd_bench, "training-step speed, TFLOP/s, MFU and memory"},
    {"data", lcm_cmd_data, "datasets: synth, import, inspect, fit-normalizer, batches"},
    {"config", lcm_cmd_config, "key reference and the effective configuration"},
    {"model", lcm_cmd_model, "the parameter table of a model config"},
    {"info", lcm_cmd_info, "CPU count, visible GPUs, peer access, CUDA and NCCL versions"},
};
static const int num_commands = (int)(sizeof commands / sizeof commands[0]);

static void usage(FILE *f) {
    fprintf(f, "lcm %s: Large Concept Model (Base-LCM) trainer\n\n", LCM_VERSION);
    fprintf(f, "usage: lcm <command> [config.ini] [section.key=value ...]\n\ncommands:\n");
    for (int i = 0; i < num_commands; i++) fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`lcm help <command>` (or --help anywhere on the line) describes a command. Docs: README.md\n");
}

static const command *find_command(const char *name) {
    for (int i = 0; i < num_commands; i++)
        if (strcmp(name, commands[i].name) == 0) return &commands[i];
    return NULL;
}

static int unknown_command(const char *name) {
    const char *names[sizeof commands / sizeof commands[0]];
    for (int i = 0; i < num_commands; i++) names[i] = commands[i].name;
    const char *best = lcm_closest_name(name, names, num_commands);
    if (best)
        fprintf(stderr, "lcm: usage error: unknown command '%s'; did you mean `lcm %s`?\n", name, best);
    else
        fprintf(stderr, "lcm: usage error: unknown command '%s'; run `lcm --help` for the list\n", name);
    return 2;
}

/* `lcm CMD [SUB] ... --help ...`: the command's help, or for lcm data (whose subcommands each have
 * their own) the subcommand's. */
static int help_for(const command *c, int argc, char **argv) {
    char *args[3] = {argv[0], NULL, NULL};
    int n = 1;
    if (strcmp(c->name, "data") == 0 && argc > 1 && argv[1][0] != '-' && !strchr(argv[1], '=') && !strchr(argv[1], '.'))
        args[n++] = argv[1];
    args[n++] = "--help";
    return c->run(n, args);
}

int main(int argc, char **argv) {
    lcm_blas_pick_kernels(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (lcm_cli_is_help(argv[1])) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("lcm %s (%s)\n", LCM_VERSION, LCM_GIT_REV);
        return 0;
    }
    if (strcmp(argv[1], "help") == 0) {
        if (argc < 3) {
            usage(stdout);
            return 0;
        }
        const command *c = find_command(argv[2]);
        return c ? help_for(c, argc - 2, argv + 2) : unknown_command(argv[2]);
    }
    const command *c = find_command(argv[1]);
    if (!c) return unknown_command(argv[1]);
    for (int i = 2; i < argc; i++)
        if (lcm_cli_is_help(argv[i])) return help_for(c, argc - 1, argv + 1);
    return c->run(argc - 1, argv + 1);
}

/* cmd_model.c: `lcm model info [config.ini] [key=value ...]`: the parameter table of a model config. */
#include <stdio.h>
#include <string.h>

#include "lcm/cli.h"
#include "lcm/model.h"

static void usage(FILE *f) {
    fprintf(f, "usage: lcm model info [config.ini] [model.key=value ...]\n\n"
               "Prints every parameter of the model the config describes (reference name, [out, in] shape,\n"
               "init rule) and the total. Example: lcm model info conf/model/base_lcm_1_6b.ini\n");
}

int lcm_cmd_model(int argc, char **argv) {
    if (argc < 2 || lcm_cli_is_help(argv[1])) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "info") != 0) {
        fprintf(stderr, "lcm: usage error: unknown `lcm model` subcommand '%s' (expected: info)\n", argv[1]);
        return 2;
    }
    lcm_error err = {0};
    static lcm_config cfg;
    lcm_dims d;
    lcm_param_table t;
    if (lcm_cli_load_config(argc - 2, argv + 2, "model", &cfg, &err) != 0 || lcm_dims_from_config(&d, &cfg.model, &err) != 0 ||
        lcm_param_table_build(&t, &d, &err) != 0)
        return lcm_cli_report(&err);
    printf("model: D %d, C %d, L %d, H %d (head dim %d), F %d, max_seq_len %d (from %s)\n", d.D, d.C, d.L, d.H,
           d.C / d.H, d.F, d.max_seq_len, cfg.source);
    lcm_param_table_print(&t, stdout);
    lcm_param_table_free(&t);
    return 0;
}

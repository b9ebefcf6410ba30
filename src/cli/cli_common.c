/* cli_common.c: what every subcommand shares: argument splitting and error reporting. */
#include "lcm/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lcm_cli_report(const lcm_error *err) {
    fprintf(stderr, "lcm: %s: %s\n", lcm_status_name(err->code), err->msg[0] ? err->msg : "(no message)");
    return lcm_exit_status(err->code);
}

int lcm_cli_is_help(const char *arg) { return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0; }

static int is_config_arg(const char *s) {
    size_t n = strlen(s);
    return n > 4 && strcmp(s + n - 4, ".ini") == 0;
}

int lcm_cli_split(int argc, char **argv, lcm_cli_args *a, lcm_error *err) {
    memset(a, 0, sizeof *a);
    a->overrides = calloc((size_t)argc + 1, sizeof(char *));
    a->operands = calloc((size_t)argc + 1, sizeof(char *));
    a->flags = calloc((size_t)argc + 1, sizeof(char *));
    if (!a->overrides || !a->operands || !a->flags) {
        lcm_cli_args_free(a);
        return lcm_fail(err, LCM_ERR_NOMEM, "out of memory parsing the command line");
    }
    for (int i = 0; i < argc; i++) {
        char *s = argv[i];
        if (strncmp(s, "--", 2) == 0) {
            a->flags[a->n_flags++] = s;
        } else if (!a->config_path && a->n_overrides == 0 && is_config_arg(s) && !strchr(s, '=')) {
            a->config_path = s;
        } else if (strchr(s, '=') && s[0] != '/' && s[0] != '.') {
            a->overrides[a->n_overrides++] = s;
        } else {
            a->operands[a->n_operands++] = s;
        }
    }
    return 0;
}

void lcm_cli_args_free(lcm_cli_args *a) {
    free(a->overrides);
    free(a->operands);
    free(a->flags);
    memset(a, 0, sizeof *a);
}

int lcm_cli_load_config(int argc, char **argv, const char *what, lcm_config *cfg, lcm_error *err) {
    lcm_cli_args a;
    LCM_TRY(lcm_cli_split(argc, argv, &a, err));
    int rc;
    if (a.n_operands > 0 || a.n_flags > 0)
        rc = lcm_fail(err, LCM_ERR_USAGE, "unexpected argument '%s' (a config must end in .ini, an override is "
                      "section.key=value); see `lcm %s --help`", a.n_operands ? a.operands[0] : a.flags[0], what);
    else
        rc = lcm_config_load(cfg, a.config_path, a.n_overrides, a.overrides, err);
    lcm_cli_args_free(&a);
    return rc;
}

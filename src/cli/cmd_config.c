/* cmd_config.c: `lcm config`: the key reference and the effective configuration. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lcm/cli.h"

static const char usage_text[] =
    "usage: lcm config keys [--markdown]\n"
    "       lcm config show [config.ini] [section.key=value ...]\n"
    "\n"
    "keys   every configuration key: type, default, allowed values, description\n"
    "       (--markdown: as a Markdown table)\n"
    "show   the effective configuration, as an INI file that lcm can load back: the defaults, then\n"
    "       config.ini (the built-in default.ini when none is given) with its bases, then the\n"
    "       overrides; each value is followed by where it came from\n"
    "\n"
    "A config file may extend others with `[config] base = a.ini, b.ini`. Overrides may also be\n"
    "written +section.key=value or ++section.key=value. See docs/config.md.\n";

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "lcm: usage error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "; run `lcm config --help`\n");
    va_end(ap);
    return lcm_exit_status(LCM_ERR_USAGE);
}

static int cmd_keys(const lcm_cli_args *a) {
    int markdown = 0;
    for (int i = 0; i < a->n_flags; i++) {
        if (strcmp(a->flags[i], "--markdown") != 0) return usage_error("`lcm config keys` has no option %s", a->flags[i]);
        markdown = 1;
    }
    if (a->config_path) return usage_error("`lcm config keys` takes no config file (got %s)", a->config_path);
    if (a->n_overrides) return usage_error("`lcm config keys` takes no overrides (got %s)", a->overrides[0]);
    if (a->n_operands) return usage_error("`lcm config keys` takes no operand (got %s)", a->operands[0]);
    lcm_config_print_keys(stdout, markdown);
    return 0;
}

static int cmd_show(const lcm_cli_args *a) {
    if (a->n_flags) return usage_error("`lcm config show` has no option %s", a->flags[0]);
    if (a->n_operands)
        return usage_error("'%s' is neither a config file (*.ini) nor an override (section.key=value)", a->operands[0]);
    static lcm_config cfg; /* static: a large struct, and this runs once per process */
    lcm_error err = {0};
    if (lcm_config_load(&cfg, a->config_path, a->n_overrides, a->overrides, &err)) return lcm_cli_report(&err);
    if (lcm_config_write(&cfg, stdout) || fflush(stdout)) {
        lcm_fail(&err, LCM_ERR_IO, "writing the configuration to stdout failed");
        return lcm_cli_report(&err);
    }
    return 0;
}

int lcm_cmd_config(int argc, char **argv) {
    if (argc < 2 || lcm_cli_is_help(argv[1])) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (int i = 2; i < argc; i++)
        if (lcm_cli_is_help(argv[i])) {
            fputs(usage_text, stdout);
            return 0;
        }
    int (*run)(const lcm_cli_args *) = NULL;
    if (strcmp(argv[1], "keys") == 0)
        run = cmd_keys;
    else if (strcmp(argv[1], "show") == 0)
        run = cmd_show;
    else
        return usage_error("unknown `lcm config` command '%s' (use keys or show)", argv[1]);
    lcm_cli_args a;
    lcm_error err = {0};
    if (lcm_cli_split(argc - 2, argv + 2, &a, &err)) return lcm_cli_report(&err);
    int rc = run(&a);
    lcm_cli_args_free(&a);
    return rc;
}

/* cmd_config.c: `lcm config`: the key reference and the effective configuration. */
#include <stdio.h>
#include <string.h>

#include "lcm/cli.h"

static const char usage_text[] =
    "usage: lcm config keys [--markdown]\n"
    "       lcm config show [config.ini] [section.key=value ...]\n"
    "       lcm config refkeys\n"
    "\n"
    "keys   every configuration key: type, default, allowed values, description\n"
    "       (--markdown: as a Markdown table)\n"
    "show   the effective configuration, as an INI file that lcm can load back: the defaults, then\n"
    "       config.ini (the built-in default.ini when none is given) with its bases, then the\n"
    "       overrides; each value is followed by where it came from\n"
    "\n"
    "refkeys the reference trainer's (large_concept_model) command-line key names: the key each one\n"
    "       sets, or why it is not needed or not supported (docs/reference-keys.md)\n"
    "\n"
    "A config file may extend others with `[config] base = a.ini, b.ini`. Overrides may also be\n"
    "written +section.key=value or ++section.key=value. See docs/config.md.\n";

static int cmd_keys(int argc, char **argv) {
    int markdown = 0;
    const lcm_cli_opt opts[] = {{"--markdown", .flag = &markdown}};
    const lcm_cli_cmd cmd = {"config keys", 0, 0, NULL, opts, 1};
    lcm_error err = {0};
    if (!lcm_cli_parse(&cmd, argc, argv, &err)) return lcm_cli_report(&err);
    lcm_config_print_keys(stdout, markdown);
    return 0;
}

static int cmd_refkeys(int argc, char **argv) {
    const lcm_cli_cmd cmd = {"config refkeys", 0, 0, NULL, NULL, 0};
    lcm_error err = {0};
    if (!lcm_cli_parse(&cmd, argc, argv, &err)) return lcm_cli_report(&err);
    static const char *const kind[] = {"alias", "not needed", "unsupported"};
    for (int i = 0; i < lcm_num_ref_keys; i++) {
        const lcm_ref_key *r = &lcm_ref_keys[i];
        printf("%s\t%s\t%s%s%s\n", r->name, kind[r->kind], r->target ? r->target : "", r->target && r->why ? ": " : "",
               r->why ? r->why : "");
    }
    return 0;
}

static int cmd_show(int argc, char **argv) {
    static lcm_config cfg; /* static: a large struct, and this runs once per process */
    lcm_error err = {0};
    if (lcm_cli_load_config(argc, argv, "config show", &cfg, &err)) return lcm_cli_report(&err);
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
    if (strcmp(argv[1], "keys") == 0) return cmd_keys(argc - 2, argv + 2);
    if (strcmp(argv[1], "show") == 0) return cmd_show(argc - 2, argv + 2);
    if (strcmp(argv[1], "refkeys") == 0) return cmd_refkeys(argc - 2, argv + 2);
    lcm_error err = {0};
    lcm_cli_usage(&err, "config", "unknown `lcm config` command '%s' (use keys, show or refkeys)", argv[1]);
    return lcm_cli_report(&err);
}

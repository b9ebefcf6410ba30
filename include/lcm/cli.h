/* cli.h: the subcommands. main.c only dispatches; each lcm_cmd_* parses its own arguments, calls the
 * library, prints what went wrong (one line naming the file, key or value and what to do) and returns
 * the process exit status. */
#ifndef LCM_CLI_H
#define LCM_CLI_H

#include "lcm/config.h"
#include "lcm/error.h"

int lcm_cmd_train(int argc, char **argv);
int lcm_cmd_eval(int argc, char **argv);
int lcm_cmd_generate(int argc, char **argv);
int lcm_cmd_bench(int argc, char **argv);
int lcm_cmd_config(int argc, char **argv);
int lcm_cmd_data(int argc, char **argv);
int lcm_cmd_data_batches(int argc, char **argv); /* `lcm data batches`, called by lcm_cmd_data */
int lcm_cmd_model(int argc, char **argv);
int lcm_cmd_info(int argc, char **argv);

/* Print "lcm: <error kind>: <message>" to stderr; returns the exit status for it. */
int lcm_cli_report(const lcm_error *err);
/* True for -h / --help. */
int lcm_cli_is_help(const char *arg);

/* Split argv into an optional config file (first argument ending in .ini), overrides (arguments with
 * '=' ) and other operands (kept in order), then load the config. Operands beyond max_operands are a
 * usage error naming the argument. */
typedef struct lcm_cli_args {
    const char *config_path;   /* NULL: the embedded default */
    char **overrides;
    int n_overrides;
    char **operands;
    int n_operands;
    char **flags;              /* arguments starting with "--", "=value" included (command-specific) */
    int n_flags;
} lcm_cli_args;

int lcm_cli_split(int argc, char **argv, lcm_cli_args *out, lcm_error *err);
void lcm_cli_args_free(lcm_cli_args *a);

/* For commands that take only [config.ini] [key=value ...]: anything else is a usage error that points
 * at `lcm <what> --help`; then the config is loaded. */
int lcm_cli_load_config(int argc, char **argv, const char *what, lcm_config *cfg, lcm_error *err);

#endif

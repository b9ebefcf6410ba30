/* cli.h: the subcommands. main.c only dispatches; each lcm_cmd_* parses its own arguments, calls the
 * library, prints what went wrong (one line naming the file, key or value and what to do) and returns
 * the process exit status. */
#ifndef LCM_CLI_H
#define LCM_CLI_H

#include <stdint.h>

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
int lcm_cmd_plan(int argc, char **argv);

/* Print "lcm: <error kind>: <message>" to stderr; returns the exit status for it. */
int lcm_cli_report(const lcm_error *err);
/* True for -h / --help. */
int lcm_cli_is_help(const char *arg);

/* ---- the one command-line parser ----------------------------------------------------------------- */

/* An option: "--name VALUE", "--name=VALUE" or "ALIAS VALUE" when value or number is set, else "--name". */
typedef struct lcm_cli_opt {
    const char *name;      /* "--limit" */
    const char *alias;     /* "-o", or NULL */
    const char **value;    /* a string value is stored here */
    int *flag;             /* set to 1 when the option is given */
    uint64_t *number;      /* a whole-number value in [0, max] is stored here (max 0: UINT64_MAX) */
    uint64_t max;
    const char *required;  /* a value option that must be given: the error says "give <required>" */
} lcm_cli_opt;

/* What a (sub)command accepts. */
typedef struct lcm_cli_cmd {
    const char *name;      /* "data synth": messages point at `lcm data synth --help` */
    int takes_config;      /* [config.ini] [section.key=value ...] */
    int max_operands;      /* other arguments, kept in order */
    const char *operands;  /* when set: exactly max_operands are needed, and a message names them */
    const lcm_cli_opt *opts;
    int n_opts;
} lcm_cli_cmd;

#define LCM_CLI_MAX_ARGS 512

typedef struct lcm_cli_args {
    const char *config_path;   /* NULL: the embedded default */
    int n_overrides, n_operands;
    char *overrides[LCM_CLI_MAX_ARGS];
    char *operands[LCM_CLI_MAX_ARGS];
} lcm_cli_args;

/* Options anywhere; with takes_config, the first argument ending in .ini (before any override) is the
 * config and section.key=value arguments are overrides; the rest are operands, at most max_operands
 * (exactly, when cmd->operands names them). Anything else is a usage error naming the argument and
 * pointing at the command's help (NULL returned). The result points into argv and lives in storage of
 * the parser's (a process parses one command line). */
const lcm_cli_args *lcm_cli_parse(const lcm_cli_cmd *cmd, int argc, char **argv, lcm_error *err);

/* A usage error: "<message>; see `lcm <cmd> --help`". Returns LCM_ERR_USAGE. */
__attribute__((format(printf, 3, 4))) int lcm_cli_usage(lcm_error *err, const char *cmd, const char *fmt, ...);

/* For commands that take only [config.ini] [key=value ...]: parse, then load the config. */
int lcm_cli_load_config(int argc, char **argv, const char *what, lcm_config *cfg, lcm_error *err);

/* The config stored in a checkpoint (directory or weights file) with the parsed overrides on top, for
 * commands that run a trained model (eval, generate). */
int lcm_cli_load_stored_config(lcm_config *cfg, const char *ckpt, const lcm_cli_args *a, lcm_error *err);

/* The weights file of `model`: the file itself, a checkpoint directory's model.safetensors, or the
 * newest verified checkpoint of a run directory (said on stderr). */
int lcm_cli_resolve_weights(const char *model, char *out, size_t cap, lcm_error *err);

#endif

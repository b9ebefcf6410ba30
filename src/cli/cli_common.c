/* cli_common.c: what every subcommand shares: the one command-line parser (options, the config file,
 * overrides and operands), usage errors that point at the command's help, and error reporting. */
#include "lcm/cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lcm/checkpoint.h"
#include "lcm/fileio.h"
#include "lcm/log.h"

int lcm_cli_report(const lcm_error *err) {
    fprintf(stderr, "lcm: %s: %s\n", lcm_status_name(err->code), err->msg[0] ? err->msg : "(no message)");
    return lcm_exit_status(err->code);
}

int lcm_cli_is_help(const char *arg) { return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0; }

int lcm_cli_usage(lcm_error *err, const char *cmd, const char *fmt, ...) {
    char msg[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lcm_fail(err, LCM_ERR_USAGE, "%s; see `lcm %s --help`", msg, cmd);
}

static int parse_u64(const char *cmd, const char *opt, const char *s, uint64_t max, uint64_t *out, lcm_error *err) {
    if (max == 0) max = UINT64_MAX;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!s[0] || *end || errno || s[0] == '-' || v > max)
        return lcm_cli_usage(err, cmd, "%s needs a whole number between 0 and %llu, not '%s'", opt,
                             (unsigned long long)max, s);
    *out = v;
    return 0;
}

static int is_config_arg(const char *s) {
    size_t n = strlen(s);
    return n > 4 && strcmp(s + n - 4, ".ini") == 0 && !strchr(s, '=');
}

/* An option of cmd: "--name", its alias, or "--name=value" (then *inline_value points at the value). */
static const lcm_cli_opt *find_opt(const lcm_cli_cmd *cmd, const char *a, const char **inline_value) {
    *inline_value = NULL;
    for (int k = 0; k < cmd->n_opts; k++) {
        const lcm_cli_opt *o = &cmd->opts[k];
        size_t n = strlen(o->name);
        if (strcmp(a, o->name) == 0 || (o->alias && strcmp(a, o->alias) == 0)) return o;
        if (strncmp(a, o->name, n) == 0 && a[n] == '=') {
            *inline_value = a + n + 1;
            return o;
        }
    }
    return NULL;
}

/* The key of an override as typed, lower case, without + or ++ ("" when it has none). */
static void override_key(const char *s, char *key, size_t cap) {
    s += strncmp(s, "++", 2) == 0 ? 2 : s[0] == '+';
    size_t n = strcspn(s, "=");
    while (n > 0 && s[n - 1] == ' ') n--;
    if (n >= cap) n = 0;
    for (size_t i = 0; i < n; i++) key[i] = (char)tolower((unsigned char)s[i]);
    key[n] = '\0';
}

/* pretrain=NAME (the reference's recipe group): the recipe conf/pretrain_NAME.ini, built in. */
static int pick_recipe(const lcm_cli_cmd *cmd, const char *s, lcm_cli_args *a, lcm_error *err) {
    static char path[LCM_PATH_MAX];
    const char *name = strchr(s, '=') + 1;
    if (a->config_path)
        return lcm_cli_usage(err, cmd->name, "'%s' selects a recipe, and '%s' is one already: give one of them", s,
                             a->config_path);
    snprintf(path, sizeof path, "conf/pretrain_%s.ini", name);
    for (const lcm_embedded_file *f = lcm_embedded_conf; f->path; f++)
        if (strcmp(f->path, path + 5) == 0 && !strchr(name, '/')) {
            a->config_path = path;
            return 0;
        }
    char list[512] = "";
    for (const lcm_embedded_file *f = lcm_embedded_conf; f->path; f++) {
        size_t n = strlen(f->path), len = strlen(list);
        if (strncmp(f->path, "pretrain_", 9) == 0 && n > 13 && strcmp(f->path + n - 4, ".ini") == 0)
            snprintf(list + len, sizeof list - len, "%s%.*s", len ? ", " : "", (int)(n - 13), f->path + 9);
    }
    return lcm_cli_usage(err, cmd->name, "no recipe '%s' (pretrain=NAME selects conf/pretrain_NAME.ini); the recipes are: %s",
                         name, list);
}

static int parse(const lcm_cli_cmd *cmd, int argc, char **argv, lcm_cli_args *a, lcm_error *err) {
    if (argc > LCM_CLI_MAX_ARGS) return lcm_cli_usage(err, cmd->name, "more than %d arguments", LCM_CLI_MAX_ARGS);
    const char *last_flag = NULL; /* a flag that takes no value, just before this argument */
    for (int i = 0; i < argc; i++) {
        char *s = argv[i];
        const char *flag_before = last_flag;
        last_flag = NULL;
        if (s[0] == '-' && s[1] != '\0') {
            const char *value;
            const lcm_cli_opt *o = find_opt(cmd, s, &value);
            if (!o) return lcm_cli_usage(err, cmd->name, "unknown option '%s'", s);
            if (o->flag) *o->flag = 1;
            if (!o->value && !o->number) {
                if (value) return lcm_cli_usage(err, cmd->name, "option '%s' takes no value", o->name);
                last_flag = o->name;
                continue;
            }
            if (!value) {
                if (i + 1 >= argc) return lcm_cli_usage(err, cmd->name, "option '%s' needs a value", s);
                value = argv[++i];
            }
            if (o->number) LCM_TRY(parse_u64(cmd->name, o->name, value, o->max, o->number, err));
            else *o->value = value;
        } else if (cmd->takes_config && is_config_arg(s) && a->config_path) {
            return lcm_cli_usage(err, cmd->name,
                                 "only one config file is accepted, got '%s' and '%s'; to combine them, name one as "
                                 "the base of the other (`[config] base = %s` in %s)",
                                 a->config_path, s, a->config_path, s);
        } else if (cmd->takes_config && is_config_arg(s) && a->n_overrides > 0) {
            return lcm_cli_usage(err, cmd->name, "the config file '%s' must come before the overrides", s);
        } else if (cmd->takes_config && is_config_arg(s)) {
            a->config_path = s;
        } else if (cmd->takes_config && strchr(s, '=') && s[0] != '/' && s[0] != '.') {
            char key[160];
            override_key(s, key, sizeof key);
            const lcm_ref_key *r = lcm_config_find_ref_key(key);
            if (strcmp(key, "pretrain") == 0) {
                LCM_TRY(pick_recipe(cmd, s, a, err));
            } else if (r && r->kind == LCM_REF_NOT_NEEDED) {
                fprintf(stderr, "lcm: note: %s is not needed: %s\n", key, r->why);
            } else {
                a->overrides[a->n_overrides++] = s;
            }
        } else if (a->n_operands < cmd->max_operands) {
            a->operands[a->n_operands++] = s;
        } else if (flag_before) {
            return lcm_cli_usage(err, cmd->name, "option '%s' takes no value, but '%s' follows it", flag_before, s);
        } else if (cmd->takes_config) {
            return lcm_cli_usage(err, cmd->name, "'%s' is neither a config file (*.ini) nor an override "
                                 "(section.key=value)", s);
        } else {
            return lcm_cli_usage(err, cmd->name, "unexpected argument '%s'", s);
        }
    }
    if (cmd->operands && a->n_operands != cmd->max_operands)
        return lcm_cli_usage(err, cmd->name, "expected %s", cmd->operands);
    for (int k = 0; k < cmd->n_opts; k++)
        if (cmd->opts[k].required && !*cmd->opts[k].value)
            return lcm_cli_usage(err, cmd->name, "give %s", cmd->opts[k].required);
    return 0;
}

const lcm_cli_args *lcm_cli_parse(const lcm_cli_cmd *cmd, int argc, char **argv, lcm_error *err) {
    static lcm_cli_args a; /* large, and a process parses one command line */
    memset(&a, 0, sizeof a);
    return parse(cmd, argc, argv, &a, err) == 0 ? &a : NULL;
}

int lcm_cli_load_config(int argc, char **argv, const char *what, lcm_config *cfg, lcm_error *err) {
    const lcm_cli_cmd cmd = {.name = what, .takes_config = 1};
    const lcm_cli_args *a = lcm_cli_parse(&cmd, argc, argv, err);
    return a ? lcm_config_load(cfg, a->config_path, a->n_overrides, a->overrides, err) : (int)err->code;
}

/* Through a temporary file: the config loader reads files (and names them in its messages). */
int lcm_cli_load_stored_config(lcm_config *cfg, const char *ckpt, const lcm_cli_args *a, lcm_error *err) {
    char *text = NULL;
    LCM_TRY(lcm_checkpoint_config_text(ckpt, &text, err));
    char tmp[] = "/tmp/lcm-stored-config-XXXXXX.ini";
    int fd = mkstemps(tmp, 4);
    int rc = 0;
    if (fd < 0) {
        rc = lcm_fail(err, LCM_ERR_IO, "cannot create a temporary file for the checkpoint's config");
    } else {
        FILE *f = fdopen(fd, "w");
        if (!f) {
            close(fd);
            rc = lcm_fail(err, LCM_ERR_IO, "cannot write a temporary file for the checkpoint's config");
        } else {
            fputs(text, f);
            fclose(f);
            rc = lcm_config_load(cfg, tmp, a->n_overrides, a->overrides, err);
            if (rc) lcm_error_context(err, "the config stored in %s", ckpt);
        }
        unlink(tmp);
    }
    free(text);
    return rc;
}

/* A run directory means its newest checkpoint that verifies (as trainer.resume=auto picks it). */
int lcm_cli_resolve_weights(const char *model, char *out, size_t cap, lcm_error *err) {
    if (!lcm_file_exists(model)) return lcm_fail(err, LCM_ERR_IO, "checkpoint '%s' does not exist", model);
    if (!lcm_is_dir(model)) {
        snprintf(out, cap, "%s", model);
        return 0;
    }
    char path[LCM_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/model.safetensors", model);
    if (lcm_file_exists(path)) {
        snprintf(out, cap, "%s", path);
        return 0;
    }
    int found = 0;
    char latest[LCM_PATH_MAX + 64];
    LCM_TRY(lcm_checkpoint_latest_verified(model, latest, sizeof latest, &found, err));
    if (!found)
        return lcm_fail(err, LCM_ERR_IO, "'%s' is neither a checkpoint (no model.safetensors) nor a run directory with "
                        "checkpoints", model);
    if (snprintf(out, cap, "%s/model.safetensors", latest) >= (int)cap)
        return lcm_fail(err, LCM_ERR_IO, "the checkpoint path %s is too long", latest);
    lcm_info("using the newest checkpoint of %s: %s", model, latest);
    return 0;
}

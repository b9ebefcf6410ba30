/* test_cli.c: the one command-line parser every subcommand uses (lcm_cli_parse): option spellings,
 * whole-number and required options, the config file, overrides and operands, and the usage error
 * each mistake gives. */
#include "harness.h"

#include "lcm/cli.h"

typedef struct parsed {
    const char *out;
    int flag;
    uint64_t n;
} parsed;

/* A command like `lcm data import`: two operands, -o/--output (required), --flag, --n (<= 100). */
static const lcm_cli_args *plain(parsed *p, char **argv, int argc, lcm_error *err) {
    *p = (parsed){NULL, 0, 7};
    const lcm_cli_opt opts[] = {{"--output", "-o", .value = &p->out, .required = "the output with -o FILE"},
                                {"--flag", .flag = &p->flag}, {"--n", .number = &p->n, .max = 100}};
    const lcm_cli_cmd cmd = {"demo", 0, 2, "IN and MORE", opts, 3};
    return lcm_cli_parse(&cmd, argc, argv, err);
}

/* A command like `lcm train`: [config.ini] [key=value ...] and --n. */
static const lcm_cli_args *config(parsed *p, char **argv, int argc, lcm_error *err) {
    *p = (parsed){NULL, 0, 7};
    const lcm_cli_opt opts[] = {{"--n", .number = &p->n}};
    const lcm_cli_cmd cmd = {"demo", 1, 0, NULL, opts, 1};
    return lcm_cli_parse(&cmd, argc, argv, err);
}

/* argv, argc of a literal list */
#define ARGS(...) (char *[]){__VA_ARGS__}, (int)(sizeof((char *[]){__VA_ARGS__}) / sizeof(char *))

static void expect_usage(const lcm_cli_args *a, lcm_error *err, const char *needle) {
    CHECK(a == NULL);
    CHECKF(err->code == LCM_ERR_USAGE && strstr(err->msg, needle) && strstr(err->msg, "; see `lcm demo --help`"),
           "expected a usage error with \"%s\", got %d: %s", needle, err->code, err->msg);
    lcm_error_clear(err);
}

TEST(options_in_every_spelling_and_operands_in_order) {
    lcm_error err = {0};
    parsed p;
    const lcm_cli_args *a = plain(&p, ARGS("in.npy", "--n", "42", "-o", "x.lcmd", "more.npy", "--flag"), &err);
    CHECK(a && a->n_operands == 2 && strcmp(a->operands[0], "in.npy") == 0 && strcmp(a->operands[1], "more.npy") == 0);
    CHECK(p.out && strcmp(p.out, "x.lcmd") == 0 && p.flag == 1 && p.n == 42);
    a = plain(&p, ARGS("--output=y.lcmd", "--n=100", "a", "b"), &err);
    CHECK(a && p.out && strcmp(p.out, "y.lcmd") == 0 && p.n == 100 && p.flag == 0);
    a = plain(&p, ARGS("-", "b", "-o", "z"), &err); /* "-" alone is an operand (stdin-like names) */
    CHECK(a && a->n_operands == 2 && strcmp(a->operands[0], "-") == 0);
}

TEST(option_mistakes_are_usage_errors_naming_the_option) {
    lcm_error err = {0};
    parsed p;
    expect_usage(plain(&p, ARGS("a", "b", "-o", "x", "--bogus"), &err), &err, "unknown option '--bogus'");
    expect_usage(plain(&p, ARGS("a", "b", "-o"), &err), &err, "option '-o' needs a value");
    expect_usage(plain(&p, ARGS("a", "b", "-o", "x", "--flag=1"), &err), &err, "option '--flag' takes no value");
    expect_usage(plain(&p, ARGS("a", "b", "-o", "x", "--n", "101"), &err), &err,
                 "--n needs a whole number between 0 and 100, not '101'");
    expect_usage(plain(&p, ARGS("a", "b", "-o", "x", "--n=-1"), &err), &err, "not '-1'");
    expect_usage(plain(&p, ARGS("a", "b", "-o", "x", "--n", "4x"), &err), &err, "not '4x'");
    expect_usage(plain(&p, ARGS("a", "b"), &err), &err, "give the output with -o FILE");
    expect_usage(plain(&p, ARGS("a", "-o", "x"), &err), &err, "expected IN and MORE");
    expect_usage(plain(&p, ARGS("a", "b", "c", "-o", "x"), &err), &err, "unexpected argument 'c'");
}

TEST(config_file_overrides_and_what_is_neither) {
    lcm_error err = {0};
    parsed p;
    const lcm_cli_args *a = config(&p, ARGS("my.ini", "trainer.max_steps=5", "--n", "3", "+model.dropout=0"), &err);
    CHECK(a && a->config_path && strcmp(a->config_path, "my.ini") == 0 && a->n_overrides == 2 && p.n == 3);
    CHECK(a && strcmp(a->overrides[0], "trainer.max_steps=5") == 0 && strcmp(a->overrides[1], "+model.dropout=0") == 0);
    a = config(&p, ARGS("trainer.max_steps=5"), &err);
    CHECK(a && a->config_path == NULL && a->n_overrides == 1);
    expect_usage(config(&p, ARGS("stray"), &err), &err,
                 "'stray' is neither a config file (*.ini) nor an override (section.key=value)");
    expect_usage(config(&p, ARGS("./x=y"), &err), &err, "'./x=y' is neither"); /* a path, not an override */
    expect_usage(config(&p, ARGS("a=1", "b.ini"), &err), &err, "the config file 'b.ini' must come before the overrides");
}

/* Issue 9, item 14: a second config file is not blamed for its suffix; the error names both and says how
 * to combine them. */
TEST(a_second_config_file_says_how_to_combine_them) {
    lcm_error err = {0};
    parsed p;
    expect_usage(config(&p, ARGS("a.ini", "b.ini"), &err), &err,
                 "only one config file is accepted, got 'a.ini' and 'b.ini'; to combine them, name one as the base "
                 "of the other (`[config] base = a.ini` in b.ini)");
}

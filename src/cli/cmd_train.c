/* cmd_train.c: `lcm train [config.ini] [key=value ...]`, with the embedded default when no config is
 * given; prints where the results are, and draws the metrics plot when Python and matplotlib exist. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lcm/cli.h"
#include "lcm/fileio.h"
#include "lcm/train.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lcm train [config.ini] [section.key=value ...]\n\n"
            "Trains a Base-LCM. Without a config file it uses the embedded conf/default.ini: the toy model on a\n"
            "synthetic dataset generated into the run directory, on every visible GPU or else on the CPU.\n"
            "Overrides may also be written +section.key=value or ++section.key=value.\n\n"
            "  lcm train conf/pretrain_mse.ini data.train=/data/train.lcmd data.valid=/data/valid.lcmd\n"
            "  lcm train trainer.devices=cpu:2 trainer.max_steps=50\n\n"
            "The run directory (trainer.output_dir) gets config.ini, train.log, metrics.jsonl, metrics.png and\n"
            "checkpoints/step_N/. Running the same command again resumes from the newest checkpoint\n"
            "(trainer.resume=auto). Ctrl-C finishes the step, writes a checkpoint and exits; a second Ctrl-C\n"
            "exits at once. Keys: `lcm config keys`.\n");
}

/* tools/plot_metrics.py next to the binary (build/lcm or ./lcm in a checkout), or in ./tools. */
static int find_plot_tool(char *out, size_t cap) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char dir[PATH_MAX];
        lcm_dirname(exe, dir, sizeof dir);
        const char *rel[] = {"tools/plot_metrics.py", "../tools/plot_metrics.py"};
        for (int i = 0; i < 2; i++) {
            snprintf(out, cap, "%s/%s", dir, rel[i]);
            if (lcm_file_exists(out)) return 1;
        }
    }
    snprintf(out, cap, "tools/plot_metrics.py");
    return lcm_file_exists(out);
}

static void plot(const lcm_config *cfg) {
    char tool[PATH_MAX + 32];
    if (!find_plot_tool(tool, sizeof tool)) return;
    const char *env = getenv("LCM_PYTHON");
    const char *pythons[] = {env, "python3", "/usr/bin/python3"};
    for (int i = 0; i < 3; i++) {
        if (!pythons[i]) continue;
        char cmd[3 * PATH_MAX];
        snprintf(cmd, sizeof cmd, "%s -c 'import matplotlib' >/dev/null 2>&1", pythons[i]);
        if (system(cmd) != 0) continue;
        snprintf(cmd, sizeof cmd, "%s '%s' '%s' >/dev/null", pythons[i], tool, cfg->trainer.output_dir);
        if (system(cmd) == 0) {
            printf("plot:        %s/metrics.png\n", cfg->trainer.output_dir);
            return;
        }
    }
    printf("plot:        python3 %s %s  (needs matplotlib)\n", tool, cfg->trainer.output_dir);
}

int lcm_cmd_train(int argc, char **argv) {
    if (argc > 1 && lcm_cli_is_help(argv[1])) {
        usage(stdout);
        return 0;
    }
    lcm_error err = {0};
    static lcm_config cfg;
    lcm_train_summary sum;
    int rc = 0;
    if (lcm_cli_load_config(argc - 1, argv + 1, "train", &cfg, &err) != 0 || lcm_train(&cfg, &sum, &err) != 0) {
        rc = lcm_cli_report(&err);
    } else {
        printf("\n");
        if (sum.interrupted)
            printf("stopped at step %lld by a signal; run the same command to resume\n", (long long)sum.final_step);
        else if (sum.steps_done == 0)
            printf("nothing to do: step %lld of %lld already done (raise trainer.max_steps to go on)\n",
                   (long long)sum.final_step, (long long)cfg.trainer.max_steps);
        else
            printf("done: step %lld of %lld, training loss %.4f\n", (long long)sum.final_step,
                   (long long)cfg.trainer.max_steps, sum.train_loss);
        if (sum.have_valid)
            printf("validation:  loss %.4f vs predict-the-mean baseline %.4f (%.1f%% of it) | l2 %.4f | CA %.1f%%\n",
                   sum.valid.loss, sum.baseline, 100 * sum.valid.loss / sum.baseline, sum.valid.l2, 100 * sum.valid.ca);
        if (sum.checkpoint[0]) printf("checkpoint:  %s\n", sum.checkpoint);
        printf("metrics:     %s/metrics.jsonl\nlog:         %s/train.log\n", cfg.trainer.output_dir,
               cfg.trainer.output_dir);
        if (cfg.trainer.plot) plot(&cfg);
    }
    return rc;
}

/* cmd_train.c: `lcm train [config.ini] [key=value ...]`, with the embedded default when no config is
 * given; prints where the results are, and draws the metrics plot when Python and matplotlib exist. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lcm/cli.h"
#include "lcm/fileio.h"
#include "lcm/mpi.h"
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
            "(more than 0.25 s later) exits at once. One trainer per run directory (a lock on <output_dir>/.lock).\n"
            "Keys: `lcm config keys`.\n");
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

extern char **environ;

/* Run argv[0] (searched in PATH) with these arguments, never through a shell: the run directory is
 * an argument, whatever characters it holds. stdout (and stderr when quiet_stderr) go to /dev/null.
 * Returns 1 when it exited with status 0. */
static int run_helper(char *const argv[], int quiet_stderr) {
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0) return 0;
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    if (quiet_stderr) posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int ok = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ) == 0;
    posix_spawn_file_actions_destroy(&fa);
    int status = 0;
    while (ok && waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) ok = 0;
    return ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void plot(const lcm_config *cfg) {
    char tool[PATH_MAX + 32];
    if (!find_plot_tool(tool, sizeof tool)) return;
    const char *env = getenv("LCM_PYTHON");
    const char *pythons[] = {env, "python3", "/usr/bin/python3"};
    for (int i = 0; i < 3; i++) {
        if (!pythons[i]) continue;
        char *check[] = {(char *)pythons[i], "-c", "import matplotlib", NULL};
        if (!run_helper(check, 1)) continue;
        char *draw[] = {(char *)pythons[i], tool, (char *)cfg->trainer.output_dir, NULL};
        if (run_helper(draw, 0)) {
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
        if (sum.threads_left) {
            /* A hung worker thread still runs (inside BLAS or a driver call) and uses the run's memory:
             * end the process now, without the exit handlers that would free or flush under it. */
            fflush(stdout);
            fflush(stderr);
            lcm_mpi_finish(rc); /* under MPI: stops the other processes (does not return) */
            _exit(rc);
        }
    } else if (lcm_mpi_rank() > 0) {
        /* Several processes: process 0 reports the run. */
    } else {
        printf("\n");
        if (sum.interrupted && sum.stop_at_step_reached)
            printf("stopped at step %lld by trainer.stop_at_step; raise or remove it and run the same command to "
                   "continue\n", (long long)sum.final_step);
        else if (sum.interrupted)
            printf("stopped at step %lld by a signal; run the same command to resume\n", (long long)sum.final_step);
        else if (sum.steps_done == 0 && sum.stop_at_step_reached)
            printf("nothing to do: stop_at_step %lld reached; raise it or remove it to continue\n",
                   (long long)cfg.trainer.stop_at_step);
        else if (sum.steps_done == 0)
            printf("nothing to do: step %lld of %lld already done (raise trainer.max_steps to go on)\n",
                   (long long)sum.final_step, (long long)cfg.trainer.max_steps);
        else
            printf("done: step %lld of %lld, training loss %.4f\n", (long long)sum.final_step,
                   (long long)cfg.trainer.max_steps, sum.train_loss);
        if (sum.have_valid)
            printf("validation:  loss %.4f vs predict-the-mean baseline %.4f (%.1f%% of it) | l2 %.4f | CA %.1f%% | "
                   "PAR %.3f\n", sum.valid.loss, sum.baseline, 100 * sum.valid.loss / sum.baseline, sum.valid.l2,
                   100 * sum.valid.ca, sum.valid.par);
        if (sum.checkpoint[0]) printf("checkpoint:  %s\n", sum.checkpoint);
        printf("metrics:     %s/metrics.jsonl\nlog:         %s/train.log\n", cfg.trainer.output_dir,
               cfg.trainer.output_dir);
        if (cfg.trainer.plot) plot(&cfg);
        if (sum.write_error[0]) {
            fprintf(stderr, "lcm: I/O error: the training finished and its checkpoints are written, but %s\n",
                    sum.write_error);
            rc = 1;
        }
    }
    /* Under MPI: MPI_Finalize, or after a failure MPI_Abort, which stops the other processes too. */
    lcm_mpi_finish(rc);
    return rc;
}

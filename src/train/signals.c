/* signals.c: SIGINT/SIGTERM for `lcm train` and for the commands that write files (`lcm data synth`,
 * `lcm data import`).
 *
 * Two modes. Before the training steps run (setup, synthesis, the data commands) a signal removes the
 * temporary files of the atomic writes in progress and then ends the process by that signal, so its
 * exit status is the conventional 128+N and no "*.tmp.<pid>" is left behind. Once the workers run, the
 * first signal asks the run to stop after the current step (the workers agree on the step, write a
 * checkpoint and exit 0); another one exits at once with 128+N, but only when it comes more than
 * REPEAT_WINDOW_NS after the first: coreutils `timeout` and job schedulers send the same signal to the
 * process and then to its process group, and those copies arrive within microseconds of each other,
 * while a person's second Ctrl-C comes later. Checkpoint writes are atomic, so exiting at once never
 * damages the last complete checkpoint.
 *
 * The trainer blocks both signals in every thread it starts (lcm_signals_block before creating them),
 * so they reach the main thread. OpenBLAS starts its thread pool from a library constructor, before
 * main, with signals unblocked; the handler is therefore written to be correct on any thread: it only
 * reads the clock, updates atomics, unlinks files and writes to stderr. */
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lcm/fileio.h"
#include "train_internal.h"

#define REPEAT_WINDOW_NS 250000000LL

static atomic_int stop_signal;       /* the first signal of the training phase, 0 = none */
static atomic_llong first_signal_ns; /* when it came (CLOCK_MONOTONIC), 0 = none */
static atomic_int stop_mode;         /* 1: a signal means "stop after this step" (workers running) */

static void say(const char *msg) {
    ssize_t ignored = write(STDERR_FILENO, msg, strlen(msg));
    (void)ignored;
}

static void on_signal(int sig) {
    if (!atomic_load(&stop_mode)) {
        lcm_afile_remove_all_tmp();
        signal(sig, SIG_DFL);
        raise(sig); /* delivered when the handler returns: the process ends by the signal */
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long now = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, first = 0;
    if (atomic_compare_exchange_strong(&first_signal_ns, &first, now)) {
        atomic_store(&stop_signal, sig);
        say("\nlcm: stopping after this step and writing a checkpoint (signal again to exit now)\n");
        return;
    }
    if (now - first < REPEAT_WINDOW_NS) return; /* a copy of the first (timeout, schedulers): not a request */
    say("\nlcm: second signal: exiting now (the last checkpoint is intact)\n");
    lcm_afile_remove_all_tmp();
    _exit(128 + sig);
}

void lcm_signals_install(void) {
    atomic_store(&stop_mode, 0);
    atomic_store(&stop_signal, 0);
    atomic_store(&first_signal_ns, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT); /* one handler at a time per thread: no interleaved messages */
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void lcm_signals_stop_mode(int on) { atomic_store(&stop_mode, on); }

void lcm_signals_block(sigset_t *old) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

void lcm_signals_restore(void) {
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    atomic_store(&stop_mode, 0);
    atomic_store(&stop_signal, 0);
    atomic_store(&first_signal_ns, 0);
}

int lcm_stop_requested(void) { return atomic_load(&stop_signal) != 0; }
int lcm_stop_signal(void) { return atomic_load(&stop_signal); }

/* signals.c: SIGINT/SIGTERM during training. The first signal asks the run to stop after the current
 * step (the workers agree on the step, write a checkpoint and exit 0); a second one exits at once.
 * Checkpoint writes are atomic, so exiting at once never damages the last complete checkpoint. */
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "train_internal.h"

static atomic_int stop_signal;

static void on_signal(int sig) {
    if (atomic_exchange(&stop_signal, sig) != 0) {
        static const char msg[] = "\nlcm: second signal: exiting now (the last checkpoint is intact)\n";
        ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)ignored;
        _exit(130);
    }
    static const char msg[] = "\nlcm: stopping after this step and writing a checkpoint (signal again to exit now)\n";
    ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
}

void lcm_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void lcm_signals_restore(void) {
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    atomic_store(&stop_signal, 0);
}

int lcm_stop_requested(void) { return atomic_load(&stop_signal) != 0; }

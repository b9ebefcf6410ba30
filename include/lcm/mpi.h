/* mpi.h: lcm as one of several processes started by an MPI launcher (mpirun, or Slurm's srun through
 * PMI). MPI only starts the processes, tells each its place, and carries the host-side agreements and
 * the CPU workers' collectives (src/comm/mpi.c); NCCL carries GPU gradients.
 *
 * A process not started by a launcher never touches MPI: a plain `lcm train` is one process, exactly as
 * without MPI. Built without MPI (make MPI=0, or no MPI found), a launch of more than one process is
 * refused with the command that installs MPI. Everything here runs on the main thread. */
#ifndef LCM_MPI_H
#define LCM_MPI_H

#include <stddef.h>
#include <stdint.h>
#include "lcm/error.h"

/* 1 when this lcm was built with MPI. */
int lcm_mpi_built(void);
/* Join the launcher's processes when there is a launcher (MPI_Init_thread); otherwise nothing, and
 * this is process 0 of 1. Idempotent. */
int lcm_mpi_start(lcm_error *err);
/* This process's index and the process count (0 and 1 without a launcher). */
int lcm_mpi_rank(void);
int lcm_mpi_size(void);
/* This process's node name, for messages. */
const char *lcm_mpi_host(void);
/* "process 1 (node b)": who a message is about. */
void lcm_mpi_describe(int process, char *out, size_t cap);
/* How long an agreement below waits for the other processes before it fails, naming the one that did
 * not arrive (trainer.hang_timeout_s; 0: no limit, the default). Set before lcm_mpi_start. */
void lcm_mpi_set_timeout(double seconds);
/* Every process's `n` bytes of mine, in process order, into all[n * size]. `what`: the agreement, for
 * messages ("the effective config"). */
int lcm_mpi_allgather(const void *mine, void *all, size_t n, const char *what, lcm_error *err);
/* Process `root`'s n bytes into every process's buf. */
int lcm_mpi_broadcast(void *buf, size_t n, int root, const char *what, lcm_error *err);
/* The global ranks of this process's devices: local_n devices here; rank0 = the devices of the
 * processes before this one, world = all of them. */
int lcm_mpi_layout(int local_n, int *rank0, int *world, lcm_error *err);
/* Every process checks that all hold the same `what` (by its 64-bit digest `digest`): a process whose
 * value differs is named, with `fix` (what to do) in the message. */
int lcm_mpi_agree(uint64_t digest, const char *what, const char *fix, lcm_error *err);
/* The end of the process: MPI_Finalize after a success everywhere (rc 0), MPI_Abort(rc) after a failure,
 * which stops the other processes too (they may be waiting for this one). Nothing without a launcher. */
void lcm_mpi_finish(int rc);

#endif

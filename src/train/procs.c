/* procs.c: the trainer's part of running as several processes (include/lcm/mpi.h): the global ranks of
 * this process's devices, and what every process must agree on before a worker starts: the effective
 * config, the datasets (by their header checksums: each node maps its own copy or a shared file), and
 * the checkpoint the run resumes from (the run directory must be shared, README "Several machines").
 * A disagreement stops the run on every process with a message naming the process and node that
 * differ. In one process all of this is a no-op. */
#include <string.h>

#include "lcm/crc32c.h"
#include "lcm/log.h"
#include "lcm/mpi.h"
#include "train_internal.h"

/* FNV-1a, 64 bits: a digest of a text for comparing it across processes. */
static uint64_t digest(const void *data, size_t n, uint64_t h) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}
#define DIGEST_SEED 0xcbf29ce484222325ULL

int lcm_run_join_processes(lcm_run *run, lcm_error *err) {
    run->local_n = run->n;
    run->rank0 = 0;
    if (lcm_mpi_size() == 1) return 0;
    int world = 0;
    LCM_TRY(lcm_mpi_layout(run->n, &run->rank0, &world, err));
    const uint64_t kind = run->dev[0].is_gpu ? 1 : 2;
    LCM_TRY(lcm_mpi_agree(kind, "the kind of device (GPUs or CPU workers, from trainer.devices)",
                          "every process must train on the same kind of device", err));
    run->n = world;
    if (world > LCM_MAX_DEVICES)
        return lcm_fail(err, LCM_ERR_CONFIG, "%d devices over %d processes: at most %d in one run", world,
                        lcm_mpi_size(), LCM_MAX_DEVICES);
    lcm_info("process %d of %d (node %s): devices %d-%d of %d", lcm_mpi_rank(), lcm_mpi_size(), lcm_mpi_host(),
             run->rank0, run->rank0 + run->local_n - 1, world);
    return 0;
}

int lcm_run_agree(const lcm_run *run, const char *ckpt, lcm_error *err) {
    if (lcm_mpi_size() == 1) return 0;
    LCM_TRY(lcm_mpi_agree(digest(run->config_text, strlen(run->config_text), DIGEST_SEED), "the effective config",
                          "start every process with the same config file and overrides", err));
    /* The 4096-byte header holds the checksum of the tables and the sizes: two copies of a dataset
     * that agree on it are the same file as far as one header can tell. */
    uint64_t h = DIGEST_SEED;
    const lcm_split *splits[2] = {&run->train, &run->valid};
    for (int i = 0; i < 2; i++) {
        const lcm_mapping *m = &splits[i]->ds.map;
        uint32_t crc = splits[i]->open && m->size >= 4096 ? lcm_crc32(0, m->data, 4096) : 0;
        h = digest(&crc, sizeof crc, h);
    }
    LCM_TRY(lcm_mpi_agree(h, "the dataset (header checksum of data.train and data.valid)",
                          "every node must map the same files: a shared filesystem, or identical copies at the same "
                          "path", err));
    return lcm_mpi_agree(digest(ckpt, strlen(ckpt), DIGEST_SEED), "the checkpoint to resume from",
                         "trainer.output_dir must be one directory that every node shares (README: several machines)",
                         err);
}

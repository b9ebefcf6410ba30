/* cmd_info.c: `lcm info`: what this machine offers lcm (cores, GPUs, versions). */
#include <stdio.h>

#include "lcm/backend.h"
#include "lcm/cli.h"

int lcm_cmd_info(int argc, char **argv) {
    if (argc > 1 && lcm_cli_is_help(argv[1])) {
        printf("usage: lcm info\n\nPrints the CPU count and, in a CUDA build, every visible GPU (name, memory,\n"
               "compute capability), the peer-access matrix and the CUDA driver, runtime and NCCL versions.\n");
        return 0;
    }
    const lcm_cli_cmd cmd = {.name = "info"};
    lcm_error err = {0};
    if (!lcm_cli_parse(&cmd, argc - 1, argv + 1, &err)) return lcm_cli_report(&err);
    printf("lcm %s (%s), CUDA backend %s\n", LCM_VERSION, LCM_GIT_REV, lcm_cuda_built() ? "built" : "not built");
    printf("CPU cores: %d\n", lcm_cpu_count());
    lcm_cuda_print_info(stdout);
    return 0;
}

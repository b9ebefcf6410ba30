/* shard.h: which elements of the flat parameter vector a data-parallel device owns when the optimizer
 * state is sharded (trainer.shard >= 1). The vector of P elements (the parameter table's total,
 * padding included) is cut into N equal slices of S = ceil(P / N) rounded up to `align` elements;
 * device r owns [r * S, (r + 1) * S) clipped to P, so the last slice is short (padded up to S where a
 * collective needs equal parts) and, when P is small, a device may own nothing. A pure function of
 * (P, N, rank, align): the trainer sizes its allocations with it and the memory plan calls the same. */
#ifndef LCM_SHARD_H
#define LCM_SHARD_H

#include <stddef.h>

/* Elements: 256 bytes of fp32. A multiple of the parameter table's 16-element alignment, so a slice
 * starts on a 64-byte boundary in fp32 and bf16 alike. */
#define LCM_SHARD_ALIGN 64

typedef struct lcm_shard {
    size_t slice;  /* S: elements per device, padded (the same on every device) */
    size_t begin;  /* first owned element: min(rank * S, P) */
    size_t end;    /* one past the last owned element: min((rank + 1) * S, P) */
} lcm_shard;

/* n >= 1, 0 <= rank < n, align >= 1. */
static inline lcm_shard lcm_shard_of(size_t P, int n, int rank, size_t align) {
    size_t per = (P + (size_t)n - 1) / (size_t)n;
    size_t slice = (per + align - 1) / align * align;
    if (slice == 0) slice = align;
    size_t begin = (size_t)rank * slice, end = begin + slice;
    lcm_shard s = {slice, begin < P ? begin : P, end < P ? end : P};
    return s;
}

#endif

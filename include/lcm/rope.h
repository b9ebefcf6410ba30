/* rope.h: the RoPE angle table, computed once per model on the host as the reference (fairseq2's
 * RotaryEncoder) computes it, and read by both backends' rope ops (include/lcm/backend.h). */
#ifndef LCM_ROPE_H
#define LCM_ROPE_H

#include <stddef.h>

/* Floats of the table for positions 0 .. T-1 of heads of hd dimensions. */
static inline size_t lcm_rope_table_floats(int T, int hd) { return (size_t)T * (size_t)(hd / 2) * 2; }

/* cs[(t * hd/2 + i) * 2] = cos(a), cs[... + 1] = sin(a) for t < T, i < hd/2, with the angle a computed in
 * fp32 as the reference does: e = (float)(2i) / hd, inv = 1 / theta^e, a = t * inv, each step rounded
 * to fp32. hd must be even. */
void lcm_rope_table(float *cs, int T, int hd, float theta);

#endif

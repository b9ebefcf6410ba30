/* test_shard.c: the slice arithmetic of include/lcm/shard.h against sizes worked out by hand, and the
 * properties every caller relies on (slices tile [0, P) in rank order, aligned starts, equal padded
 * lengths covering P). */
#include "harness.h"
#include "lcm/shard.h"

TEST(slices_by_hand) {
    /* P = 1000, N = 3, align 64: ceil(1000/3) = 334 -> 384; owners [0,384) [384,768) [768,1000). */
    lcm_shard a = lcm_shard_of(1000, 3, 0, 64), b = lcm_shard_of(1000, 3, 1, 64), c = lcm_shard_of(1000, 3, 2, 64);
    CHECK(a.slice == 384 && a.begin == 0 && a.end == 384);
    CHECK(b.slice == 384 && b.begin == 384 && b.end == 768);
    CHECK(c.slice == 384 && c.begin == 768 && c.end == 1000);
    /* P = 100, N = 4, align 64: ceil(100/4) = 25 -> 64: rank 1 owns [64,100), ranks 2 and 3 nothing. */
    lcm_shard d = lcm_shard_of(100, 4, 1, 64), e = lcm_shard_of(100, 4, 3, 64);
    CHECK(d.slice == 64 && d.begin == 64 && d.end == 100);
    CHECK(e.begin == 100 && e.end == 100);
    /* One device owns everything: S = P rounded up. */
    lcm_shard f = lcm_shard_of(1000, 1, 0, 64);
    CHECK(f.slice == 1024 && f.begin == 0 && f.end == 1000);
    /* Exact division keeps S = P / N. */
    lcm_shard g = lcm_shard_of(4096, 4, 2, 64);
    CHECK(g.slice == 1024 && g.begin == 2048 && g.end == 3072);
}

TEST(slices_tile_the_vector) {
    const size_t sizes[] = {0, 1, 15, 16, 1000, 4096, 123457};
    const size_t aligns[] = {1, 16, 64};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
        for (size_t ai = 0; ai < sizeof aligns / sizeof aligns[0]; ai++)
            for (int n = 1; n <= 9; n++) {
                size_t P = sizes[si], A = aligns[ai], next = 0;
                for (int r = 0; r < n; r++) {
                    lcm_shard s = lcm_shard_of(P, n, r, A);
                    CHECKF(s.begin == next && s.end >= s.begin && s.end - s.begin <= s.slice,
                           "P=%zu N=%d A=%zu rank %d: [%zu, %zu) after %zu", P, n, A, r, s.begin, s.end, next);
                    CHECKF(s.slice % A == 0 && s.slice * (size_t)n >= P && (s.slice - A) * (size_t)n < P + (size_t)n,
                           "P=%zu N=%d A=%zu: slice %zu", P, n, A, s.slice);
                    CHECKF(s.begin == P || s.begin % A == 0, "P=%zu N=%d rank %d starts at %zu", P, n, r, s.begin);
                    next = s.end;
                }
                CHECKF(next == P, "P=%zu N=%d A=%zu: slices end at %zu", P, n, A, next);
            }
}

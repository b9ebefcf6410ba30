/* crc32c.c: CRC-32C (crc32c.h): the SSE4.2 instruction where the CPU has it, else slicing by 8. */
#include "lcm/crc32c.h"

#include <pthread.h>
#include <string.h>

#define CRC32C_POLY 0x82F63B78u /* reflected Castagnoli polynomial */

static uint32_t tab[8][256];
static pthread_once_t tab_once = PTHREAD_ONCE_INIT;

static void tab_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1u) ? CRC32C_POLY ^ (c >> 1) : c >> 1;
        tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) tab[t][i] = (tab[t - 1][i] >> 8) ^ tab[0][tab[t - 1][i] & 0xffu];
}

uint32_t lcm_crc32c_portable(uint32_t crc, const void *data, size_t n) {
    pthread_once(&tab_once, tab_init);
    const uint8_t *p = data;
    crc = ~crc;
    while (n >= 8) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + 4, 4);
        a ^= crc;
        crc = tab[7][a & 0xffu] ^ tab[6][(a >> 8) & 0xffu] ^ tab[5][(a >> 16) & 0xffu] ^ tab[4][a >> 24] ^
              tab[3][b & 0xffu] ^ tab[2][(b >> 8) & 0xffu] ^ tab[1][(b >> 16) & 0xffu] ^ tab[0][b >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = tab[0][(crc ^ *p++) & 0xffu] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>

__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = ~crc;
    for (; n > 0 && ((uintptr_t)p & 7u); n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
    }
    for (; n > 0; n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

uint32_t lcm_crc32c(uint32_t crc, const void *data, size_t n) {
    if (__builtin_cpu_supports("sse4.2")) return crc32c_sse42(crc, data, n);
    return lcm_crc32c_portable(crc, data, n);
}
#else
uint32_t lcm_crc32c(uint32_t crc, const void *data, size_t n) { return lcm_crc32c_portable(crc, data, n); }
#endif

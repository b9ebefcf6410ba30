/* crc32c.h: CRC-32C (Castagnoli, the iSCSI/ext4/Btrfs checksum) for the checksums lcm stores in
 * safetensors files.
 *
 * Why CRC-32C and not the CRC-32 the .lcmd format uses: x86-64 computes it with one instruction per
 * 8 bytes (SSE4.2), ~10x faster than a table CRC, and a 1.6B-parameter checkpoint is 19 GB to checksum
 * on every save and load; its polynomial also detects more multi-bit errors at tensor lengths; and any
 * tool can check a tensor with a standard CRC-32C (Python's crc32c / google-crc32c packages). The
 * instruction is chosen at run time; other CPUs use a slicing-by-8 table with the same results. */
#ifndef LCM_CRC32C_H
#define LCM_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Running CRC-32C: crc is 0 to start, or a previous result to continue over more bytes. */
uint32_t lcm_crc32c(uint32_t crc, const void *data, size_t n);
/* The table implementation, exported so that tests compare it with the instruction. */
uint32_t lcm_crc32c_portable(uint32_t crc, const void *data, size_t n);

#endif

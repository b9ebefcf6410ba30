/* lcmd_format.h: the .lcmd header, private to src/data/ (dataset.c reads it, writer.c writes it).
 * docs/dataset-format.md describes the same bytes; tools/parquet_to_lcmd.py writes them from Python. */
#ifndef LCM_LCMD_FORMAT_H
#define LCM_LCMD_FORMAT_H

#include <stdint.h>
#include "lcm/error.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .lcmd and .text formats are little-endian and are mapped directly: this host is not"
#endif

#define LCMD_MAGIC "LCM-DATA"
#define LCMD_VERSION 1u
#define LCMD_HEADER_SIZE 4096u
#define LCMD_MAX_DIM 65536
#define LCMD_FLAG_SOURCE_IDS 1u
#define LCMD_FLAG_EOT 2u
/* The header CRC (a u32 at LCMD_HEADER_CRC_AT) covers the whole header page with its own four bytes
 * read as zero, so a damaged reserved byte is caught too. */
#define LCMD_HEADER_CRC_AT 116u

typedef struct lcmd_header {
    uint32_t version, dtype, dim, flags;
    uint64_t n_docs, n_concepts;
    uint64_t payload_off, payload_size;
    uint64_t offsets_off, offsets_size;
    uint64_t sources_off, sources_size;
    uint64_t eot_off, eot_size;
    uint64_t file_size;
    uint32_t tables_crc, header_crc;
} lcmd_header;

/* Fill in the table positions and the file size that (dtype, dim, flags, n_docs, n_concepts) imply.
 * Fails (LCM_ERR_FORMAT, naming `path`) when they overflow 64 bits. */
int lcmd_layout(lcmd_header *h, const char *path, lcm_error *err);
/* The 4096 header bytes, header CRC included (computed here). */
void lcmd_header_encode(lcmd_header *h, uint8_t *out);
void lcmd_header_decode(const uint8_t *in, lcmd_header *h);
uint32_t lcmd_header_crc(const uint8_t *page);

#endif

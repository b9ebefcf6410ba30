/* st_checksum.h: checksums inside safetensors files, kept where every safetensors reader ignores them:
 * string values in "__metadata__", so PyTorch and the Python safetensors package read the file as usual.
 *
 *   "crc32c:<tensor name>"  CRC-32C of the tensor's data bytes (its data_offsets range), 8 lowercase hex
 *                           digits; one per tensor
 *   "lcm_header_crc32c"     CRC-32C of the rest of the header in a canonical form (below), 8 hex digits
 *
 * Canonical header form (order and whitespace of the JSON do not matter, so a file re-saved by another
 * tool with the same content still verifies): for every metadata entry but lcm_header_crc32c, sorted by
 * key (bytewise): "M" key NUL value NUL; then for every tensor, sorted by name: "T" name NUL dtype NUL
 * shape NUL, with dtype as in the header ("F32") and shape as decimal sizes joined by commas ("4,16",
 * "" for a scalar). Offsets are left out on purpose: the strict reader already requires the tensors to
 * tile the data section, and any other placement of the bytes fails the per-tensor checksums.
 *
 * Together they cover every byte of the file: a change to a tensor's bytes fails its checksum, a change
 * in the header either breaks the JSON or the strict layout checks, or changes the canonical form, or
 * is a change of JSON whitespace (harmless: the content is the same). */
#ifndef LCM_ST_CHECKSUM_H
#define LCM_ST_CHECKSUM_H

#include "lcm/safetensors.h"

#define LCM_ST_CRC_PREFIX "crc32c:"
#define LCM_ST_HEADER_CRC_KEY "lcm_header_crc32c"

/* CRC-32C of the canonical header form of these metadata entries and tensors (only name, dtype, ndim
 * and shape of each tensor are read). */
int lcm_st_header_crc(int n_meta, char *const *keys, char *const *values, int n, const lcm_st_tensor *tensors,
                      uint32_t *out, lcm_error *err);

/* Writer side (src/io/safetensors.c): add the checksum metadata of everything added so far. Call it
 * last, right before lcm_st_write: metadata or tensors added after it are not covered. */
int lcm_st_add_checksums(lcm_st_writer *w, lcm_error *err);

typedef enum { LCM_ST_VERIFY_HEADER, LCM_ST_VERIFY_ALL } lcm_st_verify_scope;

/* Check the header checksum and (LCM_ST_VERIFY_ALL) every tensor's. A file with no checksum metadata at
 * all (another tool, or lcm before checksums) passes, with a warning, once per path and process, that
 * it is unverified; *verified (may be NULL) says which. A file with some checksums must have all. */
int lcm_st_verify(const lcm_st_file *f, lcm_st_verify_scope scope, int *verified, lcm_error *err);

#endif

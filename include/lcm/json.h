/* json.h: a small, strict JSON parser (RFC 8259) that builds a tree.
 *
 * Strict means: UTF-8 input only, no comments, no trailing commas, no leading zeros, no NaN/Infinity,
 * no lone surrogates, no \u0000 in an object key (keys are C strings), no duplicate keys in one
 * object, nothing but whitespace after the value, and at most LCM_JSON_MAX_DEPTH nested
 * arrays/objects. Errors give the byte offset in the parsed text:
 * "byte 123: expected ':' after object key". Used for the safetensors header and small JSON files.
 * (Writing JSON is in sbuf.h.) */
#ifndef LCM_JSON_H
#define LCM_JSON_H

#include <stddef.h>
#include <stdint.h>
#include "lcm/error.h"

#define LCM_JSON_MAX_DEPTH 64

typedef enum lcm_json_type {
    LCM_JSON_NULL,
    LCM_JSON_BOOL,
    LCM_JSON_NUMBER,
    LCM_JSON_STRING,
    LCM_JSON_ARRAY,
    LCM_JSON_OBJECT,
} lcm_json_type;

typedef struct lcm_json lcm_json;
struct lcm_json {
    lcm_json_type type;
    size_t pos;          /* byte offset in the parsed text of the value, or of its key in an object */
    char *key;           /* member name when this value sits in an object (NUL-terminated), else NULL */
    size_t key_len;      /* key length in bytes (== strlen(key): a key never holds a NUL) */
    int boolean;         /* BOOL */
    double number;       /* NUMBER */
    int is_uint;         /* NUMBER written as plain digits (no sign, fraction, exponent) fitting in u64 */
    uint64_t uint;       /* its exact value when is_uint (a double is exact only up to 2^53) */
    char *str;           /* STRING: UTF-8, NUL-terminated */
    size_t len;          /* STRING length in bytes (may hold NUL through \u0000) */
    lcm_json *items;     /* ARRAY elements or OBJECT members, in document order */
    size_t n;            /* number of items */
};

/* Parse text[0..len) (need not be NUL-terminated). On success *out is the root, freed with
 * lcm_json_free. Errors are LCM_ERR_FORMAT ("byte N: ...") or LCM_ERR_NOMEM. */
int lcm_json_parse(const char *text, size_t len, lcm_json **out, lcm_error *err);
void lcm_json_free(lcm_json *root);

/* Member `key` of an object; NULL when absent or when obj is not an object. */
const lcm_json *lcm_json_get(const lcm_json *obj, const char *key);
/* Member `key` if it is a string without NUL bytes; NULL otherwise. */
const char *lcm_json_get_string(const lcm_json *obj, const char *key);
/* "null", "boolean", "number", "string", "array", "object". */
const char *lcm_json_type_name(lcm_json_type t);
/* 1 if s[0..n) is well-formed UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF). */
int lcm_utf8_valid(const char *s, size_t n);

#endif

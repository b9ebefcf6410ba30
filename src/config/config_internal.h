/* config_internal.h: what the files of src/config/ share and nobody else needs: turning one value's
 * text into a field (and back), origins, and the "unknown key" message with its suggestion. */
#ifndef LCM_CONFIG_INTERNAL_H
#define LCM_CONFIG_INTERNAL_H

#include <stddef.h>

#include "lcm/config.h"

/* The sections of lcm_keys[], in the order they are written; NULL-terminated. */
extern const char *const lcm_config_sections[];
int lcm_config_is_section(const char *section);

/* Parse `text` as the value of key k, store it in cfg and record `where` as its origin. A bad value
 * fails with "<where>: section.key = '<text>': expected ...". */
int lcm_config_apply(lcm_config *cfg, const lcm_key *k, const char *text, const char *where, lcm_error *err);

/* The value of key k as INI text that lcm_config_apply reads back to the same field (strings quoted
 * when needed, floats with 9 significant digits). */
void lcm_config_format(const lcm_config *cfg, const lcm_key *k, char *buf, size_t cap);

/* Check a field already in cfg against the key's type and range (for configs edited in code). */
int lcm_config_check_value(const lcm_config *cfg, const lcm_key *k, lcm_error *err);

/* What key k accepts, for messages and the key reference: "[1, 1024]", ">= 0", "true/false",
 * "f32, f16, bf16", or "" for free text. */
void lcm_config_allowed_text(const lcm_key *k, char *buf, size_t cap);

/* Where key k's value came from ("" when cfg was not filled by the loader). */
const char *lcm_config_origin(const lcm_config *cfg, const lcm_key *k);

/* Fail with "unknown key section.name (<where>); did you mean x.y?" (or "unknown section ..."). */
int lcm_config_unknown_key(lcm_error *err, const char *section, const char *name, const char *where);
/* Fail with "unknown section [name] (<where>); did you mean [x]?". */
int lcm_config_unknown_section(lcm_error *err, const char *section, const char *where);

#endif

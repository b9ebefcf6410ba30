/* write.c: the configuration as text: the effective config as an INI file that loads back to the same
 * values, the key reference (`lcm config keys`, also the README table), and the model hash that a
 * resumed run must match. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "config_internal.h"

#define ORIGIN_COLUMN 40

/* Write one line, cut to LCM_INI_LINE_MAX characters (at a UTF-8 character boundary) so that iniparser
 * reads the file back. Only comments are ever cut: a "key = value" line always fits (string_problem in
 * value.c refuses values that would not), and the comments (the source path, the bases, where a value
 * came from) only inform. */
static void put_line(FILE *f, const char *line) {
    size_t n = strlen(line);
    if (n > LCM_INI_LINE_MAX) {
        n = LCM_INI_LINE_MAX;
        while (n > 0 && ((unsigned char)line[n] & 0xC0) == 0x80) n--;
    }
    fwrite(line, 1, n, f);
    fputc('\n', f);
}

int lcm_config_write(const lcm_config *cfg, FILE *f) {
    char line[LCM_STR_MAX + LCM_ORIGIN_MAX + 128];
    snprintf(line, sizeof line, "# lcm configuration%s%s", cfg->source[0] ? " loaded from " : "", cfg->source);
    put_line(f, line);
    put_line(f, "# Every key is written out, so this file alone gives the same configuration.");
    put_line(f, "# The comment after a value says where it came from.");
    if (cfg->base[0]) {
        snprintf(line, sizeof line, "# Its bases (config.base = %s) are merged into the values below.", cfg->base);
        put_line(f, line);
    }
    const char *section = "";
    for (int i = 0; i < lcm_num_keys; i++) {
        const lcm_key *k = &lcm_keys[i];
        if (strcmp(k->section, "config") == 0) continue;
        if (strcmp(k->section, section) != 0) {
            section = k->section;
            fprintf(f, "\n[%s]\n", section);
        }
        char value[LCM_STR_MAX + 8];
        lcm_config_format(cfg, k, value, sizeof value);
        int n = snprintf(line, sizeof line, "%s = %s", k->name, value);
        const char *origin = lcm_config_origin(cfg, k);
        if (origin[0] && n >= 0 && (size_t)n < sizeof line)
            snprintf(line + n, sizeof line - (size_t)n, "%*s# %s", n < ORIGIN_COLUMN ? ORIGIN_COLUMN - n : 1, "", origin);
        put_line(f, line);
    }
    return ferror(f) ? LCM_ERR_IO : 0;
}

static const char *type_name(lcm_key_type t) {
    switch (t) {
    case LCM_KEY_INT: return "int";
    case LCM_KEY_FLOAT: return "float";
    case LCM_KEY_BOOL: return "bool";
    case LCM_KEY_STRING: return "string";
    case LCM_KEY_ENUM: return "enum";
    }
    return "?";
}

void lcm_config_print_keys(FILE *f, int markdown) {
    if (markdown)
        fprintf(f, "| key | type | default | allowed | description |\n|---|---|---|---|---|\n");
    else
        fprintf(f, "%-30s %-6s %-10s %-18s %s\n", "key", "type", "default", "allowed", "description");
    for (int i = 0; i < lcm_num_keys; i++) {
        const lcm_key *k = &lcm_keys[i];
        char name[128], allowed[128];
        snprintf(name, sizeof name, "%s.%s", k->section, k->name);
        lcm_config_allowed_text(k, allowed, sizeof allowed);
        const char *def = k->def[0] ? k->def : "\"\"";
        if (markdown)
            fprintf(f, "| `%s` | %s | `%s` | %s | %s |\n", name, type_name(k->type), def, allowed, k->doc);
        else
            fprintf(f, "%-30s %-6s %-10s %-18s %s\n", name, type_name(k->type), def, allowed, k->doc);
    }
}

static uint64_t fnv1a(uint64_t h, const char *s) {
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

int lcm_config_key_in_model_hash(const lcm_key *k) {
    if (strcmp(k->section, "data") == 0) return !strcmp(k->name, "max_seq_len") || !strcmp(k->name, "append_eot");
    return strcmp(k->section, "model") == 0 && strncmp(k->name, "ffn_", 4) != 0 && strcmp(k->name, "attention") != 0;
}

/* FNV-1a 64 over "section.key=value\n" lines: the model.* keys lcm_config_key_in_model_hash takes, in schema
 * order, then the derived model.ffn_dim (so an explicit ffn_inner_dim equal to the derived one gives the same
 * hash), then data.max_seq_len and data.append_eot (they decide what a row is). */
uint64_t lcm_config_model_hash(const lcm_config *cfg) {
    uint64_t h = 14695981039346656037ULL;
    char line[LCM_STR_MAX + 160], value[LCM_STR_MAX + 8];
    for (int pass = 0; pass < 2; pass++) {
        const char *section = pass ? "data" : "model";
        for (int i = 0; i < lcm_num_keys; i++) {
            const lcm_key *k = &lcm_keys[i];
            if (strcmp(k->section, section) != 0 || !lcm_config_key_in_model_hash(k)) continue;
            lcm_config_format(cfg, k, value, sizeof value);
            snprintf(line, sizeof line, "%s.%s=%s\n", section, k->name, value);
            h = fnv1a(h, line);
        }
        if (!pass) {
            snprintf(line, sizeof line, "model.ffn_dim=%d\n", lcm_model_ffn_dim(&cfg->model));
            h = fnv1a(h, line);
        }
    }
    return h;
}

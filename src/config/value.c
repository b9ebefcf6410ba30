/* value.c: one key's value: text to field and field to text, through the schema; origins; the
 * command-line assignment `section.key=value`; unknown-key messages with the closest valid key.
 *
 * Every value, from the defaults, a file or the command line, goes through lcm_config_apply, so the
 * three paths accept and refuse exactly the same text. Numbers are parsed here (not by iniparser):
 * decimal only ("08" is 8), the whole text must be the number, and it must lie in the key's range. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_internal.h"
#include "lcm/escape.h"
#include "lcm/json.h"

static int key_index(const lcm_key *k) { return (int)(k - lcm_keys); }

static void *field(lcm_config *cfg, const lcm_key *k) { return (char *)cfg + k->offset; }
static const void *cfield(const lcm_config *cfg, const lcm_key *k) { return (const char *)cfg + k->offset; }

static void set_origin(lcm_config *cfg, const lcm_key *k, const char *where) {
    char *o = cfg->origin[key_index(k)];
    size_t n = strlen(where);
    if (n < LCM_ORIGIN_MAX)
        memcpy(o, where, n + 1);
    else /* keep the tail: the file name and line matter more than the leading directories */
        snprintf(o, LCM_ORIGIN_MAX, "...%s", where + n - (LCM_ORIGIN_MAX - 4));
}

const char *lcm_config_origin(const lcm_config *cfg, const lcm_key *k) { return cfg->origin[key_index(k)]; }

/* ---- parsing one value ------------------------------------------------------------------------ */

static int parse_int(const char *s, int64_t *out) {
    if (!*s || isspace((unsigned char)*s)) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10); /* base 10: a leading 0 is not octal */
    if (errno || *end) return -1;
    *out = (int64_t)v;
    return 0;
}

static int parse_float(const char *s, double *out) {
    if (!*s || isspace((unsigned char)*s) || strpbrk(s, "xX")) return -1; /* no hex floats */
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || !isfinite(v) || (errno == ERANGE && v != 0)) return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, int *out) {
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) return *out = 1, 0;
        if (strcasecmp(s, no[i]) == 0) return *out = 0, 0;
    }
    return -1;
}

/* The position of s among "a|b|c" (-1: none); with want >= 0, copies choice `want` into name instead. */
static int enum_lookup(const char *choices, const char *s, int want, char *name, size_t cap) {
    size_t n = s ? strlen(s) : 0;
    int i = 0;
    for (const char *c = choices; *c; i++) {
        const char *bar = strchr(c, '|');
        size_t len = bar ? (size_t)(bar - c) : strlen(c);
        if (s && len == n && n > 0 && strncmp(c, s, n) == 0) return i;
        if (!s && i == want) return snprintf(name, cap, "%.*s", (int)len, c) >= 0 ? i : -1;
        c += len + (bar ? 1 : 0);
    }
    return -1;
}

/* Whether a string must be quoted to read back as itself: iniparser strips surrounding blanks and
 * quotes and ends a value at ; or # (and a trailing backslash would continue the line). */
static int needs_quotes(const char *s) {
    size_t n = strlen(s);
    return n == 0 || isspace((unsigned char)s[0]) || isspace((unsigned char)s[n - 1]) || strpbrk(s, "#;\"'") ||
           s[n - 1] == '\\';
}

/* A string must survive an INI round trip: no control characters (a newline would end the line), not
 * both quote characters (iniparser has no escapes, so one of them must be free to quote with), and
 * "key = value" on one line iniparser reads (a value set on the command line could be longer, and the
 * config.ini written beside a checkpoint would then not load).
 * It must be UTF-8 too: it is stored in checkpoint metadata (JSON) and printed in logs, and a
 * Latin-1 path found at load time is better than a run that fails at its first checkpoint. */
static const char *string_problem(const char *s, const lcm_key *k) {
    const size_t n = strlen(s);
    if (n >= (size_t)k->width || strlen(k->name) + 3 + n + (needs_quotes(s) ? 2 : 0) > LCM_INI_LINE_MAX)
        return "is too long (\"key = value\" must fit on one config line of at most 1022 characters)";
    if (!lcm_utf8_valid(s, n))
        return "is not valid UTF-8 (the bytes shown as \\xNN); save the config file as UTF-8 or retype the value";
    for (const char *p = s; *p; p++)
        if (iscntrl((unsigned char)*p)) return "contains a control character";
    if (strchr(s, '"') && strchr(s, '\'')) return "cannot hold both ' and \" (an INI value has no escapes)";
    return NULL;
}

/* "1e+12" -> "1e12", "1e-05" -> "1e-5" */
static void tidy_exponent(char *s) {
    char *e = strchr(s, 'e');
    if (!e) return;
    char *dst = e + 1, *src = e + 1;
    if (*src == '+')
        src++;
    else if (*src == '-')
        *dst++ = *src++;
    while (*src == '0' && src[1]) src++;
    memmove(dst, src, strlen(src) + 1);
}

/* 1024 -> "1024", 1e-12 -> "1e-12", 1e12 -> "1e12" */
static void format_number(char *buf, size_t cap, double x) {
    if (x == floor(x) && fabs(x) < 1e9)
        snprintf(buf, cap, "%.0f", x);
    else
        snprintf(buf, cap, "%g", x);
    tidy_exponent(buf);
}

void lcm_config_allowed_text(const lcm_key *k, char *buf, size_t cap) {
    char lo[48], hi[48];
    size_t len = 0;
    switch (k->type) {
    case LCM_KEY_INT:
    case LCM_KEY_FLOAT:
        format_number(lo, sizeof lo, k->min);
        format_number(hi, sizeof hi, k->max);
        if (k->max >= 9e18) /* 64-bit seeds: any non-negative integer */
            snprintf(buf, cap, ">= %s", lo);
        else
            snprintf(buf, cap, "[%s, %s]", lo, hi);
        break;
    case LCM_KEY_BOOL: snprintf(buf, cap, "true/false"); break;
    case LCM_KEY_ENUM:
        for (const char *c = k->choices; *c && len + 3 < cap; c++) {
            if (*c == '|') {
                buf[len++] = ',';
                buf[len++] = ' ';
            } else {
                buf[len++] = *c;
            }
        }
        buf[len] = '\0';
        break;
    case LCM_KEY_STRING: buf[0] = '\0'; break;
    }
}

/* "expected an integer in [1, 1024]" and friends. */
static void expected_text(const lcm_key *k, char *buf, size_t cap) {
    char allowed[112];
    lcm_config_allowed_text(k, allowed, sizeof allowed);
    const char *in = allowed[0] == '[' ? "in " : "";
    switch (k->type) {
    case LCM_KEY_INT: snprintf(buf, cap, "expected an integer %s%s", in, allowed); break;
    case LCM_KEY_FLOAT: snprintf(buf, cap, "expected a number %s%s", in, allowed); break;
    case LCM_KEY_BOOL: snprintf(buf, cap, "expected true or false (also yes/no, on/off, 1/0)"); break;
    case LCM_KEY_ENUM: snprintf(buf, cap, "expected one of %s", allowed); break;
    case LCM_KEY_STRING: snprintf(buf, cap, "expected a string shorter than %d bytes", k->width); break;
    }
}

static int bad_value(lcm_error *err, const lcm_key *k, const char *text, const char *where, const char *why) {
    char expected[160], shown[LCM_ESC_CAP];
    if (!why) {
        expected_text(k, expected, sizeof expected);
        why = expected;
    }
    return lcm_fail(err, LCM_ERR_CONFIG, "%s: %s.%s = '%s': %s", where, k->section, k->name,
                    lcm_escape_str(shown, sizeof shown, text), why);
}

int lcm_config_apply(lcm_config *cfg, const lcm_key *k, const char *text, const char *where, lcm_error *err) {
    void *dst = field(cfg, k);
    switch (k->type) {
    case LCM_KEY_INT: {
        int64_t v;
        if (parse_int(text, &v) || (double)v < k->min || (double)v > k->max) return bad_value(err, k, text, where, NULL);
        if (k->width == 4) {
            int32_t v32 = (int32_t)v;
            memcpy(dst, &v32, 4);
        } else {
            memcpy(dst, &v, 8);
        }
        break;
    }
    case LCM_KEY_FLOAT: {
        double v;
        /* The range is checked on the float that is stored, so that a value written back with
         * lcm_config_format and read again can never fall outside it by rounding. */
        if (parse_float(text, &v)) return bad_value(err, k, text, where, NULL);
        float f = (float)v;
        if (!isfinite(f) || f < (float)k->min || f > (float)k->max) return bad_value(err, k, text, where, NULL);
        memcpy(dst, &f, 4);
        break;
    }
    case LCM_KEY_BOOL: {
        int b;
        if (parse_bool(text, &b)) return bad_value(err, k, text, where, NULL);
        memcpy(dst, &b, sizeof b);
        break;
    }
    case LCM_KEY_ENUM: {
        int i = enum_lookup(k->choices, text, -1, NULL, 0);
        if (i < 0) return bad_value(err, k, text, where, NULL);
        int v = (int)k->min + i;
        memcpy(dst, &v, sizeof v);
        break;
    }
    case LCM_KEY_STRING: {
        const char *why = string_problem(text, k);
        if (why) return bad_value(err, k, text, where, why);
        snprintf(dst, (size_t)k->width, "%s", text);
        break;
    }
    }
    set_origin(cfg, k, where);
    return 0;
}

/* ---- writing one value ------------------------------------------------------------------------ */

/* Shortest decimal text that reads back to the same float (9 significant digits always do). */
static void format_float(char *buf, size_t cap, float f) {
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, cap, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    tidy_exponent(buf);
}

/* iniparser strips spaces around a value, ends an unquoted value at '#' or ';', joins a line ending
 * in '\' with the next, and takes "" or '' for the empty string: quote whenever one of those bites. */
static void format_string(char *buf, size_t cap, const char *s) {
    if (!needs_quotes(s))
        snprintf(buf, cap, "%s", s);
    else if (!strchr(s, '"'))
        snprintf(buf, cap, "\"%s\"", s);
    else
        snprintf(buf, cap, "'%s'", s);
}

void lcm_config_format(const lcm_config *cfg, const lcm_key *k, char *buf, size_t cap) {
    const void *src = cfield(cfg, k);
    switch (k->type) {
    case LCM_KEY_INT:
        if (k->width == 4) {
            int32_t v;
            memcpy(&v, src, 4);
            snprintf(buf, cap, "%" PRId32, v);
        } else {
            int64_t v;
            memcpy(&v, src, 8);
            snprintf(buf, cap, "%" PRId64, v);
        }
        break;
    case LCM_KEY_FLOAT: {
        float f;
        memcpy(&f, src, 4);
        format_float(buf, cap, f);
        break;
    }
    case LCM_KEY_BOOL: {
        int b;
        memcpy(&b, src, sizeof b);
        snprintf(buf, cap, "%s", b ? "true" : "false");
        break;
    }
    case LCM_KEY_ENUM: {
        int v;
        memcpy(&v, src, sizeof v);
        if (enum_lookup(k->choices, NULL, v - (int)k->min, buf, cap) < 0) snprintf(buf, cap, "%d", v);
        break;
    }
    case LCM_KEY_STRING: format_string(buf, cap, (const char *)src); break;
    }
}

int lcm_config_check_value(const lcm_config *cfg, const lcm_key *k, lcm_error *err) {
    /* Read the field back through the parser: one definition of "allowed" for loaded and for
     * programmatically edited configs. */
    char text[LCM_STR_MAX + 8];
    lcm_config_format(cfg, k, text, sizeof text);
    if (k->type == LCM_KEY_STRING) {
        const char *s = (const char *)cfield(cfg, k);
        const char *why = string_problem(s, k);
        return why ? bad_value(err, k, s, "config", why) : 0;
    }
    lcm_config scratch;
    return lcm_config_apply(&scratch, k, text, "config", err);
}

/* ---- defaults and command-line assignments ---------------------------------------------------- */

void lcm_config_defaults(lcm_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < lcm_num_keys; i++) {
        /* The defaults are fixed text in the schema; tests/test_config.c checks that each one parses. */
        lcm_error ignored = {0};
        lcm_config_apply(cfg, &lcm_keys[i], lcm_keys[i].def, "default", &ignored);
    }
}

/* One key's value from the command line: white space around it is dropped, as in a config file. */
static int set_key(lcm_config *cfg, const lcm_key *k, const char *v, size_t nv, const char *origin, lcm_error *err) {
    while (nv > 0 && isspace((unsigned char)*v)) v++, nv--;
    while (nv > 0 && isspace((unsigned char)v[nv - 1])) nv--;
    char *value = strndup(v, nv);
    if (!value) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory reading the override %s.%s", k->section, k->name);
    int rc = lcm_config_apply(cfg, k, value, origin, err);
    free(value);
    return rc;
}

/* Our key "section.name" (schema.c's alias table names only keys that exist). */
static const lcm_key *key_named(const char *full, size_t n) {
    char buf[160];
    snprintf(buf, sizeof buf, "%.*s", (int)n, full);
    char *dot = strchr(buf, '.');
    if (!dot) return NULL;
    *dot = '\0';
    return lcm_config_find_key(buf, dot + 1);
}

/* A reference key on the command line: set the key(s) it names, accept it (not needed), or refuse it. */
static int set_ref_key(lcm_config *cfg, const lcm_ref_key *r, const char *key, const char *value, const char *origin,
                       lcm_error *err) {
    char shown[LCM_ESC_CAP];
    if (r->kind == LCM_REF_NOT_NEEDED) return 0; /* the command line's parser says why */
    if (r->kind == LCM_REF_UNSUPPORTED)
        return lcm_fail(err, LCM_ERR_CONFIG, "%s: %s is a key of the reference trainer that lcm does not support: %s "
                        "(docs/reference-keys.md)", origin, key, r->why);
    char where[LCM_ORIGIN_MAX + 176]; /* lcm_config_apply keeps the origin's tail when it is longer */
    snprintf(where, sizeof where, "%s, as %s", origin, key);
    while (isspace((unsigned char)*value)) value++;
    const char *comma = strchr(r->target, ',');
    if (comma) { /* a list [a, b] for two keys */
        size_t nv = strlen(value);
        while (nv > 0 && isspace((unsigned char)value[nv - 1])) nv--;
        const char *sep = memchr(value, ',', nv);
        if (nv < 2 || value[0] != '[' || value[nv - 1] != ']' || !sep)
            return lcm_fail(err, LCM_ERR_CONFIG, "%s: %s = '%s': expected a list of two numbers like [0.9,0.95] (it sets %s)",
                            origin, key, lcm_escape_str(shown, sizeof shown, value), r->target);
        const lcm_key *k1 = key_named(r->target, (size_t)(comma - r->target)), *k2 = key_named(comma + 1, strlen(comma + 1));
        LCM_TRY(set_key(cfg, k1, value + 1, (size_t)(sep - value - 1), where, err));
        return set_key(cfg, k2, sep + 1, (size_t)(value + nv - 1 - sep - 1), where, err);
    }
    const lcm_key *k = key_named(r->target, strlen(r->target));
    if (!r->values) return set_key(cfg, k, value, strlen(value), where, err);
    size_t nv = strlen(value);
    while (nv > 0 && isspace((unsigned char)value[nv - 1])) nv--;
    for (const char *c = r->values; *c;) { /* "from=to|from=to" */
        const char *bar = strchr(c, '|'), *eq = strchr(c, '=');
        size_t len = bar ? (size_t)(bar - c) : strlen(c), nf = (size_t)(eq - c);
        if (nf == nv && strncasecmp(c, value, nv) == 0) return set_key(cfg, k, eq + 1, len - nf - 1, where, err);
        c += len + (bar ? 1 : 0);
    }
    char accepted[256] = "";
    for (const char *c = r->values; *c;) { /* "cosine (optim.schedule = cosine), noop (...)" */
        const char *bar = strchr(c, '|'), *eq = strchr(c, '=');
        size_t len = bar ? (size_t)(bar - c) : strlen(c), used = strlen(accepted);
        snprintf(accepted + used, sizeof accepted - used, "%s%.*s (%s = %.*s)", used ? ", " : "", (int)(eq - c), c,
                 r->target, (int)(len - (size_t)(eq - c) - 1), eq + 1);
        c += len + (bar ? 1 : 0);
    }
    return lcm_fail(err, LCM_ERR_CONFIG, "%s: %s = '%s': lcm accepts %s%s%s", origin, key,
                    lcm_escape_str(shown, sizeof shown, value), accepted, r->why ? "; " : "", r->why ? r->why : "");
}

/* White space around the key and the value is dropped, as in a config file ("key = value"): a quoted
 * "trainer.max_steps = 5" means what it says instead of naming an unknown key "trainer.max_steps ". */
int lcm_config_set(lcm_config *cfg, const char *assignment, const char *origin, lcm_error *err) {
    const char *s = assignment;
    while (isspace((unsigned char)*s)) s++;
    if (strncmp(s, "++", 2) == 0)
        s += 2;
    else if (s[0] == '+')
        s += 1;
    const char *eq = strchr(s, '=');
    const char *key_end = eq;
    while (key_end && key_end > s && isspace((unsigned char)key_end[-1])) key_end--;
    char full[160];
    if (eq && (size_t)(key_end - s) < sizeof full) { /* the reference trainer's names (schema.c) */
        size_t n = (size_t)(key_end - s);
        for (size_t i = 0; i < n; i++) full[i] = (char)tolower((unsigned char)s[i]);
        full[n] = '\0';
        const char *dot = strchr(full, '.');
        const lcm_ref_key *r = lcm_config_find_ref_key(full);
        if (r && !(dot && key_named(full, n))) return set_ref_key(cfg, r, full, eq + 1, origin, err);
    }
    const char *dot = eq ? memchr(s, '.', (size_t)(key_end - s)) : NULL;
    if (!dot || dot == s || dot + 1 == key_end) {
        char shown[LCM_ESC_CAP];
        return lcm_fail(err, LCM_ERR_USAGE, "%s: '%s' is not an override: expected section.key=value (e.g. trainer.max_steps=1000)",
                        origin, lcm_escape_str(shown, sizeof shown, assignment));
    }
    char section[64], name[128];
    size_t ns = (size_t)(dot - s), nn = (size_t)(key_end - dot - 1);
    if (ns >= sizeof section || nn >= sizeof name) {
        char shown[LCM_ESC_CAP];
        return lcm_fail(err, LCM_ERR_CONFIG, "%s: unknown key %s; `lcm config keys` lists the keys", origin,
                        lcm_escape(shown, sizeof shown, s, (size_t)(key_end - s)));
    }
    for (size_t i = 0; i < ns; i++) section[i] = (char)tolower((unsigned char)s[i]);
    for (size_t i = 0; i < nn; i++) name[i] = (char)tolower((unsigned char)dot[1 + i]);
    section[ns] = name[nn] = '\0';

    const lcm_key *k = lcm_config_find_key(section, name);
    if (!k) return lcm_config_unknown_key(err, section, name, origin);
    if (strcmp(section, "config") == 0)
        return lcm_fail(err, LCM_ERR_USAGE, "%s: config.base can only be set inside a config file (its bases are read as the file loads)",
                        origin);
    return set_key(cfg, k, eq + 1, strlen(eq + 1), origin, err);
}

/* ---- unknown keys ----------------------------------------------------------------------------- */

int lcm_edit_distance(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    if (na > 127 || nb > 127) return 1 << 20;
    int row[128];
    for (size_t j = 0; j <= nb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= na; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= nb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}

/* A suggestion is worth making when it differs in at most a third of the characters (at least 2),
 * or when one name starts the other ("optimizer" -> "optim"). No candidate (every name too long for
 * edit_distance) is never close. */
static int close_enough(int dist, const char *typed, const char *candidate) {
    if (!candidate || !candidate[0]) return 0;
    size_t len = strlen(typed), n = strlen(candidate);
    if (n > len) n = len;
    return dist <= ((int)len / 3 > 2 ? (int)len / 3 : 2) || (n >= 3 && strncmp(typed, candidate, n) == 0);
}

const char *lcm_closest_name(const char *typed, const char *const *candidates, int n) {
    const char *best = NULL;
    int best_d = 1 << 20;
    for (int i = 0; i < n; i++) {
        int d = lcm_edit_distance(typed, candidates[i]);
        if (d < best_d) best_d = d, best = candidates[i];
    }
    return close_enough(best_d, typed, best) ? best : NULL;
}

/* The closest key to section.name: the same name in another section first (trainer.lr is optim.lr),
 * then the closest whole name; a reference key close to the typed one suggests the key it maps to. */
int lcm_config_unknown_key(lcm_error *err, const char *section, const char *name, const char *where) {
    char typed[256], full[256], best[256] = "", shown[LCM_ESC_CAP];
    snprintf(typed, sizeof typed, "%s.%s", section, name);
    int best_d = 1 << 20;
    for (int i = 0; i < lcm_num_keys; i++) {
        snprintf(full, sizeof full, "%s.%s", lcm_keys[i].section, lcm_keys[i].name);
        int d = lcm_edit_distance(typed, full);
        if (strcmp(lcm_keys[i].name, name) == 0 && strcmp(lcm_keys[i].section, "config") != 0) d = -1;
        if (d < best_d) best_d = d, snprintf(best, sizeof best, "%s", full);
    }
    for (int i = 0; best_d > 0 && i < lcm_num_ref_keys; i++) {
        const lcm_ref_key *r = &lcm_ref_keys[i];
        if (r->kind != LCM_REF_ALIAS || strchr(r->target, ',')) continue;
        int d = lcm_edit_distance(typed, r->name);
        if (d < best_d) best_d = d, snprintf(best, sizeof best, "%s", r->target);
    }
    const char *what = lcm_config_is_section(section) ? "key" : "section in key";
    lcm_escape_str(shown, sizeof shown, typed);
    if (best_d < 0 || close_enough(best_d, typed, best))
        return lcm_fail(err, LCM_ERR_CONFIG, "unknown %s %s (%s); did you mean %s?", what, shown, where, best);
    return lcm_fail(err, LCM_ERR_CONFIG, "unknown %s %s (%s); `lcm config keys` lists the keys", what, shown, where);
}

int lcm_config_unknown_section(lcm_error *err, const char *section, const char *where) {
    const char *best = NULL;
    int best_d = 1 << 20;
    for (int i = 0; lcm_config_sections[i]; i++) {
        int d = lcm_edit_distance(section, lcm_config_sections[i]);
        if (d < best_d) best_d = d, best = lcm_config_sections[i];
    }
    char shown[LCM_ESC_CAP];
    lcm_escape_str(shown, sizeof shown, section);
    if (close_enough(best_d, section, best))
        return lcm_fail(err, LCM_ERR_CONFIG, "unknown section [%s] (%s); did you mean [%s]?", shown, where, best);
    char list[256] = "";
    for (int i = 0; lcm_config_sections[i]; i++) {
        size_t len = strlen(list);
        snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", lcm_config_sections[i]);
    }
    return lcm_fail(err, LCM_ERR_CONFIG, "unknown section [%s] (%s); the sections are %s", shown, where, list);
}

/* json.c: the strict JSON parser of json.h (RFC 8259), recursive descent into a malloc'ed tree.
 * Every error message starts with the byte offset of the problem in the parsed text. */
#include "lcm/json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lcm/escape.h"

typedef struct parser {
    const unsigned char *s;
    size_t len;
    size_t pos;
    lcm_error *err;
} parser;

static int fail_at(parser *p, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail_at(parser *p, size_t pos, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return lcm_fail(p->err, LCM_ERR_FORMAT, "byte %zu: %s", pos, what);
}

static int fail_nomem(parser *p) {
    return lcm_fail(p->err, LCM_ERR_NOMEM, "byte %zu: out of memory parsing JSON", p->pos);
}

/* "end of input", "'x'" or "byte 0xNN": what sits at pos, for messages. */
static void describe_at(const parser *p, size_t pos, char *out, size_t cap) {
    if (pos >= p->len)
        snprintf(out, cap, "end of input");
    else if (p->s[pos] >= 0x20 && p->s[pos] < 0x7f)
        snprintf(out, cap, "'%c'", p->s[pos]);
    else
        snprintf(out, cap, "byte 0x%02x", p->s[pos]);
}

static int fail_unexpected(parser *p, const char *context) {
    char got[32];
    describe_at(p, p->pos, got, sizeof got);
    return fail_at(p, p->pos, "unexpected %s (%s)", got, context);
}

static int fail_expected(parser *p, const char *expected) {
    char got[32];
    describe_at(p, p->pos, got, sizeof got);
    return fail_at(p, p->pos, "expected %s, found %s", expected, got);
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

/* Length of the well-formed UTF-8 sequence starting at s (n bytes available), or 0 if it is not one.
 * The ranges are those of RFC 3629 table 3: no overlong forms, no surrogates, at most U+10FFFF. */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return len;
}

int lcm_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_seq_len(u + i, n - i);
        if (k == 0) return 0;
        i += k;
    }
    return 1;
}

static size_t put_utf8(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Four hex digits at p->pos (after "\u"). */
static int read_hex4(parser *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        if (p->pos >= p->len) return fail_at(p, p->pos, "unterminated \\u escape");
        unsigned char c = p->s[p->pos];
        uint32_t d;
        if (c >= '0' && c <= '9')
            d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (uint32_t)(c - 'A' + 10);
        else
            return fail_expected(p, "4 hex digits after \\u");
        v = v * 16 + d;
        p->pos++;
    }
    *out = v;
    return 0;
}

/* One \u escape (p->pos just after the backslash-u), joining a surrogate pair into one code point. */
static int read_unicode_escape(parser *p, uint32_t *cp) {
    size_t start = p->pos - 2;
    uint32_t u;
    LCM_TRY(read_hex4(p, &u));
    if (u >= 0xdc00 && u <= 0xdfff)
        return fail_at(p, start, "lone low surrogate \\u%04x (not preceded by a high surrogate)", u);
    if (u >= 0xd800 && u <= 0xdbff) {
        if (p->pos + 2 > p->len || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
            return fail_at(p, start, "high surrogate \\u%04x not followed by a \\u low surrogate", u);
        p->pos += 2;
        uint32_t lo;
        LCM_TRY(read_hex4(p, &lo));
        if (lo < 0xdc00 || lo > 0xdfff)
            return fail_at(p, start, "high surrogate \\u%04x followed by \\u%04x, not a low surrogate", u, lo);
        u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
    }
    *cp = u;
    return 0;
}

/* A string at p->pos (the opening quote), decoded into a malloc'ed NUL-terminated buffer. An object
 * key may not hold \u0000: every user of a key treats it as a C string, and a key cut at a NUL would
 * match (or duplicate) a different key than the one the duplicate check saw. */
static int parse_string(parser *p, char **out, size_t *out_len, int is_key) {
    size_t start = p->pos;
    p->pos++;
    /* The decoded string is never longer than its source, so size the buffer by a first scan. */
    size_t end = p->pos;
    while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->len) return fail_at(p, start, "unterminated string");
    char *buf = malloc(end - p->pos + 1);
    if (!buf) return fail_nomem(p);
    size_t n = 0;
    int rc = 0;
    while (rc == 0 && p->s[p->pos] != '"') {
        unsigned char c = p->s[p->pos];
        if (c < 0x20) {
            rc = fail_at(p, p->pos, "control character 0x%02x in string (must be escaped)", c);
        } else if (c == '\\') {
            p->pos++;
            unsigned char e = p->s[p->pos++];
            switch (e) {
            case '"': buf[n++] = '"'; break;
            case '\\': buf[n++] = '\\'; break;
            case '/': buf[n++] = '/'; break;
            case 'b': buf[n++] = '\b'; break;
            case 'f': buf[n++] = '\f'; break;
            case 'n': buf[n++] = '\n'; break;
            case 'r': buf[n++] = '\r'; break;
            case 't': buf[n++] = '\t'; break;
            case 'u': {
                uint32_t cp = 0;
                rc = read_unicode_escape(p, &cp);
                if (rc == 0 && cp == 0 && is_key)
                    rc = fail_at(p, p->pos - 6, "\\u0000 (a NUL character) in an object key");
                else if (rc == 0)
                    n += put_utf8(buf + n, cp);
                break;
            }
            default:
                p->pos -= 2;
                rc = fail_at(p, p->pos, "invalid escape '\\%c' in string", e >= 0x20 && e < 0x7f ? e : '?');
            }
        } else {
            size_t k = utf8_seq_len(p->s + p->pos, end - p->pos);
            if (k == 0) {
                rc = fail_at(p, p->pos, "invalid UTF-8 in string");
            } else {
                memcpy(buf + n, p->s + p->pos, k);
                n += k;
                p->pos += k;
            }
        }
    }
    if (rc != 0) {
        free(buf);
        return rc;
    }
    p->pos++;
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return 0;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int parse_number(parser *p, lcm_json *v) {
    size_t start = p->pos;
    int plain = 1;
    if (p->s[p->pos] == '-') {
        plain = 0;
        p->pos++;
    }
    if (p->pos >= p->len || !is_digit(p->s[p->pos])) return fail_expected(p, "a digit");
    if (p->s[p->pos] == '0') {
        p->pos++;
        if (p->pos < p->len && is_digit(p->s[p->pos])) return fail_at(p, start, "leading zero in number");
    } else {
        while (p->pos < p->len && is_digit(p->s[p->pos])) p->pos++;
    }
    if (p->pos < p->len && p->s[p->pos] == '.') {
        plain = 0;
        p->pos++;
        if (p->pos >= p->len || !is_digit(p->s[p->pos])) return fail_expected(p, "a digit after '.'");
        while (p->pos < p->len && is_digit(p->s[p->pos])) p->pos++;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        plain = 0;
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (p->pos >= p->len || !is_digit(p->s[p->pos])) return fail_expected(p, "a digit in the exponent");
        while (p->pos < p->len && is_digit(p->s[p->pos])) p->pos++;
    }
    size_t n = p->pos - start;
    /* strtod needs a NUL-terminated copy: the input (a mapped file) may end right after the digits. */
    char small[64];
    char *tok = n < sizeof small ? small : malloc(n + 1);
    if (!tok) return fail_nomem(p);
    memcpy(tok, p->s + start, n);
    tok[n] = '\0';
    v->type = LCM_JSON_NUMBER;
    v->number = strtod(tok, NULL);
    if (tok != small) free(tok);
    if (!isfinite(v->number)) return fail_at(p, start, "number out of range");
    if (plain) {
        uint64_t u = 0;
        int fits = 1;
        for (size_t i = start; i < p->pos && fits; i++) {
            uint64_t d = (uint64_t)(p->s[i] - '0');
            if (u > (UINT64_MAX - d) / 10) fits = 0;
            u = u * 10 + d;
        }
        v->is_uint = fits;
        v->uint = fits ? u : 0;
    }
    return 0;
}

static int parse_literal(parser *p, lcm_json *v, const char *word, lcm_json_type type, int boolean) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) return fail_unexpected(p, "expected a JSON value");
    p->pos += n;
    v->type = type;
    v->boolean = boolean;
    return 0;
}

static void free_children(lcm_json *v) {
    for (size_t i = 0; i < v->n; i++) {
        free_children(&v->items[i]);
        free(v->items[i].key);
        free(v->items[i].str);
    }
    free(v->items);
    v->items = NULL;
    v->n = 0;
}

/* Append a finished child (moved by value: its own pointers stay valid). */
static int push_item(parser *p, lcm_json *v, size_t *cap, const lcm_json *child) {
    if (v->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        lcm_json *items = realloc(v->items, nc * sizeof *items);
        if (!items) return fail_nomem(p);
        v->items = items;
        *cap = nc;
    }
    v->items[v->n++] = *child;
    return 0;
}

static int parse_value(parser *p, lcm_json *v, int depth);

static int parse_array(parser *p, lcm_json *v, int depth) {
    v->type = LCM_JSON_ARRAY;
    size_t cap = 0;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ']') {
        p->pos++;
        return 0;
    }
    for (;;) {
        lcm_json child = {0};
        int rc = parse_value(p, &child, depth + 1);
        if (rc == 0) rc = push_item(p, v, &cap, &child);
        if (rc != 0) {
            free_children(&child);
            free(child.str);
            return rc;
        }
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            skip_ws(p);
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == ']') {
            p->pos++;
            return 0;
        }
        return fail_expected(p, "',' or ']' in array");
    }
}

static int cmp_key(const void *a, const void *b) {
    const lcm_json *x = *(const lcm_json *const *)a, *y = *(const lcm_json *const *)b;
    if (x->key_len != y->key_len) return x->key_len < y->key_len ? -1 : 1;
    int c = memcmp(x->key, y->key, x->key_len);
    if (c != 0) return c;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Sorting by key finds duplicates in n log n: a hostile header may hold millions of keys. */
static int check_duplicate_keys(parser *p, const lcm_json *v) {
    if (v->n < 2) return 0;
    const lcm_json **sorted = malloc(v->n * sizeof *sorted);
    if (!sorted) return fail_nomem(p);
    for (size_t i = 0; i < v->n; i++) sorted[i] = &v->items[i];
    qsort(sorted, v->n, sizeof *sorted, cmp_key);
    const lcm_json *first = NULL, *dup = NULL;
    for (size_t i = 1; i < v->n; i++) {
        if (sorted[i]->key_len == sorted[i - 1]->key_len &&
            memcmp(sorted[i]->key, sorted[i - 1]->key, sorted[i]->key_len) == 0 &&
            (!dup || sorted[i]->pos < dup->pos)) {
            first = sorted[i - 1];
            dup = sorted[i];
        }
    }
    free(sorted);
    if (!dup) return 0;
    char shown[96];
    lcm_escape(shown, sizeof shown, dup->key, dup->key_len);
    return fail_at(p, dup->pos, "duplicate key \"%s\" in object (first at byte %zu)", shown, first->pos);
}

static int parse_object(parser *p, lcm_json *v, int depth) {
    v->type = LCM_JSON_OBJECT;
    size_t cap = 0;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == '}') {
        p->pos++;
        return 0;
    }
    for (;;) {
        if (p->pos >= p->len || p->s[p->pos] != '"') return fail_expected(p, "'\"' to start an object key");
        lcm_json child = {0};
        size_t key_pos = p->pos;
        int rc = parse_string(p, &child.key, &child.key_len, 1);
        if (rc == 0) {
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') rc = fail_expected(p, "':' after object key");
        }
        if (rc == 0) {
            p->pos++;
            skip_ws(p);
            rc = parse_value(p, &child, depth + 1);
            child.pos = key_pos;
        }
        if (rc == 0) rc = push_item(p, v, &cap, &child);
        if (rc != 0) {
            free_children(&child);
            free(child.key);
            free(child.str);
            return rc;
        }
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            skip_ws(p);
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == '}') {
            p->pos++;
            return check_duplicate_keys(p, v);
        }
        return fail_expected(p, "',' or '}' in object");
    }
}

static int parse_value(parser *p, lcm_json *v, int depth) {
    v->pos = p->pos;
    if (p->pos >= p->len) return fail_expected(p, "a JSON value");
    unsigned char c = p->s[p->pos];
    if ((c == '[' || c == '{') && depth >= LCM_JSON_MAX_DEPTH)
        return fail_at(p, p->pos, "arrays/objects nested deeper than %d", LCM_JSON_MAX_DEPTH);
    switch (c) {
    case '{': return parse_object(p, v, depth);
    case '[': return parse_array(p, v, depth);
    case '"':
        v->type = LCM_JSON_STRING;
        return parse_string(p, &v->str, &v->len, 0);
    case 't': return parse_literal(p, v, "true", LCM_JSON_BOOL, 1);
    case 'f': return parse_literal(p, v, "false", LCM_JSON_BOOL, 0);
    case 'n': return parse_literal(p, v, "null", LCM_JSON_NULL, 0);
    default:
        if (c == '-' || is_digit(c)) return parse_number(p, v);
        return fail_unexpected(p, "expected a JSON value");
    }
}

int lcm_json_parse(const char *text, size_t len, lcm_json **out, lcm_error *err) {
    *out = NULL;
    parser p = {(const unsigned char *)text, len, 0, err};
    lcm_json *root = calloc(1, sizeof *root);
    if (!root) return fail_nomem(&p);
    skip_ws(&p);
    int rc = parse_value(&p, root, 0);
    if (rc == 0) {
        skip_ws(&p);
        if (p.pos < p.len) rc = fail_unexpected(&p, "nothing may follow the JSON value");
    }
    if (rc != 0) {
        lcm_json_free(root);
        return rc;
    }
    *out = root;
    return 0;
}

void lcm_json_free(lcm_json *root) {
    if (!root) return;
    free_children(root);
    free(root->key);
    free(root->str);
    free(root);
}

const lcm_json *lcm_json_get(const lcm_json *obj, const char *key) {
    if (!obj || obj->type != LCM_JSON_OBJECT) return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < obj->n; i++)
        if (obj->items[i].key_len == n && memcmp(obj->items[i].key, key, n) == 0) return &obj->items[i];
    return NULL;
}

const char *lcm_json_get_string(const lcm_json *obj, const char *key) {
    const lcm_json *v = lcm_json_get(obj, key);
    if (!v || v->type != LCM_JSON_STRING || strlen(v->str) != v->len) return NULL;
    return v->str;
}

const char *lcm_json_type_name(lcm_json_type t) {
    switch (t) {
    case LCM_JSON_NULL: return "null";
    case LCM_JSON_BOOL: return "boolean";
    case LCM_JSON_NUMBER: return "number";
    case LCM_JSON_STRING: return "string";
    case LCM_JSON_ARRAY: return "array";
    case LCM_JSON_OBJECT: return "object";
    }
    return "unknown";
}

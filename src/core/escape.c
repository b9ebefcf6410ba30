/* escape.c: file-controlled text made safe for one-line messages (escape.h). */
#include "lcm/escape.h"

#include <stdio.h>
#include <string.h>

/* The escaped form of one byte into e (at most 4 characters plus NUL); returns its length. */
static size_t escape_byte(unsigned char c, char e[5]) {
    const char *named = NULL;
    switch (c) {
    case '\n': named = "\\n"; break;
    case '\t': named = "\\t"; break;
    case '\r': named = "\\r"; break;
    case '"': named = "\\\""; break;
    case '\'': named = "\\'"; break;
    case '\\': named = "\\\\"; break;
    default: break;
    }
    if (named) {
        memcpy(e, named, 3);
        return 2;
    }
    if (c >= 0x20 && c < 0x7f) {
        e[0] = (char)c;
        e[1] = '\0';
        return 1;
    }
    snprintf(e, 5, "\\x%02x", c);
    return 4;
}

const char *lcm_escape(char *out, size_t cap, const char *s, size_t n) {
    static const char cut[] = "...";
    size_t k = 0, safe = 0; /* safe: the longest output so far after which "..." still fits */
    for (size_t i = 0; i < n; i++) {
        char e[5];
        size_t len = escape_byte((unsigned char)s[i], e);
        if (k + len + 1 > cap) {
            memcpy(out + safe, cut, sizeof cut);
            return out;
        }
        memcpy(out + k, e, len);
        k += len;
        if (k + sizeof cut <= cap) safe = k;
    }
    out[k] = '\0';
    return out;
}

const char *lcm_escape_str(char *out, size_t cap, const char *s) {
    if (!s) s = "(null)";
    return lcm_escape(out, cap, s, strlen(s));
}

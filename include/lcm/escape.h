/* escape.h: file-controlled text made safe for one-line messages.
 *
 * Names and values read from files (tensor names, JSON keys, .npy header strings, config text) go
 * into error and log lines through lcm_escape, never raw: a newline would forge an extra line and an
 * ESC byte would drive the terminal. Printable ASCII is kept; \n \t \r \" \' \\ get their C escape;
 * every other byte, including each byte of a non-ASCII UTF-8 character, becomes \xNN. Valid UTF-8 is
 * escaped too on purpose: it can hold bidirectional overrides, C1 controls and look-alike or
 * zero-width characters that make two different names print alike; the names lcm itself writes are
 * ASCII, so an escape in a message always points at a byte that deserves a look. */
#ifndef LCM_ESCAPE_H
#define LCM_ESCAPE_H

#include <stddef.h>

/* A buffer that holds a name of about 60 bytes escaped in full, or a longer one cut with "...". */
#define LCM_ESC_CAP 256

/* Escape s[0..n) into out (cap bytes, cap >= 8), NUL-terminated; when it does not fit, the output
 * ends with "..." after whole escapes. Returns out, so that it can be an argument of a printf. */
const char *lcm_escape(char *out, size_t cap, const char *s, size_t n);
/* The same for a NUL-terminated string (NULL gives "(null)"). */
const char *lcm_escape_str(char *out, size_t cap, const char *s);

#endif

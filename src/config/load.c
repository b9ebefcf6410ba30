/* load.c: config files: finding them (on disk, else among the conf/ files built into the binary),
 * parsing them with iniparser, following `[config] base = ...` chains, and applying their values with
 * the file and line each came from.
 *
 * iniparser 4.1 decides the syntax and the values (sections, keys lower-cased, quotes stripped); this
 * file only adds what iniparser does not keep: the line of every `[section]` and `key =` (from a scan
 * of the same text), so that an error names the line. Values are never read with iniparser_getint or
 * getboolean (see docs/engineering-notes.md): value.c parses them.
 *
 * Before iniparser sees a file, a UTF-8 byte order mark at its start is skipped (editors on Windows
 * write one) and a NUL byte is refused (iniparser would call it "line too long": it is a binary file).
 * Text from a file reaches messages only through lcm_escape (escape.h).
 *
 * Not thread-safe: iniparser's error callback is process-wide. Configs are loaded on the main thread. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <iniparser/iniparser.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_internal.h"
#include "lcm/escape.h"

#define MAX_BASE_DEPTH 16
/* Far above any real config (conf/ files are a few KB): a base naming /dev/zero, or a huge file given
 * by mistake, is an error instead of reading until memory runs out. */
#define MAX_CONFIG_BYTES (1 << 20)

/* One config file, on disk or built in. */
typedef struct conf_file {
    const lcm_embedded_file *embedded; /* NULL: on disk at path */
    char path[LCM_PATH_MAX];           /* disk path, or the path inside conf/ ("model/toy.ini") */
    char name[LCM_PATH_MAX];           /* for messages and origins: the disk path, or "<embedded>/..." */
} conf_file;

/* The files being loaded, outermost first: for cycle detection and for the message that shows one. */
typedef struct base_chain {
    int depth;
    char id[MAX_BASE_DEPTH][PATH_MAX + 16]; /* realpath(), or "<embedded>/..." */
    const char *name[MAX_BASE_DEPTH];
} base_chain;

/* ---- finding files ---------------------------------------------------------------------------- */

/* "./a/../model/x.ini" -> "model/x.ini". Fails when ".." climbs above the start. */
static int normalize_rel(const char *in, char *out, size_t cap) {
    size_t len = 0;
    out[0] = '\0';
    for (const char *p = in; *p;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 2 && strncmp(p, "..", 2) == 0) {
            if (len == 0) return -1;
            char *prev = strrchr(out, '/');
            len = prev ? (size_t)(prev - out) : 0;
            out[len] = '\0';
        } else if (n > 0 && !(n == 1 && p[0] == '.')) {
            if (len + (len > 0) + n + 1 > cap) return -1;
            if (len > 0) out[len++] = '/';
            memcpy(out + len, p, n);
            len += n;
            out[len] = '\0';
        }
        p += n + (slash ? 1 : 0);
    }
    return len > 0 ? 0 : -1;
}

/* A built-in file by its path inside conf/; "conf/model/toy.ini" and "./model/toy.ini" also match. */
static const lcm_embedded_file *find_embedded(const char *path) {
    char rel[LCM_PATH_MAX];
    if (path[0] == '/' || normalize_rel(path, rel, sizeof rel)) return NULL;
    const char *p = strncmp(rel, "conf/", 5) == 0 ? rel + 5 : rel;
    for (const lcm_embedded_file *e = lcm_embedded_conf; e->path; e++)
        if (strcmp(e->path, p) == 0) return e;
    return NULL;
}

static void use_embedded(conf_file *cf, const lcm_embedded_file *e) {
    cf->embedded = e;
    snprintf(cf->path, sizeof cf->path, "%s", e->path);
    snprintf(cf->name, sizeof cf->name, "<embedded>/%.1000s", e->path);
}

static void use_disk(conf_file *cf, const char *path) {
    cf->embedded = NULL;
    snprintf(cf->path, sizeof cf->path, "%s", path);
    snprintf(cf->name, sizeof cf->name, "%s", path);
}

static void list_embedded(char *buf, size_t cap) {
    size_t len = 0;
    buf[0] = '\0';
    for (const lcm_embedded_file *e = lcm_embedded_conf; e->path && len < cap; e++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", len ? ", " : "", e->path);
}

static int locate_top(const char *path, conf_file *cf, lcm_error *err) {
    if (lcm_file_exists(path)) {
        if (lcm_is_dir(path)) return lcm_fail(err, LCM_ERR_CONFIG, "config file %s is a directory", path);
        use_disk(cf, path);
        return 0;
    }
    const lcm_embedded_file *e = find_embedded(path);
    if (e) {
        use_embedded(cf, e);
        return 0;
    }
    char names[512];
    list_embedded(names, sizeof names);
    return lcm_fail(err, LCM_ERR_CONFIG, "config file %s not found (not on disk, nor built in: %s)", path, names);
}

/* A base path is relative to the directory of the file that names it. A disk file's base that is not
 * on disk is looked up among the built-in files; a built-in file's bases are built in too. */
static int locate_base(const conf_file *parent, const char *base, const char *where, conf_file *cf, lcm_error *err) {
    char dir[LCM_PATH_MAX], joined[LCM_PATH_MAX], shown[LCM_ESC_CAP], shown_joined[LCM_ESC_CAP * 2];
    lcm_escape_str(shown, sizeof shown, base);
    lcm_dirname(parent->path, dir, sizeof dir);
    if (lcm_path_join(joined, sizeof joined, dir, base))
        return lcm_fail(err, LCM_ERR_CONFIG, "%s: base path %s is too long", where, shown);
    if (parent->embedded) {
        const lcm_embedded_file *e = find_embedded(joined);
        if (!e) return lcm_fail(err, LCM_ERR_CONFIG, "%s: base %s is not a built-in config file", where, shown);
        use_embedded(cf, e);
        return 0;
    }
    if (lcm_file_exists(joined) && !lcm_is_dir(joined)) {
        use_disk(cf, joined);
        return 0;
    }
    const lcm_embedded_file *e = find_embedded(base);
    if (!e)
        return lcm_fail(err, LCM_ERR_CONFIG, "%s: base %s not found (looked for %s on disk and among the built-in conf/ files)",
                        where, shown, lcm_escape_str(shown_joined, sizeof shown_joined, joined));
    use_embedded(cf, e);
    return 0;
}

/* ---- the line of every section and key -------------------------------------------------------- */

typedef struct line_entry {
    char key[256]; /* as iniparser names it: "section" or "section:key", lower case */
    int line;
} line_entry;

typedef struct line_index {
    line_entry *e;
    int n, cap;
} line_index;

static int add_line(line_index *ix, const char *section, const char *key, int line) {
    if (ix->n == ix->cap) {
        int cap = ix->cap ? 2 * ix->cap : 64;
        line_entry *e = realloc(ix->e, (size_t)cap * sizeof *e);
        if (!e) return -1;
        ix->e = e;
        ix->cap = cap;
    }
    line_entry *le = &ix->e[ix->n++];
    snprintf(le->key, sizeof le->key, key ? "%s:%s" : "%s", section, key ? key : "");
    for (char *p = le->key; *p; p++) *p = (char)tolower((unsigned char)*p);
    le->line = line;
    return 0;
}

/* Copy s[0..n) without surrounding white space. */
static void strip_copy(char *out, size_t cap, const char *s, size_t n) {
    while (n > 0 && isspace((unsigned char)*s)) s++, n--;
    while (n > 0 && isspace((unsigned char)s[n - 1])) n--;
    if (n >= cap) n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

/* Mirrors how iniparser 4.1 reads lines: white space stripped, '#' and ';' start comments, a line
 * ending in '\' continues on the next, `[name]` opens a section, the key is the text before the
 * first '='. Only run on text iniparser accepted, so every other line is a key line. */
static int index_lines(const char *text, line_index *ix) {
    char section[256] = "";
    int lineno = 0, continued = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char line[1100];
        strip_copy(line, sizeof line, p, n);
        p += n + (nl ? 1 : 0);
        lineno++;
        size_t len = strlen(line);
        int was_continued = continued;
        continued = len > 0 && line[len - 1] == '\\';
        if (was_continued || len == 0 || line[0] == '#' || line[0] == ';') continue;
        if (line[0] == '[' && line[len - 1] == ']') {
            char name[256];
            const char *close = strchr(line, ']');
            strip_copy(name, sizeof name, line + 1, (size_t)(close - line - 1));
            if (name[0]) snprintf(section, sizeof section, "%s", name);
            if (add_line(ix, section, NULL, lineno)) return -1;
        } else if (strchr(line, '=')) {
            char key[256];
            strip_copy(key, sizeof key, line, (size_t)(strchr(line, '=') - line));
            if (add_line(ix, section, key, lineno)) return -1;
        }
    }
    return 0;
}

/* The line iniparser took `dict_key` from: the last one, as a repeated key keeps its last value. */
static int line_of(const line_index *ix, const char *dict_key) {
    for (int i = ix->n - 1; i >= 0; i--)
        if (strcmp(ix->e[i].key, dict_key) == 0) return ix->e[i].line;
    return 0;
}

static void where_text(char *buf, size_t cap, const conf_file *cf, int line) {
    if (line > 0)
        snprintf(buf, cap, "%s:%d", cf->name, line);
    else
        snprintf(buf, cap, "%s", cf->name);
}

/* ---- parsing with iniparser ------------------------------------------------------------------- */

static char ini_message[1024]; /* the first message iniparser reported during the current parse */

static int capture_ini_message(const char *fmt, ...) {
    if (ini_message[0]) return 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ini_message, sizeof ini_message, fmt, ap);
    va_end(ap);
    return 0;
}

/* iniparser says "iniparser: syntax error in <file> (<line>):\n-> <text>\n" (or "input line too long
 * in <file> (<line>)"); say it with our file name and in one line. */
static int ini_failure(const conf_file *cf, const char *fed_path, lcm_error *err) {
    const char *at = strstr(ini_message, fed_path);
    int line = 0;
    if (at) sscanf(at + strlen(fed_path), " (%d)", &line);
    const char *arrow = strstr(ini_message, "-> ");
    if (line > 0 && arrow) {
        arrow += 3;
        char shown[LCM_ESC_CAP];
        lcm_escape(shown, sizeof shown, arrow, strcspn(arrow, "\n"));
        return lcm_fail(err, LCM_ERR_CONFIG, "%s:%d: syntax error: '%s' is not [section], key = value or a # comment", cf->name,
                        line, shown);
    }
    if (line > 0 && strstr(ini_message, "too long"))
        return lcm_fail(err, LCM_ERR_CONFIG, "%s:%d: line too long (iniparser reads at most %d characters a line)", cf->name, line,
                        LCM_INI_LINE_MAX);
    for (char *s = ini_message; *s; s++)
        if (*s == '\n') *s = ' ';
    char shown[LCM_ESC_CAP * 2];
    return lcm_fail(err, LCM_ERR_CONFIG, "%s: cannot be parsed: %s", cf->name,
                    ini_message[0] ? lcm_escape_str(shown, sizeof shown, ini_message) : "iniparser failed");
}

/* iniparser 4.1 only reads named files. It is handed the very bytes the line index was built from
 * (disk or built-in) through an anonymous in-memory file: one path for both, no temporary files. */
static int parse_ini(const conf_file *cf, const char *text, size_t size, dictionary **out, lcm_error *err) {
    int fd = memfd_create("lcm-config", MFD_CLOEXEC);
    if (fd < 0) return lcm_fail(err, LCM_ERR_IO, "reading %s: memfd_create failed: %s", cf->name, strerror(errno));
    for (size_t done = 0; done < size;) {
        ssize_t k = write(fd, text + done, size - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            close(fd);
            return lcm_fail(err, LCM_ERR_IO, "reading %s: in-memory copy failed: %s", cf->name, strerror(errno));
        }
        done += (size_t)k;
    }
    char fed_path[64];
    snprintf(fed_path, sizeof fed_path, "/proc/self/fd/%d", fd);
    ini_message[0] = '\0';
    iniparser_set_error_callback(capture_ini_message);
    *out = iniparser_load(fed_path);
    iniparser_set_error_callback(NULL);
    close(fd);
    return *out ? 0 : ini_failure(cf, fed_path, err);
}

/* ---- applying a file -------------------------------------------------------------------------- */

static int key_outside_section(lcm_error *err, const char *name, const char *where) {
    for (int i = 0; i < lcm_num_keys; i++)
        if (strcmp(lcm_keys[i].name, name) == 0)
            return lcm_fail(err, LCM_ERR_CONFIG, "%s: key %s comes before any [section]; did you mean it under [%s]?", where, name,
                            lcm_keys[i].section);
    return lcm_fail(err, LCM_ERR_CONFIG, "%s: key %s comes before any [section]; `lcm config keys` lists the keys", where, name);
}

/* Every entry of the dictionary, in file order: sections must exist, keys must exist, values must parse. */
static int apply_entries(lcm_config *cfg, const dictionary *d, const line_index *ix, const conf_file *cf, lcm_error *err) {
    for (ssize_t i = 0; i < d->size; i++) {
        const char *key = d->key[i], *val = d->val[i];
        if (!key) continue;
        char where[LCM_PATH_MAX + 48];
        where_text(where, sizeof where, cf, line_of(ix, key));
        const char *colon = strchr(key, ':');
        if (!val || !colon) { /* a [section] line; its name may hold ':', so the NULL value decides */
            if (!lcm_config_is_section(key)) return lcm_config_unknown_section(err, key, where);
            continue;
        }
        char section[256];
        snprintf(section, sizeof section, "%.*s", (int)(colon - key), key);
        const char *name = colon + 1;
        if (!section[0]) return key_outside_section(err, name, where);
        const lcm_key *k = lcm_config_find_key(section, name);
        if (!k) return lcm_config_unknown_key(err, section, name, where);
        LCM_TRY(lcm_config_apply(cfg, k, val, where, err));
    }
    return 0;
}

static int load_file(lcm_config *cfg, const conf_file *cf, base_chain *chain, lcm_error *err);

/* `[config] base = a.ini, b.ini`: each loaded in order before the file's own values. */
static int load_bases(lcm_config *cfg, const conf_file *cf, const dictionary *d, const line_index *ix, base_chain *chain,
                      lcm_error *err) {
    const char *list = iniparser_getstring(d, "config:base", NULL);
    if (!list || !list[0]) return 0;
    char where[LCM_PATH_MAX + 48];
    where_text(where, sizeof where, cf, line_of(ix, "config:base"));
    char copy[LCM_STR_MAX];
    if (strlen(list) >= sizeof copy) return lcm_fail(err, LCM_ERR_CONFIG, "%s: config.base is too long", where);
    snprintf(copy, sizeof copy, "%s", list);
    for (char *item = copy, *next; item; item = next) {
        next = strchr(item, ',');
        if (next) *next++ = '\0';
        char path[LCM_STR_MAX];
        strip_copy(path, sizeof path, item, strlen(item));
        char shown[LCM_ESC_CAP];
        if (!path[0])
            return lcm_fail(err, LCM_ERR_CONFIG, "%s: config.base = '%s' has an empty entry", where,
                            lcm_escape_str(shown, sizeof shown, list));
        conf_file base;
        LCM_TRY(locate_base(cf, path, where, &base, err));
        LCM_TRY(load_file(cfg, &base, chain, err));
    }
    return 0;
}

static void identity(const conf_file *cf, char *out, size_t cap) {
    char real[PATH_MAX];
    if (cf->embedded)
        snprintf(out, cap, "<embedded>/%.1000s", cf->path);
    else
        snprintf(out, cap, "%s", realpath(cf->path, real) ? real : cf->path);
}

static int enter_file(base_chain *chain, const conf_file *cf, lcm_error *err) {
    char id[sizeof chain->id[0]];
    identity(cf, id, sizeof id);
    for (int i = 0; i < chain->depth; i++) {
        if (strcmp(chain->id[i], id) != 0) continue;
        char path[2048] = "";
        size_t len = 0;
        for (int j = i; j < chain->depth && len < sizeof path; j++)
            len += (size_t)snprintf(path + len, sizeof path - len, "%s -> ", chain->name[j]);
        return lcm_fail(err, LCM_ERR_CONFIG, "base cycle: %s%s", path, cf->name);
    }
    if (chain->depth == MAX_BASE_DEPTH)
        return lcm_fail(err, LCM_ERR_CONFIG, "%s: bases nested more than %d deep (%s is the first file)", cf->name, MAX_BASE_DEPTH,
                        chain->name[0]);
    snprintf(chain->id[chain->depth], sizeof chain->id[0], "%s", id);
    chain->name[chain->depth++] = cf->name;
    return 0;
}

/* The whole file, at most MAX_CONFIG_BYTES (read, not stat'ed: a pipe such as <(...) is fine for the
 * file given on the command line). A base must be a regular file: one that names a pipe, a terminal or
 * /dev/stdin would wait for input forever (found by fuzz_config: `base = /proc/self/fd/N`). A base is
 * opened with O_NONBLOCK, so that a FIFO is refused, not waited on; the command line's file is opened as
 * a stream would be (a named FIFO waits for its writer). */
static int read_config_file(const conf_file *cf, int is_base, char **out, size_t *size, lcm_error *err) {
    *out = NULL;
    int fd = open(cf->path, O_RDONLY | O_CLOEXEC | (is_base ? O_NONBLOCK : 0));
    if (fd < 0) return lcm_fail(err, LCM_ERR_IO, "cannot open %s: %s", cf->name, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return lcm_fail(err, LCM_ERR_IO, "cannot open %s: %s", cf->name, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return lcm_fail(err, LCM_ERR_CONFIG, "config file %s is a directory", cf->name);
    }
    if (is_base && !S_ISREG(st.st_mode)) {
        close(fd);
        return lcm_fail(err, LCM_ERR_CONFIG, "base %s is not a regular file (a %s): a base names a config file", cf->name,
                        S_ISFIFO(st.st_mode) ? "pipe" : S_ISCHR(st.st_mode) ? "character device" :
                        S_ISSOCK(st.st_mode) ? "socket" : "special file");
    }
    int fl = fcntl(fd, F_GETFL);
    FILE *f = fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0 ? NULL : fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        return lcm_fail(err, LCM_ERR_IO, "cannot open %s: %s", cf->name, strerror(e));
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    while (buf && len <= MAX_CONFIG_BYTES) {
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap) break;
        char *nb = realloc(buf, 2 * cap + 1);
        if (!nb) free(buf);
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory reading %s", cf->name);
    if (bad || len > MAX_CONFIG_BYTES) {
        free(buf);
        if (bad) return lcm_fail(err, LCM_ERR_IO, "reading %s failed", cf->name);
        return lcm_fail(err, LCM_ERR_CONFIG, "%s: more than %d bytes; a config file is a short text file (is this the "
                        "right file?)", cf->name, MAX_CONFIG_BYTES);
    }
    buf[len] = '\0';
    *out = buf;
    *size = len;
    return 0;
}

static int load_file(lcm_config *cfg, const conf_file *cf, base_chain *chain, lcm_error *err) {
    LCM_TRY(enter_file(chain, cf, err));
    char *owned = NULL;
    const char *text;
    size_t size = 0;
    if (cf->embedded) {
        text = cf->embedded->data;
        size = cf->embedded->size;
    } else {
        int rc = read_config_file(cf, chain->depth > 1, &owned, &size, err);
        if (rc != 0) {
            chain->depth--;
            return rc;
        }
        text = owned;
    }
    line_index ix = {0};
    dictionary *d = NULL;
    int rc = 0;
    const char *nul = memchr(text, '\0', size);
    if (nul) {
        int line = 1;
        for (const char *p = text; p < nul; p++) line += *p == '\n';
        rc = lcm_fail(err, LCM_ERR_CONFIG, "%s:%d: a NUL byte (byte %zu of the file): a config file is text; is this "
                      "the right file?", cf->name, line, (size_t)(nul - text));
    }
    static const char bom[] = "\xef\xbb\xbf";
    if (size >= 3 && memcmp(text, bom, 3) == 0) text += 3, size -= 3;
    if (!rc) rc = parse_ini(cf, text, size, &d, err);
    if (!rc && index_lines(text, &ix)) rc = lcm_fail(err, LCM_ERR_NOMEM, "out of memory reading %s", cf->name);
    if (!rc) rc = load_bases(cfg, cf, d, &ix, chain, err);
    if (!rc) rc = apply_entries(cfg, d, &ix, cf, err);
    if (d) iniparser_freedict(d);
    free(ix.e);
    free(owned);
    chain->depth--;
    return rc;
}

int lcm_config_load(lcm_config *cfg, const char *path, int n_overrides, char *const *overrides, lcm_error *err) {
    lcm_config_defaults(cfg);
    conf_file top;
    if (path) {
        LCM_TRY(locate_top(path, &top, err));
    } else {
        const lcm_embedded_file *e = find_embedded("default.ini");
        if (!e) return lcm_fail(err, LCM_ERR_INTERNAL, "this lcm binary was built without conf/default.ini");
        use_embedded(&top, e);
    }
    snprintf(cfg->source, sizeof cfg->source, "%s", top.name);
    base_chain *chain = calloc(1, sizeof *chain);
    if (!chain) return lcm_fail(err, LCM_ERR_NOMEM, "out of memory loading %s", top.name);
    int rc = load_file(cfg, &top, chain, err);
    free(chain);
    for (int i = 0; !rc && i < n_overrides; i++) rc = lcm_config_set(cfg, overrides[i], "command line", err);
    return rc ? rc : lcm_config_validate(cfg, err);
}

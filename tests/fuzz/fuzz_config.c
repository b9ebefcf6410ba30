/* fuzz_config.c: libFuzzer harness for the config loader (src/config/): iniparser's syntax, the line
 * index, base chains and overrides. The input holds up to four parts, split at the line "=====":
 * top.ini, b1.ini, b2.ini (written into a scratch directory, so that `base = b1.ini` chains them),
 * then overrides, one per line. Bases may also name the built-in conf/ files. */
#include "fuzz_util.h"
#include "lcm/config.h"

#define MAX_OVERRIDES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *parts[4];
    size_t lens[4];
    int n = fuzz_split(data, size, parts, lens, 4);
    static const char *const names[3] = {"top.ini", "b1.ini", "b2.ini"};
    char path[512], top[512];
    fuzz_path(top, sizeof top, names[0]);
    for (int i = 0; i < 3; i++) {
        fuzz_path(path, sizeof path, names[i]);
        if (i < n)
            fuzz_write(path, parts[i], lens[i]);
        else
            unlink(path);
    }
    char *ov_text = NULL, *ov[MAX_OVERRIDES];
    int n_ov = 0;
    if (n == 4) {
        ov_text = malloc(lens[3] + 1);
        if (!ov_text) return 0;
        memcpy(ov_text, parts[3], lens[3]);
        ov_text[lens[3]] = '\0';
        for (char *line = ov_text, *next; line && n_ov < MAX_OVERRIDES; line = next) {
            next = strchr(line, '\n');
            if (next) *next++ = '\0';
            if (line[0]) ov[n_ov++] = line;
        }
    }
    static lcm_config cfg;
    lcm_error err = {0};
    int rc = lcm_config_load(&cfg, top, n_ov, ov, &err);
    if (rc != 0 && (!err.msg[0] || strchr(err.msg, '\n'))) __builtin_trap(); /* one-line messages */
    if (rc == 0) {
        /* A loaded config writes out as text that loads back (what `lcm config show` and checkpoints do). */
        fuzz_path(path, sizeof path, "written.ini");
        FILE *f = fopen(path, "w");
        if (!f || lcm_config_write(&cfg, f) != 0 || fclose(f) != 0) abort();
        static lcm_config again;
        if (lcm_config_load(&again, path, 0, NULL, &err) != 0) {
            fprintf(stderr, "written config does not load back: %s\n", err.msg);
            __builtin_trap();
        }
    }
    free(ov_text);
    return 0;
}

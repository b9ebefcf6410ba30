/* fuzz_json.c: libFuzzer harness for the JSON parser (src/io/json.c): any bytes either parse into a
 * tree that can be walked and freed, or fail with a message; never a crash, leak or UB. */
#include <string.h>

#include "lcm/json.h"

/* Touch every node, and look keys up the way the safetensors reader does. */
static size_t walk(const lcm_json *v) {
    size_t n = 1;
    if (v->type == LCM_JSON_STRING) n += v->len + lcm_utf8_valid(v->str, v->len);
    if (v->type == LCM_JSON_OBJECT && v->n > 0) {
        if (lcm_json_get(v, v->items[0].key) != &v->items[0]) __builtin_trap(); /* keys are unique */
        if (strlen(v->items[0].key) != v->items[0].key_len) __builtin_trap();   /* keys hold no NUL */
        (void)lcm_json_get_string(v, "dtype");
    }
    for (size_t i = 0; i < v->n; i++) n += walk(&v->items[i]);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lcm_error err = {0};
    lcm_json *root = NULL;
    if (lcm_json_parse((const char *)data, size, &root, &err) == 0) {
        volatile size_t n = walk(root);
        (void)n;
        lcm_json_free(root);
    } else if (!err.msg[0] || strchr(err.msg, '\n')) {
        __builtin_trap(); /* every failure has a one-line message */
    }
    return 0;
}

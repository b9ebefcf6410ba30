/* fuzz_npy.c: libFuzzer harness for the .npy reader (src/data/npy.c): open the bytes as a file and,
 * when the header is accepted, read every element the header promises (ASan checks they exist). */
#include "fuzz_util.h"
#include "lcm/half.h"
#include "lcm/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fuzz_path(path, sizeof path, "in.npy");
    fuzz_write(path, data, size);
    lcm_error err = {0};
    lcm_npy a;
    if (lcm_npy_open(&a, path, &err) != 0) {
        if (!err.msg[0] || strchr(err.msg, '\n')) __builtin_trap();
        return 0;
    }
    double sum = 0;
    for (uint64_t i = 0; i < a.numel; i++) {
        if (lcm_npy_is_int(&a)) {
            sum += (double)lcm_npy_int(&a, i);
        } else if (a.type == LCM_NPY_F32) {
            float f;
            memcpy(&f, a.data + 4 * i, 4);
            sum += f;
        } else {
            uint16_t h;
            memcpy(&h, a.data + 2 * i, 2);
            sum += lcm_f16_to_f32(h);
        }
    }
    if (sum != sum && a.type != LCM_NPY_F32 && a.type != LCM_NPY_F16) __builtin_trap(); /* ints are never NaN */
    char shape[128];
    lcm_npy_shape_str(&a, shape, sizeof shape);
    lcm_npy_close(&a);
    return 0;
}

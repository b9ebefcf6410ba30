/* test_normalizer.c: lcm_normalizer_resolve, the one reading of model.normalizer that training and
 * evaluation share: "none", "dataset" (the file beside the dataset, or an error saying how to fit one)
 * and a path; and the identity it gives for "none". */
#include "harness.h"

#include <stdio.h>

#include "lcm/fileio.h"
#include "lcm/normalizer.h"

static void write_normalizer(const char *path, int dim, float c, float s) {
    lcm_error err = {0};
    lcm_normalizer n;
    CHECK_OK(lcm_normalizer_alloc(&n, dim, &err), &err);
    for (int i = 0; i < dim && n.center; i++) {
        n.center[i] = c + (float)i;
        n.scale[i] = s;
    }
    CHECK_OK(lcm_normalizer_save(&n, path, &err), &err);
    lcm_normalizer_free(&n);
}

TEST(resolve_none_is_the_identity) {
    lcm_error err = {0};
    lcm_normalizer n;
    CHECK_OK(lcm_normalizer_resolve(&n, "none", "/nonexistent/train.lcmd", 5, &err), &err);
    CHECK(n.dim == 5);
    for (int i = 0; i < n.dim; i++) CHECK(n.center[i] == 0.0f && n.scale[i] == 1.0f);
    lcm_normalizer_free(&n);
    CHECK(n.center == NULL && n.scale == NULL && n.dim == 0);
}

TEST(resolve_dataset_reads_the_file_beside_the_dataset) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char data[512], beside[512];
    snprintf(data, sizeof data, "%s/train.lcmd", dir);
    lcm_normalizer_path_for(data, beside, sizeof beside);
    char want[512];
    snprintf(want, sizeof want, "%s/normalizer.safetensors", dir);
    CHECK(strcmp(beside, want) == 0);

    lcm_normalizer n;
    /* missing: a config error that names the file and the command that fits it */
    char needle[600];
    snprintf(needle, sizeof needle, "%s does not exist: fit one with `lcm data fit-normalizer", beside);
    CHECK_FAILS(lcm_normalizer_resolve(&n, "dataset", data, 3, &err), &err, LCM_ERR_CONFIG, needle);

    write_normalizer(beside, 3, 0.5f, 2.0f);
    CHECK_OK(lcm_normalizer_resolve(&n, "dataset", data, 3, &err), &err);
    CHECK(n.dim == 3 && n.center && n.center[2] == 2.5f && n.scale[1] == 2.0f);
    lcm_normalizer_free(&n);
    /* the dimension is checked against the model's */
    CHECK_FAILS(lcm_normalizer_resolve(&n, "dataset", data, 4, &err), &err, LCM_ERR_DATA,
                "normalizer dimension is 3 but the embeddings have dimension 4");
    lcm_rm_rf(dir, &err);
}

TEST(resolve_a_path_reads_that_file) {
    lcm_error err = {0};
    const char *dir = harness_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/other.safetensors", dir);
    write_normalizer(path, 2, -1.0f, 0.25f);
    lcm_normalizer n;
    CHECK_OK(lcm_normalizer_resolve(&n, path, "/nonexistent/train.lcmd", 2, &err), &err);
    CHECK(n.dim == 2 && n.center && n.center[0] == -1.0f && n.scale[1] == 0.25f);
    lcm_normalizer_free(&n);
    lcm_rm_rf(dir, &err);
}

/* split.c: a dataset opened for a run or an evaluation: mapped, its dimension checked against the
 * model's, scanned for NaN/Inf, and its batch plan built. Training opens data.train and data.valid
 * through it, `lcm eval` its dataset argument, so the three cannot drift apart. */
#include <string.h>

#include "train_internal.h"

int lcm_split_open(lcm_split *s, const char *path, int D, int check_finite, const lcm_config *cfg, lcm_plan_mode mode,
                   lcm_error *err) {
    memset(s, 0, sizeof *s);
    LCM_TRY(lcm_dataset_open(&s->ds, path, err));
    s->open = 1;
    if (s->ds.dim != D)
        return lcm_fail(err, LCM_ERR_CONFIG, "%s holds %d-dimensional concepts but model.sonar_dim is %d", path,
                        s->ds.dim, D);
    if (check_finite) LCM_TRY(lcm_dataset_check_finite(&s->ds, err));
    lcm_plan_config pc;
    lcm_plan_config_from(&pc, cfg, mode);
    return lcm_plan_create(&s->plan, &s->ds, &pc, err);
}

void lcm_split_close(lcm_split *s) {
    if (s->plan) lcm_plan_free(s->plan);
    if (s->open) lcm_dataset_close(&s->ds);
    memset(s, 0, sizeof *s);
}

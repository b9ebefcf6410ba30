/* validate.c: rules that span keys (C divisible by H, rows fitting a micro-batch, the schedule fitting
 * the run, ...), the trainer.devices syntax, and the derived FFN size. Each message names the keys
 * with their values and where those values came from. */
#include <inttypes.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "config_internal.h"

const char *lcm_config_describe(const lcm_config *cfg, const char *section, const char *name, char *buf, size_t cap) {
    const lcm_key *k = lcm_config_find_key(section, name);
    char value[LCM_STR_MAX + 8];
    lcm_config_format(cfg, k, value, sizeof value);
    const char *origin = lcm_config_origin(cfg, k);
    if (origin[0])
        snprintf(buf, cap, "%s.%s = %s (%s)", section, name, value, origin);
    else
        snprintf(buf, cap, "%s.%s = %s", section, name, value);
    return buf;
}

#define DESC_MAX LCM_DESCRIBE_MAX
#define DESC_A(section, name) lcm_config_describe(cfg, section, name, a, sizeof a)
#define DESC_B(section, name) lcm_config_describe(cfg, section, name, b, sizeof b)

static int check_model(const lcm_config *cfg, lcm_error *err) {
    char a[DESC_MAX], b[DESC_MAX];
    const lcm_model_config *m = &cfg->model;
    if (m->model_dim % m->num_heads != 0)
        return lcm_fail(err, LCM_ERR_CONFIG, "%s is not a multiple of %s: each head gets model_dim / num_heads dims",
                        DESC_A("model", "model_dim"), DESC_B("model", "num_heads"));
    int head_dim = m->model_dim / m->num_heads;
    if (head_dim % 2 != 0)
        return lcm_fail(err, LCM_ERR_CONFIG, "head dim %d (%s / %s) is odd: RoPE rotates pairs of dims, so it must be even",
                        head_dim, DESC_A("model", "model_dim"), DESC_B("model", "num_heads"));
    if (!m->normalizer[0])
        return lcm_fail(err, LCM_ERR_CONFIG, "model.normalizer is empty: use none, dataset or the path of a normalizer file");
    return 0;
}

static int check_data(const lcm_config *cfg, lcm_error *err) {
    char a[DESC_MAX], b[DESC_MAX];
    const lcm_data_config *d = &cfg->data;
    if (d->max_tokens < d->max_seq_len)
        return lcm_fail(err, LCM_ERR_CONFIG, "%s is less than %s: a micro-batch must hold at least one full row",
                        DESC_A("data", "max_tokens"), DESC_B("data", "max_seq_len"));
    if (cfg->model.max_seq_len < d->max_seq_len)
        return lcm_fail(err, LCM_ERR_CONFIG, "%s is more than %s: rows would be longer than the model accepts",
                        DESC_A("data", "max_seq_len"), DESC_B("model", "max_seq_len"));
    return 0;
}

/* Step k (1-based) uses e = k - 1: warmup for e < warmup_steps, then, with the cosine schedule,
 * lr(e) = final_lr + (lr - final_lr)(1 + cos(pi (e - warmup_steps) / cycle)) / 2 with
 * cycle = max_steps - warmup_steps + 1. The rule warmup_steps < max_steps keeps at least one step on
 * the cosine, and cycle >= 2. */
static int check_schedule(const lcm_config *cfg, lcm_error *err) {
    char a[DESC_MAX], b[DESC_MAX];
    const lcm_optim_config *o = &cfg->optim;
    int cosine = o->schedule == LCM_SCHEDULE_COSINE;
    if (cosine && o->warmup_steps >= cfg->trainer.max_steps)
        return lcm_fail(err, LCM_ERR_CONFIG,
                        "%s must be less than %s with the cosine schedule (the steps after warmup follow the cosine "
                        "over max_steps - warmup_steps + 1 steps); for a short run set optim.warmup_steps=%" PRId64
                        " (4%% of max_steps, the recipe's 10000 of 250000)",
                        DESC_A("optim", "warmup_steps"), DESC_B("trainer", "max_steps"), cfg->trainer.max_steps / 25);
    if (o->warmup_steps > 0 && o->start_lr > o->lr)
        return lcm_fail(err, LCM_ERR_CONFIG, "%s is above the peak %s: warmup rises from start_lr to lr",
                        DESC_A("optim", "start_lr"), DESC_B("optim", "lr"));
    if (cosine && o->final_lr > o->lr)
        return lcm_fail(err, LCM_ERR_CONFIG, "%s is above the peak %s: the cosine decays from lr to final_lr",
                        DESC_A("optim", "final_lr"), DESC_B("optim", "lr"));
    return 0;
}

static int check_synth(const lcm_config *cfg, lcm_error *err) {
    char a[DESC_MAX], b[DESC_MAX];
    const lcm_synth_config *s = &cfg->synth;
    if (s->min_len > s->max_len)
        return lcm_fail(err, LCM_ERR_CONFIG, "%s is more than %s", DESC_A("synth", "min_len"), DESC_B("synth", "max_len"));
    if (s->mean_len < (float)s->min_len || s->mean_len > (float)s->max_len)
        return lcm_fail(err, LCM_ERR_CONFIG, "%s is outside [synth.min_len, synth.max_len] = [%d, %d]", DESC_A("synth", "mean_len"),
                        s->min_len, s->max_len);
    return 0;
}

static int check_trainer(const lcm_config *cfg, lcm_error *err) {
    lcm_devices devices;
    if (lcm_parse_devices(cfg->trainer.devices, &devices, err)) {
        const char *origin = lcm_config_origin(cfg, lcm_config_find_key("trainer", "devices"));
        return origin[0] ? lcm_error_context(err, "%s", origin) : (int)err->code;
    }
    if (!cfg->trainer.output_dir[0]) return lcm_fail(err, LCM_ERR_CONFIG, "trainer.output_dir is empty: name the run directory");
    if (!cfg->trainer.resume[0])
        return lcm_fail(err, LCM_ERR_CONFIG, "trainer.resume is empty: use auto, never or a checkpoint directory");
    return 0;
}

int lcm_config_validate(const lcm_config *cfg, lcm_error *err) {
    for (int i = 0; i < lcm_num_keys; i++) LCM_TRY(lcm_config_check_value(cfg, &lcm_keys[i], err));
    LCM_TRY(check_model(cfg, err));
    LCM_TRY(check_data(cfg, err));
    LCM_TRY(check_schedule(cfg, err));
    LCM_TRY(check_synth(cfg, err));
    return check_trainer(cfg, err);
}

/* ---- trainer.devices -------------------------------------------------------------------------- */

/* Decimal digits only (no sign, no spaces), at most `max`. */
static int parse_small(const char *s, size_t n, int max, int *out) {
    if (n == 0 || n > 4) return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max) return -1;
    *out = v;
    return 0;
}

static int bad_devices(lcm_error *err, const char *spec, const char *why) {
    return lcm_fail(err, LCM_ERR_CONFIG,
                    "trainer.devices = '%s': %s; expected auto, cpu, cpu:N (N = 1..256) or distinct GPU ordinals 0..255 "
                    "such as 0,2,3",
                    spec, why);
}

int lcm_parse_devices(const char *spec, lcm_devices *out, lcm_error *err) {
    memset(out, 0, sizeof *out);
    if (strcmp(spec, "auto") == 0) {
        out->kind = LCM_DEVICES_AUTO;
        return 0;
    }
    if (strcmp(spec, "cpu") == 0 || strncmp(spec, "cpu:", 4) == 0) {
        out->kind = LCM_DEVICES_CPU;
        out->count = 1;
        if (spec[3] != ':') return 0;
        if (parse_small(spec + 4, strlen(spec + 4), 256, &out->count) || out->count < 1)
            return bad_devices(err, spec, "the CPU worker count must be 1..256");
        return 0;
    }
    out->kind = LCM_DEVICES_GPU;
    for (const char *p = spec;;) {
        size_t n = strcspn(p, ",");
        int gpu;
        if (parse_small(p, n, 255, &gpu)) return bad_devices(err, spec, "not a GPU ordinal list");
        for (int i = 0; i < out->count; i++)
            if (out->gpus[i] == gpu) return bad_devices(err, spec, "a GPU is listed twice");
        out->gpus[out->count++] = gpu;
        if (!p[n]) return 0;
        p += n + 1;
    }
}

/* schedule.c: the learning rate of each step: linear warmup, then cosine decay (docs/model.md,
 * "Optimizer and schedule"). Step k (1-based) uses e = k - 1, like the reference. */
#include <math.h>

#include "lcm/train.h"

double lcm_lr_at(const lcm_optim_config *o, int64_t max_steps, int64_t step) {
    const double e = (double)(step - 1);
    const double lr = o->lr, start = o->start_lr, final = o->final_lr;
    const double warmup = (double)o->warmup_steps;
    if (e < warmup) return start + (lr - start) * e / warmup;
    if (o->schedule == LCM_SCHEDULE_CONSTANT) return lr;
    const double cycle = (double)(max_steps - o->warmup_steps + 1);
    return final + 0.5 * (lr - final) * (1.0 + cos(M_PI * (e - warmup) / cycle));
}

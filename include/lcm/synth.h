/* synth.h: a synthetic concept dataset with learnable sequential structure and SONAR-like statistics,
 * deterministic by seed (the embedded default config trains on it).
 *
 * Each document is driven by a hidden state in R^k (k = latent_dim):
 *   u_t = sqrt(1/4) c + sqrt(3/4) s_t,   s_{t+1} = persistence R s_t + sqrt(1 - persistence^2) eps_t
 *   x_t = mu + g (P u_t + noise e_t),   g = spread / sqrt(1 + noise^2)
 * c ~ N(0, I) is the document's topic (a quarter of the latent variance; only the context reveals it),
 * s_0, eps_t, e_t ~ N(0, I); R is a fixed random rotation of R^k; P a fixed random D x k matrix with
 * unit rows, so every dimension has standard deviation `spread`; mu a fixed mean with entries of size
 * ~0.01 (like SONAR's). Lengths are log-normal around mean_len, clipped to [min_len, max_len]. The EOT
 * concept is a fixed vector of the same scale outside P's span.
 *
 * Every document is a pure function of (seed, split, document index), so files are byte-identical for
 * a seed on a given machine and BLAS (P u_t is a cblas_sgemm). */
#ifndef LCM_SYNTH_H
#define LCM_SYNTH_H

#include "lcm/config.h"
#include "lcm/dataset.h"
#include "lcm/error.h"

/* Check the [synth] values (ranges and consistency); errors name the key. */
int lcm_synth_validate(const lcm_synth_config *sc, lcm_error *err);

/* One split into `path` (.lcmd, plus the .text side file when sc->with_text): split 0 = train with
 * sc->train_docs documents, split 1 = validation with sc->valid_docs, from its own random streams. */
int lcm_synth_write_split(const lcm_synth_config *sc, int split, const char *path,
                          void (*progress)(void *ctx, double frac), void *ctx, lcm_error *err);

/* <dir>/train.lcmd, <dir>/valid.lcmd (when valid_docs > 0), their .text files (with_text) and
 * <dir>/normalizer.safetensors fitted on train. dir is created if needed. progress (may be NULL) gets
 * the fraction of all documents written. */
int lcm_synth_write(const lcm_synth_config *sc, const char *dir, void (*progress)(void *ctx, double frac), void *ctx,
                    lcm_error *err);

#endif

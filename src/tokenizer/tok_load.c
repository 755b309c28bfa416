/* Loading tokenizer.json (and its config files) into an mk_tok.
 *
 * Map of this file:
 *   helpers        JSON type names, field readers that name the field on error
 *   normalizer     NFC / NFD / NFKC / NFKD / Sequence
 *   pre_tokenizer  Split (Regex | String, behavior, invert) / ByteLevel / Sequence
 *   model          BPE: vocab, merges ("a b" or ["a", "b"]), flags, unk, byte fallback
 *   added_tokens   id tables, content map, the two match tries
 *   post_processor TemplateProcessing / Roberta / Bert / ByteLevel / Sequence
 *   decoder        ByteLevel / ByteFallback / Fuse / Sequence -> bytes per id
 *   configs        eos/bos from tokenizer_config.json and generation_config.json
 *   public         mk_tok_load / free / queries
 * Every error names the file and the JSON field, with what was expected and
 * what was found; unknown component types are MK_E_UNSUPPORTED rather than
 * being skipped, since a skipped step would silently change the ids. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json_err.h"
#include "core/alloc.h"
#include "core/str.h"
#include "io/os.h"
#include "tokenizer/tok_impl.h"
#include "tokenizer/tok_json.h"

#define GPT2_REGEX "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define MAX_AFFIX 64
#define MAX_DEC_STEPS 8

/* ---- helpers ------------------------------------------------------------- */

static const char *jt(const json_t *j) { return mk_json_type_name(j); }

/* Optional boolean field: missing or null -> dflt. */
static mk_status get_bool(const mk_tok *t, const json_t *o, const char *where, const char *key,
                          bool dflt, bool *out) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return MK_OK;
    }
    if (!json_is_boolean(v))
        return mk_err(MK_E_FORMAT, "%s: field '%s.%s': expected a boolean, found %s", t->path, where,
                      key, jt(v));
    *out = json_is_true(v);
    return MK_OK;
}

/* Optional string field: missing or null -> NULL. */
static mk_status get_str(const mk_tok *t, const json_t *o, const char *where, const char *key,
                         const json_t **out) {
    const json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return MK_OK;
    if (!json_is_string(v))
        return mk_err(MK_E_FORMAT, "%s: field '%s.%s': expected a string, found %s", t->path, where,
                      key, jt(v));
    *out = v;
    return MK_OK;
}

static mk_status get_type(const mk_tok *t, const json_t *o, const char *where, const char **type) {
    if (!json_is_object(o))
        return mk_err(MK_E_FORMAT, "%s: field '%s': expected an object, found %s", t->path, where,
                      jt(o));
    const json_t *v = json_object_get(o, "type");
    if (!json_is_string(v))
        return mk_err(MK_E_FORMAT, "%s: field '%s.type': expected a string, found %s", t->path,
                      where, jt(v));
    *type = json_string_value(v);
    return MK_OK;
}

static mk_status get_array(const mk_tok *t, const json_t *o, const char *where, const char *key,
                           const json_t **out) {
    *out = json_object_get(o, key);
    if (!json_is_array(*out))
        return mk_err(MK_E_FORMAT, "%s: field '%s.%s': expected an array, found %s", t->path, where,
                      key, jt(*out));
    return MK_OK;
}

/* A loader of one pipeline stage (normalizer, pre-tokenizer, post-processor,
 * decoder) at JSON path `where`; ctx is the loader's own state. */
typedef mk_status (*stage_fn)(mk_tok *t, const json_t *j, const char *where, void *ctx);

/* The items of a {"type": "Sequence", key: [...]} stage, each loaded by fn in
 * order and named "<where>.<key>[i]" in messages. */
static mk_status load_seq(mk_tok *t, const json_t *j, const char *where, const char *key, stage_fn fn,
                          void *ctx) {
    const json_t *arr;
    MK_TRY(get_array(t, j, where, key, &arr));
    for (size_t i = 0; i < json_array_size(arr); i++) {
        char sub[256];
        snprintf(sub, sizeof sub, "%s.%s[%zu]", where, key, i);
        MK_TRY(fn(t, json_array_get(arr, i), sub, ctx));
    }
    return MK_OK;
}

static mk_status get_id(const mk_tok *t, const json_t *v, const char *where, int32_t *id) {
    if (!json_is_integer(v))
        return mk_err(MK_E_FORMAT, "%s: field '%s': expected an integer id, found %s", t->path,
                      where, jt(v));
    json_int_t x = json_integer_value(v);
    if (x < 0 || x >= TOK_MAX_ID)
        return mk_err(MK_E_FORMAT, "%s: field '%s': id %lld out of range [0, %d)", t->path, where,
                      (long long)x, TOK_MAX_ID);
    *id = (int32_t)x;
    return MK_OK;
}

static mk_status grow_arr(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return MK_OK;
    size_t nc = *cap ? *cap : 8;
    while (nc < need)
        nc *= 2;
    void *np = mk_realloc(*p, nc * elem);
    if (!np)
        return mk_err(MK_E_NOMEM, "tokenizer: out of memory loading");
    *p = np;
    *cap = nc;
    return MK_OK;
}

/* ---- normalizer ---------------------------------------------------------- */

/* ctx: the capacity of t->norms (size_t). */
static mk_status load_normalizer(mk_tok *t, const json_t *j, const char *where, void *ctx) {
    size_t *cap = ctx;
    if (!j || json_is_null(j))
        return MK_OK;
    const char *type;
    MK_TRY(get_type(t, j, where, &type));
    static const struct {
        const char *name;
        tok_norm k;
    } forms[] = {{"NFC", TOK_NORM_NFC}, {"NFD", TOK_NORM_NFD}, {"NFKC", TOK_NORM_NFKC}, {"NFKD", TOK_NORM_NFKD}};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        if (strcmp(type, forms[i].name) == 0) {
            MK_TRY(grow_arr((void **)&t->norms, cap, t->n_norms + 1, sizeof *t->norms));
            t->norms[t->n_norms++] = forms[i].k;
            return MK_OK;
        }
    }
    if (strcmp(type, "Sequence") != 0)
        return mk_err(MK_E_UNSUPPORTED,
                      "%s: field '%s.type': normalizer '%s' is not supported (moekit reads NFC, NFD, "
                      "NFKC, NFKD and Sequence)", t->path, where, type);
    return load_seq(t, j, where, "normalizers", load_normalizer, cap);
}

/* ---- pre_tokenizer ------------------------------------------------------- */

static mk_status parse_behavior(const mk_tok *t, const json_t *j, const char *where,
                                tok_split_behavior *out) {
    static const struct {
        const char *name;
        tok_split_behavior b;
    } names[] = {{"Removed", TOK_SPLIT_REMOVED},
                 {"Isolated", TOK_SPLIT_ISOLATED},
                 {"MergedWithPrevious", TOK_SPLIT_MERGED_PREV},
                 {"MergedWithNext", TOK_SPLIT_MERGED_NEXT},
                 {"Contiguous", TOK_SPLIT_CONTIGUOUS}};
    const json_t *v = json_object_get(j, "behavior");
    if (!json_is_string(v))
        return mk_err(MK_E_FORMAT, "%s: field '%s.behavior': expected a string, found %s", t->path,
                      where, jt(v));
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(json_string_value(v), names[i].name) == 0) {
            *out = names[i].b;
            return MK_OK;
        }
    return mk_err(MK_E_FORMAT,
                  "%s: field '%s.behavior': '%s' is not one of Removed, Isolated, MergedWithPrevious, "
                  "MergedWithNext, Contiguous", t->path, where, json_string_value(v));
}

static mk_status load_split(mk_tok *t, const json_t *j, const char *where, tok_pre_step *st) {
    const json_t *pat = json_object_get(j, "pattern");
    const json_t *re = json_is_object(pat) ? json_object_get(pat, "Regex") : NULL;
    const json_t *lit = json_is_object(pat) ? json_object_get(pat, "String") : NULL;
    const json_t *p = re ? re : lit;
    if (!json_is_string(p))
        return mk_err(MK_E_FORMAT,
                      "%s: field '%s.pattern': expected {\"Regex\": string} or {\"String\": string}, "
                      "found %s", t->path, where, jt(pat));
    char what[512];
    snprintf(what, sizeof what, "%s: field '%s.pattern'", t->path, where);
    st->type = TOK_PRE_SPLIT;
    MK_TRY(parse_behavior(t, j, where, &st->behavior));
    MK_TRY(get_bool(t, j, where, "invert", false, &st->invert));
    return tok_regex_compile(json_string_value(p), json_string_length(p), p == lit, what, &st->re);
}

/* ctx: the capacity of t->pre (size_t). */
static mk_status load_pre(mk_tok *t, const json_t *j, const char *where, void *ctx) {
    size_t *cap = ctx;
    if (!j || json_is_null(j))
        return MK_OK;
    const char *type;
    MK_TRY(get_type(t, j, where, &type));
    if (strcmp(type, "Sequence") == 0)
        return load_seq(t, j, where, "pretokenizers", load_pre, cap);
    bool split = strcmp(type, "Split") == 0, bl = strcmp(type, "ByteLevel") == 0;
    if (!split && !bl)
        return mk_err(MK_E_UNSUPPORTED,
                      "%s: field '%s.type': pre-tokenizer '%s' is not supported (moekit reads Split, "
                      "ByteLevel and Sequence)", t->path, where, type);
    MK_TRY(grow_arr((void **)&t->pre, cap, t->n_pre + 1, sizeof *t->pre));
    tok_pre_step *st = &t->pre[t->n_pre];
    memset(st, 0, sizeof *st);
    t->n_pre++; /* counted before compiling so mk_tok_free releases a partial step */
    if (split)
        return load_split(t, j, where, st);
    st->type = TOK_PRE_BYTELEVEL;
    bool use_regex;
    /* HF's defaults when the fields are absent: both true. */
    MK_TRY(get_bool(t, j, where, "add_prefix_space", true, &st->add_prefix_space));
    MK_TRY(get_bool(t, j, where, "use_regex", true, &use_regex));
    if (use_regex)
        MK_TRY(tok_regex_compile(GPT2_REGEX, strlen(GPT2_REGEX), false, "GPT-2 regex", &st->re));
    return MK_OK;
}

/* ---- model --------------------------------------------------------------- */

/* Bytes of the strings arena: token strings per id. */
typedef struct arena {
    char *p;
    size_t n, cap;
} arena;

static mk_status arena_put(arena *a, const char *s, size_t n, tok_span *out) {
    if (a->n + n > UINT32_MAX)
        return mk_err(MK_E_NOMEM, "tokenizer: token strings exceed 4 GiB");
    MK_TRY(grow_arr((void **)&a->p, &a->cap, a->n + n + 1, 1));
    memcpy(a->p + a->n, s, n);
    *out = (tok_span){(uint32_t)a->n, (uint32_t)n};
    a->n += n;
    return MK_OK;
}

/* The vocabulary as read, from the file's bytes (tok_json.c) or, where that
 * walk could not tell the document's shape, from jansson's DOM: the map
 * key -> id (a duplicate key's last id, as jansson keeps), each key's bytes
 * in the strings arena once, in the order keys first came (jansson's order
 * of iteration, which decides the string of an id two keys share). From the
 * bytes, a value that is no id is kept as -1 - k (bad[k] says what it was)
 * until every key's last value is known: jansson keeps only that one. */
typedef struct vocab_bad {
    const char *kind; /* NULL: an integer out of range */
    int64_t v;
} vocab_bad;
typedef struct vocab_in {
    mk_tok *t;
    arena *strs;
    tok_span *keys;
    size_t n, cap;
    vocab_bad *bad;
    size_t nbad, capbad;
} vocab_in;

static mk_status vocab_put(vocab_in *v, const char *k, size_t kl, int32_t id) {
    bool existed;
    MK_TRY(tok_smap_put(&v->t->vocab, k, kl, id, &existed));
    if (existed)
        return MK_OK;
    MK_TRY(grow_arr((void **)&v->keys, &v->cap, v->n + 1, sizeof *v->keys));
    return arena_put(v->strs, k, kl, &v->keys[v->n++]);
}

static mk_status vocab_put_text(void *u, const char *k, size_t kl, int64_t id, const char *bad) {
    vocab_in *v = u;
    if (!bad && id >= 0 && id < TOK_MAX_ID)
        return vocab_put(v, k, kl, (int32_t)id);
    if (v->nbad >= INT32_MAX)
        return mk_err(MK_E_FORMAT, "%s: field 'model.vocab': too many values that are no ids", v->t->path);
    MK_TRY(grow_arr((void **)&v->bad, &v->capbad, v->nbad + 1, sizeof *v->bad));
    v->bad[v->nbad] = (vocab_bad){bad, id};
    return vocab_put(v, k, kl, -1 - (int32_t)v->nbad++);
}

static mk_status vocab_from_dom(vocab_in *v, const json_t *vocab) {
    const mk_tok *t = v->t;
    const char *k;
    json_t *x;
    MK_TRY(tok_smap_reserve(&v->t->vocab, json_object_size(vocab), 0));
    json_object_foreach((json_t *)vocab, k, x) {
        char where[96];
        int32_t id;
        snprintf(where, sizeof where, "model.vocab[\"%.40s\"]", k);
        MK_TRY(get_id(t, x, where, &id));
        MK_TRY(vocab_put(v, k, json_object_iter_key_len(json_object_key_to_iter(k)), id));
    }
    return MK_OK;
}

static mk_status vocab_from_text(vocab_in *v, const char *text, tok_json_range r) {
    /* the keys' bytes are fewer than the object's (never-touched pages cost nothing) */
    MK_TRY(tok_smap_reserve(&v->t->vocab, r.count, r.end - r.at));
    MK_TRY(grow_arr((void **)&v->strs->p, &v->strs->cap, v->strs->n + (r.end - r.at), 1));
    MK_TRY(tok_json_vocab(v->t->path, text, r, vocab_put_text, v));
    for (size_t i = 0; i < v->n && v->nbad; i++) { /* the first key, in jansson's order, left without an id */
        int32_t id;
        const char *k = v->strs->p + v->keys[i].off;
        tok_smap_get(&v->t->vocab, k, v->keys[i].len, &id);
        if (id >= 0)
            continue;
        const vocab_bad *b = &v->bad[-1 - id];
        int kl = (int)strnlen(k, v->keys[i].len > 40 ? 40 : v->keys[i].len); /* as %.40s of the DOM's key */
        if (b->kind)
            return mk_err(MK_E_FORMAT, "%s: field 'model.vocab[\"%.*s\"]': expected an integer id, found %s",
                          v->t->path, kl, k, b->kind);
        return mk_err(MK_E_FORMAT, "%s: field 'model.vocab[\"%.*s\"]': id %lld out of range [0, %d)", v->t->path,
                      kl, k, (long long)b->v, TOK_MAX_ID);
    }
    return MK_OK;
}

static mk_status max_id(const mk_tok *t, const vocab_in *v, const json_t *added, size_t *n_ids) {
    int32_t mx = -1, id;
    for (size_t i = 0; i < v->n; i++) {
        tok_smap_get(&t->vocab, v->strs->p + v->keys[i].off, v->keys[i].len, &id);
        mx = id > mx ? id : mx;
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        char where[64];
        snprintf(where, sizeof where, "added_tokens[%zu].id", i);
        MK_TRY(get_id(t, json_object_get(json_array_get(added, i), "id"), where, &id));
        mx = id > mx ? id : mx;
    }
    *n_ids = (size_t)mx + 1;
    return MK_OK;
}

static mk_status merge_parts(const mk_tok *t, const json_t *m, size_t i, const char **a, size_t *al,
                             const char **b, size_t *bl) {
    if (json_is_string(m)) {
        /* Legacy "a b": exactly one space, as HF's convert_merges_to_hashmap demands. */
        const char *s = json_string_value(m), *sp = strchr(s, ' ');
        size_t n = json_string_length(m);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s)))
            return mk_err(MK_E_FORMAT, "%s: field 'model.merges[%zu]': expected \"left right\" with one "
                          "space, found \"%.60s\"", t->path, i, s);
        *a = s, *al = (size_t)(sp - s), *b = sp + 1, *bl = n - *al - 1;
        return MK_OK;
    }
    const json_t *x = json_array_get(m, 0), *y = json_array_get(m, 1);
    if (!json_is_array(m) || json_array_size(m) != 2 || !json_is_string(x) || !json_is_string(y))
        return mk_err(MK_E_FORMAT, "%s: field 'model.merges[%zu]': expected \"a b\" or [\"a\", \"b\"], "
                      "found %s", t->path, i, jt(m));
    *a = json_string_value(x), *al = json_string_length(x);
    *b = json_string_value(y), *bl = json_string_length(y);
    return MK_OK;
}

/* One merge, index i of model.merges: both sides and their join must be
 * tokens of the vocabulary. */
typedef struct merge_in {
    mk_tok *t;
    size_t pl; /* the continuing-subword prefix's length */
    char *buf;
    size_t cap;
} merge_in;

static mk_status merge_one(void *u, size_t i, const char *a, size_t al, const char *b, size_t bl) {
    merge_in *m = u;
    mk_tok *t = m->t;
    int32_t ia, ib, im;
    if (!tok_smap_get(&t->vocab, a, al, &ia) || !tok_smap_get(&t->vocab, b, bl, &ib)) {
        const char *miss = tok_smap_get(&t->vocab, a, al, &ia) ? b : a;
        int ml = (int)(miss == a ? al : bl);
        return mk_err(MK_E_FORMAT, "%s: field 'model.merges[%zu]': token \"%.*s\" is not in model.vocab",
                      t->path, i, ml > 60 ? 60 : ml, miss);
    }
    /* The merged token drops the right side's subword prefix. */
    size_t pl = m->pl, skip = (pl && bl >= pl && memcmp(b, t->cont_prefix, pl) == 0) ? pl : 0;
    MK_TRY(grow_arr((void **)&m->buf, &m->cap, al + bl + 1, 1));
    memcpy(m->buf, a, al);
    memcpy(m->buf + al, b + skip, bl - skip);
    if (!tok_smap_get(&t->vocab, m->buf, al + bl - skip, &im)) {
        int ml = (int)(al + bl - skip);
        return mk_err(MK_E_FORMAT, "%s: field 'model.merges[%zu]': merged token \"%.*s\" is not in "
                      "model.vocab", t->path, i, ml > 60 ? 60 : ml, m->buf);
    }
    if (i >= INT32_MAX)
        return mk_err(MK_E_FORMAT, "%s: field 'model.merges': too many merges", t->path);
    return tok_pmap_put(&t->merges, ia, ib, (int32_t)i, im);
}

/* model.merges from the file's bytes at r when given (r.end), else from the DOM. */
static mk_status load_merges(mk_tok *t, const json_t *model, const char *text, tok_json_range r) {
    merge_in m = {t, t->cont_prefix ? strlen(t->cont_prefix) : 0, NULL, 0};
    mk_status st = MK_OK;
    if (r.end) {
        st = tok_pmap_reserve(&t->merges, r.count);
        if (st == MK_OK)
            st = tok_json_merges(t->path, text, r, merge_one, &m);
        free(m.buf);
        return st;
    }
    const json_t *merges = json_object_get(model, "merges");
    if (!merges || json_is_null(merges))
        return MK_OK;
    if (!json_is_array(merges))
        return mk_err(MK_E_FORMAT, "%s: field 'model.merges': expected an array, found %s", t->path,
                      jt(merges));
    MK_TRY(tok_pmap_reserve(&t->merges, json_array_size(merges)));
    for (size_t i = 0; i < json_array_size(merges) && st == MK_OK; i++) {
        const char *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        st = merge_parts(t, json_array_get(merges, i), i, &a, &al, &b, &bl);
        if (st == MK_OK)
            st = merge_one(&m, i, a, al, b, bl);
    }
    free(m.buf);
    return st;
}

static mk_status load_affix(mk_tok *t, const json_t *model, const char *key, char **out) {
    const json_t *v;
    MK_TRY(get_str(t, model, "model", key, &v));
    if (!v || json_string_length(v) == 0)
        return MK_OK;
    if (json_string_length(v) > MAX_AFFIX)
        return mk_err(MK_E_UNSUPPORTED, "%s: field 'model.%s': longer than %d bytes", t->path, key,
                      MAX_AFFIX);
    *out = mk_strdup(json_string_value(v));
    return *out ? MK_OK : mk_err(MK_E_NOMEM, "%s: no memory for field 'model.%s'", t->path, key);
}

static mk_status load_model_flags(mk_tok *t, const json_t *model) {
    const json_t *type = json_object_get(model, "type");
    if (type && (!json_is_string(type) || strcmp(json_string_value(type), "BPE") != 0))
        return mk_err(MK_E_UNSUPPORTED, "%s: field 'model.type': model '%s' is not supported (moekit "
                      "reads BPE tokenizers)", t->path, json_is_string(type) ? json_string_value(type) : jt(type));
    MK_TRY(get_bool(t, model, "model", "ignore_merges", false, &t->ignore_merges));
    MK_TRY(get_bool(t, model, "model", "byte_fallback", false, &t->byte_fallback));
    MK_TRY(get_bool(t, model, "model", "fuse_unk", false, &t->fuse_unk));
    MK_TRY(load_affix(t, model, "continuing_subword_prefix", &t->cont_prefix));
    MK_TRY(load_affix(t, model, "end_of_word_suffix", &t->eow_suffix));
    /* "dropout" is a training-time regularizer; inference encodes without it. */
    return MK_OK;
}

static mk_status load_model_tail(mk_tok *t, const json_t *model, const char *text, tok_json_range merges) {
    const json_t *unk;
    t->unk_id = -1;
    MK_TRY(get_str(t, model, "model", "unk_token", &unk));
    if (unk && !tok_smap_get(&t->vocab, json_string_value(unk), json_string_length(unk), &t->unk_id))
        return mk_err(MK_E_FORMAT, "%s: field 'model.unk_token': \"%s\" is not in model.vocab", t->path,
                      json_string_value(unk));
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        if (!tok_smap_get(&t->vocab, name, 6, &t->byte_ids[b]))
            t->byte_ids[b] = -1;
    }
    return load_merges(t, model, text, merges);
}

/* ---- added_tokens -------------------------------------------------------- */

static mk_status load_added_one(mk_tok *t, const json_t *a, size_t i, arena *strs) {
    char where[64];
    snprintf(where, sizeof where, "added_tokens[%zu]", i);
    if (!json_is_object(a))
        return mk_err(MK_E_FORMAT, "%s: field '%s': expected an object, found %s", t->path, where, jt(a));
    const json_t *c = json_object_get(a, "content");
    if (!json_is_string(c) || json_string_length(c) == 0)
        return mk_err(MK_E_FORMAT, "%s: field '%s.content': expected a non-empty string, found %s",
                      t->path, where, jt(c));
    tok_added *x = &t->added[t->n_added];
    memset(x, 0, sizeof *x);
    x->id = (int32_t)json_integer_value(json_object_get(a, "id")); /* checked by max_id */
    MK_TRY(get_bool(t, a, where, "special", false, &x->special));
    MK_TRY(get_bool(t, a, where, "single_word", false, &x->single_word));
    MK_TRY(get_bool(t, a, where, "lstrip", false, &x->lstrip));
    MK_TRY(get_bool(t, a, where, "rstrip", false, &x->rstrip));
    /* HF's AddedToken default: special tokens are not normalized. */
    MK_TRY(get_bool(t, a, where, "normalized", !x->special, &x->normalized));
    const char *s = json_string_value(c);
    size_t n = json_string_length(c);
    MK_TRY(arena_put(strs, s, n, &t->id_str[x->id]));
    t->id_flags[x->id] |= TOK_ID_PRESENT | TOK_ID_ADDED | (x->special ? TOK_ID_SPECIAL : 0);
    bool dup;
    int32_t prev;
    if (tok_smap_get(&t->added_ids, s, n, &prev))
        return MK_OK; /* same content twice: the first one matches */
    MK_TRY(tok_smap_put(&t->added_ids, s, n, x->id, &dup));
    /* Normalized tokens are matched in normalized text, so normalize them too. */
    char *norm = NULL;
    size_t nn = n;
    if (x->normalized)
        MK_TRY(tok_normalize(t, s, n, &norm, &nn));
    x->content = mk_malloc(nn + 1);
    if (!x->content) {
        free(norm);
        return mk_err(MK_E_NOMEM, "%s: no memory for the content of added token %d", t->path, x->id);
    }
    memcpy(x->content, norm ? norm : s, nn);
    x->content[nn] = 0;
    x->len = nn;
    free(norm);
    int32_t idx = (int32_t)t->n_added++;
    return tok_trie_add(x->normalized ? &t->trie_norm : &t->trie_raw, x->content, x->len, idx);
}

/* ---- post_processor ------------------------------------------------------ */

/* A BOS/EOS id the post-processor adds must be a token of the vocabulary:
 * it goes to the model as it is. */
static mk_status post_id(const mk_tok *t, const char *where, int32_t id) {
    if ((size_t)id < t->n_ids && (t->id_flags[id] & TOK_ID_PRESENT))
        return MK_OK;
    return mk_err(MK_E_FORMAT, "%s: field '%s': id %d is not a token of the vocabulary (ids 0..%zu)", t->path,
                  where, (int)id, t->n_ids ? t->n_ids - 1 : 0);
}

static mk_status template_special(mk_tok *t, const json_t *pp, const json_t *item, const char *where,
                                  tok_ivec *dst) {
    const json_t *name = json_object_get(item, "id");
    if (!json_is_string(name))
        return mk_err(MK_E_FORMAT, "%s: field '%s.SpecialToken.id': expected a string, found %s",
                      t->path, where, jt(name));
    const json_t *sp = json_object_get(json_object_get(pp, "special_tokens"), json_string_value(name));
    const json_t *ids = json_object_get(sp, "ids");
    if (!json_is_array(ids))
        return mk_err(MK_E_FORMAT, "%s: field 'post_processor.special_tokens[\"%s\"].ids': expected an "
                      "array, found %s", t->path, json_string_value(name), jt(ids));
    for (size_t k = 0; k < json_array_size(ids); k++) {
        int32_t id;
        MK_TRY(get_id(t, json_array_get(ids, k), "post_processor.special_tokens[].ids[]", &id));
        MK_TRY(post_id(t, "post_processor.special_tokens[].ids[]", id));
        MK_TRY(tok_ivec_push(dst, id));
    }
    return MK_OK;
}

static mk_status load_template(mk_tok *t, const json_t *pp, const char *where) {
    const json_t *single;
    MK_TRY(get_array(t, pp, where, "single", &single));
    bool after = false;
    for (size_t i = 0; i < json_array_size(single); i++) {
        const json_t *it = json_array_get(single, i);
        char sub[256];
        snprintf(sub, sizeof sub, "%s.single[%zu]", where, i);
        const json_t *sp = json_object_get(it, "SpecialToken"), *seq = json_object_get(it, "Sequence");
        if (seq) {
            after = true;
        } else if (sp) {
            MK_TRY(template_special(t, pp, sp, sub, after ? &t->post_suffix : &t->post_prefix));
        } else {
            return mk_err(MK_E_FORMAT, "%s: field '%s': expected {\"SpecialToken\": ...} or "
                          "{\"Sequence\": ...}, found %s", t->path, sub, jt(it));
        }
    }
    return MK_OK;
}

/* RobertaProcessing / BertProcessing: "cls": [token, id], "sep": [token, id]. */
static mk_status load_cls_sep(mk_tok *t, const json_t *pp, const char *where) {
    static const char *const keys[] = {"cls", "sep"};
    for (int k = 0; k < 2; k++) {
        const json_t *pair = json_object_get(pp, keys[k]);
        char sub[256];
        snprintf(sub, sizeof sub, "%s.%s[1]", where, keys[k]);
        int32_t id;
        MK_TRY(get_id(t, json_array_get(pair, 1), sub, &id));
        MK_TRY(post_id(t, sub, id));
        MK_TRY(tok_ivec_push(k == 0 ? &t->post_prefix : &t->post_suffix, id));
    }
    return MK_OK;
}

/* ctx: unused. */
static mk_status load_post(mk_tok *t, const json_t *j, const char *where, void *ctx) {
    if (!j || json_is_null(j))
        return MK_OK;
    const char *type;
    MK_TRY(get_type(t, j, where, &type));
    if (strcmp(type, "ByteLevel") == 0)
        return MK_OK; /* offsets only; ids unchanged */
    if (strcmp(type, "TemplateProcessing") == 0)
        return load_template(t, j, where);
    if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0)
        return load_cls_sep(t, j, where);
    if (strcmp(type, "Sequence") == 0)
        return load_seq(t, j, where, "processors", load_post, ctx);
    return mk_err(MK_E_UNSUPPORTED, "%s: field '%s.type': post-processor '%s' is not supported (moekit "
                  "reads TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel and Sequence)",
                  t->path, where, type);
}

/* ---- decoder ------------------------------------------------------------- */

enum { DEC_BYTELEVEL = 1, DEC_BYTEFALLBACK = 2 };

/* The folded decoder chain: steps[0..n) of DEC_*. */
typedef struct dec_chain {
    int steps[MAX_DEC_STEPS];
    size_t n;
} dec_chain;

/* Decoders moekit reads all act on each token alone, so the chain is folded
 * into a list of per-token steps and applied once per id at load.
 * ctx: the dec_chain. */
static mk_status load_decoder(mk_tok *t, const json_t *j, const char *where, void *ctx) {
    dec_chain *dc = ctx;
    if (!j || json_is_null(j))
        return MK_OK;
    const char *type;
    MK_TRY(get_type(t, j, where, &type));
    if (strcmp(type, "Sequence") == 0)
        return load_seq(t, j, where, "decoders", load_decoder, dc);
    int step = strcmp(type, "ByteLevel") == 0 ? DEC_BYTELEVEL
               : strcmp(type, "ByteFallback") == 0 ? DEC_BYTEFALLBACK
               : strcmp(type, "Fuse") == 0 ? 0 /* concatenation: what we do anyway */
                                           : -1;
    if (step < 0)
        return mk_err(MK_E_UNSUPPORTED, "%s: field '%s.type': decoder '%s' is not supported (moekit reads "
                      "ByteLevel, ByteFallback, Fuse and Sequence)", t->path, where, type);
    if (step && dc->n == MAX_DEC_STEPS)
        return mk_err(MK_E_UNSUPPORTED, "%s: field '%s': more than %d decoder steps", t->path, where,
                      MAX_DEC_STEPS);
    if (step)
        dc->steps[dc->n++] = step;
    return MK_OK;
}

/* Bytes of one token after the decoder steps. ByteLevel maps each character
 * back to its byte; a token with a character outside the table (an added
 * token such as "<｜User｜>") keeps its UTF-8, as HF's decode_chain does. */
static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static size_t decode_token(const int *steps, size_t nsteps, const char *s, size_t n, char *out) {
    memcpy(out, s, n);
    for (size_t k = 0; k < nsteps; k++) {
        if (steps[k] == DEC_BYTEFALLBACK) {
            /* "<0xAB>" -> byte 0xAB, like HF's ByteFallback. */
            int hi = n == 6 ? hexval(out[3]) : -1, lo = n == 6 ? hexval(out[4]) : -1;
            if (hi >= 0 && lo >= 0 && memcmp(out, "<0x", 3) == 0 && out[5] == '>') {
                out[0] = (char)(hi * 16 + lo);
                n = 1;
            }
            continue;
        }
        size_t o = 0, i = 0, l;
        bool all = true;
        while (i < n && all) {
            int b = tok_bl_byte(tok_utf8_decode(out + i, n - i, &l));
            all = b >= 0 && tok_utf8_check(out + i, l) == l;
            i += l;
        }
        if (!all)
            continue;
        for (i = 0; i < n; i += l)
            out[o++] = (char)tok_bl_byte(tok_utf8_decode(out + i, n - i, &l));
        n = o;
    }
    return n;
}

static mk_status build_bytes(mk_tok *t, const int *steps, size_t nsteps) {
    arena a = {0};
    char *tmp = NULL;
    size_t tcap = 0;
    mk_status st = MK_OK;
    t->id_bytes = mk_calloc(t->n_ids, sizeof *t->id_bytes);
    if (!t->id_bytes)
        return mk_err(MK_E_NOMEM, "%s: no memory for the byte strings of %zu token ids", t->path, t->n_ids);
    for (size_t id = 0; id < t->n_ids && st == MK_OK; id++) {
        if (!(t->id_flags[id] & TOK_ID_PRESENT))
            continue;
        tok_span sp = t->id_str[id];
        if ((st = grow_arr((void **)&tmp, &tcap, sp.len + 1, 1)) != MK_OK)
            break;
        size_t n = decode_token(steps, nsteps, t->strs + sp.off, sp.len, tmp);
        st = arena_put(&a, tmp, n, &t->id_bytes[id]);
    }
    free(tmp);
    t->bytes = a.p;
    t->bytes_len = a.n;
    return st;
}

/* ---- configs ------------------------------------------------------------- */

/* An id named by tokenizer_config.json / generation_config.json must be a
 * token of this tokenizer: an EOS id that never comes out would never stop
 * generation, a BOS id outside the vocab would be fed to the model. */
static mk_status known_id(const mk_tok *t, const char *file, const char *field, int32_t id) {
    if (id >= 0 && (size_t)id < t->n_ids && (t->id_flags[id] & TOK_ID_PRESENT))
        return MK_OK;
    return mk_err(MK_E_FORMAT, "%s: field '%s': id %d is not a token of %s (ids 0..%zu)", file, field,
                  (int)id, t->path, t->n_ids ? t->n_ids - 1 : 0);
}

static mk_status add_eos(mk_tok *t, int32_t id) {
    for (size_t i = 0; i < t->eos.n; i++)
        if (t->eos.p[i] == id)
            return MK_OK;
    return tok_ivec_push(&t->eos, id);
}

/* A token named in tokenizer_config.json: "text" or {"content": "text", ...}. */
static mk_status config_token(const mk_tok *t, const char *file, const json_t *cfg, const char *key,
                              int32_t *id) {
    const json_t *v = json_object_get(cfg, key);
    *id = -1;
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!v || json_is_null(v))
        return MK_OK;
    if (!json_is_string(v))
        return mk_err(MK_E_FORMAT, "%s: field '%s': expected a string or {\"content\": string}, found %s",
                      file, key, jt(v));
    *id = mk_tok_token_id(t, json_string_value(v));
    if (*id < 0)
        return mk_err(MK_E_FORMAT, "%s: field '%s': \"%s\" is not a token of %s", file, key,
                      json_string_value(v), t->path);
    return MK_OK;
}

/* flags: jansson decode flags. tokenizer_config.json is read with
 * JSON_DECODE_INT_AS_REAL: transformers writes model_max_length as
 * int(1e30) when a tokenizer has no limit (gpt-oss's does), an integer
 * jansson refuses otherwise, and every field read from that file is a
 * string. */
static mk_status load_json_opt(const char *file, size_t flags, json_t **out) {
    json_error_t e;
    *out = NULL;
    if (access(file, F_OK) != 0)
        return MK_OK;
    unsigned long jmark = mk_json_mark();
    *out = mk_json_load_file(file, flags, &e, jmark);
    if (!*out && mk_json_nomem(&e, jmark)) /* not the file's fault */
        return mk_err(MK_E_NOMEM, "%s: no memory to parse its JSON", file);
    if (!*out)
        return mk_err(MK_E_FORMAT, "%s: invalid JSON at line %d column %d: %s", file, e.line, e.column, mk_json_errtext(e.text));
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return mk_err(MK_E_FORMAT, "%s: expected a JSON object at the top level", file);
    }
    return MK_OK;
}

static mk_status gen_config(mk_tok *t, const char *file, const json_t *gc) {
    const json_t *e = json_object_get(gc, "eos_token_id");
    int32_t id;
    if (json_is_array(e)) {
        for (size_t i = 0; i < json_array_size(e); i++) {
            char where[64];
            snprintf(where, sizeof where, "eos_token_id[%zu]", i);
            if (get_id(t, json_array_get(e, i), where, &id) != MK_OK)
                return mk_err_wrap(MK_E_FORMAT, "%s", file);
            MK_TRY(known_id(t, file, where, id));
            MK_TRY(add_eos(t, id));
        }
    } else if (e && !json_is_null(e)) {
        if (get_id(t, e, "eos_token_id", &id) != MK_OK)
            return mk_err_wrap(MK_E_FORMAT, "%s", file);
        MK_TRY(known_id(t, file, "eos_token_id", id));
        MK_TRY(add_eos(t, id));
    }
    const json_t *b = json_object_get(gc, "bos_token_id");
    if (t->bos_id < 0 && b && !json_is_null(b)) {
        if (get_id(t, b, "bos_token_id", &id) != MK_OK)
            return mk_err_wrap(MK_E_FORMAT, "%s", file);
        MK_TRY(known_id(t, file, "bos_token_id", id));
        t->bos_id = id;
    }
    return MK_OK;
}

mk_status tok_load_configs(mk_tok *t, const char *dir) {
    char file[4096];
    json_t *cfg;
    int32_t id;
    snprintf(file, sizeof file, "%s/tokenizer_config.json", dir);
    MK_TRY(load_json_opt(file, JSON_DECODE_INT_AS_REAL, &cfg));
    mk_status st = MK_OK;
    if (cfg) {
        st = config_token(t, file, cfg, "eos_token", &id);
        if (st == MK_OK && id >= 0)
            st = add_eos(t, id);
        if (st == MK_OK)
            st = config_token(t, file, cfg, "bos_token", &t->bos_id);
        json_decref(cfg);
        MK_TRY(st);
    }
    snprintf(file, sizeof file, "%s/generation_config.json", dir);
    MK_TRY(load_json_opt(file, 0, &cfg));
    if (cfg) {
        st = gen_config(t, file, cfg);
        json_decref(cfg);
    }
    return st;
}

/* ---- the whole file ------------------------------------------------------ */

static mk_status load_tables(mk_tok *t, const json_t *model, const vocab_in *v, const json_t *added,
                             const char *text, tok_json_range merges) {
    MK_TRY(max_id(t, v, added, &t->n_ids));
    t->id_flags = mk_calloc(t->n_ids ? t->n_ids : 1, 1);
    t->id_str = mk_calloc(t->n_ids ? t->n_ids : 1, sizeof *t->id_str);
    t->added = mk_calloc(json_array_size(added) + 1, sizeof *t->added);
    if (!t->id_flags || !t->id_str || !t->added)
        return mk_err(MK_E_NOMEM, "tokenizer: out of memory for %zu ids", t->n_ids);
    for (size_t i = 0; i < v->n; i++) {
        int32_t id;
        tok_smap_get(&t->vocab, v->strs->p + v->keys[i].off, v->keys[i].len, &id);
        t->id_str[id] = v->keys[i]; /* an id two keys share: the later key's, as before */
        t->id_flags[id] |= TOK_ID_PRESENT;
    }
    for (size_t i = 0; i < json_array_size(added); i++)
        MK_TRY(load_added_one(t, json_array_get(added, i), i, v->strs));
    return load_model_tail(t, model, text, merges);
}

/* The document: jansson's DOM of the file with model.vocab and model.merges
 * cut to {} and [] (read from `text` by tok_json.c), or of the whole file
 * when the walk could not find them (*vocab_r, *merges_r then end 0). */
static mk_status load_doc(const char *path, char **text, json_t **root, tok_json_range *vocab_r,
                          tok_json_range *merges_r) {
    size_t n = 0;
    *root = NULL;
    *vocab_r = *merges_r = (tok_json_range){0};
    mk_status st = mk_os_read_file(path, SIZE_MAX - 1, text, &n);
    if (st == MK_E_NOTFOUND)
        st = mk_err(MK_E_IO, "cannot open %s: %s", path, strerror(ENOENT));
    MK_TRY(st);
    tok_json_range *r[2]; /* the located values, in file order */
    tok_json_fix fix[2];
    int nr = 0;
    if (!tok_json_dom_only() && tok_json_locate(*text, n, vocab_r, merges_r)) {
        if (vocab_r->end)
            r[nr++] = vocab_r;
        if (merges_r->end)
            r[nr++] = merges_r;
        if (nr == 2 && r[0]->at > r[1]->at) {
            r[0] = merges_r;
            r[1] = vocab_r;
        }
    }
    char *dom;
    size_t dn;
    MK_TRY(tok_json_cut(path, *text, n, r, nr, &dom, &dn, fix));
    json_error_t e;
    unsigned long jmark = mk_json_mark();
    *root = mk_json_loadb(dom, dn, 0, &e, jmark);
    free(dom);
    if (!*root) {
        if (mk_json_nomem(&e, jmark)) /* not the file's fault */
            return mk_err(MK_E_NOMEM, "%s: no memory to parse its JSON", path);
        /* a syntax error inside a cut value before jansson's comes first, as it would have
         * from jansson reading the whole file */
        size_t at = tok_json_file_pos(fix, nr, (size_t)e.position);
        for (int k = 0; k < nr && r[k]->at < at; k++)
            MK_TRY(tok_json_check(path, *text, r[k]));
        tok_json_fix_at(fix, nr, &e.line, &e.column);
        return mk_err(MK_E_FORMAT, "%s: invalid JSON at line %d column %d: %s", path, e.line, e.column,
                      mk_json_errtext(e.text));
    }
    for (int k = 0; k < nr; k++)
        MK_TRY(tok_json_check(path, *text, r[k]));
    /* the walk and jansson agree on where the two values were (they are what was cut) */
    const json_t *model = json_object_get(*root, "model");
    const json_t *bv = json_object_get(model, "vocab"), *bm = json_object_get(model, "merges");
    if ((vocab_r->end && !(json_is_object(bv) && json_object_size(bv) == 0)) ||
        (merges_r->end && !(json_is_array(bm) && json_array_size(bm) == 0)))
        return mk_err(MK_E_FORMAT, "%s: internal error: model.vocab / model.merges located at bytes %zu / %zu "
                      "but not found there", path, vocab_r->at, merges_r->at);
    return MK_OK;
}

mk_status tok_load_json(mk_tok *t, const char *path) {
    char *text = NULL;
    json_t *root = NULL;
    tok_json_range vr, mr;
    mk_status st = load_doc(path, &text, &root, &vr, &mr);
    arena strs = {0};
    vocab_in v = {t, &strs, NULL, 0, 0, NULL, 0, 0};
    size_t ncap = 0, pcap = 0;
    dec_chain chain = {.n = 0};
    const json_t *model = json_object_get(root, "model"), *vocab = json_object_get(model, "vocab");
    const json_t *added = json_object_get(root, "added_tokens");
    if (st != MK_OK)
        ;
    else if (!json_is_object(root))
        st = mk_err(MK_E_FORMAT, "%s: expected a JSON object at the top level, found %s", path, jt(root));
    else if (!json_is_object(model))
        st = mk_err(MK_E_FORMAT, "%s: field 'model': expected an object, found %s", path, jt(model));
    else if (!json_is_object(vocab))
        st = mk_err(MK_E_FORMAT, "%s: field 'model.vocab': expected an object, found %s", path, jt(vocab));

    else if (added && !json_is_null(added) && !json_is_array(added))
        st = mk_err(MK_E_FORMAT, "%s: field 'added_tokens': expected an array, found %s", path, jt(added));
    if (st == MK_OK)
        st = load_model_flags(t, model);
    if (st == MK_OK)
        st = load_normalizer(t, json_object_get(root, "normalizer"), "normalizer", &ncap);
    if (st == MK_OK)
        st = load_pre(t, json_object_get(root, "pre_tokenizer"), "pre_tokenizer", &pcap);
    if (st == MK_OK)
        st = vr.end ? vocab_from_text(&v, text, vr) : vocab_from_dom(&v, vocab);
    if (st == MK_OK)
        st = load_tables(t, model, &v, json_is_array(added) ? added : NULL, text, mr);
    t->strs = strs.p; /* (freed with t) */
    t->strs_len = strs.n;
    free(v.keys);
    free(v.bad);
    if (st == MK_OK)
        st = load_post(t, json_object_get(root, "post_processor"), "post_processor", NULL);
    if (st == MK_OK)
        st = load_decoder(t, json_object_get(root, "decoder"), "decoder", &chain);
    if (st == MK_OK) {
        const json_t *dec = json_object_get(root, "decoder");
        t->dec_join_space = !dec || json_is_null(dec);
        st = build_bytes(t, chain.steps, chain.n);
    }
    if (st == MK_OK && v.n == 0)
        st = mk_err(MK_E_FORMAT, "%s: field 'model.vocab' is empty: no text could be encoded", path);
    json_decref(root);
    free(text);
    return st;
}

/* ---- public -------------------------------------------------------------- */

/* A tiktoken rank file given by name: "tiktoken.model", "*.tiktoken". */
static bool tiktoken_name(const char *path) {
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    size_t n = strlen(base);
    return strcmp(base, "tiktoken.model") == 0 || (n > 9 && strcmp(base + n - 9, ".tiktoken") == 0);
}

/* The file to read and the directory of its config files. A model
 * directory holds tokenizer.json, or else tiktoken.model (Kimi-K2);
 * *tiktoken says which. */
static mk_status resolve(const char *path, char **file, char **dir, bool *tiktoken) {
    struct stat sb;
    *file = *dir = NULL;
    *tiktoken = false;
    if (stat(path, &sb) != 0)
        return mk_err(MK_E_IO, "cannot open %s: %s", path, strerror(errno));
    size_t n = strlen(path);
    if (S_ISDIR(sb.st_mode)) {
        *dir = mk_strdup(path);
        *file = mk_malloc(n + sizeof "/tokenizer.json");
        if (*file)
            snprintf(*file, n + sizeof "/tokenizer.json", "%s/tokenizer.json", path);
    } else {
        *file = mk_strdup(path);
        const char *slash = strrchr(path, '/');
        *dir = slash ? mk_strndup(path, (size_t)(slash - path) + (slash == path)) : mk_strdup(".");
    }
    if (!*file || !*dir)
        return mk_err(MK_E_NOMEM, "%s: no memory for the tokenizer's file and directory paths", path);
    if (S_ISDIR(sb.st_mode) && access(*file, F_OK) != 0) {
        /* Kimi-K2 ships a tiktoken rank file instead */
        free(*file);
        *file = mk_malloc(n + sizeof "/tiktoken.model");
        if (!*file)
            return mk_err(MK_E_NOMEM, "%s: no memory for the tokenizer's file path", path);
        snprintf(*file, n + sizeof "/tiktoken.model", "%s/tiktoken.model", path);
        if (access(*file, F_OK) != 0)
            return mk_err(MK_E_NOTFOUND, "%s: no tokenizer.json and no tiktoken.model in this model directory",
                          path);
        *tiktoken = true;
    }
    if (!S_ISDIR(sb.st_mode))
        *tiktoken = tiktoken_name(path);
    return MK_OK;
}

mk_status mk_tok_load(const char *path, mk_tok **out) {
    if (!out || !path)
        return mk_err(MK_E_ARG, "mk_tok_load: NULL argument");
    *out = NULL;
    mk_tok *t = mk_calloc(1, sizeof *t);
    if (!t)
        return mk_err(MK_E_NOMEM, "%s: no memory for a tokenizer", path);
    t->bos_id = -1;
    t->unk_id = -1;
    char *dir = NULL;
    bool tiktoken = false;
    mk_status st = resolve(path, &t->path, &dir, &tiktoken);
    if (st == MK_OK)
        st = tok_cache_create(&t->cache);
    if (st == MK_OK)
        st = tiktoken ? tok_load_tiktoken(t, t->path, dir) : tok_load_json(t, t->path);
    if (st == MK_OK)
        st = tok_load_configs(t, dir);
    free(dir);
    if (st != MK_OK) {
        mk_tok_free(t);
        return st;
    }
    *out = t;
    return MK_OK;
}

void mk_tok_free(mk_tok *t) {
    if (!t)
        return;
    for (size_t i = 0; i < t->n_pre; i++)
        pcre2_code_free(t->pre[i].re);
    free(t->pre);
    for (size_t i = 0; i < t->n_added; i++)
        free(t->added[i].content);
    free(t->added);
    tok_trie_free(&t->trie_raw);
    tok_trie_free(&t->trie_norm);
    tok_smap_free(&t->added_ids);
    tok_smap_free(&t->vocab);
    tok_pmap_free(&t->merges);
    tok_ivec_free(&t->post_prefix);
    tok_ivec_free(&t->post_suffix);
    tok_ivec_free(&t->eos);
    tok_cache_free(t->cache);
    free(t->norms);
    free(t->cont_prefix);
    free(t->eow_suffix);
    free(t->id_flags);
    free(t->id_str);
    free(t->id_bytes);
    free(t->strs);
    free(t->bytes);
    free(t->path);
    free(t);
}

size_t mk_tok_vocab_size(const mk_tok *t) { return t ? t->n_ids : 0; }

mk_status mk_tok_check_model_vocab(const mk_tok *t, int64_t vocab_size) {
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id >= vocab_size)
            return mk_err(MK_E_MISMATCH,
                          "%s: added token \"%.60s\" has id %d, outside the model's vocabulary "
                          "(config.json vocab_size %lld): the model has no embedding for it",
                          t->path, t->added[i].content, (int)t->added[i].id, (long long)vocab_size);
    for (size_t i = 0; i < t->eos.n; i++)
        if (t->eos.p[i] >= vocab_size)
            return mk_err(MK_E_MISMATCH, "%s: EOS id %d is outside the model's vocabulary (config.json "
                          "vocab_size %lld): generation could never stop on it",
                          t->path, (int)t->eos.p[i], (long long)vocab_size);
    if (t->bos_id >= vocab_size)
        return mk_err(MK_E_MISMATCH, "%s: BOS id %d is outside the model's vocabulary (config.json vocab_size "
                      "%lld)", t->path, (int)t->bos_id, (long long)vocab_size);
    return MK_OK;
}

int32_t mk_tok_token_id(const mk_tok *t, const char *token) {
    int32_t id;
    if (!t || !token)
        return -1;
    size_t n = strlen(token);
    if (tok_smap_get(&t->added_ids, token, n, &id) || tok_smap_get(&t->vocab, token, n, &id))
        return id;
    return -1;
}

const char *mk_tok_token_str(const mk_tok *t, int32_t id, size_t *len) {
    if (!t || id < 0 || (size_t)id >= t->n_ids || !(t->id_flags[id] & TOK_ID_PRESENT))
        return NULL;
    if (len)
        *len = t->id_str[id].len;
    return t->strs + t->id_str[id].off;
}

const char *mk_tok_token_bytes(const mk_tok *t, int32_t id, size_t *len) {
    if (!t || t->dec_join_space || id < 0 || (size_t)id >= t->n_ids || !(t->id_flags[id] & TOK_ID_PRESENT))
        return NULL;
    if (len)
        *len = t->id_bytes[id].len;
    return t->bytes + t->id_bytes[id].off;
}

bool mk_tok_is_special(const mk_tok *t, int32_t id) {
    return t && id >= 0 && (size_t)id < t->n_ids && (t->id_flags[id] & TOK_ID_SPECIAL);
}

size_t mk_tok_eos_ids(const mk_tok *t, const int32_t **ids) {
    if (ids)
        *ids = t ? t->eos.p : NULL;
    return t ? t->eos.n : 0;
}

int32_t mk_tok_bos_id(const mk_tok *t) { return t ? t->bos_id : -1; }

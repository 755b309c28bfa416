/* JSON schema -> the node graph of grammar_impl.h.
 *
 * Each schema object becomes one node (a type array or anyOf an ALT over
 * one node per alternative); $ref targets are compiled once, through a REF
 * node, after the schema that names them, so recursion becomes a cycle in
 * the graph that the runtime stack unrolls. Then two fixpoints over the
 * graph: the shortest instance of each node (a node without a finite one,
 * such as an object that requires itself, is refused: generation could
 * never end) and the bytes an instance may start with (alternatives must
 * not share one: the automaton picks an alternative by its first byte).
 *
 * Every keyword is either handled, an annotation (ignored: it does not
 * constrain), or refused with MK_E_UNSUPPORTED naming it and its path: a
 * schema is never half enforced. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json_err.h"
#include "grammar/grammar_impl.h"

#define PATH_MAX_LEN 256

typedef struct memo {
    const json_t *schema;      /* a $ref target */
    int32_t node;              /* its REF node */
} memo;

typedef struct ctx {
    mk_grammar *g;
    const json_t *root;
    bool strict;
    memo *memos;
    size_t nmemo, capmemo;
    char **paths;              /* [g->n] where each node came from, for messages */
    size_t cappaths;
} ctx;

static void set_first(gm_node *n, uint8_t c) { n->first[c >> 6] |= (uint64_t)1 << (c & 63); }

static int32_t node_add(ctx *c, gm_kind kind, const char *path) {
    mk_grammar *g = c->g;
    if (g->n == g->cap) {
        size_t nc = g->cap ? 2 * g->cap : 16;
        gm_node *nn = mk_realloc(g->nodes, nc * sizeof *nn);
        if (!nn)
            return -1;
        g->nodes = nn;
        g->cap = nc;
    }
    if (g->n == c->cappaths) {
        size_t nc = c->cappaths ? 2 * c->cappaths : 16;
        char **np = mk_realloc(c->paths, nc * sizeof *np);
        if (!np)
            return -1;
        c->paths = np;
        c->cappaths = nc;
    }
    c->paths[g->n] = mk_strdup(path);
    if (!c->paths[g->n])
        return -1;
    g->nodes[g->n] = (gm_node){.kind = kind, .child = -1, .minlen = GM_INF};
    return (int32_t)g->n++;
}

static mk_status nomem(void) { return mk_err(MK_E_NOMEM, "out of memory compiling a JSON schema"); }

/* A LIT node of the JSON texts of vals[0..n) (sorted, without duplicates). */
static int cmp_lit(const void *a, const void *b) {
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    return strcmp(x, y); /* texts hold no NUL (JSON escapes it) */
}

static mk_status lit_node(ctx *c, const json_t *const *vals, size_t n, const char *path, int32_t *out) {
    int32_t id = node_add(c, GN_LIT, path);
    if (id < 0)
        return nomem();
    gm_node *nd = &c->g->nodes[id];
    nd->lits = mk_calloc(n ? n : 1, sizeof *nd->lits);
    nd->llen = mk_calloc(n ? n : 1, sizeof *nd->llen);
    if (!nd->lits || !nd->llen)
        return nomem();
    for (size_t i = 0; i < n; i++) {
        unsigned long mark = mk_json_mark();
        char *t = mk_json_dumps_checked(vals[i], JSON_COMPACT | JSON_ENCODE_ANY, mark);
        if (!t)
            return nomem();
        nd->lits[nd->nlits++] = t;
    }
    qsort(nd->lits, nd->nlits, sizeof *nd->lits, cmp_lit);
    uint32_t k = 0;
    for (uint32_t i = 0; i < nd->nlits; i++) {
        if (k && !strcmp(nd->lits[k - 1], nd->lits[i])) {
            free(nd->lits[i]);
            continue;
        }
        nd->lits[k] = nd->lits[i];
        nd->llen[k++] = (uint32_t)strlen(nd->lits[i]);
    }
    nd->nlits = k;
    *out = id;
    return MK_OK;
}

static const char *const handled_kw[] = {"type", "properties", "required", "additionalProperties", "items",
                                         "minItems", "maxItems", "enum", "const", "anyOf", "$ref",
                                         "$defs", "definitions", NULL};
static const char *const annotation_kw[] = {"title", "description", "default", "examples", "$comment",
                                            "$schema", "$id", "deprecated", "readOnly", "writeOnly",
                                            "strict", "name", NULL};

static bool in_list(const char *const *l, const char *k) {
    for (; *l; l++)
        if (!strcmp(*l, k))
            return true;
    return false;
}

/* Type names of the "type" keyword as bits. */
enum { T_OBJECT = 1, T_ARRAY = 2, T_STRING = 4, T_NUMBER = 8, T_INTEGER = 16, T_BOOLEAN = 32, T_NULL = 64 };
static const char *const type_names[] = {"object", "array", "string", "number", "integer", "boolean", "null"};

static mk_status parse_types(const json_t *t, const char *path, unsigned *bits) {
    *bits = 0;
    size_t n = json_is_array(t) ? json_array_size(t) : 1;
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_is_array(t) ? json_array_get(t, i) : t;
        const char *s = json_string_value(v);
        int k = 0;
        while (s && k < 7 && strcmp(s, type_names[k]))
            k++;
        if (!s || k == 7)
            return mk_err(MK_E_ARG, "%s.type: expected one of object, array, string, number, integer, "
                                    "boolean, null (or an array of them), found %s%s%s",
                          path, s ? "'" : "", s ? s : mk_json_type_name(v), s ? "'" : "");
        *bits |= 1u << k;
    }
    if (!*bits)
        return mk_err(MK_E_ARG, "%s.type: an empty array admits nothing", path);
    return MK_OK;
}

/* Whether JSON value v is of one of the type bits. */
static bool value_has_type(const json_t *v, unsigned bits) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return bits & T_OBJECT;
    case JSON_ARRAY: return bits & T_ARRAY;
    case JSON_STRING: return bits & T_STRING;
    case JSON_INTEGER: return bits & (T_NUMBER | T_INTEGER);
    case JSON_REAL: return bits & T_NUMBER;
    case JSON_TRUE:
    case JSON_FALSE: return bits & T_BOOLEAN;
    case JSON_NULL: return bits & T_NULL;
    }
    return false;
}

static mk_status compile(ctx *c, const json_t *s, const char *path, int32_t *out);

/* enum / const (filtered by type when given). */
static mk_status compile_enum(ctx *c, const json_t *s, const char *path, unsigned types, int32_t *out) {
    const json_t *en = json_object_get(s, "enum"), *cn = json_object_get(s, "const");
    if (en && (!json_is_array(en) || !json_array_size(en)))
        return mk_err(MK_E_ARG, "%s.enum: expected a non-empty array, found %s", path, mk_json_type_name(en));
    size_t n = cn ? 1 : json_array_size(en), k = 0;
    const json_t **v = mk_calloc(n, sizeof *v);
    if (!v)
        return nomem();
    for (size_t i = 0; i < n; i++) {
        const json_t *x = cn ? cn : json_array_get(en, i);
        bool in_enum = !cn || !en;
        for (size_t j = 0; !in_enum && j < json_array_size(en); j++)
            in_enum = json_equal((json_t *)x, json_array_get(en, j));
        if (in_enum && (!types || value_has_type(x, types)))
            v[k++] = x;
    }
    mk_status st = k ? lit_node(c, v, k, path, out)
                     : mk_err(MK_E_ARG, "%s: no value of %s satisfies the schema's type", path,
                              cn ? "const" : "enum");
    free(v);
    return st;
}

static mk_status compile_object(ctx *c, const json_t *s, const char *path, int32_t *out) {
    const json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    const json_t *ap = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props))
        return mk_err(MK_E_ARG, "%s.properties: expected an object, found %s", path, mk_json_type_name(props));
    if (req && !json_is_array(req))
        return mk_err(MK_E_ARG, "%s.required: expected an array, found %s", path, mk_json_type_name(req));
    if (ap && !json_is_boolean(ap) && !json_is_object(ap))
        return mk_err(MK_E_ARG, "%s.additionalProperties: expected a boolean or a schema, found %s", path,
                      mk_json_type_name(ap));
    size_t np = props ? json_object_size(props) : 0;
    if (c->strict && !json_is_false(ap))
        return mk_err(MK_E_ARG, "%s: strict: additionalProperties must be false on every object", path);
    for (size_t i = 0; req && i < json_array_size(req); i++) {
        const char *name = json_string_value(json_array_get(req, i));
        if (!name)
            return mk_err(MK_E_ARG, "%s.required[%zu]: expected a string", path, i);
        if (!props || !json_object_get(props, name))
            return mk_err(MK_E_UNSUPPORTED, "%s.required[%zu]: '%s' is not in properties (its value would be "
                          "unconstrained): not supported", path, i, name);
    }
    if (!props && !json_is_false(ap)) { /* any object */
        *out = node_add(c, GN_ANYOBJ, path);
        return *out < 0 ? nomem() : MK_OK;
    }
    if (np > GM_MAX_PROPS)
        return mk_err(MK_E_UNSUPPORTED, "%s.properties: %zu properties, at most %d per object are supported",
                      path, np, GM_MAX_PROPS);
    int32_t id = node_add(c, GN_OBJ, path);
    if (id < 0)
        return nomem();
    gm_prop *pr = mk_calloc(np ? np : 1, sizeof *pr);
    int64_t *rq = mk_calloc(np + 1, sizeof *rq);
    c->g->nodes[id].props = pr;
    c->g->nodes[id].rq = rq;
    if (!pr || !rq)
        return nomem();
    const char *key;
    json_t *sub;
    size_t i = 0;
    json_object_foreach((json_t *)props, key, sub) {
        bool r = false;
        for (size_t j = 0; req && j < json_array_size(req); j++)
            r = r || !strcmp(key, json_string_value(json_array_get(req, j)));
        if (c->strict && !r)
            return mk_err(MK_E_ARG, "%s.required: strict: every property must be required (missing '%s'; "
                          "make it nullable instead)", path, key);
        json_t *ks = json_string(key);
        unsigned long mark = mk_json_mark();
        char *kt = ks ? mk_json_dumps_checked(ks, JSON_ENCODE_ANY, mark) : NULL;
        if (ks)
            json_decref(ks);
        if (!kt)
            return nomem();
        char sp[PATH_MAX_LEN];
        snprintf(sp, sizeof sp, "%s.properties.%s", path, key);
        int32_t child;
        pr = c->g->nodes[id].props; /* node_add may move the nodes */
        pr[i] = (gm_prop){.key = kt, .klen = (uint32_t)strlen(kt), .node = -1, .req = r};
        c->g->nodes[id].nprops = (uint32_t)(i + 1);
        MK_TRY(compile(c, sub, sp, &child));
        c->g->nodes[id].props[i].node = child;
        i++;
    }
    *out = id;
    return MK_OK;
}

static mk_status get_count(const json_t *s, const char *k, const char *path, int64_t dflt, int64_t *out) {
    const json_t *v = json_object_get(s, k);
    *out = dflt;
    if (!v)
        return MK_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 30))
        return mk_err(MK_E_ARG, "%s.%s: expected an integer in [0, 2^30]", path, k);
    *out = json_integer_value(v);
    return MK_OK;
}

static mk_status compile_array(ctx *c, const json_t *s, const char *path, int32_t *out) {
    const json_t *items = json_object_get(s, "items");
    int64_t mn, mx;
    MK_TRY(get_count(s, "minItems", path, 0, &mn));
    MK_TRY(get_count(s, "maxItems", path, INT32_MAX, &mx));
    if (mx < mn)
        return mk_err(MK_E_ARG, "%s: maxItems %lld < minItems %lld admits nothing", path, (long long)mx,
                      (long long)mn);
    if (items && !json_is_object(items))
        return mk_err(MK_E_UNSUPPORTED, "%s.items: only a schema object is supported (found %s)", path,
                      mk_json_type_name(items));
    int32_t id = node_add(c, GN_ARR, path), child = c->g->any;
    if (id < 0)
        return nomem();
    c->g->nodes[id].min_items = mn;
    c->g->nodes[id].max_items = mx;
    if (items) {
        char sp[PATH_MAX_LEN];
        snprintf(sp, sizeof sp, "%s.items", path);
        MK_TRY(compile(c, items, sp, &child));
    }
    c->g->nodes[id].child = child;
    *out = id;
    return MK_OK;
}

/* One node of a single type. */
static mk_status compile_type(ctx *c, const json_t *s, const char *path, unsigned t, int32_t *out) {
    const json_t *bools[2] = {json_true(), json_false()}, *nul[1] = {json_null()}; /* jansson's singletons */
    switch (t) {
    case T_OBJECT: return compile_object(c, s, path, out);
    case T_ARRAY: return compile_array(c, s, path, out);
    case T_BOOLEAN: return lit_node(c, bools, 2, path, out);
    case T_NULL: return lit_node(c, nul, 1, path, out);
    default: break;
    }
    *out = node_add(c, t == T_STRING ? GN_STR : t == T_NUMBER ? GN_NUM : GN_INT, path);
    return *out < 0 ? nomem() : MK_OK;
}

static mk_status compile_alt(ctx *c, const char *path, int32_t *alts, size_t n, int32_t *out) {
    int32_t id = node_add(c, GN_ALT, path);
    if (id < 0)
        return nomem();
    int32_t *a = mk_malloc(n * sizeof *a);
    if (!a)
        return nomem();
    memcpy(a, alts, n * sizeof *a);
    c->g->nodes[id].alts = a;
    c->g->nodes[id].nalts = (uint32_t)n;
    *out = id;
    return MK_OK;
}

/* "#", "#/$defs/NAME" or "#/definitions/NAME" -> its schema. */
static mk_status resolve_ref(ctx *c, const json_t *r, const char *path, const json_t **target) {
    const char *s = json_string_value(r);
    if (!s)
        return mk_err(MK_E_ARG, "%s.$ref: expected a string", path);
    *target = NULL;
    if (!strcmp(s, "#"))
        *target = c->root;
    else if (!strncmp(s, "#/$defs/", 8))
        *target = json_object_get(json_object_get(c->root, "$defs"), s + 8);
    else if (!strncmp(s, "#/definitions/", 14))
        *target = json_object_get(json_object_get(c->root, "definitions"), s + 14);
    else
        return mk_err(MK_E_UNSUPPORTED, "%s.$ref: '%s': only \"#\", \"#/$defs/NAME\" and "
                      "\"#/definitions/NAME\" are supported", path, s);
    if (!*target || !json_is_object(*target))
        return mk_err(MK_E_ARG, "%s.$ref: '%s' names no schema object", path, s);
    return MK_OK;
}

static mk_status compile_ref(ctx *c, const json_t *s, const char *path, int32_t *out) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v) if (strcmp(k, "$ref") && !in_list(annotation_kw, k) &&
                                               strcmp(k, "$defs") && strcmp(k, "definitions"))
        return mk_err(MK_E_UNSUPPORTED, "%s.%s: keywords beside $ref are not supported", path, k);
    const json_t *t = NULL;
    MK_TRY(resolve_ref(c, json_object_get(s, "$ref"), path, &t));
    for (size_t i = 0; i < c->nmemo; i++)
        if (c->memos[i].schema == t) {
            *out = c->memos[i].node;
            return MK_OK;
        }
    if (c->nmemo == c->capmemo) {
        size_t nc = c->capmemo ? 2 * c->capmemo : 8;
        memo *nm = mk_realloc(c->memos, nc * sizeof *nm);
        if (!nm)
            return nomem();
        c->memos = nm;
        c->capmemo = nc;
    }
    int32_t id = node_add(c, GN_REF, path);
    if (id < 0)
        return nomem();
    c->memos[c->nmemo++] = (memo){t, id};
    char sp[PATH_MAX_LEN];
    snprintf(sp, sizeof sp, "%s", json_string_value(json_object_get(s, "$ref")));
    sp[0] = '$'; /* "#/$defs/x" -> "$/$defs/x" */
    int32_t target;
    MK_TRY(compile(c, t, sp, &target));
    c->g->nodes[id].child = target;
    *out = id;
    return MK_OK;
}

static mk_status compile(ctx *c, const json_t *s, const char *path, int32_t *out) {
    if (json_is_true(s)) {
        *out = c->g->any;
        return MK_OK;
    }
    if (!json_is_object(s))
        return mk_err(MK_E_ARG, "%s: expected a schema object, found %s", path, mk_json_type_name(s));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v) if (!in_list(handled_kw, k) && !in_list(annotation_kw, k))
        return mk_err(MK_E_UNSUPPORTED, "%s.%s: the keyword '%s' is not supported (refused rather than "
                      "ignored)", path, k, k);
    if (json_object_get(s, "$ref"))
        return compile_ref(c, s, path, out);
    const json_t *any_of = json_object_get(s, "anyOf"), *ty = json_object_get(s, "type");
    unsigned types = 0;
    if (ty)
        MK_TRY(parse_types(ty, path, &types));
    if (any_of) {
        if (ty || json_object_get(s, "enum") || json_object_get(s, "const") || json_object_get(s, "properties"))
            return mk_err(MK_E_UNSUPPORTED, "%s.anyOf: together with type, enum, const or properties is not "
                          "supported: put them inside the alternatives", path);
        size_t n = json_array_size(any_of);
        if (!json_is_array(any_of) || !n || n > 64)
            return mk_err(MK_E_ARG, "%s.anyOf: expected an array of 1 to 64 schemas", path);
        int32_t alts[64];
        for (size_t i = 0; i < n; i++) {
            char sp[PATH_MAX_LEN];
            snprintf(sp, sizeof sp, "%s.anyOf[%zu]", path, i);
            MK_TRY(compile(c, json_array_get(any_of, i), sp, &alts[i]));
        }
        return compile_alt(c, path, alts, n, out);
    }
    if (json_object_get(s, "enum") || json_object_get(s, "const"))
        return compile_enum(c, s, path, types, out);
    if (!ty) { /* inferred from the keywords, or any value */
        if (json_object_get(s, "properties") || json_object_get(s, "required") ||
            json_object_get(s, "additionalProperties"))
            types = T_OBJECT;
        else if (json_object_get(s, "items") || json_object_get(s, "minItems") || json_object_get(s, "maxItems"))
            types = T_ARRAY;
        else {
            *out = c->g->any;
            return MK_OK;
        }
    }
    int32_t alts[7];
    size_t n = 0;
    for (unsigned t = 1; t <= T_NULL; t <<= 1)
        if (types & t)
            MK_TRY(compile_type(c, s, path, t, &alts[n++]));
    if (n == 1) {
        *out = alts[0];
        return MK_OK;
    }
    return compile_alt(c, path, alts, n, out);
}

/* ---- graph fixpoints ---------------------------------------------------------- */

static int64_t add_sat(int64_t a, int64_t b) { return a >= GM_INF || b >= GM_INF || a + b >= GM_INF ? GM_INF : a + b; }

static int64_t node_minlen(const mk_grammar *g, gm_node *n) {
    switch (n->kind) {
    case GN_STR: return 2;
    case GN_NUM:
    case GN_INT: return 1;
    case GN_ANYOBJ: return 2;
    case GN_LIT: {
        int64_t m = GM_INF;
        for (uint32_t i = 0; i < n->nlits; i++)
            m = n->llen[i] < m ? n->llen[i] : m;
        return m;
    }
    case GN_OBJ:
        n->rq[n->nprops] = 0;
        for (uint32_t j = n->nprops; j-- > 0;) {
            const gm_prop *p = &n->props[j];
            n->rq[j] = p->req ? add_sat(n->rq[j + 1], 2 + (int64_t)p->klen + g->nodes[p->node].minlen) : n->rq[j + 1];
        }
        return add_sat(n->rq[0], 2 - (n->rq[0] > 0));
    case GN_ARR: {
        int64_t ml = g->nodes[n->child].minlen;
        if (n->min_items == 0)
            return 2;
        return ml >= GM_INF ? GM_INF : 1 + n->min_items * (ml + 1);
    }
    case GN_ALT: {
        int64_t m = GM_INF;
        for (uint32_t i = 0; i < n->nalts; i++)
            m = g->nodes[n->alts[i]].minlen < m ? g->nodes[n->alts[i]].minlen : m;
        return m;
    }
    case GN_REF: return g->nodes[n->child].minlen;
    }
    return GM_INF;
}

static void node_first(const mk_grammar *g, gm_node *n) {
    switch (n->kind) {
    case GN_STR: set_first(n, '"'); break;
    case GN_NUM:
    case GN_INT:
        set_first(n, '-');
        for (int d = '0'; d <= '9'; d++)
            set_first(n, (uint8_t)d);
        break;
    case GN_LIT:
        for (uint32_t i = 0; i < n->nlits; i++)
            set_first(n, (uint8_t)n->lits[i][0]);
        break;
    case GN_OBJ:
    case GN_ANYOBJ: set_first(n, '{'); break;
    case GN_ARR: set_first(n, '['); break;
    case GN_ALT:
        for (uint32_t i = 0; i < n->nalts; i++)
            for (int w = 0; w < 4; w++)
                n->first[w] |= g->nodes[n->alts[i]].first[w];
        break;
    case GN_REF:
        for (int w = 0; w < 4; w++)
            n->first[w] |= g->nodes[n->child].first[w];
        break;
    }
}

static mk_status finish_graph(ctx *c) {
    mk_grammar *g = c->g;
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t i = 0; i < g->n; i++) {
            gm_node *n = &g->nodes[i];
            uint64_t f[4];
            memcpy(f, n->first, sizeof f);
            int64_t m = node_minlen(g, n);
            node_first(g, n);
            if (m < n->minlen || memcmp(f, n->first, sizeof f)) {
                n->minlen = m < n->minlen ? m : n->minlen;
                changed = true;
            }
        }
    }
    for (size_t i = 0; i < g->n; i++) {
        const gm_node *n = &g->nodes[i];
        if (n->minlen >= GM_INF)
            return mk_err(MK_E_UNSUPPORTED, "%s: the schema has no finite instance (it requires itself): "
                          "generation could never end", c->paths[i]);
        for (uint32_t a = 0; n->kind == GN_ALT && a < n->nalts; a++)
            for (uint32_t b = a + 1; b < n->nalts; b++)
                for (int w = 0; w < 4; w++) {
                    uint64_t both = g->nodes[n->alts[a]].first[w] & g->nodes[n->alts[b]].first[w];
                    if (both) {
                        int ch = w * 64 + __builtin_ctzll(both);
                        return mk_err(MK_E_UNSUPPORTED, "%s: alternatives %u and %u (anyOf or a type array) "
                                      "can both start with '%c': alternatives must differ in their first "
                                      "byte (string, number, object, array, boolean, null)", c->paths[i], a, b,
                                      ch >= 0x20 && ch < 0x7f ? ch : '?');
                    }
                }
    }
    return MK_OK;
}

/* ---- public ------------------------------------------------------------------------ */

void mk_grammar_free(mk_grammar *g) {
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++) {
        gm_node *n = &g->nodes[i];
        for (uint32_t j = 0; n->props && j < n->nprops; j++)
            free(n->props[j].key);
        for (uint32_t j = 0; n->lits && j < n->nlits; j++)
            free(n->lits[j]);
        free(n->props);
        free(n->rq);
        free(n->lits);
        free(n->llen);
        free(n->alts);
    }
    free(g->nodes);
    free(g);
}

/* A grammar with its built-in nodes: any string, any value. */
static mk_status builtins(ctx *c) {
    const json_t *tfn[3] = {json_true(), json_false(), json_null()};
    int32_t alts[5];
    c->g->str = node_add(c, GN_STR, "$");
    c->g->any = node_add(c, GN_ALT, "$");
    alts[0] = node_add(c, GN_ANYOBJ, "$");
    alts[1] = node_add(c, GN_ARR, "$");
    alts[2] = c->g->str;
    alts[3] = node_add(c, GN_NUM, "$");
    if (c->g->str < 0 || c->g->any < 0 || alts[0] < 0 || alts[1] < 0 || alts[3] < 0)
        return nomem();
    MK_TRY(lit_node(c, tfn, 3, "$", &alts[4]));
    gm_node *arr = &c->g->nodes[alts[1]];
    arr->child = c->g->any;
    arr->max_items = INT32_MAX;
    gm_node *any = &c->g->nodes[c->g->any];
    if (!(any->alts = mk_malloc(sizeof alts)))
        return nomem();
    memcpy(any->alts, alts, sizeof alts);
    any->nalts = 5;
    return MK_OK;
}

static mk_status build(const json_t *schema, bool strict, bool any_object, mk_grammar **out) {
    *out = NULL;
    ctx c = {.root = schema, .strict = strict};
    c.g = mk_calloc(1, sizeof *c.g);
    mk_status st = c.g ? builtins(&c) : nomem();
    if (st == MK_OK && any_object)
        c.g->root = c.g->nodes[c.g->any].alts[0];
    else if (st == MK_OK)
        st = compile(&c, schema, "$", &c.g->root);
    if (st == MK_OK)
        st = finish_graph(&c);
    for (size_t i = 0; c.paths && i < (c.g ? c.g->n : 0); i++)
        free(c.paths[i]);
    free(c.paths);
    free(c.memos);
    if (st != MK_OK) {
        mk_grammar_free(c.g);
        return st;
    }
    *out = c.g;
    return MK_OK;
}

mk_status mk_grammar_json_object(mk_grammar **out) { return build(NULL, false, true, out); }

mk_status mk_grammar_compile_schema(const char *json, size_t len, bool strict, mk_grammar **out) {
    *out = NULL;
    json_error_t je;
    unsigned long mark = mk_json_mark();
    json_t *root = mk_json_loadb(json, len, JSON_REJECT_DUPLICATES, &je, mark);
    if (!root) {
        if (mk_json_nomem(&je, mark))
            return nomem();
        return mk_err(MK_E_ARG, "$: the schema is not valid JSON: %s", je.text);
    }
    mk_status st = build(root, strict, false, out);
    json_decref(root);
    return st;
}

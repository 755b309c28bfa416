/* Profiles as JSON: the writer (streamed, one tensor at a time) and a
 * strict reader.
 *
 * Layout (version 1):
 *   {"format": "moekit-profile", "version": 1,
 *    "model": {"dir", "model_type", "arch", "layout", "config_xxh3_64",
 *              "num_layers", "num_experts", "top_k"},
 *    "calibration": {"text", "tokens", "window", "windows"},
 *    "quant": {"mode": "affine", "group_size": 64, "bits": [2,3,4,5,6,8],
 *              "router_bits": 8},
 *    "usage_rule": "...",
 *    "routing": [{"layer", "tokens", "freq": [E], "mean_weight": [E],
 *                 "mean_weight_sq": [E]}, ...],
 *    "totals": {"tensors", "params"},
 *    "tensors": [
 *      {"name": MLX module path, "source": checkpoint tensor [slice],
 *       "kind": "expert" | "linear" | "router" | "float",
 *       "layer", "expert" (absent when not applicable), "stack" (experts),
 *       "shape": [out, in], "params", "usage",
 *       expert / linear: "err": [per bits], "bytes": [per bits],
 *                        "sensitivity": [usage * err, informational]
 *       router / float:  "fixed": {"bits", "bytes", "err"}}, ...]}
 * The writer builds one tensor's JSON at a time, so a profile of ~100k
 * expert tensors never sits in memory as a JSON tree; it goes to a
 * temporary file that is fsynced and renamed over the target. The reader
 * checks every field it uses and names the file, the tensor (index and
 * name) and the field when one is wrong. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/json_err.h"
#include "core/alloc.h"
#include "core/str.h"
#include "io/os.h"
#include "io/outfile.h"
#include "profile/profile_impl.h"

static const char k_usage_rule[] =
    "routed expert: freq * mean_weight normalised to sum 1 over the layer's experts; every other "
    "chosen module: 1; objective: sum of usage * err * params";

/* ---- writer --------------------------------------------------------------- */

static json_t *jstr(const char *s) { return json_string(s ? s : ""); }

static json_t *darray(const double *v, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

static json_t *header_json(const mk_prof *p) {
    uint64_t params = 0;
    for (size_t i = 0; i < p->n; i++)
        params += p->t[i].params;
    json_t *bits = json_array();
    for (int k = 0; k < p->n_bits; k++)
        json_array_append_new(bits, json_integer(p->bits[k]));
    json_t *h = json_pack("{s:s,s:i,s:{s:s,s:i,s:o,s:i},s:s,s:{s:I,s:I}}", "format",
                          "moekit-profile", "version", 1, "quant", "mode", "affine", "group_size",
                          p->group, "bits", bits, "router_bits", p->router_bits, "usage_rule",
                          k_usage_rule, "totals", "tensors", (json_int_t)p->n, "params",
                          (json_int_t)params);
    if (h && p->model_type)
        json_object_set_new(
            h, "model",
            json_pack("{s:o,s:o,s:o,s:o,s:o,s:i,s:i,s:i}", "dir", jstr(p->model_dir),
                      "model_type", jstr(p->model_type), "arch", jstr(p->arch), "layout",
                      jstr(p->layout), "config_xxh3_64", jstr(p->config_hash), "num_layers",
                      p->num_layers, "num_experts", p->num_experts, "top_k", p->top_k));
    if (h && p->windows)
        json_object_set_new(h, "calibration",
                            json_pack("{s:o,s:I,s:I,s:I}", "text", jstr(p->text), "tokens",
                                      (json_int_t)p->tokens, "window", (json_int_t)p->window,
                                      "windows", (json_int_t)p->windows));
    json_t *route = json_array();
    for (int i = 0; route && i < p->n_route; i++) {
        const mk_prof_route_l *r = &p->route[i];
        json_array_append_new(
            route, json_pack("{s:i,s:I,s:o,s:o,s:o}", "layer", r->layer, "tokens",
                             (json_int_t)r->tokens, "freq", darray(r->freq, r->n_experts),
                             "mean_weight", darray(r->mean_w, r->n_experts), "mean_weight_sq",
                             darray(r->mean_w2, r->n_experts)));
    }
    if (h)
        json_object_set_new(h, "routing", route);
    else
        json_decref(route);
    return h;
}

static json_t *tensor_json(const mk_prof *p, const mk_prof_tensor *t) {
    json_t *o = json_pack("{s:s,s:s,s:s,s:[I,I],s:I,s:f}", "name", t->name, "source", t->source,
                          "kind", mk_prof_kind_name(t->kind), "shape", (json_int_t)t->rows,
                          (json_int_t)t->cols, "params", (json_int_t)t->params, "usage", t->usage);
    if (!o)
        return NULL;
    if (t->layer >= 0)
        json_object_set_new(o, "layer", json_integer(t->layer));
    if (t->expert >= 0)
        json_object_set_new(o, "expert", json_integer(t->expert));
    if (t->stack)
        json_object_set_new(o, "stack", json_string(t->stack));
    if (t->kind == MK_PROF_EXPERT || t->kind == MK_PROF_LINEAR) {
        json_t *b = json_array();
        double sens[MK_PROF_MAX_BITS];
        for (int k = 0; k < p->n_bits; k++) {
            json_array_append_new(b, json_integer((json_int_t)t->bytes[k]));
            sens[k] = t->usage * t->err[k];
        }
        json_object_set_new(o, "err", darray(t->err, p->n_bits));
        json_object_set_new(o, "bytes", b);
        json_object_set_new(o, "sensitivity", darray(sens, p->n_bits));
    } else {
        json_object_set_new(o, "fixed", json_pack("{s:i,s:I,s:f}", "bits", t->fixed_bits, "bytes",
                                                  (json_int_t)t->fixed_bytes, "err",
                                                  t->fixed_err));
    }
    return o;
}

/* One line per top-level section (one per layer for routing), then one per
 * tensor: greppable, diffable, and never a whole tree in memory. */
static mk_status write_value(FILE *f, const char *key, json_t *v, bool per_item, unsigned long mark,
                             const char *path) {
    char *s = NULL;
    bool ok = fprintf(f, " \"%s\": ", key) > 0;
    if (per_item && json_is_array(v)) {
        ok = ok && fputs("[\n", f) >= 0;
        for (size_t i = 0; ok && i < json_array_size(v); i++) {
            s = mk_json_dumps_checked(json_array_get(v, i), JSON_COMPACT | JSON_PRESERVE_ORDER, mark);
            if (!s) /* not a write error */
                return mk_err(MK_E_NOMEM, "%s: no memory to format item %zu of '%s'", path, i, key);
            ok = fprintf(f, "  %s%s\n", s, i + 1 < json_array_size(v) ? "," : "") > 0;
            free(s);
        }
        ok = ok && fputs(" ],\n", f) >= 0;
    } else if (ok) {
        s = mk_json_dumps_checked(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY, mark);
        if (!s)
            return mk_err(MK_E_NOMEM, "%s: no memory to format '%s'", path, key);
        ok = fprintf(f, "%s,\n", s) > 0;
        free(s);
    }
    return ok ? MK_OK : mk_err(MK_E_IO, "%s: write failed: %s", path, strerror(errno));
}

static mk_status write_all(const mk_prof *p, FILE *f, const char *path) {
    /* jansson reports running out of memory only through return values: a
     * key the header or a tensor failed to get would be missing from the
     * profile, so any allocation that fails meanwhile is MK_E_NOMEM */
    unsigned long mark = mk_json_mark();
    json_t *h = header_json(p);
    if (!h)
        return mk_err(MK_E_NOMEM, "%s: no memory to format the profile", path);
    mk_status st = fputs("{\n", f) >= 0 ? MK_OK : mk_err(MK_E_IO, "%s: write failed: %s", path, strerror(errno));
    const char *key;
    json_t *v;
    json_object_foreach(h, key, v) {
        if (st == MK_OK)
            st = write_value(f, key, v, !strcmp(key, "routing"), mark, path);
    }
    json_decref(h);
    MK_TRY(st);
    bool ok = fputs(" \"tensors\": [\n", f) >= 0;
    for (size_t i = 0; ok && i < p->n; i++) {
        json_t *t = tensor_json(p, &p->t[i]);
        char *ts = t ? mk_json_dumps_checked(t, JSON_COMPACT | JSON_PRESERVE_ORDER, mark) : NULL;
        json_decref(t);
        if (!ts)
            return mk_err(MK_E_NOMEM, "%s: no memory to format tensor '%s'", path, p->t[i].name);
        ok = fprintf(f, "  %s%s\n", ts, i + 1 < p->n ? "," : "") > 0;
        free(ts);
    }
    ok = ok && fputs(" ]\n}\n", f) >= 0 && fflush(f) == 0;
    return ok ? MK_OK : mk_err(MK_E_IO, "%s: write failed: %s", path, strerror(errno));
}

mk_status mk_prof_save(const mk_prof *p, const char *path) {
    mk_outfile f;
    MK_TRY(mk_outfile_open(&f, path, true));
    mk_status st = write_all(p, f.f, path);
    if (st != MK_OK) {
        mk_outfile_abort(&f);
        return st;
    }
    return mk_outfile_commit(&f);
}

/* ---- reader --------------------------------------------------------------- */

typedef struct rd {
    const char *path;
    char where[320]; /* "tensors[3] ('name')" or a section name */
    mk_status st;
} rd;

static mk_status bad(rd *r, const char *field, const char *expected) {
    if (r->st == MK_OK)
        r->st = mk_err(MK_E_FORMAT, "%s: %s: field '%s': expected %s", r->path, r->where, field,
                       expected);
    return r->st;
}

static bool get_int(rd *r, json_t *o, const char *k, bool required, long long lo, long long hi,
                    long long *out) {
    json_t *v = json_object_get(o, k);
    if (!v && !required)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        char e[96];
        snprintf(e, sizeof e, "an integer in [%lld, %lld]", lo, hi);
        bad(r, k, e);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

static bool get_num(rd *r, json_t *v, const char *k, double *out) {
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < 0) {
        bad(r, k, "a finite number >= 0");
        return false;
    }
    *out = json_number_value(v);
    return true;
}

static const char *get_str(rd *r, json_t *o, const char *k, bool required) {
    json_t *v = json_object_get(o, k);
    if (!v && !required)
        return NULL;
    if (!json_is_string(v) || !*json_string_value(v)) {
        bad(r, k, "a non-empty string");
        return NULL;
    }
    return json_string_value(v);
}

/* Array of n numbers >= 0 into out. */
static bool get_nums(rd *r, json_t *o, const char *k, int n, double *out) {
    json_t *a = json_object_get(o, k);
    if (!json_is_array(a) || (int)json_array_size(a) != n) {
        char e[64];
        snprintf(e, sizeof e, "an array of %d numbers", n);
        bad(r, k, e);
        return false;
    }
    for (int i = 0; i < n; i++)
        if (!get_num(r, json_array_get(a, (size_t)i), k, &out[i]))
            return false;
    return true;
}

static mk_status read_quant(rd *r, json_t *root, mk_prof *p) {
    snprintf(r->where, sizeof r->where, "quant");
    json_t *q = json_object_get(root, "quant"), *b = json_object_get(q, "bits");
    if (!json_is_object(q))
        return bad(r, "quant", "an object");
    if (!json_is_array(b) || json_array_size(b) < 1 || json_array_size(b) > MK_PROF_MAX_BITS)
        return bad(r, "bits", "an array of 1..6 affine widths");
    const char *mode = get_str(r, q, "mode", false);
    if (mode && strcmp(mode, "affine"))
        return bad(r, "mode", "\"affine\"");
    p->n_bits = (int)json_array_size(b);
    for (int k = 0; k < p->n_bits; k++) {
        json_t *v = json_array_get(b, (size_t)k);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 32)
            return bad(r, "bits", "an array of affine widths (2,3,4,5,6,8)");
        p->bits[k] = (int)json_integer_value(v);
    }
    int sorted[MK_PROF_MAX_BITS];
    memcpy(sorted, p->bits, sizeof sorted);
    if (mk_prof_check_bits(sorted, p->n_bits) != MK_OK ||
        memcmp(sorted, p->bits, (size_t)p->n_bits * sizeof(int)))
        return bad(r, "bits", "distinct affine widths (2,3,4,5,6,8) in ascending order");
    long long g = 0, rb = 8;
    if (!get_int(r, q, "group_size", true, 1, 1 << 20, &g) ||
        !get_int(r, q, "router_bits", false, 2, 8, &rb))
        return r->st;
    if (g != 32 && g != 64 && g != 128)
        return bad(r, "group_size", "32, 64 or 128");
    p->group = (int)g;
    p->router_bits = (int)rb;
    return MK_OK;
}

/* An informational string: any string (empty included), else NULL. */
static char *info_str(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? mk_prof_strdup(json_string_value(v)) : NULL;
}

/* Optional informational blocks: model, calibration. */
static mk_status read_info(rd *r, json_t *root, mk_prof *p) {
    json_t *m = json_object_get(root, "model"), *c = json_object_get(root, "calibration");
    snprintf(r->where, sizeof r->where, "model");
    if (json_is_object(m)) {
        p->model_type = info_str(m, "model_type");
        p->config_hash = info_str(m, "config_xxh3_64");
        p->arch = info_str(m, "arch");
        p->layout = info_str(m, "layout");
        p->model_dir = info_str(m, "dir");
        long long nl = 0, ne = 0, tk = 0;
        get_int(r, m, "num_layers", false, 0, 1 << 20, &nl);
        get_int(r, m, "num_experts", false, 0, 1 << 20, &ne);
        get_int(r, m, "top_k", false, 0, 1 << 20, &tk);
        p->num_layers = (int)nl;
        p->num_experts = (int)ne;
        p->top_k = (int)tk;
    }
    snprintf(r->where, sizeof r->where, "calibration");
    if (json_is_object(c)) {
        p->text = info_str(c, "text");
        long long tok = 0, win = 0, nw = 0;
        get_int(r, c, "tokens", false, 0, INT64_MAX, &tok);
        get_int(r, c, "window", false, 0, INT64_MAX, &win);
        get_int(r, c, "windows", false, 0, INT64_MAX, &nw);
        p->tokens = tok;
        p->window = win;
        p->windows = nw;
    }
    return r->st;
}

static mk_status read_routing(rd *r, json_t *root, mk_prof *p) {
    json_t *a = json_object_get(root, "routing");
    if (!a)
        return MK_OK;
    snprintf(r->where, sizeof r->where, "routing");
    if (!json_is_array(a))
        return bad(r, "routing", "an array");
    p->route = mk_calloc(json_array_size(a) + 1, sizeof *p->route);
    if (!p->route)
        return mk_err(MK_E_NOMEM, "%s: no memory for %zu routing layers", r->path, json_array_size(a));
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *o = json_array_get(a, i), *f = json_object_get(o, "freq");
        snprintf(r->where, sizeof r->where, "routing[%zu]", i);
        mk_prof_route_l *l = &p->route[p->n_route++];
        long long layer = 0, tokens = 0;
        if (!json_is_object(o))
            return bad(r, "routing", "an array of objects");
        if (!get_int(r, o, "layer", true, 0, 1 << 20, &layer) ||
            !get_int(r, o, "tokens", false, 0, INT64_MAX, &tokens))
            return r->st;
        if (!json_is_array(f) || json_array_size(f) < 1 || json_array_size(f) > (1u << 20))
            return bad(r, "freq", "a non-empty array of numbers");
        l->layer = (int)layer;
        l->tokens = tokens;
        l->n_experts = (int)json_array_size(f);
        l->freq = mk_calloc((size_t)l->n_experts, sizeof(double));
        l->mean_w = mk_calloc((size_t)l->n_experts, sizeof(double));
        l->mean_w2 = mk_calloc((size_t)l->n_experts, sizeof(double));
        if (!l->freq || !l->mean_w || !l->mean_w2)
            return mk_err(MK_E_NOMEM, "%s: routing layer %lld: no memory for the statistics of %d experts",
                          r->path, layer, l->n_experts);
        if (!get_nums(r, o, "freq", l->n_experts, l->freq) ||
            !get_nums(r, o, "mean_weight", l->n_experts, l->mean_w) ||
            (json_object_get(o, "mean_weight_sq") &&
             !get_nums(r, o, "mean_weight_sq", l->n_experts, l->mean_w2)))
            return r->st;
    }
    return MK_OK;
}

static bool parse_kind(const char *s, mk_prof_kind *k) {
    for (int i = 0; i <= MK_PROF_FLOAT; i++)
        if (s && !strcmp(s, mk_prof_kind_name((mk_prof_kind)i))) {
            *k = (mk_prof_kind)i;
            return true;
        }
    return false;
}

static mk_status read_tensor(rd *r, json_t *o, size_t i, mk_prof *p) {
    snprintf(r->where, sizeof r->where, "tensors[%zu]", i);
    if (!json_is_object(o))
        return bad(r, "tensors", "an array of objects");
    const char *name = get_str(r, o, "name", true);
    if (!name)
        return r->st;
    snprintf(r->where, sizeof r->where, "tensors[%zu] ('%.200s')", i, name);
    mk_prof_tensor t = {.name = name, .layer = -1, .expert = -1};
    long long v, rows = 0, cols = 0, layer = -1, expert = -1;
    const char *kind = get_str(r, o, "kind", true);
    if (!parse_kind(kind, &t.kind))
        return bad(r, "kind", "\"expert\", \"linear\", \"router\" or \"float\"");
    t.source = get_str(r, o, "source", false);
    t.stack = get_str(r, o, "stack", false);
    json_t *sh = json_object_get(o, "shape");
    if (!json_is_array(sh) || json_array_size(sh) != 2 ||
        !json_is_integer(json_array_get(sh, 0)) || !json_is_integer(json_array_get(sh, 1)) ||
        (rows = json_integer_value(json_array_get(sh, 0))) <= 0 ||
        (cols = json_integer_value(json_array_get(sh, 1))) <= 0 || rows > (1ll << 31) ||
        cols > (1ll << 31))
        return bad(r, "shape", "[out, in] of two positive integers");
    t.rows = rows;
    t.cols = cols;
    if (json_object_get(o, "params") &&
        (!get_int(r, o, "params", true, 0, INT64_MAX, &v) || v != rows * cols))
        return bad(r, "params", "the product of shape");
    if (!get_int(r, o, "layer", false, -1, 1 << 20, &layer) ||
        !get_int(r, o, "expert", false, -1, 1 << 20, &expert))
        return r->st;
    t.layer = (int)layer;
    t.expert = (int)expert;
    if (t.kind == MK_PROF_EXPERT || t.kind == MK_PROF_LINEAR) {
        double bytes[MK_PROF_MAX_BITS];
        if (!get_num(r, json_object_get(o, "usage"), "usage", &t.usage) ||
            !get_nums(r, o, "err", p->n_bits, t.err) ||
            !get_nums(r, o, "bytes", p->n_bits, bytes))
            return r->st;
        for (int k = 0; k < p->n_bits; k++) {
            if (bytes[k] < 1 || bytes[k] > 9e18 || bytes[k] != floor(bytes[k]))
                return bad(r, "bytes", "positive integers");
            t.bytes[k] = (uint64_t)bytes[k];
        }
    } else {
        json_t *f = json_object_get(o, "fixed");
        long long fb = 0, fy = 0;
        if (!json_is_object(f))
            return bad(r, "fixed", "an object {bits, bytes, err}");
        if (!get_int(r, f, "bits", true, 1, 64, &fb) ||
            !get_int(r, f, "bytes", true, 1, INT64_MAX, &fy) ||
            (json_object_get(f, "err") && !get_num(r, json_object_get(f, "err"), "err",
                                                   &t.fixed_err)))
            return r->st;
        t.fixed_bits = (int)fb;
        t.fixed_bytes = (uint64_t)fy;
    }
    if (mk_prof_find(p, name))
        return bad(r, "name", "a name not used by an earlier tensor");
    mk_status st = mk_prof_add(p, &t);
    if (st != MK_OK && st != MK_E_NOMEM)
        return r->st = mk_err_wrap(MK_E_FORMAT, "%s: %s", r->path, r->where);
    return st;
}

mk_status mk_prof_load(const char *path, mk_prof **out) {
    *out = NULL;
    json_error_t je;
    unsigned long jmark = mk_json_mark();
    json_t *root = mk_json_load_file(path, 0, &je, jmark);
    if (!root) {
        if (mk_json_nomem(&je, jmark)) /* not the file's fault */
            return mk_err(MK_E_NOMEM, "%s: no memory to parse its JSON", path);
        FILE *f = fopen(path, "rb");
        if (!f)
            return mk_err(MK_E_IO, "%s: cannot open: %s", path, strerror(errno));
        fclose(f);
        return mk_err(MK_E_FORMAT, "%s: line %d, column %d: %s", path, je.line, je.column,
                      mk_json_errtext(je.text));
    }
    rd r = {.path = path, .where = "top level", .st = MK_OK};
    mk_prof *p = mk_prof_alloc();
    if (!p) {
        json_decref(root);
        return mk_err(MK_E_NOMEM, "no memory for a profile");
    }
    const char *fmt = json_is_object(root) ? get_str(&r, root, "format", false) : NULL;
    long long ver = 0;
    json_t *ts = json_object_get(root, "tensors");
    if (!fmt || strcmp(fmt, "moekit-profile")) {
        r.st = MK_OK;
        bad(&r, "format", "\"moekit-profile\" (is this a profile written by moekit profile?)");
    } else if (get_int(&r, root, "version", true, 1, 1, &ver) && read_quant(&r, root, p) == MK_OK &&
               read_info(&r, root, p) == MK_OK && read_routing(&r, root, p) == MK_OK) {
        snprintf(r.where, sizeof r.where, "top level");
        if (!json_is_array(ts))
            bad(&r, "tensors", "an array");
        for (size_t i = 0; r.st == MK_OK && i < json_array_size(ts); i++) {
            mk_status st = read_tensor(&r, json_array_get(ts, i), i, p);
            if (st != MK_OK && r.st == MK_OK)
                r.st = st;
        }
    }
    json_decref(root);
    if (r.st != MK_OK) {
        mk_prof_free(p);
        return r.st;
    }
    *out = p;
    return MK_OK;
}

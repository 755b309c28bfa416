/* The quantization job (include/moekit/convert.h, mk_qjob): what the caller
 * asks for, how one module path resolves to bits/group/mode, and the
 * results and their JSON report.
 *
 * Resolution (cv_qjob_choose) applies, in order: the defaults; the mlx-lm
 * recipe (mlx_lm/quant/utils mixed_quant_predicate_builder: with L layers,
 * layer i gets the high bits iff i < L//8 or i >= 7*L//8 or
 * (i - L//8) % 3 == 2, and then only paths containing v_proj, v_a_proj,
 * v_b_proj or down_proj - substrings, exactly as mlx-lm tests them, so
 * DeepSeek's kv_b_proj counts; lm_head always high); exact entries; the
 * overrides in order; router protection; the group-divides-cols rule. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/quant_impl.h"
#include "core/alloc.h"
#include "core/json_err.h"
#include "io/os.h"

static const struct {
    const char *name;
    int low, high;
} g_recipes[] = {
    {"mixed_2_6", 2, 6},
    {"mixed_3_4", 3, 4},
    {"mixed_3_6", 3, 6},
    {"mixed_4_6", 4, 6},
};

mk_status mk_qjob_new(mk_qjob **out) {
    mk_qjob *q = mk_calloc(1, sizeof *q);
    if (!q || !(q->exmap = cv_map_new(64))) {
        free(q);
        *out = NULL;
        return mk_err(MK_E_NOMEM, "quantization job: no memory for its state");
    }
    q->mode = MK_QMODE_AFFINE;
    q->bits = 4;
    q->group = 64;
    q->method = MK_QALGO_RTN;
    q->damp = MK_QOPT_DAMP;
    *out = q;
    return MK_OK;
}

void cv_qjob_clear_results(mk_qjob *q) {
    for (size_t i = 0; i < q->nstrs; i++)
        free(q->strs[i]);
    free(q->strs);
    free(q->res);
    q->strs = NULL;
    q->nstrs = 0;
    q->res = NULL;
    q->nres = 0;
    memset(&q->tot, 0, sizeof q->tot);
}

void mk_qjob_free(mk_qjob *q) {
    if (!q)
        return;
    for (size_t i = 0; i < q->nov; i++) {
        free(q->ov[i].text);
        pcre2_code_free(q->ov[i].re);
    }
    free(q->ov);
    for (size_t i = 0; i < q->nex; i++)
        free(q->ex[i].path);
    free(q->ex);
    cv_map_free(q->exmap);
    mk_ckpt_close(q->stats);
    free(q->stats_path);
    cv_qjob_clear_results(q);
    free(q);
}

mk_status mk_qjob_set_method(mk_qjob *q, mk_qalgo method, const char *stats_path, double damp) {
    if (!mk_qalgo_name(method))
        return mk_err(MK_E_ARG, "--method: unknown quantization method %d", (int)method);
    if (mk_qalgo_needs_stats(method) && !stats_path)
        return mk_err(MK_E_ARG, "--method %s needs the input statistics of `moekit profile --hessian` (--hessian FILE)",
                      mk_qalgo_name(method));
    mk_ckpt_close(q->stats);
    q->stats = NULL;
    free(q->stats_path);
    q->stats_path = NULL;
    q->method = method;
    q->damp = damp < 0 ? MK_QOPT_DAMP : damp;
    if (!stats_path)
        return MK_OK;
    q->stats_path = cv_strdup(stats_path);
    if (!q->stats_path)
        return mk_err(MK_E_NOMEM, "no memory for the path %s", stats_path);
    mk_status st = mk_ckpt_open(stats_path, MK_CKPT_NO_MMAP, &q->stats);
    if (st != MK_OK)
        return mk_err_wrap(st, "--hessian %s", stats_path);
    return MK_OK;
}

mk_status mk_qjob_set_default(mk_qjob *q, mk_qmode mode, int bits, int group) {
    mk_qparams p;
    if (mk_quant_params(mode, bits, group, 0.0f, &p) != MK_OK)
        return mk_err_wrap(MK_E_ARG, "--mode/--bits/--group-size");
    if (q->recipe[0] && p.mode != MK_QMODE_AFFINE)
        return mk_err(MK_E_ARG, "--recipe %s is affine; it cannot be combined with --mode %s", q->recipe,
                      mk_qmode_name(p.mode));
    q->mode = p.mode;
    q->bits = p.bits;
    q->group = p.group;
    return MK_OK;
}

mk_status mk_qjob_set_recipe(mk_qjob *q, const char *name) {
    for (size_t i = 0; i < sizeof g_recipes / sizeof g_recipes[0]; i++)
        if (strcmp(name, g_recipes[i].name) == 0) {
            if (q->mode != MK_QMODE_AFFINE)
                return mk_err(MK_E_ARG, "--recipe %s is affine; it cannot be combined with --mode %s", name,
                              mk_qmode_name(q->mode));
            snprintf(q->recipe, sizeof q->recipe, "%s", name);
            q->rlow = g_recipes[i].low;
            q->rhigh = g_recipes[i].high;
            q->bits = q->rlow; /* the config's default: most modules take the low bits */
            return MK_OK;
        }
    return mk_err(MK_E_ARG, "--recipe '%s': expected mixed_2_6, mixed_3_4, mixed_3_6 or mixed_4_6", name);
}

static bool parse_int(const char *s, size_t n, int *out) {
    if (n == 0 || n > 6)
        return false;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* "BITS[:GROUP[:MODE]]" into *ov, defaults from q. */
static mk_status parse_spec(const mk_qjob *q, const char *rule, const char *spec, cv_qov *ov) {
    const char *c1 = strchr(spec, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    size_t nb = c1 ? (size_t)(c1 - spec) : strlen(spec);
    if ((nb == 5 && strncmp(spec, "float", 5) == 0) || (nb == 1 && spec[0] == '0')) {
        if (c1)
            return mk_err(MK_E_ARG, "--override '%s': 'float' takes no group size or mode", rule);
        ov->to_float = true;
        return MK_OK;
    }
    if (!parse_int(spec, nb, &ov->bits))
        return mk_err(MK_E_ARG, "--override '%s': expected REGEX=BITS[:GROUP[:MODE]] with BITS a number or 'float'",
                      rule);
    ov->mode = q->mode;
    if (c2 && !mk_qmode_parse(c2 + 1, &ov->mode))
        return mk_err(MK_E_ARG, "--override '%s': mode '%s': expected affine, mxfp4, mxfp8 or nvfp4", rule, c2 + 1);
    ov->group = ov->mode == q->mode ? q->group : 0;
    if (c1) {
        size_t ng = c2 ? (size_t)(c2 - c1 - 1) : strlen(c1 + 1);
        if (ng > 0 && !parse_int(c1 + 1, ng, &ov->group))
            return mk_err(MK_E_ARG, "--override '%s': group size '%.*s' is not a number", rule, (int)ng, c1 + 1);
    }
    mk_qparams p;
    if (mk_quant_params(ov->mode, ov->bits, ov->group, 0.0f, &p) != MK_OK)
        return mk_err_wrap(MK_E_ARG, "--override '%s'", rule);
    ov->bits = p.bits;
    ov->group = p.group;
    return MK_OK;
}

mk_status mk_qjob_add_override(mk_qjob *q, const char *rule) {
    const char *eq = strrchr(rule, '=');
    if (!eq || eq == rule)
        return mk_err(MK_E_ARG, "--override '%s': expected REGEX=BITS[:GROUP[:MODE]]", rule);
    cv_qov ov;
    memset(&ov, 0, sizeof ov);
    MK_TRY(parse_spec(q, rule, eq + 1, &ov));
    int err;
    PCRE2_SIZE eoff;
    ov.re = pcre2_compile((PCRE2_SPTR)rule, (PCRE2_SIZE)(eq - rule), 0, &err, &eoff, NULL);
    if (!ov.re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        return mk_err(MK_E_ARG, "--override '%s': the regex does not compile at offset %zu: %s", rule,
                      (size_t)eoff, (const char *)msg);
    }
    cv_qov *nv = mk_realloc(q->ov, (q->nov + 1) * sizeof *nv);
    ov.text = cv_strdup(rule);
    if (!nv || !ov.text) {
        if (nv)
            q->ov = nv;
        pcre2_code_free(ov.re);
        free(ov.text);
        return mk_err(MK_E_NOMEM, "--override '%s': no memory to record it", rule);
    }
    q->ov = nv;
    q->ov[q->nov++] = ov;
    return MK_OK;
}

mk_status mk_qjob_set_module(mk_qjob *q, const char *path, mk_qmode mode, int bits, int group) {
    cv_qexact e = {NULL, bits != 0, mode, bits, group};
    if (bits != 0) {
        mk_qparams p;
        if (mk_quant_params(mode, bits, group, 0.0f, &p) != MK_OK)
            return mk_err_wrap(MK_E_ARG, "module '%s'", path);
        e.bits = p.bits;
        e.group = p.group;
    }
    uintptr_t have = (uintptr_t)cv_map_get(q->exmap, path);
    if (have) {
        free(q->ex[have - 1].path);
        e.path = cv_strdup(path);
        q->ex[have - 1] = e;
        return e.path ? MK_OK : mk_err(MK_E_NOMEM, "module '%s': no memory to record its allocation", path);
    }
    if (q->nex == q->exc) {
        size_t nc = q->exc ? 2 * q->exc : 256;
        cv_qexact *ne = mk_realloc(q->ex, nc * sizeof *ne);
        if (!ne)
            return mk_err(MK_E_NOMEM, "module '%s': no memory for a table of %zu allocations", path, nc);
        q->ex = ne;
        q->exc = nc;
    }
    e.path = cv_strdup(path);
    if (!e.path)
        return mk_err(MK_E_NOMEM, "module '%s': no memory to record its allocation", path);
    q->ex[q->nex++] = e;
    if (!cv_map_put(q->exmap, e.path, (void *)(uintptr_t)q->nex))
        return mk_err(MK_E_NOMEM, "module '%s': no memory to index its allocation", path);
    return MK_OK;
}

void mk_qjob_allow_nonfinite(mk_qjob *q, bool allow) { q->allow_nonfinite = allow; }

/* ------------------------------------------------------------ choice */

static bool has(const char *path, const char *s) { return strstr(path, s) != NULL; }

/* mlx-lm's layer index of a module path: the number after "layers.", else 0. */
static int layer_of(const char *path) {
    const char *l = strstr(path, "layers.");
    if (!l || (l != path && l[-1] != '.'))
        return 0;
    return atoi(l + 7);
}

static bool ov_match(const cv_qov *ov, const char *s) {
    if (!s)
        return false;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(ov->re, NULL);
    if (!md)
        return false;
    int rc = pcre2_match(ov->re, (PCRE2_SPTR)s, strlen(s), 0, 0, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

static const cv_qexact *exact(const mk_qjob *q, const char *path) {
    uintptr_t i = path ? (uintptr_t)cv_map_get(q->exmap, path) : 0;
    return i ? &q->ex[i - 1] : NULL;
}

static void set(cv_qchoice *c, bool quant, mk_qmode mode, int bits, int group) {
    c->quant = quant;
    c->mode = mode;
    c->bits = bits;
    c->group = group;
}

void cv_qjob_choose(const mk_qjob *q, const cv_qctx *x, const char *path, const char *alt, int64_t cols,
                    cv_qchoice *c) {
    memset(c, 0, sizeof *c);
    set(c, true, q->mode, q->bits, q->group);
    if (q->recipe[0]) {
        int L = x->num_layers, i = layer_of(path);
        bool more = i < L / 8 || i >= 7 * L / 8 || (i - L / 8) % 3 == 2;
        bool hi = (more && (has(path, "v_proj") || has(path, "v_a_proj") || has(path, "v_b_proj") ||
                            has(path, "down_proj"))) ||
                  has(path, "lm_head");
        set(c, true, MK_QMODE_AFFINE, hi ? q->rhigh : q->rlow, q->group);
    }
    const cv_qexact *e = exact(q, path);
    if (!e)
        e = exact(q, alt);
    if (e)
        set(c, e->quant, e->mode, e->bits, e->group);
    for (size_t k = 0; k < q->nov; k++)
        if (ov_match(&q->ov[k], path) || ov_match(&q->ov[k], alt))
            set(c, !q->ov[k].to_float, q->ov[k].mode, q->ov[k].bits, q->ov[k].group);
    if (!c->quant)
        c->note = "float: asked for";
    if (!x->bare) {
        size_t n = strlen(path);
        bool gate = (n >= 8 && strcmp(path + n - 8, "mlp.gate") == 0 && (n == 8 || path[n - 9] == '.')) ||
                    (n >= 21 && strcmp(path + n - 21, "block_sparse_moe.gate") == 0 &&
                     (n == 21 || path[n - 22] == '.')); /* minimax_m2 */
        bool sgate = cv_ends_with(path, "shared_expert_gate");
        /* gpt_oss's router is a Linear (with a bias) at 8-bit g64, as mlx-lm's quant_predicate has it */
        gate = gate || (x->arch == MK_ARCH_GPT_OSS && cv_ends_with(path, ".mlp.router"));
        if (gate && (x->arch == MK_ARCH_DEEPSEEK_V3 || x->arch == MK_ARCH_GLM4_MOE)) {
            set(c, false, MK_QMODE_AFFINE, 0, 0);
            c->note = x->arch == MK_ARCH_GLM4_MOE ? "float: glm4_moe's router is not a Linear in mlx-lm (MoEGate)"
                                                  : "float: deepseek_v3's router is not a Linear in mlx-lm (MoEGate)";
            return;
        }
        if (gate || sgate) {
            set(c, true, MK_QMODE_AFFINE, 8, 64);
            c->router = true;
            c->note = "router: kept at 8-bit g64";
        }
    }
    if (c->quant && (cols <= 0 || cols % c->group != 0)) {
        c->quant = false;
        c->note = "float: the group size does not divide the input dim";
    }
}

bool cv_qchoice_same(const cv_qchoice *a, const cv_qchoice *b) {
    if (a->quant != b->quant)
        return false;
    return !a->quant || (a->mode == b->mode && a->bits == b->bits && a->group == b->group);
}

const char *cv_qjob_keep(mk_qjob *q, const char *s) {
    if (!s)
        return NULL;
    char **ns = mk_realloc(q->strs, (q->nstrs + 1) * sizeof *ns);
    if (!ns)
        return NULL;
    q->strs = ns;
    char *d = cv_strdup(s);
    if (d)
        q->strs[q->nstrs++] = d;
    return d;
}

/* ----------------------------------------------------------- results */

size_t mk_qjob_count(const mk_qjob *q) { return q ? q->nres : 0; }

const mk_qjob_module *mk_qjob_module_at(const mk_qjob *q, size_t i) {
    return q && i < q->nres ? &q->res[i] : NULL;
}

const mk_qjob_totals *mk_qjob_totals_of(const mk_qjob *q) { return q ? &q->tot : NULL; }

static json_t *num_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *module_json(const mk_qjob_module *m) {
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(m->path));
    json_object_set_new(o, "source", m->source ? json_string(m->source) : json_null());
    json_object_set_new(o, "quantized", json_boolean(m->quantized));
    if (m->quantized) {
        json_object_set_new(o, "mode", json_string(mk_qmode_name(m->mode)));
        json_object_set_new(o, "bits", json_integer(m->bits));
        json_object_set_new(o, "group_size", json_integer(m->group));
    }
    json_object_set_new(o, "rows", json_integer(m->rows));
    json_object_set_new(o, "cols", json_integer(m->cols));
    json_object_set_new(o, "params", json_integer((json_int_t)m->params));
    json_object_set_new(o, "bytes", json_integer((json_int_t)m->bytes));
    json_object_set_new(o, "bpw", num_or_null(m->params ? 8.0 * (double)m->bytes / (double)m->params : NAN));
    json_object_set_new(o, "rel_err", num_or_null(m->rel_err));
    json_object_set_new(o, "max_abs_err", num_or_null(m->max_abs_err));
    if (m->nonfinite)
        json_object_set_new(o, "nonfinite", json_integer((json_int_t)m->nonfinite));
    json_object_set_new(o, "note", m->note ? json_string(m->note) : json_null());
    return o;
}

mk_status mk_qjob_write_report(const mk_qjob *q, const char *path, const char *extra_json) {
    /* jansson reports running out of memory only through return values: an
     * entry it failed to add would silently be missing from the report */
    unsigned long mark = mk_json_mark();
    json_t *root = NULL;
    if (extra_json) {
        char *wrapped = cv_printf("{%s}", extra_json);
        json_error_t je;
        root = wrapped ? mk_json_loads(wrapped, 0, &je, mark) : NULL;
        free(wrapped);
    }
    if (!root)
        root = json_object();
    json_t *d = json_object();
    json_object_set_new(d, "mode", json_string(mk_qmode_name(q->mode)));
    json_object_set_new(d, "bits", json_integer(q->bits));
    json_object_set_new(d, "group_size", json_integer(q->group));
    json_object_set_new(d, "recipe", q->recipe[0] ? json_string(q->recipe) : json_null());
    json_object_set_new(root, "defaults", d);
    json_t *ovs = json_array();
    for (size_t i = 0; i < q->nov; i++)
        json_array_append_new(ovs, json_string(q->ov[i].text));
    json_object_set_new(root, "overrides", ovs);
    json_t *mods = json_array();
    for (size_t i = 0; i < q->nres; i++)
        json_array_append_new(mods, module_json(&q->res[i]));
    json_object_set_new(root, "modules", mods);
    const mk_qjob_totals *t = &q->tot;
    json_t *tj = json_object();
    json_object_set_new(tj, "modules_quantized", json_integer((json_int_t)t->n_quantized));
    json_object_set_new(tj, "modules_float", json_integer((json_int_t)t->n_float));
    json_object_set_new(tj, "params_quantized", json_integer((json_int_t)t->params_q));
    json_object_set_new(tj, "bytes_quantized", json_integer((json_int_t)t->bytes_q));
    json_object_set_new(tj, "bpw_quantized", num_or_null(t->bpw_q));
    json_object_set_new(tj, "params_linear", json_integer((json_int_t)t->params_lin));
    json_object_set_new(tj, "bytes_linear", json_integer((json_int_t)t->bytes_lin));
    json_object_set_new(tj, "bpw_linear", num_or_null(t->bpw_lin));
    json_object_set_new(tj, "params_all", json_integer((json_int_t)t->params_all));
    json_object_set_new(tj, "bytes_all", json_integer((json_int_t)t->bytes_all));
    json_object_set_new(tj, "bpw_all", num_or_null(t->bpw_all));
    json_object_set_new(tj, "rel_err", num_or_null(t->rel_err));
    json_object_set_new(root, "totals", tj);
    char *js = mk_json_dumps_checked(root, JSON_INDENT(2), mark);
    json_decref(root);
    if (!js || mk_alloc_failures() != mark) {
        free(js);
        return mk_err(MK_E_NOMEM, "%s: no memory to format the quantization report of %zu modules", path,
                      q->nres);
    }
    mk_status s = mk_os_write_file_atomic(path, js, strlen(js));
    free(js);
    return s;
}

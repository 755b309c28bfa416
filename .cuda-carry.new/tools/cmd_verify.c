/* moekit verify: compare two checkpoints tensor by tensor, or unit by unit
 * across layouts.
 *
 * By name (A and B hold the same tensor names, companions included, or
 * either is a lone file): logical tensors (quantized modules grouped, see qview.h) are
 * matched by name. Same storage on both sides: the bytes must be identical
 * (xxh3-128). Different storage (bf16 vs f32, quantized vs float, FP8 vs
 * bf16): both are dequantized row by row and compared numerically (max
 * |b-a|, relative L2 ||b-a||/||a||: mk_diff, as every verification), which
 * must not exceed --tolerance. With
 * --tolerance > 0, same-storage tensors whose bytes differ are also judged
 * numerically. Memory: two rows of float32 at a time.
 *
 * By layout (the names differ between two checkpoint directories, or
 * --by-layout): mk_conv_xverify (src/verify/xverify.c) reads both as
 * convert sources and proves B is A written in B's layout and dtype, unit
 * by canonical unit; this file only prints its verdicts. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_flags.h"
#include "cli_esc.h"
#include "cmd.h"
#include "io/os.h"
#include "moekit/config.h"
#include "moekit/convert.h"
#include "moekit/verify.h"
#include "moekit/kernels.h"
#include "moekit/qview.h"
#include "moekit/st.h"
#include "moekit/tensor_hash.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: moekit verify A B [--tolerance X] [--by-layout] [--threads N] [--json] [--quiet] [--stats]\n\n"
            "Compare checkpoints A and B. Two modes, chosen by the tensor names:\n\n"
            "By name (A and B hold the same tensor names, companions such as scales included, or\n"
            "either is a lone .safetensors file):\n"
            "  - every logical tensor must exist in both (quantized modules count as one);\n"
            "  - same dtype and shape: bytes must be identical (xxh3-128);\n"
            "  - different storage (e.g. bf16 vs f32, MLX 4-bit vs bf16, FP8 vs bf16): both are\n"
            "    dequantized to float32 and the relative L2 error ||B-A||/||A|| must be <= X.\n\n"
            "By layout (the names differ between two checkpoint directories with config.json, e.g.\n"
            "HF vs its `convert --to mlx` output, per-expert vs fused; or --by-layout): B must be A\n"
            "written in B's layout and dtype. Both are read the way convert reads a source and\n"
            "matched by canonical unit: each HF text tensor (model.layers.3.self_attn.q_proj.weight)\n"
            "and each routed expert's projection (model.layers.3.mlp.experts.17.down_proj.weight),\n"
            "whether stored per expert, fused (gate_up_proj) or stacked (switch_mlp).\n"
            "  - B float: A's unit is converted as convert would write B (re-encoded or dequantized\n"
            "    to B's dtype; zero-centred norms +1 HF->MLX, -1 MLX->HF) and must give B's bytes\n"
            "    exactly; with X > 0, rel L2 ||B-A||/||A|| <= X is accepted instead;\n"
            "  - B quantized (MLX affine/mxfp/nvfp, FP8, INT4): both are dequantized to float32 and\n"
            "    rel L2 must be <= X, so these need an explicit --tolerance;\n"
            "  - NaN must sit at the same positions; shapes must agree (size-1 dims ignored, so\n"
            "    conv1d (C,1,K) and (C,K,1) compare flat);\n"
            "  - a unit on one side only fails, except the vision tower and multi-token-prediction\n"
            "    weights (convert --to mlx drops them), lm_head where the other side ties embeddings\n"
            "    and rotary inv_freq buffers: those are reported as skipped.\n\n"
            "  --tolerance X  allowed relative L2 error (default 0: exact). By name, with X > 0,\n"
            "                 tensors of equal storage whose bytes differ are judged numerically too\n"
            "  --by-layout    compare by canonical unit even when the tensor names are the same\n"
            "  --threads N    worker threads of the by-layout comparison (default: all CPUs)\n"
            "  --json         one JSON object with a per-tensor (per-unit) list and the summary\n"
            "  --quiet        print only failures and the summary\n"
            "  --stats        print the mode and the peak resident memory (VmHWM) on stderr\n\n"
            "config.json (where there is one) is read too: it must parse, agree with its own\n"
            "tensors (quantization bits and group vs packed shapes, FP8 block grids), and A's and\n"
            "B's must describe the same model (every field the math reads: dimensions, RoPE,\n"
            "norms, routing, layer schedule; quantization and dtype may differ).\n\n"
            "Exit status: 0 all tensors within tolerance; 1 differences found (some tensors differ\n"
            "or are missing); 2 bad input (unreadable checkpoint or config.json, a config\n"
            "contradicting its tensors, A and B configs describing different models or\n"
            "architectures); 3 the comparison itself failed (out of memory, internal error): no\n"
            "verdict. Like every command, a report that cannot be written to stdout exits 1.\n"
            "Memory: by name, hashing streams from the mmap and numeric comparison holds two rows;\n"
            "by layout, each thread holds chunks of 256K values (about 10 MiB; a quantized row is\n"
            "never split), never a whole tensor.\n");
}

typedef struct vstats {
    mk_diff d; /* B against A (kernels.h: the accumulator of every verification) */
} vstats;

static mk_status compare_numeric(const mk_ckpt *a, const mk_config *ca, const mk_ckpt *b,
                                 const mk_config *cb, const char *name, vstats *st) {
    mk_qview va, vb;
    memset(st, 0, sizeof *st);
    MK_TRY(mk_qview_open(a, ca, name, &va));
    mk_status s = mk_qview_open(b, cb, name, &vb);
    if (s != MK_OK) {
        mk_qview_close(&va);
        return s;
    }
    if (va.rows * va.cols != vb.rows * vb.cols || va.cols != vb.cols) {
        s = mk_err(MK_E_MISMATCH, "tensor '%s': logical shapes differ (%lld x %lld vs %lld x %lld)", name,
                   (long long)va.rows, (long long)va.cols, (long long)vb.rows, (long long)vb.cols);
    }
    float *ra = s == MK_OK ? malloc((size_t)(va.cols ? va.cols : 1) * sizeof(float)) : NULL;
    float *rb = s == MK_OK ? malloc((size_t)(va.cols ? va.cols : 1) * sizeof(float)) : NULL;
    if (s == MK_OK && (!ra || !rb))
        s = mk_err(MK_E_NOMEM, "out of memory");
    for (int64_t r = 0; s == MK_OK && r < va.rows; r++) {
        s = mk_qview_row(a, &va, r, ra);
        if (s == MK_OK)
            s = mk_qview_row(b, &vb, r, rb);
        if (s == MK_OK)
            mk_diff_add(&st->d, ra, rb, (size_t)va.cols);
    }
    free(ra);
    free(rb);
    mk_qview_close(&va);
    mk_qview_close(&vb);
    return s;
}

static bool same_storage(const mk_ckpt *a, const mk_ckpt *b, const mk_tensor_info *ta, const mk_tensor_info *tb) {
    if (ta->dtype != tb->dtype || ta->ndim != tb->ndim)
        return false;
    for (int i = 0; i < ta->ndim; i++)
        if (ta->shape[i] != tb->shape[i])
            return false;
    return mk_qview_is_companion(a, ta->name) == mk_qview_is_companion(b, tb->name);
}

static int cmp_name(const void *x, const void *y) {
    return strcmp((*(const mk_tensor_info *const *)x)->name, (*(const mk_tensor_info *const *)y)->name);
}

/* config.json beside checkpoint c: absent is fine (a lone .safetensors
 * file), unreadable or malformed is bad input, never silently skipped.
 * *has says whether there was one. */
static mk_status load_cfg(const mk_ckpt *c, mk_config *cfg, bool *has) {
    memset(cfg, 0, sizeof *cfg);
    *has = false;
    char *p = mk_path_join(mk_ckpt_dir(c), "config.json");
    if (!p)
        return mk_err(MK_E_NOMEM, "out of memory");
    mk_status s = MK_OK;
    if (mk_os_exists(p)) {
        *has = true;
        s = mk_config_load(p, cfg);
    }
    free(p);
    return s;
}

/* A checkpoint's config must agree with its own tensors: every quantized
 * module (MLX scales, FP8 scale_inv) is opened through its config entry,
 * which checks bits and group against the packed shape and the FP8 block
 * grid, even where A's and B's bytes are identical and would otherwise never
 * be read through the config. */
static mk_status check_side(const mk_ckpt *c, const mk_config *cfg, const mk_tensor_info **l, size_t k,
                            const char *side) {
    for (size_t i = 0; i < k; i++) {
        const char *name = l[i]->name;
        size_t bl = strlen(name);
        if (bl > 7 && !strcmp(name + bl - 7, ".weight"))
            bl -= 7;
        char sc[1100], si[1100];
        snprintf(sc, sizeof sc, "%.*s.scales", (int)bl, name);
        snprintf(si, sizeof si, "%s_scale_inv", name);
        if (!mk_ckpt_find(c, sc) && !mk_ckpt_find(c, si))
            continue;
        mk_qview v;
        mk_status s = mk_qview_open(c, cfg, name, &v);
        mk_qview_close(&v);
        if (s != MK_OK)
            return mk_err_wrap(s == MK_E_NOMEM ? s : MK_E_MISMATCH, "%s (%s): its config.json "
                               "contradicts its tensors", side, mk_ckpt_dir(c));
    }
    return MK_OK;
}

/* verify's exit codes: 0 pass, 1 differences found, 2 bad input, 3 the
 * comparison itself failed (out of memory, a moekit bug): a caller can tell
 * "B is not A" from "could not tell". */
static int verify_fail(mk_status s) {
    int rc = mk_cli_fail(s);
    return rc == 1 ? 3 : rc;
}

/* Same names on both sides: today's tensor-by-tensor comparison over the
 * sorted logical tensors la / lb. Returns the exit code. */
static int by_name(const mk_ckpt *a, const mk_config *ca, const mk_tensor_info **la, size_t ka, const mk_ckpt *b,
                   const mk_config *cb, const mk_tensor_info **lb, size_t kb, double tol, bool json, bool quiet) {
    mk_status s = MK_OK;
    json_t *jl = json_array();
    size_t n_ident = 0, n_close = 0, n_fail = 0, n_missing = 0;
    size_t i = 0, j = 0;
    while (s == MK_OK && (i < ka || j < kb)) {
        int d = i >= ka ? 1 : j >= kb ? -1 : strcmp(la[i]->name, lb[j]->name);
        const char *name = d <= 0 ? la[i]->name : lb[j]->name;
        const char *verdict;
        vstats st = {0};
        bool numeric = false;
        if (d != 0) {
            verdict = d < 0 ? "missing in B" : "missing in A";
            n_missing++;
            if (d < 0)
                i++;
            else
                j++;
        } else {
            const mk_tensor_info *ta = la[i++], *tb = lb[j++];
            bool same = same_storage(a, b, ta, tb);
            bool ident = false;
            if (same && ta->numel > 0) {
                mk_hash128 ha, hb;
                s = mk_tensor_hash(a, ta, &ha);
                if (s == MK_OK)
                    s = mk_tensor_hash(b, tb, &hb);
                ident = s == MK_OK && ha.hi == hb.hi && ha.lo == hb.lo;
                /* companions (scales, biases, scale_inv) of a quantized module must match too */
                char comp[3][1100];
                size_t bl = strlen(name);
                if (bl > 7 && strcmp(name + bl - 7, ".weight") == 0)
                    bl -= 7;
                snprintf(comp[0], sizeof comp[0], "%.*s.scales", (int)bl, name);
                snprintf(comp[1], sizeof comp[1], "%.*s.biases", (int)bl, name);
                snprintf(comp[2], sizeof comp[2], "%s_scale_inv", name);
                for (int k = 0; ident && s == MK_OK && k < 3; k++) {
                    const mk_tensor_info *xa = mk_ckpt_find(a, comp[k]), *xb = mk_ckpt_find(b, comp[k]);
                    if (!xa && !xb)
                        continue;
                    if (!xa || !xb) {
                        ident = false;
                        break;
                    }
                    s = mk_tensor_hash(a, xa, &ha);
                    if (s == MK_OK)
                        s = mk_tensor_hash(b, xb, &hb);
                    ident = s == MK_OK && ha.hi == hb.hi && ha.lo == hb.lo;
                }
            } else if (same)
                ident = true; /* empty tensors */
            if (s != MK_OK)
                break;
            if (ident) {
                verdict = "identical";
                n_ident++;
            } else if (same && tol == 0) {
                /* informative numbers, but a byte difference is a failure */
                mk_status ns = compare_numeric(a, ca, b, cb, name, &st);
                numeric = ns == MK_OK;
                verdict = "bytes differ";
                n_fail++;
            } else {
                s = compare_numeric(a, ca, b, cb, name, &st);
                if (s != MK_OK)
                    break;
                numeric = true;
                double rel = mk_diff_rel(&st.d);
                if (!st.d.bad && rel <= tol) {
                    verdict = rel == 0 ? "equal values" : "within tolerance";
                    n_close++;
                } else {
                    verdict = st.d.bad ? "non-finite mismatch" : "exceeds tolerance";
                    n_fail++;
                }
            }
        }
        bool bad = strcmp(verdict, "identical") && strcmp(verdict, "equal values") && strcmp(verdict, "within tolerance");
        double rel = numeric ? mk_diff_rel(&st.d) : 0;
        if (json) {
            json_t *o = json_pack("{s:s,s:s}", "name", name, "result", verdict);
            if (numeric) {
                json_object_set_new(o, "max_abs", json_real(st.d.max_abs));
                json_object_set_new(o, "rel_l2", json_real(isfinite(rel) ? rel : 1e300));
            }
            json_array_append_new(jl, o);
        } else if (bad || !quiet) {
            if (numeric)
                printf("%-14s %s  max_abs=%.3g rel_l2=%.3g\n", bad ? "FAIL" : "ok", mk_cli_esc(name), st.d.max_abs,
                       rel);
            else
                printf("%-14s %s  (%s)\n", bad ? "FAIL" : "ok", mk_cli_esc(name), verdict);
        }
    }
    int rc;
    if (s != MK_OK) {
        rc = verify_fail(s);
    } else {
        bool pass = n_fail == 0 && n_missing == 0;
        if (json) {
            json_t *root = json_pack("{s:o,s:{s:I,s:I,s:I,s:I,s:f,s:b}}", "tensors", jl, "summary", "identical",
                                     (json_int_t)n_ident, "within_tolerance", (json_int_t)n_close, "failed",
                                     (json_int_t)n_fail, "missing", (json_int_t)n_missing, "tolerance", tol,
                                     "pass", pass);
            jl = NULL;
            char *txt = json_dumps(root, JSON_INDENT(1));
            puts(txt ? txt : "{}");
            free(txt);
            json_decref(root);
        } else {
            printf("verify: %zu identical, %zu within tolerance %.3g, %zu differ, %zu missing -> %s\n", n_ident,
                   n_close, tol, n_fail, n_missing, pass ? "PASS" : "FAIL");
        }
        rc = pass ? 0 : 1;
    }
    json_decref(jl);
    return rc;
}

/* ---------------------------------------------------------- by layout */

typedef struct lay_out {
    bool json, quiet;
    json_t *units; /* --json: the per-unit list */
} lay_out;

static bool unit_failed(const mk_xverify_unit *u) {
    return u->result == MK_XV_DIFFERS || u->result == MK_XV_ONLY_A || u->result == MK_XV_ONLY_B;
}

/* Why a one-sided unit is accepted, in words. */
static const char *skip_words(mk_xverify_skip k) {
    switch (k) {
    case MK_XV_SKIP_VISION: return "vision tower";
    case MK_XV_SKIP_MTP: return "multi-token prediction";
    case MK_XV_SKIP_TIED_HEAD: return "lm_head, tied to embed_tokens on the other side";
    case MK_XV_SKIP_BUFFER: return "rotary inv_freq buffer";
    default: return "?";
    }
}

static json_t *side_json(const mk_xverify_side *s) {
    return s->tensor ? json_pack("{s:s,s:s}", "tensor", s->tensor, "form", s->form) : json_null();
}

static void unit_json(lay_out *p, const mk_xverify_unit *u) {
    json_t *o = json_pack("{s:s,s:s,s:b,s:o,s:o}", "name", u->name, "result", mk_xverify_result_name(u->result),
                          "expert", u->expert, "a", side_json(&u->a), "b", side_json(&u->b));
    if (!isnan(u->rel_l2)) {
        json_object_set_new(o, "max_abs", json_real(u->max_abs));
        json_object_set_new(o, "rel_l2", json_real(isfinite(u->rel_l2) ? u->rel_l2 : 1e300));
        json_object_set_new(o, "nonfinite_mismatch", json_integer((json_int_t)u->nonfinite_mismatch));
    }
    if (u->result == MK_XV_SKIPPED)
        json_object_set_new(o, "reason", json_string(mk_xverify_skip_name(u->skip)));
    if (u->note)
        json_object_set_new(o, "note", json_string(u->note));
    json_array_append_new(p->units, o);
}

/* One line per unit (failures only with --quiet), as the by-name mode
 * prints them; failures name both sides' tensors. */
static mk_status print_unit(void *ctx, const mk_xverify_unit *u) {
    lay_out *p = ctx;
    bool bad = unit_failed(u);
    if (p->json) {
        unit_json(p, u);
        return MK_OK;
    }
    if (!bad && p->quiet)
        return MK_OK;
    const char *tag = bad ? "FAIL" : u->result == MK_XV_SKIPPED ? "skip" : "ok";
    switch (u->result) {
    case MK_XV_IDENTICAL: printf("%-14s %s  (identical)\n", tag, mk_cli_esc(u->name)); break;
    case MK_XV_WITHIN_TOL:
        printf("%-14s %s  max_abs=%.3g rel_l2=%.3g\n", tag, mk_cli_esc(u->name), u->max_abs, u->rel_l2);
        break;
    case MK_XV_DIFFERS:
        if (u->note)
            printf("%-14s %s  (%s)", tag, mk_cli_esc(u->name), mk_cli_esc(u->note));
        else
            printf("%-14s %s  max_abs=%.3g rel_l2=%.3g nonfinite_mismatch=%llu", tag, mk_cli_esc(u->name), u->max_abs,
                   u->rel_l2, (unsigned long long)u->nonfinite_mismatch);
        printf("  A: %s %s | B: %s %s\n", mk_cli_esc(u->a.tensor), mk_cli_esc(u->a.form), mk_cli_esc(u->b.tensor),
               mk_cli_esc(u->b.form));
        break;
    case MK_XV_ONLY_A:
        printf("%-14s %s  (only in A: %s %s)\n", tag, mk_cli_esc(u->name), mk_cli_esc(u->a.tensor),
               mk_cli_esc(u->a.form));
        break;
    case MK_XV_ONLY_B:
        printf("%-14s %s  (only in B: %s %s)\n", tag, mk_cli_esc(u->name), mk_cli_esc(u->b.tensor),
               mk_cli_esc(u->b.form));
        break;
    case MK_XV_SKIPPED:
        printf("%-14s %s  (only in %s: %s, not compared)\n", tag, mk_cli_esc(u->name), u->a.tensor ? "A" : "B",
               skip_words(u->skip));
        break;
    }
    return MK_OK;
}

/* "12 vision, 3 mtp" for the skipped units. */
static void skip_list(const mk_xverify_summary *s, char *buf, size_t n) {
    size_t k = 0;
    buf[0] = 0;
    for (int r = 1; r < MK_XV_SKIP_COUNT && k < n; r++)
        if (s->skipped_by[r])
            k += (size_t)snprintf(buf + k, n - k, "%s%llu %s", k ? ", " : "", (unsigned long long)s->skipped_by[r],
                                  mk_xverify_skip_name((mk_xverify_skip)r));
}

static void summary_json(lay_out *p, const mk_xverify_summary *s, double tol) {
    json_t *skip = json_object();
    for (int r = 1; r < MK_XV_SKIP_COUNT; r++)
        json_object_set_new(skip, mk_xverify_skip_name((mk_xverify_skip)r), json_integer((json_int_t)s->skipped_by[r]));
    json_t *sum = json_pack(
        "{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:f,s:f,s:f,s:s,s:b}", "mode", "by-layout", "a_layout",
        s->a_mlx ? "mlx" : "hf", "b_layout", s->b_mlx ? "mlx" : "hf", "compared", (json_int_t)s->compared,
        "experts_compared", (json_int_t)s->experts_compared, "identical", (json_int_t)s->identical,
        "within_tolerance", (json_int_t)s->within_tol, "failed", (json_int_t)s->differ, "missing",
        (json_int_t)(s->only_a + s->only_b), "only_in_a", (json_int_t)s->only_a, "only_in_b", (json_int_t)s->only_b,
        "skipped", (json_int_t)s->skipped, "skipped_reasons", skip, "tolerance", tol, "worst_rel_l2",
        isfinite(s->worst_rel_l2) ? s->worst_rel_l2 : 1e300, "worst_max_abs", s->worst_max_abs, "worst_unit",
        s->worst_unit, "pass", s->pass);
    json_t *root = json_pack("{s:o,s:o}", "units", p->units, "summary", sum);
    p->units = NULL;
    char *txt = json_dumps(root, JSON_INDENT(1));
    puts(txt ? txt : "{}");
    free(txt);
    json_decref(root);
}

/* A and B in different layouts: unit by canonical unit (mk_conv_xverify).
 * Returns the exit code. */
static int by_layout(const char *a, const char *b, const mk_xverify_opts *xo, bool json, bool quiet) {
    lay_out p = {json, quiet, json ? json_array() : NULL};
    mk_xverify_summary s;
    mk_status st = mk_conv_xverify(a, b, xo, print_unit, &p, &s);
    if (st != MK_OK) {
        json_decref(p.units);
        fflush(stdout);
        return verify_fail(st);
    }
    if (json)
        summary_json(&p, &s, xo->tolerance);
    else {
        char sk[160];
        skip_list(&s, sk, sizeof sk);
        printf("verify (by layout, A %s, B %s): %llu units compared (%llu experts): %llu identical, %llu within "
               "tolerance %.3g, %llu differ, %llu missing (%llu only in A, %llu only in B), %llu skipped%s%s%s -> %s\n",
               s.a_mlx ? "mlx" : "hf", s.b_mlx ? "mlx" : "hf", (unsigned long long)s.compared,
               (unsigned long long)s.experts_compared, (unsigned long long)s.identical,
               (unsigned long long)s.within_tol, xo->tolerance, (unsigned long long)s.differ,
               (unsigned long long)(s.only_a + s.only_b), (unsigned long long)s.only_a, (unsigned long long)s.only_b,
               (unsigned long long)s.skipped, sk[0] ? " (" : "", sk, sk[0] ? ")" : "", s.pass ? "PASS" : "FAIL");
    }
    return s.pass ? 0 : 1;
}

/* ------------------------------------------------------------ command */

/* Do a and b hold exactly the same tensor names, companions (scales,
 * weight_scale_inv) included? Then they share a layout. */
static mk_status same_names(const mk_ckpt *a, const mk_ckpt *b, bool *same) {
    size_t n = mk_ckpt_count(a);
    *same = n == mk_ckpt_count(b);
    if (!*same)
        return MK_OK;
    const mk_tensor_info **x = malloc((n + 1) * sizeof *x), **y = malloc((n + 1) * sizeof *y);
    if (!x || !y) {
        free(x);
        free(y);
        return mk_err(MK_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        x[i] = mk_ckpt_tensor(a, i);
        y[i] = mk_ckpt_tensor(b, i);
    }
    qsort(x, n, sizeof *x, cmp_name);
    qsort(y, n, sizeof *y, cmp_name);
    for (size_t i = 0; *same && i < n; i++)
        *same = strcmp(x[i]->name, y[i]->name) == 0;
    free(x);
    free(y);
    return MK_OK;
}

/* A checkpoint directory with a config.json: what the by-layout mode reads. */
static bool model_dir(const char *path) {
    char *p = mk_os_is_dir(path) ? mk_path_join(path, "config.json") : NULL;
    bool ok = p && mk_os_exists(p);
    free(p);
    return ok;
}

/* The logical (non-companion) tensors of c, sorted by name, in *out. */
static mk_status logical_sorted(const mk_ckpt *c, const mk_tensor_info ***out, size_t *n) {
    size_t nt = mk_ckpt_count(c);
    const mk_tensor_info **l = malloc((nt + 1) * sizeof *l);
    if (!l)
        return mk_err(MK_E_NOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < nt; i++)
        if (!mk_qview_is_companion(c, mk_ckpt_tensor(c, i)->name))
            l[k++] = mk_ckpt_tensor(c, i);
    qsort(l, k, sizeof *l, cmp_name);
    *out = l;
    *n = k;
    return MK_OK;
}

static int cmd_verify(int argc, char **argv) {
    static const struct option opts[] = {{"tolerance", required_argument, 0, 't'}, {"json", no_argument, 0, 'j'},
                                         {"quiet", no_argument, 0, 'q'},           {"help", no_argument, 0, 'h'},
                                         {"by-layout", no_argument, 0, 'L'},       {"threads", required_argument, 0, 'T'},
                                         {"stats", no_argument, 0, 'S'},           {0, 0, 0, 0}};
    mk_xverify_opts xo;
    mk_xverify_opts_init(&xo);
    bool json = false, quiet = false, layout = false, stats = false;
    long long threads = 0;
    int c;
    while ((c = getopt_long(argc, argv, "t:jqh", opts, NULL)) != -1) {
        switch (c) {
        case 't': {
            int rc = mk_flag_real("verify", "--tolerance", optarg, 0, 1000, 0, &xo.tolerance);
            if (rc >= 0)
                return rc;
            break;
        }
        case 'j': json = true; break;
        case 'q': quiet = true; break;
        case 'L': layout = true; break;
        case 'S': stats = true; break;
        case 'T':
            {
                int rc = mk_flag_int("verify", "--threads", optarg, 1, 1024, &threads);
                if (rc >= 0)
                    return rc;
            }
            xo.threads = (int)threads;
            break;
        case 'h': help(stdout); return 0;
        default: help(stderr); return 2;
        }
    }
    if (optind + 2 != argc)
        return mk_cli_usage("verify", "expected two checkpoints A and B");
    const char *pa = argv[optind], *pb = argv[optind + 1];
    mk_ckpt *a = NULL, *b = NULL;
    mk_status s = mk_ckpt_open(pa, 0, &a);
    if (s == MK_OK)
        s = mk_ckpt_open(pb, 0, &b);
    if (s != MK_OK) {
        mk_ckpt_close(a);
        return verify_fail(s);
    }
    const mk_tensor_info **la = NULL, **lb = NULL;
    size_t ka = 0, kb = 0;
    s = logical_sorted(a, &la, &ka);
    if (s == MK_OK)
        s = logical_sorted(b, &lb, &kb);
    /* the configs: each must be readable and agree with its own tensors, and
     * two configs must describe the same model math (exit 2 otherwise) */
    mk_config ca, cb;
    bool has_a = false, has_b = false;
    memset(&ca, 0, sizeof ca);
    memset(&cb, 0, sizeof cb);
    if (s == MK_OK && (s = load_cfg(a, &ca, &has_a)) != MK_OK)
        mk_err_wrap(s, "A");
    if (s == MK_OK && (s = load_cfg(b, &cb, &has_b)) != MK_OK)
        mk_err_wrap(s, "B");
    if (s == MK_OK && has_a && has_b)
        s = mk_config_compare(&ca, &cb, "A", "B");
    if (s == MK_OK)
        s = check_side(a, &ca, la, ka, "A");
    if (s == MK_OK)
        s = check_side(b, &cb, lb, kb, "B");
    /* Different names between two model directories: different layouts.
     * Lone files (no config) keep the by-name comparison and its "missing". */
    bool same = true;
    if (s == MK_OK && !layout)
        s = same_names(a, b, &same);
    bool cross = s == MK_OK && (layout || (!same && model_dir(pa) && model_dir(pb)));
    int rc = 0;
    if (s != MK_OK)
        rc = verify_fail(s);
    else if (!cross)
        rc = by_name(a, &ca, la, ka, b, &cb, lb, kb, xo.tolerance, json, quiet);
    mk_config_free(&ca);
    mk_config_free(&cb);
    free(la);
    free(lb);
    mk_ckpt_close(a);
    mk_ckpt_close(b);
    if (s == MK_OK && cross)
        rc = by_layout(pa, pb, &xo, json, quiet); /* reopens both as convert sources */
    if (stats) /* stderr: stdout carries the report (or its JSON) */
        fprintf(stderr, "mode %s\npeak_rss_bytes %llu\nsanitizer %d\n", cross ? "layout" : "name",
                (unsigned long long)mk_conv_peak_rss(), mk_cli_sanitized());
    return rc;
}

MK_CMD_REGISTER(verify, 50, "compare two checkpoints tensor by tensor, or unit by unit across layouts", cmd_verify)

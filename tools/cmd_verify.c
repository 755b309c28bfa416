/* moekit verify: compare two checkpoints tensor by tensor.
 *
 * Logical tensors (quantized modules grouped, see qview.h) are matched by
 * name. Same storage on both sides: the bytes must be identical (xxh3-128).
 * Different storage (bf16 vs f32, quantized vs float, FP8 vs bf16): both are
 * dequantized row by row and compared numerically (max |a-b|, relative L2
 * ||a-b||/||b||), which must not exceed --tolerance. With --tolerance > 0,
 * same-storage tensors whose bytes differ are also judged numerically.
 * Memory: two rows of float32 at a time, whatever the tensor size. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "io/os.h"
#include "moekit/config.h"
#include "moekit/qview.h"
#include "moekit/st.h"
#include "moekit/tensor_hash.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: moekit verify A B [--tolerance X] [--json] [--quiet]\n\n"
            "Compare checkpoints A and B (files or directories) tensor by tensor:\n"
            "  - every logical tensor must exist in both (quantized modules count as one);\n"
            "  - same dtype and shape: bytes must be identical (xxh3-128);\n"
            "  - different storage (e.g. bf16 vs f32, MLX 4-bit vs bf16, FP8 vs bf16): both are\n"
            "    dequantized to float32 and the relative L2 error ||A-B||/||B|| must be <= X.\n\n"
            "  --tolerance X  allowed relative L2 error (default 0: exact). With X > 0, tensors of\n"
            "                 equal storage whose bytes differ are judged numerically too\n"
            "  --json         one JSON object with a per-tensor list and the summary\n"
            "  --quiet        print only failures and the summary\n\n"
            "Exit status: 0 all tensors within tolerance, 1 some differ or are missing,\n"
            "2 bad input (unreadable checkpoint, config contradicting a packed shape).\n"
            "Memory: hashing streams from the mmap; numeric comparison holds two rows.\n");
}

typedef struct vstats {
    double maxabs, err2, ref2;
    bool nonfinite;
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
        for (int64_t i = 0; s == MK_OK && i < va.cols; i++) {
            double x = ra[i], y = rb[i];
            if (!isfinite(x) || !isfinite(y)) {
                if (!(isnan(x) && isnan(y)) && x != y)
                    st->nonfinite = true;
                continue;
            }
            double d = fabs(x - y);
            if (d > st->maxabs)
                st->maxabs = d;
            st->err2 += d * d;
            st->ref2 += y * y;
        }
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

static bool load_cfg(const mk_ckpt *c, mk_config *cfg) {
    char *p = mk_path_join(mk_ckpt_dir(c), "config.json");
    bool ok = p && mk_os_exists(p) && mk_config_load(p, cfg) == MK_OK;
    free(p);
    if (!ok)
        memset(cfg, 0, sizeof *cfg);
    return ok;
}

static int cmd_verify(int argc, char **argv) {
    static const struct option opts[] = {{"tolerance", required_argument, 0, 't'}, {"json", no_argument, 0, 'j'},
                                         {"quiet", no_argument, 0, 'q'},           {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    double tol = 0;
    bool json = false, quiet = false;
    int c;
    while ((c = getopt_long(argc, argv, "t:jqh", opts, NULL)) != -1) {
        switch (c) {
        case 't': {
            char *end;
            tol = strtod(optarg, &end);
            if (*end || tol < 0)
                return mk_cli_usage("verify", "--tolerance: '%s' is not a non-negative number", optarg);
            break;
        }
        case 'j': json = true; break;
        case 'q': quiet = true; break;
        case 'h': help(stdout); return 0;
        default: help(stderr); return 2;
        }
    }
    if (optind + 2 != argc)
        return mk_cli_usage("verify", "expected two checkpoints A and B");
    mk_ckpt *a = NULL, *b = NULL;
    mk_config ca, cb;
    mk_status s = mk_ckpt_open(argv[optind], 0, &a);
    if (s == MK_OK)
        s = mk_ckpt_open(argv[optind + 1], 0, &b);
    if (s != MK_OK) {
        mk_ckpt_close(a);
        return mk_cli_fail(s);
    }
    load_cfg(a, &ca);
    load_cfg(b, &cb);
    json_t *jl = json_array();
    size_t n_ident = 0, n_close = 0, n_fail = 0, n_missing = 0;
    /* A's logical tensors, sorted */
    size_t na = mk_ckpt_count(a), nb = mk_ckpt_count(b);
    const mk_tensor_info **la = malloc((na + 1) * sizeof *la), **lb = malloc((nb + 1) * sizeof *lb);
    size_t ka = 0, kb = 0;
    for (size_t i = 0; la && i < na; i++)
        if (!mk_qview_is_companion(a, mk_ckpt_tensor(a, i)->name))
            la[ka++] = mk_ckpt_tensor(a, i);
    for (size_t i = 0; lb && i < nb; i++)
        if (!mk_qview_is_companion(b, mk_ckpt_tensor(b, i)->name))
            lb[kb++] = mk_ckpt_tensor(b, i);
    if (!la || !lb) {
        s = mk_err(MK_E_NOMEM, "out of memory");
        goto out;
    }
    qsort(la, ka, sizeof *la, cmp_name);
    qsort(lb, kb, sizeof *lb, cmp_name);
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
                mk_status ns = compare_numeric(a, &ca, b, &cb, name, &st);
                numeric = ns == MK_OK;
                verdict = "bytes differ";
                n_fail++;
            } else {
                s = compare_numeric(a, &ca, b, &cb, name, &st);
                if (s != MK_OK)
                    break;
                numeric = true;
                double rel = st.ref2 > 0 ? sqrt(st.err2 / st.ref2) : (st.err2 > 0 ? INFINITY : 0);
                if (!st.nonfinite && rel <= tol) {
                    verdict = rel == 0 ? "equal values" : "within tolerance";
                    n_close++;
                } else {
                    verdict = st.nonfinite ? "non-finite mismatch" : "exceeds tolerance";
                    n_fail++;
                }
            }
        }
        bool bad = strcmp(verdict, "identical") && strcmp(verdict, "equal values") && strcmp(verdict, "within tolerance");
        double rel = numeric ? (st.ref2 > 0 ? sqrt(st.err2 / st.ref2) : (st.err2 > 0 ? INFINITY : 0)) : 0;
        if (json) {
            json_t *o = json_pack("{s:s,s:s}", "name", name, "result", verdict);
            if (numeric) {
                json_object_set_new(o, "max_abs", json_real(st.maxabs));
                json_object_set_new(o, "rel_l2", json_real(isfinite(rel) ? rel : 1e300));
            }
            json_array_append_new(jl, o);
        } else if (bad || !quiet) {
            if (numeric)
                printf("%-14s %s  max_abs=%.3g rel_l2=%.3g\n", bad ? "FAIL" : "ok", name, st.maxabs, rel);
            else
                printf("%-14s %s  (%s)\n", bad ? "FAIL" : "ok", name, verdict);
        }
    }
out:
    free(la);
    free(lb);
    int rc;
    if (s != MK_OK) {
        rc = mk_cli_fail(s);
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
    mk_config_free(&ca);
    mk_config_free(&cb);
    mk_ckpt_close(a);
    mk_ckpt_close(b);
    return rc;
}

MK_CMD_REGISTER(verify, 50, "compare two checkpoints tensor by tensor (hashes, numeric error)", cmd_verify)

/* How one linear module is stored, for the model: the stored-module
 * definition (format/module.c: parts, kind, checks, byte ranges) turned into
 * mk_wt views over the mapping, plus what only the resident model does
 * with them (FP8 -> bf16 copies, INT4 biases derived from scales and zero
 * points, which layouts were seen).
 *
 * A view is a slice of a stored module: a whole 2-D weight, or expert e of
 * a stacked (E, R, .) tensor, optionally only rows [row0, row0+rows) (the
 * gate/up halves of HF fused gate_up_proj). Its pointers are the mapping's
 * base plus the slice's byte ranges (mk_smod_view), the same ranges a
 * streaming store reads with pread. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "model/load.h"
#include "moekit/module.h"

const mk_tensor_info *mk_ld_find(const mk_ld *ld, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof name)
        return NULL;
    return mk_ckpt_find(ld->ck, name);
}

/* Stand-in address of every view built by mk_model_check (check_only):
 * the views are never read, only their shapes and formats are checked. */
static const uint8_t k_check_dummy[16];

/* ---- FP8 block ---------------------------------------------------------- */

/* Replace an FP8 view by a model-owned bf16 copy: each fp8 * scale_inv
 * product rounded to bf16 (mk_model_opts.fp8_to_bf16). */
static mk_status fp8_materialise(mk_ld *ld, const mk_tensor_info *t, mk_wt *w) {
    uint16_t *dst = mk_model_alloc(ld->m, (size_t)(w->rows * w->cols) * sizeof(uint16_t));
    float *row = mk_malloc((size_t)w->cols * sizeof(float));
    if (!dst || !row) {
        free(row);
        return mk_err(MK_E_NOMEM, "tensor '%s': no memory for a bf16 copy of [%lld, %lld]",
                      t->name, (long long)w->rows, (long long)w->cols);
    }
    for (int64_t r = 0; r < w->rows; r++) {
        mk_wt_dequant_row(w, r, row);
        for (int64_t c = 0; c < w->cols; c++)
            dst[r * w->cols + c] = mk_f32_to_bf16(row[c]);
    }
    free(row);
    mk_wt b = {.fmt = MK_WF_BF16, .rows = w->rows, .cols = w->cols, .data = dst,
               .global_scale = 1.0f};
    *w = b;
    return MK_OK;
}

/* ---- compressed-tensors INT4 -------------------------------------------- */

/* The kernels see INT4 as affine 4-bit: w = s*u + b with b = -8*s
 * (symmetric: stored u = q + 8) or b = -s*zp, computed once here into
 * model-owned memory of the scales' dtype. The module's checks (format)
 * already validated the zero points' dtype and count. */
static mk_status ct_biases(mk_ld *ld, const char *mod, const mk_smod *sm, mk_wt *w) {
    const mk_tensor_info *sc = sm->part[MK_SP_SCALES], *zp = sm->part[MK_SP_ZP];
    int64_t rows = sm->R, ng = sm->cols / sm->q.group;
    size_t ssz = mk_dtype_info(sc->dtype)->bits / 8, n = (size_t)(rows * ng);
    void *bias = mk_model_alloc(ld->m, n * ssz);
    float *tmp = mk_malloc(n * sizeof(float));
    if (!bias || !tmp) {
        free(tmp);
        return mk_err(MK_E_NOMEM, "module '%s': no memory for INT4 biases", mod);
    }
    mk_status st = mk_ckpt_read_f32(ld->ck, sc, 0, n, tmp);
    const uint8_t *zd = zp ? mk_ckpt_data(ld->ck, zp) : NULL;
    if (st == MK_OK && !sm->ct_symmetric && !zd)
        st = mk_err(MK_E_INTERNAL, "tensor '%s': checkpoint is not memory-mapped", zp->name);
    for (size_t i = 0; st == MK_OK && i < n; i++) {
        int64_t r = (int64_t)i / ng, g = (int64_t)i % ng;
        float zu = 8.0f; /* symmetric: stored u = q + 8, so w = s*u - 8s */
        if (!sm->ct_symmetric) {
            /* zero points: I32 (ceil(rows/8), ng), nibble r%8 of word [r/8, g] */
            uint32_t word;
            memcpy(&word, zd + 4 * (size_t)((r / 8) * ng + g), 4);
            zu = (float)((word >> (4 * (r % 8))) & 15u);
        }
        tmp[i] = -tmp[i] * zu;
    }
    if (st == MK_OK && !mk_dtype_from_f32(sc->dtype, tmp, bias, n))
        st = mk_err(MK_E_UNSUPPORTED, "tensor '%s': scale dtype %s", sc->name,
                    mk_dtype_name(sc->dtype));
    free(tmp);
    w->biases = bias;
    return st;
}

/* ---- dispatch ----------------------------------------------------------- */

static mk_status view_any(mk_ld *ld, const char *mod, const char *wname, int64_t E, int64_t e,
                          int64_t R, int64_t row0, int64_t rows, int64_t cols, mk_wt *w) {
    mk_smod sm;
    mk_sslice sl;
    mk_smod_expect x = {E, R, cols};
    MK_TRY(mk_smod_open(ld->ck, ld->cfg, mod, wname, &x, &sm));
    MK_TRY(mk_smod_slice(&sm, e, row0, rows, &sl));
    if (ld->check_only) {
        *w = sm.q;
        w->rows = rows;
        w->cols = cols;
        w->data = k_check_dummy;
        w->scales = sm.part[MK_SP_SCALES] ? k_check_dummy : NULL;
        w->biases = sm.part[MK_SP_BIASES] || sm.kind == MK_SM_CT ? k_check_dummy : NULL;
    } else {
        MK_TRY(mk_smod_view(ld->ck, &sl, w));
    }
    uint64_t bytes = 0;
    for (int k = 0; k < MK_SP_N; k++)
        bytes += sl.part[k].t ? sl.part[k].len : 0;
    if (ld->loc) { /* a routed expert: where its parts are, for a streaming store */
        ld->m->expert_bytes += bytes;
        mk_wloc *L = ld->loc;
        memset(L, 0, sizeof *L);
        L->q = sm.q;
        L->q.rows = rows;
        L->q.cols = cols;
        L->q.data = L->q.scales = L->q.biases = NULL;
        for (int k = 0; k < MK_SP_N && k < 4; k++)
            if (sl.part[k].t)
                L->part[k] = (mk_wloc_part){sl.part[k].shard, sl.part[k].off, sl.part[k].len};
        L->ct = sm.kind == MK_SM_CT;
        L->ct_symmetric = sm.ct_symmetric;
        if (L->ct) { /* the kernels see INT4 as affine 4-bit (ct_biases below) */
            L->q.fmt = MK_WF_AFFINE;
            L->q.bits = 4;
        }
    } else {
        ld->m->resident_bytes += bytes;
    }
    /* streamed experts: nothing is derived from their bytes at open */
    bool derive = !ld->check_only && !(ld->stream && ld->loc);
    switch (sm.kind) {
    case MK_SM_FP8:
        MK_TRY(mk_smod_check_scales(ld->ck, &sl));
        ld->seen_fp8 = true;
        if (ld->fp8_to_bf16 && derive)
            return fp8_materialise(ld, sm.part[MK_SP_WEIGHT], w);
        return MK_OK;
    case MK_SM_MLX:
        if (sm.q.fmt == MK_WF_AFFINE)
            ld->seen_affine = true;
        else
            ld->seen_mx = true;
        return MK_OK;
    case MK_SM_CT:
        ld->seen_int4 = true;
        return derive ? ct_biases(ld, mod, &sm, w) : MK_OK;
    default: return MK_OK;
    }
}

mk_status mk_ld_linear(mk_ld *ld, const char *mod, int64_t rows, int64_t cols, mk_wt *out) {
    char wname[512];
    snprintf(wname, sizeof wname, "%s.weight", mod);
    return view_any(ld, mod, wname, 0, 0, rows, 0, rows, cols, out);
}

mk_status mk_ld_stacked(mk_ld *ld, const char *mod, const char *wname, int64_t E, int64_t e,
                        int64_t R, int64_t row0, int64_t rows, int64_t cols, mk_wt *out) {
    return view_any(ld, mod, wname, E, e, R, row0, rows, cols, out);
}

mk_status mk_ld_vec(mk_ld *ld, const char *name, int64_t n, float **out) {
    const mk_tensor_info *t = mk_ckpt_find(ld->ck, name);
    if (!t)
        return mk_err(MK_E_FORMAT, "%s: tensor '%s' not found", mk_ckpt_dir(ld->ck), name);
    if ((int64_t)t->numel != n) {
        char got[96];
        return mk_err(MK_E_FORMAT, "tensor '%s': shape %s, expected %lld elements", name,
                      mk_smod_shape_str(t, got, sizeof got), (long long)n);
    }
    *out = NULL;
    if (ld->check_only)
        return MK_OK;
    float *v = mk_model_alloc(ld->m, (size_t)n * sizeof(float));
    if (!v)
        return mk_err(MK_E_NOMEM, "tensor '%s': no memory for %lld floats", name, (long long)n);
    MK_TRY(mk_ckpt_read_f32(ld->ck, t, 0, (uint64_t)n, v));
    *out = v;
    return MK_OK;
}

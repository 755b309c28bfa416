/* A weight's device view for the kernels (mkc_w) from its mk_wt, and the
 * kind the kernels dispatch on. Host code, included by cuda_impl.cuh; a
 * header of its own so that the host emulation of the kernels
 * (tests/emu/) builds views exactly as the backend does. Needs string.h,
 * moekit/weight.h and moekit/status.h (mk_wt_row_bytes, mk_err). */
#ifndef MK_CUDA_VIEW_CUH
#define MK_CUDA_VIEW_CUH

static inline int mkc_sd_index(mk_dtype t) {
    return t == MK_DT_F32 ? 0 : t == MK_DT_BF16 ? 1 : t == MK_DT_F16 ? 2 : -1;
}

static inline int mkc_kind_of(const mk_wt *w) {
    switch (w->fmt) {
    case MK_WF_F32: return MKC_F32;
    case MK_WF_BF16: return MKC_BF16;
    case MK_WF_F16: return MKC_F16;
    case MK_WF_AFFINE: {
        int sd = mkc_sd_index(w->sdtype);
        if (sd < 0 || (w->group != 32 && w->group != 64 && w->group != 128) || w->cols % w->group)
            return -1;
        if (w->bits == 4)
            return MKC_A4_F32 + sd;
        if (w->bits == 8)
            return MKC_A8_F32 + sd;
        return -1;
    }
    case MK_WF_FP8_E4M3: { /* block-scaled, a 16-byte chunk inside one column block */
        int sd = mkc_sd_index(w->sdtype);
        if (sd < 0 || !w->scales || w->block_r <= 0 || w->block_c <= 0 || w->block_c % 16 || w->cols % 16)
            return -1;
        return MKC_E4_F32 + sd;
    }
    case MK_WF_MXFP4: /* a 16-byte chunk: 32 codes under one E8M0 scale */
        return w->scales && w->cols % 32 == 0 ? MKC_MX4 : -1;
    case MK_WF_NVFP4: /* 32 codes under two E4M3 scales */
        return w->scales && w->cols % 32 == 0 && w->global_scale > 0.0f ? MKC_NV4 : -1;
    case MK_WF_MXFP8: /* a 16-byte chunk: 16 codes, half of an E8M0 scale's 32 */
        return w->scales && w->cols % 32 == 0 ? MKC_MX8 : -1;
    default: return -1;
    }
}

static inline mk_status mkc_view(const mk_wt *w, const char *what, mkc_w *out) {
    int k = mkc_kind_of(w);
    if (k < 0)
        return mk_err(MK_E_UNSUPPORTED,
                      "%s: the CUDA kernels take f32, bf16, f16, affine 4/8-bit (group 32/64/128, "
                      "f32/bf16/f16 scales), block-scaled FP8 E4M3 (block columns a multiple of 16) "
                      "and MXFP4/NVFP4/MXFP8 (columns a multiple of 32) weights, found format %d bits %d group %d",
                      what, (int)w->fmt, w->bits, w->group);
    memset(out, 0, sizeof *out);
    out->data = (const uint8_t *)w->data;
    out->scales = w->scales;
    out->biases = w->biases;
    out->rows = w->rows;
    out->cols = w->cols;
    out->row_bytes = (int64_t)mk_wt_row_bytes(w);
    out->kind = k;
    out->group = w->fmt == MK_WF_AFFINE ? w->group : 0;
    out->ng = w->fmt == MK_WF_AFFINE ? (int32_t)(w->cols / w->group) : 0;
    out->gshift = out->group == 32 ? 5 : out->group == 64 ? 6 : out->group == 128 ? 7 : 0;
    out->gs = w->global_scale;
    if (mkc_is_fp8(k)) {
        out->br = w->block_r;
        out->cpb = w->block_c / 16;
        out->nbc = (int32_t)((w->cols + w->block_c - 1) / w->block_c);
    }
    /* 16-byte chunks: affine rows are always whole chunks (cols % 32 == 0 at
     * 4 and 8 bits), FP8 ones too (cols % 16 == 0); plain rows when the row
     * length is a multiple of 16 B */
    out->vec = w->fmt == MK_WF_AFFINE || mkc_is_fp8(k) || k == MKC_MX4 || k == MKC_NV4 || k == MKC_MX8 ||
               out->row_bytes % 16 == 0;
    if (((uintptr_t)w->data & 15) != 0)
        return mk_err(MK_E_ARG, "%s: device weight data must be 16-byte aligned", what);
    return MK_OK;
}

#endif

/* Prefill GEMM on int8 activations for MLX affine 4/8-bit weights
 * (kern_gemm_q8.h: the rule and the layouts): the driver behind
 * mk_matmul / mk_matmul_n for n > 1 when mk_kernels_prefill_int8() (by default with the
 * decode setting, kernels.h),
 * and the portable table that defines every step in plain C.
 *
 * Why: the float prefill (matmul.c, kern_panel.c) dequantizes each weight
 * once per block of tokens and then spends one float FMA per weight and
 * token. Here X is quantized once per call, each weight panel is unpacked
 * to bytes once per block of tokens (no float conversion), and the products
 * run as integer dot products (AVX2 maddubs/madd, AVX512-VNNI dpbusd: 4 to
 * 64 products per instruction), with the scales and biases applied once per
 * block of 32 and per group, not per weight.
 *
 * Work: tokens in blocks of up to MK_GQ8_TOK (prepared on the caller's
 * stack where 128 KiB hold that many, else in a heap block; as many as the
 * stack holds if that allocation fails); per block one parallel
 * region quantizes the tokens, a second runs items of (weight, 16-row
 * block): unpack a 512-column panel, multiply it with every token of the
 * block, next panel. Every output belongs to one item and its floats follow
 * the fixed rule, so results are bitwise independent of the thread count
 * and of the table (ref, AVX2, AVX512-VNNI). Several weights with the same
 * input (q/k/v, an expert's gate and up) share the quantized tokens and the
 * regions (mk_matmul_n). */
#include <math.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kern_gemm_q8.h"
#include "kernels/kern_impl.h"
#include "moekit/dtype.h"
#include "moekit/kernels.h"

/* ---- the portable table -------------------------------------------------- */

/* q8.c's formula over each activation block of ab columns (d NaN for a
 * block with a NaN or infinity, 0 for an all-zero one), then the dot
 * order. */
static void quant_ref(const float *x, int64_t cols, int group, bool four, uint8_t *dst) {
    const int ab = mk_gq8_ab(group, four);
    mk_gq8x v = mk_gq8_at(dst, cols, ab);
    const int64_t nab = cols / ab;
    mk_q8_quant_blocks(x, cols, ab, v.q, v.d, v.qsf);
    for (int64_t b = 0; b < nab; b++)
        v.qs128[b] = 128 * (int32_t)v.qsf[b];
    mk_q8_group_sums(v.d, v.qsf, cols / group, group / ab, v.xg);
    if (four)
        for (int64_t b = 0; b < cols / 32; b++) { /* natural -> evens | odds */
            int8_t t[32];
            memcpy(t, v.q + b * 32, 32);
            for (int i = 0; i < 16; i++) {
                v.q[b * 32 + i] = t[2 * i];
                v.q[b * 32 + 16 + i] = t[2 * i + 1];
            }
        }
}

static void pack_ref(const mk_wt *w, int64_t r0, int nr, int64_t c0, int64_t kc, uint8_t *pw) {
    const size_t rb = mk_wt_row_bytes(w);
    memset(pw, 0, (size_t)kc * MK_GQ8_ROWS);
    for (int i = 0; i < nr; i++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)(r0 + i) * rb;
        for (int64_t p = 0; p < kc; p++) {
            int64_t b = (c0 + p) / 32, j = p % 32;
            uint8_t code;
            if (w->bits == 8)
                code = row[c0 + p];
            else /* dot order: low nibbles (even columns) then high ones */
                code = j < 16 ? row[b * 16 + j] & 15 : row[b * 16 + j - 16] >> 4;
            pw[(p / 4) * 64 + i * 4 + p % 4] = code;
        }
    }
}

static void kern_ref(const uint8_t *pw, const float *ps, const float *pb, int64_t c0, int64_t kc, int group,
                     int ab, const uint8_t *xp, size_t xs, int64_t cols, int64_t nt, float *y, int64_t ldy,
                     int nr) {
    for (int64_t t = 0; t < nt; t++) {
        const mk_gq8x v = mk_gq8_at(xp + (size_t)t * xs, cols, ab);
        for (int i = 0; i < nr; i++) {
            float acc = 0.0f;
            for (int64_t gi = 0; gi < kc / group; gi++) {
                for (int64_t p0 = gi * group; p0 < (gi + 1) * group; p0 += ab) {
                    int32_t s = 0;
                    for (int64_t p = p0; p < p0 + ab; p++)
                        s += (int32_t)pw[(p / 4) * 64 + i * 4 + p % 4] * (int32_t)v.q[c0 + p];
                    float f = (float)s * v.d[(c0 + p0) / ab];
                    acc = fmaf(f, ps[gi * MK_GQ8_ROWS + i], acc);
                }
                acc = fmaf(pb[gi * MK_GQ8_ROWS + i], v.xg[c0 / group + gi], acc);
            }
            y[t * ldy + i] += acc;
        }
    }
}

MK_GQ8_KERN48(, ref)

/* mk_gq8_sb_fn: a row's groups are adjacent in src: read row by row, one
 * dtype branch per call. */
void mk_gq8_sb_ref(const mk_wt *w, const void *src, int64_t r0, int nr, int64_t c0, int64_t kc, float *out) {
    const int64_t ng = w->cols / w->group, g0 = c0 / w->group, cnt = kc / w->group;
    if (nr < MK_GQ8_ROWS)
        memset(out, 0, sizeof(float) * (size_t)(cnt * MK_GQ8_ROWS));
    if (w->sdtype == MK_DT_BF16 || w->sdtype == MK_DT_F16) {
        const bool bf = w->sdtype == MK_DT_BF16;
        for (int i = 0; i < nr; i++) {
            const uint8_t *h = (const uint8_t *)src + 2 * ((r0 + i) * ng + g0); /* may be unaligned */
            for (int64_t gi = 0; gi < cnt; gi++) {
                uint16_t u;
                memcpy(&u, h + 2 * gi, 2);
                out[gi * MK_GQ8_ROWS + i] = bf ? mk_bf16_to_f32(u) : mk_f16_to_f32(u);
            }
        }
        return;
    }
    for (int i = 0; i < nr; i++)
        for (int64_t gi = 0; gi < cnt; gi++)
            out[gi * MK_GQ8_ROWS + i] = mk_dtype_load_f32(w->sdtype, src, (r0 + i) * ng + g0 + gi);
}

const mk_gq8_i mk_gq8_ref = {"ref", quant_ref, pack_ref, mk_gq8_sb_ref, kern4_ref, kern8_ref};

const mk_gq8_i *mk_gq8_table(mk_isa isa) {
    switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case MK_ISA_AVX2:
    case MK_ISA_AVX512: return &mk_gq8_avx2;
    case MK_ISA_AVXVNNI: return &mk_gq8_avxvnni; /* 256-bit dpbusd; the VNNI table's tiles need AVX-512 */
    case MK_ISA_AVX512VNNI: return &mk_gq8_vnni;
#endif
#if defined(__x86_64__)
    case MK_ISA_AMX: return &mk_gq8_amx;
#endif
    default: return &mk_gq8_ref;
    }
}

bool mk_gq8_suits(const mk_wt *w) {
    return w->fmt == MK_WF_AFFINE && (w->bits == 4 || w->bits == 8) && w->group % 32 == 0 && w->rows > 0 &&
           w->cols > 0 && w->cols % w->group == 0;
}

/* ---- the driver --------------------------------------------------------- */

typedef struct gq8_job {
    const mk_gq8_i *k;
    const mk_wt *const *w;
    float *const *y;
    int count;
    int64_t start[MK_GQ8_MAXW + 1]; /* first item of each weight; start[count] = all */
    const float *x;
    int64_t cols;
    int group;
    bool four;
    uint8_t *xp;
    size_t xs;
    int64_t t0, nt; /* the token block */
} gq8_job;

static void quant_task(void *ctx, int64_t b, int64_t e) {
    const gq8_job *j = ctx;
    for (int64_t t = b; t < e; t++)
        j->k->quant(j->x + (j->t0 + t) * j->cols, j->cols, j->group, j->four, j->xp + (size_t)t * j->xs);
}

/* Rows of the 16-row block of w from r0 (fewer at the end). */
static int block_rows(const mk_wt *w, int64_t r0) {
    return w->rows - r0 < MK_GQ8_ROWS ? (int)(w->rows - r0) : MK_GQ8_ROWS;
}

/* Ask for the codes of rows [r0, r0 + nr) of w to be brought into the
 * cache. */
static void prefetch_rows(const mk_wt *w, int64_t r0, int nr) {
    const size_t rb = mk_wt_row_bytes(w);
    const uint8_t *base = (const uint8_t *)w->data + (size_t)r0 * rb;
    for (size_t o = 0; o < (size_t)nr * rb; o += 64)
        __builtin_prefetch(base + o, 0, 2);
}

static void tile_task(void *ctx, int64_t b, int64_t e) {
    const gq8_job *j = ctx;
    alignas(64) uint8_t pw[MK_GQ8_ROWS * MK_GQ8_KC];
    alignas(64) float ps[MK_GQ8_ROWS * (MK_GQ8_KC / 32)], pb[MK_GQ8_ROWS * (MK_GQ8_KC / 32)];
    int i = 0;
    for (int64_t it = b; it < e; it++) {
        while (it >= j->start[i + 1])
            i++;
        const mk_wt *w = j->w[i];
        const int64_t rows = w->rows, r0 = (it - j->start[i]) * MK_GQ8_ROWS;
        const int nr = block_rows(w, r0);
        float *y = j->y[i] + j->t0 * rows + r0;
        mk_gq8_kern_fn kern = w->bits == 4 ? j->k->kern4 : j->k->kern8;
        for (int64_t t = 0; t < j->nt; t++)
            memset(y + t * rows, 0, (size_t)nr * sizeof(float));
        if (it + 1 < e) { /* the next item's codes load while this one is multiplied */
            int i1 = it + 1 >= j->start[i + 1] ? i + 1 : i;
            const mk_wt *w1 = j->w[i1];
            int64_t r1 = (it + 1 - j->start[i1]) * MK_GQ8_ROWS;
            prefetch_rows(w1, r1, block_rows(w1, r1));
        }
        for (int64_t c0 = 0; c0 < j->cols; c0 += MK_GQ8_KC) {
            int64_t kc = j->cols - c0 < MK_GQ8_KC ? j->cols - c0 : MK_GQ8_KC;
            j->k->pack(w, r0, nr, c0, kc, pw);
            j->k->sb(w, w->scales, r0, nr, c0, kc, ps);
            j->k->sb(w, w->biases, r0, nr, c0, kc, pb);
            kern(pw, ps, pb, c0, kc, j->group, j->xp, j->xs, j->cols, j->nt, y, rows, nr);
        }
    }
}

/* Tokens per stack block for cols columns: as many as MK_GQ8_STACK holds,
 * at most MK_GQ8_TOK; a fixed function of the shape, never of the threads
 * (nor is the heap block's MK_GQ8_TOK). */
static int64_t tok_block(int64_t cols, int group, bool four) {
    size_t fit = MK_GQ8_STACK / mk_gq8_stride(cols, group, mk_gq8_ab(group, four));
    return fit > MK_GQ8_TOK ? MK_GQ8_TOK : (int64_t)fit;
}

bool mk_gq8_fits(const mk_wt *const *w, int count, int64_t n) {
    if (count < 1 || count > MK_GQ8_MAXW || n < MK_GQ8_MIN_TOK)
        return false;
    for (int i = 0; i < count; i++)
        if (!mk_gq8_suits(w[i]) || w[i]->cols != w[0]->cols || w[i]->group != w[0]->group ||
            w[i]->bits != w[0]->bits)
            return false;
    return tok_block(w[0]->cols, w[0]->group, w[0]->bits == 4) >= MK_GQ8_MIN_TOK;
}

__attribute__((noinline)) void mk_gq8_matmul(mk_pool *p, const mk_wt *const *w, int count, const float *x,
                                             int64_t n, float *const *y) {
    alignas(64) uint8_t buf[MK_GQ8_STACK];
    gq8_job j = {.k = mk_gq8_table(mk_isa_active()), .w = w, .y = y, .count = count, .x = x,
                 .cols = w[0]->cols, .group = w[0]->group, .four = w[0]->bits == 4, .xp = buf};
    j.xs = mk_gq8_stride(j.cols, j.group, mk_gq8_ab(j.group, j.four));
    j.start[0] = 0;
    for (int i = 0; i < count; i++)
        j.start[i + 1] = j.start[i] + (w[i]->rows + MK_GQ8_ROWS - 1) / MK_GQ8_ROWS;
    int64_t tb = tok_block(j.cols, j.group, j.four);
    /* Wide inputs (a 7168-column hidden state fits 14 tokens in the stack
     * block, an 18432-column one 5) would unpack every weight panel again
     * for each few tokens: such calls take a block of MK_GQ8_TOK tokens
     * from the heap (cols * 80 bytes: 1.4 MiB at 18432 columns). Plain
     * aligned_alloc, not the counted allocator: a failure only means the
     * stack block, whose results are bitwise the same. */
    const int64_t want = n < MK_GQ8_TOK ? n : MK_GQ8_TOK;
    uint8_t *heap = NULL;
    if (tb < want && (heap = aligned_alloc(64, (size_t)want * j.xs)) != NULL) {
        j.xp = heap;
        tb = want;
    }
    for (j.t0 = 0; j.t0 < n; j.t0 += tb) {
        j.nt = n - j.t0 < tb ? n - j.t0 : tb;
        mk_pool_for(p, j.nt, 1, quant_task, &j);
        mk_pool_for(p, j.start[count], 1, tile_task, &j);
    }
    free(heap);
}

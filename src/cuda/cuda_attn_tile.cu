/* Prefill attention in tiles (flash-style), for mkb_attention's chunks of
 * many tokens: k_attn gives each (token, head) its own block walking the
 * whole cache, so a 512-token chunk of 32 heads read every cache row 16384
 * times (0.7 ms per layer at positions 0-511 of the Qwen3-30B-A3B shape,
 * two thirds of a 2048-token prefill: bench/RESULTS.md session 11). The
 * kernels, generations 1 and 2 float32 (cuda_attn_tile.cuh), 3 on the
 * tensor cores (cuda_attn_mma.cuh); here, which one runs and with what
 * shared memory (mk_cuda_set_attn_tile_gen: a generation that does not
 * take the shape leaves it to the one before). */
#include <math.h>

#include "cuda/cuda_backend.cuh"
#include "cuda/cuda_attn_tile.cuh"
#include "cuda/cuda_attn_mma.cuh"

template <int DVQ> static bool launch(mkb_ctx *c, const mk_attn_args *a, int64_t ks, int64_t vs) {
    const size_t smem = att1_smem(a->dk, a->dv);
    /* shared memory past the 48 KiB default (refused: the caller's other kernel runs) */
    if (!mkc_smem_opt_in((const void *)k_attn_tile<DVQ>, 100 * 1024))
        return false;
    const dim3 grid((unsigned)((a->n + ATT_TQ - 1) / ATT_TQ), (unsigned)a->n_heads);
    k_attn_tile<DVQ><<<grid, ATT_TT, smem, c->s>>>(*a, ks, vs);
    mkb_launched(c, "attention (tiled prefill)");
    return true;
}

template <int NV> static bool launch2(mkb_ctx *c, const mk_attn_args *a, int64_t ks, int64_t vs) {
    const size_t smem = att2_smem(a->dk, a->dv);
    /* 101 KB at head dims of 128, 200 KB at 256: the device's most (227 KB on sm_90; past it,
     * or refused, generation 1 runs) */
    const int most = mkc_smem_optin_max();
    if (smem > (size_t)most || !mkc_smem_opt_in((const void *)k_attn_tile2<NV>, most))
        return false;
    const dim3 grid((unsigned)((a->n + ATT2_TQ - 1) / ATT2_TQ), (unsigned)a->n_heads);
    k_attn_tile2<NV><<<grid, ATT2_TT, smem, c->s>>>(*a, ks, vs);
    mkb_launched(c, "attention (tiled prefill, generation 2)");
    return true;
}

/* W: warps a block (4: generation 3, two blocks an SM; 8: generation 4, one) */
template <int DKS, int NVT, int W> static bool launch3(mkb_ctx *c, const mk_attn_args *a, int64_t ks, int64_t vs) {
    const size_t smem = att3_smem(a->dk, a->dv); /* 96 KB at head dims of 128 */
    if (!mkc_smem_opt_in((const void *)k_attn_tile3<DKS, NVT, W>, 100 * 1024))
        return false;
    const dim3 grid((unsigned)((a->n + 16 * W - 1) / (16 * W)), (unsigned)a->n_heads);
    k_attn_tile3<DKS, NVT, W><<<grid, 32 * W, smem, c->s>>>(*a, ks, vs);
    mkb_launched(c, W == 4 ? "attention (tiled prefill on the tensor cores, generation 3)"
                           : "attention (tiled prefill on the tensor cores, generation 4: blocks of 8 warps)");
    return true;
}

/* The most device memory generation 5's parts may take: 63 KB a tile of 32 rows of a kv head at
 * head dims of 128 (16 MB for the 30B shape's 2048-token chunk, 250 MB at 32k tokens of context);
 * past it, generation 4 (no scratch) takes the call rather than the memory the experts could use */
#define ATT3_PLANES_MAX ((size_t)256 << 20)

/* Generation 5: the chunk's tiles split once (k_att3_planes into c->att3_planes, grown as needed),
 * then generation 4's blocks copy them. False (generation 4 runs, the same bits): inside a recorded
 * step, parts past ATT3_PLANES_MAX, no memory for them, or the shared memory refused. */
template <int DKS, int NVT> static bool launch5(mkb_ctx *c, const mk_attn_args *a, int64_t ks, int64_t vs) {
    constexpr int DK = 16 * DKS, DV = 8 * NVT;
    if (c->recording)
        return false;
    int64_t t0;
    const int64_t ntile = att3_tiles(*a, &t0); /* the tiles any block reads */
    if (ntile < 1 || ntile > 0x7fffffff || a->n_kv > 65535)
        return false;
    const size_t need = (size_t)a->n_kv * (size_t)ntile * (size_t)att3_pwords(DK, DV) * 4;
    if (need > ATT3_PLANES_MAX)
        return false;
    if (need > c->att3_pcap) {
        mk_cuda_free(c->att3_planes);
        c->att3_planes = NULL;
        c->att3_pcap = 0;
        if (mk_cuda_malloc((void **)&c->att3_planes, need, "tiled attention's split parts") != MK_OK) {
            mk_err_clear(); /* generation 4 computes the same without them */
            return false;
        }
        c->att3_pcap = need;
    }
    const size_t smem = att3_smem_pl(DK, DV); /* 126 KB at head dims of 128: one block an SM */
    if (smem > (size_t)mkc_smem_optin_max() ||
        !mkc_smem_opt_in((const void *)k_attn_tile3<DKS, NVT, 8, true>, (int)smem))
        return false;
    k_att3_planes<DK, DV><<<dim3((unsigned)ntile, (unsigned)a->n_kv), ATT3_TT, att3_planes_smem(DK, DV), c->s>>>(
        *a, ks, vs, t0, c->att3_planes);
    mkb_launched(c, "attention (tiled prefill, generation 5: the tiles' parts)");
    const dim3 grid((unsigned)((a->n + 127) / 128), (unsigned)a->n_heads);
    k_attn_tile3<DKS, NVT, 8, true><<<grid, 256, smem, c->s>>>(*a, ks, vs, c->att3_planes, t0, ntile);
    mkb_launched(c, "attention (tiled prefill on the tensor cores, generation 5)");
    return true;
}

bool mkb_attention_tiled(mkb_ctx *c, const mk_attn_args *a, int64_t ks, int64_t vs) {
    if (a->n < ATT_TQ / 2 || a->sel || a->pos_dev || a->dk % 4 || a->dv % 16 || a->dk > 256 || a->dv > 256 ||
        ks % 4 || vs % 4 || (uintptr_t)a->q % 16 || (uintptr_t)a->k % 16 || (uintptr_t)a->v % 16 ||
        (uintptr_t)a->out % 16 || a->n > (int64_t)ATT_TQ * 0x7fffffff || a->n_heads > 65535)
        return false;
    const int gen = mk_cuda_attn_tile_gen();
    if (gen >= 5 && att3_takes(a->dk, a->dv) &&
        (a->dk == 64 ? launch5<4, 8>(c, a, ks, vs) : launch5<8, 16>(c, a, ks, vs)))
        return true;
    if (gen >= 4 && att3_takes(a->dk, a->dv) &&
        (a->dk == 64 ? launch3<4, 8, 8>(c, a, ks, vs) : launch3<8, 16, 8>(c, a, ks, vs)))
        return true;
    if (gen >= 3 && att3_takes(a->dk, a->dv) &&
        (a->dk == 64 ? launch3<4, 8, 4>(c, a, ks, vs) : launch3<8, 16, 4>(c, a, ks, vs)))
        return true;
    if (gen >= 2) {
        if (a->dv <= 64 ? launch2<1>(c, a, ks, vs) : a->dv <= 128 ? launch2<2>(c, a, ks, vs) : launch2<4>(c, a, ks, vs))
            return true;
    }
    if (a->dv <= 64)
        return launch<16>(c, a, ks, vs);
    if (a->dv <= 128)
        return launch<32>(c, a, ks, vs);
    return launch<64>(c, a, ks, vs);
}

/* The bf16 tensor-core step both the prefill attention (cuda_attn_mma.cuh)
 * and the split grouped GEMM (cuda_grouped_split.cuh) are built from: two
 * floats rounded to bf16 and packed, and one warp's mma.sync m16n8k16. A
 * header of its own, device code only, so that the host emulation
 * (tests/emu/cuda_emu.h: emu_bf16x2_rn, emu_mma_bf16) runs both kernels. */
#ifndef MK_CUDA_MMA_CUH
#define MK_CUDA_MMA_CUH

/* Two floats rounded to bf16 (to nearest, ties to even; a NaN stays a NaN)
 * packed, a in the low half: the mma's k order within a register */
__device__ __forceinline__ uint32_t mkc_bf16x2(float a, float b) {
#ifdef MK_CUDA_EMU
    return emu_bf16x2_rn(a, b);
#else
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(b), "f"(a));
    return r;
#endif
}

/* d += A B, one warp's mma.sync m16n8k16 (bf16 in, float32 sums). Lane l
 * = 4 g + t: a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, ..], a[2] =
 * A[g][2t+8, ..], a[3] = A[g+8][2t+8, ..]; b0 = B[2t, 2t+1][g], b1 =
 * B[2t+8, ..][g]; d[0..1] = D[g][2t, 2t+1], d[2..3] = D[g+8][..] */
__device__ __forceinline__ void mkc_mma_bf16(float *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
#ifdef MK_CUDA_EMU
    emu_mma_bf16(d, a, b0, b1);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

#endif

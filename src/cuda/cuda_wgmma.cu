/* Whether the device runs this build's wgmma code, and a probe of the one
 * wgmma layout the int8 kernels use (cuda_wgmma.cuh says what it is).
 *
 * mk_cuda_wgmma_available: the wgmma kernels exist only in the sm_90a
 * machine code (CMake's 90a architecture); a device that is not compute
 * capability 9.0 runs the compute_90 PTX instead, in which they trap. So a
 * one-thread kernel reports which code the driver picked (MKC_WGMMA
 * defined or not in the code that runs), once per device.
 *
 * mk_cuda_wgmma_probe: one block of one warpgroup places A (64 x 32 int8)
 * and B (128 x 32 uint8) in shared memory in the layout of the int8 kernels
 * (core matrices of 8 rows x 16 bytes, 128 bytes apart along K, 256 along
 * the rows for these 32-column tiles), runs one wgmma m64n128k32 and writes
 * every thread's 64 accumulators out as they are, so a test on the host can
 * check them against A B in the documented fragment layout and, when they
 * differ, say which assumption failed. */
#include <mutex>

#include "cuda/cuda_impl.cuh"
#include "cuda/cuda_wgmma.cuh"

__global__ void k_wgmma_feature(int *out) {
#ifdef MKC_WGMMA
    *out = 1;
#else
    *out = 0;
#endif
}

extern "C" bool mk_cuda_wgmma_available(void) {
    static std::mutex mu;
    static int known[64]; /* per device: 0 not asked, 1 no, 2 yes */
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) {
        (void)cudaGetLastError();
        return false;
    }
    std::lock_guard<std::mutex> hold(mu);
    if (!known[dev]) {
        int *d = NULL, h = 0;
        bool ok = cudaMalloc(&d, sizeof(int)) == cudaSuccess;
        if (ok) {
            k_wgmma_feature<<<1, 1>>>(d);
            ok = cudaGetLastError() == cudaSuccess && cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess;
            (void)cudaFree(d);
        }
        (void)cudaGetLastError();
        known[dev] = ok && h == 1 ? 2 : 1;
    }
    return known[dev] == 2;
}

__global__ void __launch_bounds__(128) k_wgmma_probe(const int8_t *A, const uint8_t *B, int32_t *frag) {
#ifdef MKC_WGMMA
    __shared__ __align__(128) uint8_t As[64 * 32], Bs[128 * 32];
    const int t = threadIdx.x;
    /* element (r, k) at (r / 8) 256 + (k / 16) 128 + 16 (r % 8) + k % 16 */
    for (int i = t; i < 64 * 32; i += 128) {
        const int r = i / 32, k = i % 32;
        As[(r >> 3) * 256 + (k >> 4) * 128 + (r & 7) * 16 + (k & 15)] = (uint8_t)A[i];
    }
    for (int i = t; i < 128 * 32; i += 128) {
        const int r = i / 32, k = i % 32;
        Bs[(r >> 3) * 256 + (k >> 4) * 128 + (r & 7) * 16 + (k & 15)] = B[i];
    }
    mkc_wg_proxy_fence();
    __syncthreads();
    int d[64];
#pragma unroll
    for (int e = 0; e < 64; e++)
        d[e] = 0;
    mkc_wg_fence();
    mkc_wgmma_s8u8_n128(d, mkc_wg_desc(As, 128, 256), mkc_wg_desc(Bs, 128, 256), false);
    mkc_wg_commit();
    mkc_wg_wait<0>();
#pragma unroll
    for (int e = 0; e < 64; e++)
        frag[t * 64 + e] = d[e];
#endif
}

extern "C" mk_status mk_cuda_wgmma_probe(const int8_t *A, const uint8_t *B, int32_t *frag) {
    if (!mk_cuda_wgmma_available())
        return mk_err(MK_E_UNSUPPORTED, "cuda: this device does not run the build's sm_90a (wgmma) code");
    void *dA = NULL, *dB = NULL, *dF = NULL;
    mk_status st = mk_cuda_malloc(&dA, 64 * 32, "the wgmma probe's A");
    if (st == MK_OK)
        st = mk_cuda_malloc(&dB, 128 * 32, "the wgmma probe's B");
    if (st == MK_OK)
        st = mk_cuda_malloc(&dF, 128 * 64 * 4, "the wgmma probe's accumulators");
    if (st == MK_OK)
        st = mk_cuda_upload(dA, A, 64 * 32);
    if (st == MK_OK)
        st = mk_cuda_upload(dB, B, 128 * 32);
    if (st == MK_OK) {
        k_wgmma_probe<<<1, 128>>>((const int8_t *)dA, (const uint8_t *)dB, (int32_t *)dF);
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            st = mk_err(MK_E_INTERNAL, "cuda: the wgmma probe's launch: %s", cudaGetErrorString(e));
    }
    if (st == MK_OK)
        st = mk_cuda_download(frag, dF, 128 * 64 * 4);
    mk_cuda_free(dA);
    mk_cuda_free(dB);
    mk_cuda_free(dF);
    return st;
}

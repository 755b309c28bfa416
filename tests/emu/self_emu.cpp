// The emulator itself (tests/emu/cuda_emu.h): its fibers, barriers and
// shuffles on kernels whose answers are known in closed form, so the
// emulations of moekit's kernels stand on a checked base.
//   self_emu          the checks below; exit 0 when all hold
//   self_emu diverge  a block whose threads wait at different barriers (half
//                     a warp at a shuffle, the rest at __syncthreads): the
//                     emulator must abort (the script expects it)
#include "emu_impl.h"

#include <cfenv>
#include <cstring>

static int g_bad;
#define CHECK(c, ...)                                                                                                  \
    do {                                                                                                               \
        if (!(c)) {                                                                                                    \
            std::printf("FAIL: " __VA_ARGS__);                                                                         \
            std::printf("\n");                                                                                         \
            g_bad++;                                                                                                   \
        }                                                                                                              \
    } while (0)

// a tree reduction through shared memory, then one warp's shuffle sum:
// every thread's value survives log2(n) barriers in its own frame
__global__ void k_sum(const float *in, float *out, unsigned *order) {
    __shared__ float s[1024];
    const unsigned t = threadIdx.x;
    float mine = in[blockIdx.x * blockDim.x + t];
    double kept = (double)mine * 3.0; /* a value live across every barrier */
    s[t] = mine;
    __syncthreads();
    for (unsigned h = blockDim.x / 2; h >= 32; h >>= 1) {
        if (t < h)
            s[t] += s[t + h];
        __syncthreads();
    }
    if (t < 32) {
        const float v = mkc_warp_sum(s[t]);
        if (t == 0)
            out[blockIdx.x] = v;
    }
    /* the frame is intact: kept is this thread's own value */
    if (kept != (double)in[blockIdx.x * blockDim.x + t] * 3.0)
        order[0] = 0xdead;
    /* every thread finishes: count them */
    __syncthreads();
    if (t == 0)
        order[1 + blockIdx.x] = blockDim.x;
}

// lane l reads lane (l + 1) % 32's value through __shfl_sync, twice in a row
// (the two parity buffers)
__global__ void k_rotate(int *out) {
    const unsigned l = threadIdx.x & 31;
    float a = __shfl_sync(0xffffffffu, (float)(threadIdx.x * 2), (int)((l + 1) & 31));
    float b = __shfl_sync(0xffffffffu, (float)(threadIdx.x * 2 + 1), (int)((l + 31) & 31));
    out[2 * threadIdx.x] = (int)a;
    out[2 * threadIdx.x + 1] = (int)b;
}

// half of warp 0 at a shuffle, the rest of the block at __syncthreads: on
// a GPU a hang (the shuffle waits for lanes that never come)
__global__ void k_diverge(int *out) {
    if (threadIdx.x < 16) {
        out[threadIdx.x] = (int)__shfl_xor_sync(0xffffffffu, 1.0f, 1);
    } else {
        __syncthreads();
        out[threadIdx.x] = 1;
    }
}

// the rounding mode of SSE arithmetic is the one the host set: a fiber
// starts with the launcher's MXCSR
__global__ void k_round(const float *a, float *out) { out[threadIdx.x] = a[0] / 3.0f; }

// a block's thread 0 writes byte `at` of the dynamic shared memory
__global__ void k_smem_write(int at) {
    if (threadIdx.x == 0)
        emu_dyn_smem[at] = 1;
    __syncthreads();
}

int main(int argc, char **argv) {
    if (argc > 1 && std::strcmp(argv[1], "smem_past") == 0) { /* must abort: byte 64 of a 64-byte launch */
        emu_smem(64);
        emu_block(1, 0, 32, [&] { k_smem_write(64); });
        std::printf("a write past the launch's shared memory went unnoticed\n");
        return 0;
    }
    if (argc > 1 && std::strcmp(argv[1], "diverge") == 0) {
        int out[64] = {0};
        emu_block(1, 0, 64, [&] { k_diverge(out); });
        std::printf("the divergent block completed\n");
        return 0;
    }
    /* the last byte of a 64-byte launch's shared memory is its own (the control above: the next is not) */
    emu_smem(64);
    emu_block(1, 0, 32, [&] { k_smem_write(63); });
    emu_smem(0);
    /* block sizes 32..1024, several blocks, sums of small integers (exact in float) */
    for (unsigned n = 32; n <= 1024; n *= 2) {
        const unsigned G = 3;
        std::vector<float> in(G * n), out(G, -1.0f);
        std::vector<unsigned> order(1 + G, 0);
        double want[3] = {0, 0, 0};
        for (unsigned i = 0; i < G * n; i++) {
            in[i] = (float)((i * 7919u) % 97u) - 48.0f;
            want[i / n] += in[i];
        }
        for (unsigned b = 0; b < G; b++)
            emu_block(G, b, n, [&] { k_sum(in.data(), out.data(), order.data()); });
        for (unsigned b = 0; b < G; b++) {
            CHECK(out[b] == (float)want[b], "block of %u threads, block %u: sum %g, want %g", n, b, out[b], want[b]);
            CHECK(order[1 + b] == n, "block of %u threads, block %u: did not finish", n, b);
        }
        CHECK(order[0] == 0, "block of %u threads: a thread's frame changed across barriers", n);
    }
    {
        std::vector<int> out(2 * 128, -1);
        emu_block(1, 0, 128, [&] { k_rotate(out.data()); });
        for (unsigned t = 0; t < 128; t++) {
            const unsigned w = t & ~31u, l = t & 31;
            CHECK(out[2 * t] == (int)((w + ((l + 1) & 31)) * 2), "thread %u: shuffle read %d", t, out[2 * t]);
            CHECK(out[2 * t + 1] == (int)((w + ((l + 31) & 31)) * 2 + 1), "thread %u: second shuffle read %d", t,
                  out[2 * t + 1]);
        }
    }
    {
        /* 1/3 rounds differently toward zero and to nearest */
        /* volatile: the compiler neither folds the divisions nor merges the two */
        static volatile float one = 1.0f;
        static float one_buf[1];
        one_buf[0] = one;
        float out[32];
        std::fesetround(FE_TOWARDZERO);
        const float host_tz = one / 3.0f;
        emu_block(1, 0, 32, [&] { k_round(one_buf, out); });
        std::fesetround(FE_TONEAREST);
        const float host_rn = one / 3.0f;
        CHECK(host_tz != host_rn, "the host's rounding modes agree on 1/3 (the check cannot fail)");
        CHECK(out[0] == host_tz && out[31] == host_tz, "a fiber did not start with the launcher's rounding mode");
        emu_block(1, 0, 32, [&] { k_round(one_buf, out); });
        CHECK(out[0] == host_rn, "a fiber kept an earlier launch's rounding mode");
    }
    if (!g_bad)
        std::printf("ok: sums over blocks of 32..1024 threads, shuffles, rounding mode\n");
    return g_bad ? 1 : 0;
}

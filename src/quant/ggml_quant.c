/* ggml's Q8_0 / Q4_0 / Q5_0 / Q5_1 reference quantizers and the type
 * table (include/moekit/ggml_quant.h gives the formats; the K-quants are
 * in ggml_kquant.c). The operations are ggml's, in its order and in
 * float32, so the bytes are llama-quantize's: tests/cli/gguf_llama.sh
 * compares them with what llama.cpp's own llama-quantize writes. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "moekit/dtype.h"
#include "moekit/ggml_quant.h"

const char *mk_ggml_type_name(mk_ggml_type t) {
    switch (t) {
    case MK_GGML_F32: return "F32";
    case MK_GGML_F16: return "F16";
    case MK_GGML_BF16: return "BF16";
    case MK_GGML_Q8_0: return "Q8_0";
    case MK_GGML_Q4_0: return "Q4_0";
    case MK_GGML_Q5_0: return "Q5_0";
    case MK_GGML_Q5_1: return "Q5_1";
    case MK_GGML_Q4_K: return "Q4_K";
    case MK_GGML_Q5_K: return "Q5_K";
    case MK_GGML_Q6_K: return "Q6_K";
    }
    return NULL;
}

bool mk_ggml_is_quant(mk_ggml_type t) { return mk_ggml_block_size(t) > 1; }

int mk_ggml_block_size(mk_ggml_type t) {
    switch (t) {
    case MK_GGML_F32:
    case MK_GGML_F16:
    case MK_GGML_BF16: return 1;
    case MK_GGML_Q8_0:
    case MK_GGML_Q4_0:
    case MK_GGML_Q5_0:
    case MK_GGML_Q5_1: return MK_GGML_QK;
    case MK_GGML_Q4_K:
    case MK_GGML_Q5_K:
    case MK_GGML_Q6_K: return MK_GGML_QK_K;
    }
    return 0;
}

/* bytes of one block of t */
static uint64_t block_bytes(mk_ggml_type t) {
    switch (t) {
    case MK_GGML_F32: return 4;
    case MK_GGML_F16:
    case MK_GGML_BF16: return 2;
    case MK_GGML_Q8_0: return 34;
    case MK_GGML_Q4_0: return 18;
    case MK_GGML_Q5_0: return 22;
    case MK_GGML_Q5_1: return 24;
    case MK_GGML_Q4_K: return 144;
    case MK_GGML_Q5_K: return 176;
    case MK_GGML_Q6_K: return 210;
    }
    return 0;
}

uint64_t mk_ggml_row_bytes(mk_ggml_type t, int64_t cols) {
    int bs = mk_ggml_block_size(t);
    if (cols < 0 || bs == 0 || cols % bs)
        return 0;
    return (uint64_t)(cols / bs) * block_bytes(t);
}

static void put_f16(unsigned char *p, float d) {
    uint16_t h = mk_f32_to_f16(d);
    p[0] = (unsigned char)(h & 0xff); /* GGUF is little-endian */
    p[1] = (unsigned char)(h >> 8);
}

static void q8_0_block(const float *x, unsigned char *y) {
    float amax = 0.0f;
    for (int j = 0; j < MK_GGML_QK; j++) {
        float a = fabsf(x[j]);
        amax = amax > a ? amax : a; /* ggml's MAX(amax, a): a NaN never wins */
    }
    const float d = amax / 127;
    const float id = d ? 1.0f / d : 0.0f;
    put_f16(y, d);
    for (int j = 0; j < MK_GGML_QK; j++)
        y[2 + j] = (unsigned char)(int8_t)roundf(x[j] * id);
}

static void q4_0_block(const float *x, unsigned char *y) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < MK_GGML_QK; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    const float d = max / -8;
    const float id = d ? 1.0f / d : 0.0f;
    put_f16(y, d);
    for (int j = 0; j < MK_GGML_QK / 2; j++) {
        const float x0 = x[j] * id, x1 = x[MK_GGML_QK / 2 + j] * id;
        int8_t i0 = (int8_t)(x0 + 8.5f), i1 = (int8_t)(x1 + 8.5f);
        uint8_t q0 = (uint8_t)(i0 < 15 ? i0 : 15), q1 = (uint8_t)(i1 < 15 ? i1 : 15);
        y[2 + j] = (unsigned char)(q0 | (q1 << 4));
    }
}

/* the 5th bits of 32 codes, code j at bit j, stored little-endian */
static void put_qh(unsigned char *p, uint32_t qh) {
    for (int b = 0; b < 4; b++)
        p[b] = (unsigned char)(qh >> (8 * b));
}

static void q5_0_block(const float *x, unsigned char *y) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < MK_GGML_QK; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    const float d = max / -16;
    const float id = d ? 1.0f / d : 0.0f;
    put_f16(y, d);
    uint32_t qh = 0;
    for (int j = 0; j < MK_GGML_QK / 2; j++) {
        const float x0 = x[j] * id, x1 = x[MK_GGML_QK / 2 + j] * id;
        int8_t i0 = (int8_t)(x0 + 16.5f), i1 = (int8_t)(x1 + 16.5f);
        uint8_t q0 = (uint8_t)(i0 < 31 ? i0 : 31), q1 = (uint8_t)(i1 < 31 ? i1 : 31);
        y[6 + j] = (unsigned char)((q0 & 0x0f) | ((q1 & 0x0f) << 4));
        qh |= (uint32_t)((q0 & 0x10u) >> 4) << j;
        qh |= (uint32_t)((q1 & 0x10u) >> 4) << (j + MK_GGML_QK / 2);
    }
    put_qh(y + 2, qh);
}

static void q5_1_block(const float *x, unsigned char *y) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < MK_GGML_QK; j++) {
        if (x[j] < min)
            min = x[j];
        if (x[j] > max)
            max = x[j];
    }
    const float d = (max - min) / 31;
    const float id = d ? 1.0f / d : 0.0f;
    put_f16(y, d);
    put_f16(y + 2, min);
    uint32_t qh = 0;
    for (int j = 0; j < MK_GGML_QK / 2; j++) {
        const float x0 = (x[j] - min) * id, x1 = (x[MK_GGML_QK / 2 + j] - min) * id;
        uint8_t q0 = (uint8_t)(x0 + 0.5f), q1 = (uint8_t)(x1 + 0.5f);
        y[8 + j] = (unsigned char)((q0 & 0x0f) | ((q1 & 0x0f) << 4));
        qh |= (uint32_t)((q0 & 0x10u) >> 4) << j;
        qh |= (uint32_t)((q1 & 0x10u) >> 4) << (j + MK_GGML_QK / 2);
    }
    put_qh(y + 4, qh);
}

void mk_ggml_quantize(mk_ggml_type t, const float *x, int64_t rows, int64_t cols, void *out) {
    unsigned char *y = out;
    const int64_t n = rows * cols;
    switch (t) {
    case MK_GGML_Q4_K: mk_ggml_quantize_q4_k(x, y, n); return;
    case MK_GGML_Q5_K: mk_ggml_quantize_q5_k(x, y, n); return;
    case MK_GGML_Q6_K: mk_ggml_quantize_q6_k(x, y, n); return;
    default: break;
    }
    void (*blk)(const float *, unsigned char *) = t == MK_GGML_Q8_0   ? q8_0_block
                                                  : t == MK_GGML_Q4_0 ? q4_0_block
                                                  : t == MK_GGML_Q5_0 ? q5_0_block
                                                                      : q5_1_block;
    const uint64_t bb = block_bytes(t);
    const int64_t nb = n / MK_GGML_QK;
    for (int64_t b = 0; b < nb; b++)
        blk(x + b * MK_GGML_QK, y + (uint64_t)b * bb);
}

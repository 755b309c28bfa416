/* ggml's Q8_0 / Q4_0 reference quantizers (include/moekit/ggml_quant.h
 * gives the formats). The operations are ggml's, in its order and in
 * float32, so the bytes are llama-quantize's: tests/cli/gguf_llama.sh
 * compares them with what llama.cpp's own llama-quantize writes. */
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
    }
    return NULL;
}

bool mk_ggml_is_quant(mk_ggml_type t) { return t == MK_GGML_Q8_0 || t == MK_GGML_Q4_0; }

uint64_t mk_ggml_row_bytes(mk_ggml_type t, int64_t cols) {
    if (cols < 0)
        return 0;
    switch (t) {
    case MK_GGML_F32: return (uint64_t)cols * 4;
    case MK_GGML_F16:
    case MK_GGML_BF16: return (uint64_t)cols * 2;
    case MK_GGML_Q8_0: return cols % MK_GGML_QK ? 0 : (uint64_t)cols / MK_GGML_QK * 34;
    case MK_GGML_Q4_0: return cols % MK_GGML_QK ? 0 : (uint64_t)cols / MK_GGML_QK * 18;
    }
    return 0;
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

void mk_ggml_quantize(mk_ggml_type t, const float *x, int64_t rows, int64_t cols, void *out) {
    unsigned char *y = out;
    const int bb = t == MK_GGML_Q8_0 ? 34 : 18;
    const int64_t nb = rows * (cols / MK_GGML_QK);
    for (int64_t b = 0; b < nb; b++) {
        if (t == MK_GGML_Q8_0)
            q8_0_block(x + b * MK_GGML_QK, y + b * bb);
        else
            q4_0_block(x + b * MK_GGML_QK, y + b * bb);
    }
}

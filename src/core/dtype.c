/* dtype traits table and scalar float conversions (f16, fp8 E4M3/E5M2,
 * E8M0) plus bulk conversion to and from float32. */
#include <math.h>
#include <string.h>

#include "moekit/dtype.h"

static const mk_dtype_traits g_traits[MK_DT_COUNT] = {
    [MK_DT_BOOL] = {"BOOL", 8, false},        [MK_DT_F4] = {"F4", 4, true},
    [MK_DT_F6_E2M3] = {"F6_E2M3", 6, true},   [MK_DT_F6_E3M2] = {"F6_E3M2", 6, true},
    [MK_DT_U8] = {"U8", 8, false},            [MK_DT_I8] = {"I8", 8, false},
    [MK_DT_F8_E5M2] = {"F8_E5M2", 8, true},   [MK_DT_F8_E4M3] = {"F8_E4M3", 8, true},
    [MK_DT_F8_E8M0] = {"F8_E8M0", 8, true},   [MK_DT_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8, true},
    [MK_DT_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8, true},
    [MK_DT_I16] = {"I16", 16, false},         [MK_DT_U16] = {"U16", 16, false},
    [MK_DT_F16] = {"F16", 16, true},          [MK_DT_BF16] = {"BF16", 16, true},
    [MK_DT_I32] = {"I32", 32, false},         [MK_DT_U32] = {"U32", 32, false},
    [MK_DT_F32] = {"F32", 32, true},          [MK_DT_C64] = {"C64", 64, true},
    [MK_DT_F64] = {"F64", 64, true},          [MK_DT_I64] = {"I64", 64, false},
    [MK_DT_U64] = {"U64", 64, false},
};

const mk_dtype_traits *mk_dtype_info(mk_dtype t) {
    if ((unsigned)t >= MK_DT_COUNT)
        return NULL;
    return &g_traits[t];
}

const char *mk_dtype_name(mk_dtype t) {
    const mk_dtype_traits *i = mk_dtype_info(t);
    return i ? i->name : "?";
}

mk_dtype mk_dtype_parse(const char *s) {
    for (int i = 0; i < MK_DT_COUNT; i++)
        if (strcmp(s, g_traits[i].name) == 0)
            return (mk_dtype)i;
    return MK_DT_INVALID;
}

bool mk_dtype_nbytes(mk_dtype t, uint64_t n, uint64_t *out) {
    const mk_dtype_traits *i = mk_dtype_info(t);
    if (!i)
        return false;
    if (n > UINT64_MAX / i->bits)
        return false;
    uint64_t bits = n * i->bits;
    if (bits % 8)
        return false;
    *out = bits / 8;
    return true;
}

uint16_t mk_f32_to_f16(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    uint16_t sign = (uint16_t)((v.u >> 16) & 0x8000u);
    uint32_t a = v.u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return sign | 0x7e00u;
    if (a >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return sign | 0x7c00u;
    if (a < 0x38800000u) { /* below 2^-14: subnormal; let the FPU round */
        float r = fabsf(f) * 16777216.0f; /* scale by 2^24: units of the subnormal lsb */
        return sign | (uint16_t)nearbyintf(r);
    }
    uint32_t mant = a & 0x7fffffu, exp = (a >> 23) - 112;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return sign | (uint16_t)h;
}

float mk_e5m2_to_f32(uint8_t b) {
    int s = b >> 7, e = (b >> 2) & 0x1f, m = b & 3;
    float v;
    if (e == 0x1f)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexpf((float)m / 4.0f, -14);
    else
        v = ldexpf(1.0f + (float)m / 4.0f, e - 15);
    return s ? -v : v;
}

float mk_e8m0_to_f32(uint8_t b) {
    if (b == 0xff)
        return NAN;
    return ldexpf(1.0f, (int)b - 127);
}

uint8_t mk_f32_to_e4m3(float f) {
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (isnan(f))
        return 0x7f;
    if (a >= 448.0f)
        return sign | 0x7e;
    /* Search the 127 non-negative codes for the nearest (ties to even code). */
    int lo = 0, hi = 0x7e;
    while (lo < hi) { /* first code whose value >= a */
        int mid = (lo + hi) / 2;
        if (mk_e4m3_to_f32((uint8_t)mid) < a)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo > 0) {
        float up = mk_e4m3_to_f32((uint8_t)lo), dn = mk_e4m3_to_f32((uint8_t)(lo - 1));
        if (a - dn < up - a || (a - dn == up - a && ((lo - 1) & 1) == 0))
            lo--;
    }
    return sign | (uint8_t)lo;
}

bool mk_dtype_to_f32(mk_dtype t, const void *src, float *dst, size_t n) {
    switch (t) {
    case MK_DT_F32: memcpy(dst, src, n * 4); return true;
    case MK_DT_F64: {
        const unsigned char *p = src;
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return true;
    }
    case MK_DT_BF16: {
        const unsigned char *p = src;
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = mk_bf16_to_f32(h);
        }
        return true;
    }
    case MK_DT_F16: {
        const unsigned char *p = src;
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = mk_f16_to_f32(h);
        }
        return true;
    }
    case MK_DT_F8_E4M3: {
        const uint8_t *p = src;
        for (size_t i = 0; i < n; i++)
            dst[i] = mk_e4m3_to_f32(p[i]);
        return true;
    }
    case MK_DT_F8_E5M2: {
        const uint8_t *p = src;
        for (size_t i = 0; i < n; i++)
            dst[i] = mk_e5m2_to_f32(p[i]);
        return true;
    }
    case MK_DT_F8_E8M0: {
        const uint8_t *p = src;
        for (size_t i = 0; i < n; i++)
            dst[i] = mk_e8m0_to_f32(p[i]);
        return true;
    }
    default: return false;
    }
}

bool mk_dtype_from_f32(mk_dtype t, const float *src, void *dst, size_t n) {
    unsigned char *p = dst;
    switch (t) {
    case MK_DT_F32: memcpy(dst, src, n * 4); return true;
    case MK_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = mk_f32_to_bf16(src[i]);
            memcpy(p + 2 * i, &h, 2);
        }
        return true;
    case MK_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = mk_f32_to_f16(src[i]);
            memcpy(p + 2 * i, &h, 2);
        }
        return true;
    default: return false;
    }
}

#!/usr/bin/env python3
"""Independent test vectors for moekit's quantizer (tests/data/quant/).

Pure Python 3, no numpy. Written from FORMATS.md section 2 and MLX's CPU
code (mlx/backend/cpu/quantized.cpp `quantize` for affine; the op graph of
`fp_quantize` in mlx/ops.cpp for mxfp4/mxfp8/nvfp4), not from moekit's C.
It deliberately computes things the straightforward way where the C code
takes shortcuts: the fp4 code is the argmin over MLX's full 16-entry table,
E4M3 encoding is a nearest-value search on exact rationals, not bit tricks.

float32 is emulated by rounding every result through struct 'f': each of
+ - * / done in double and rounded once to float32 is the correctly rounded
float32 result (double has more than 2*24+2 bits). bf16/f16 results are
rounded from that float32, as MLX's bf16/f16 ops compute in float32 and
store; for + - * / that double rounding equals direct rounding.

Output: one binary file per case plus index.json describing each case and
the byte ranges of its sections (all little-endian):
  input     rows x cols elements of the input dtype
  wq        rows x cols*bits/32 uint32 words
  scales    rows x cols/group, input dtype (affine) or uint8
  biases    rows x cols/group, input dtype (affine only)
  deq_f32   rows x cols float32: dequantized in float32 arithmetic
  deq_t     rows x cols input dtype: dequantized as MLX does, in the
            input dtype (absent for F32 input, where it equals deq_f32)

Run from anywhere: python3 tests/gen/gen_quant_vectors.py [outdir]
"""

import json
import math
import os
import random
import struct
import sys
from fractions import Fraction

INF = float("inf")
NAN = float("nan")
FLT_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]

# ---------------------------------------------------------------------------
# float32 / bf16 / f16 emulation


def f32(x):
    """x (a Python float) rounded to the nearest float32, ties to even."""
    if math.isnan(x) or math.isinf(x):
        return x
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:  # beyond FLT_MAX + half an ulp
        return math.copysign(INF, x)


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def bits_f32(u):
    return struct.unpack("<f", struct.pack("<I", u & 0xFFFFFFFF))[0]


def bf16_bits(x):
    """float32 value -> bf16 bits, nearest-even."""
    u = f32_bits(x)
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return ((u >> 16) | 0x40) & 0xFFFF
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


def f16_bits(x):
    try:
        return struct.unpack("<H", struct.pack("<e", x))[0]
    except OverflowError:
        return 0xFC00 if x < 0 else 0x7C00


def round_to(dt, x):
    """float32 value x stored into dtype dt and read back."""
    x = f32(x)
    if dt == "F32":
        return x
    if dt == "BF16":
        return bits_f32(bf16_bits(x) << 16)
    if math.isnan(x):
        return x
    return struct.unpack("<e", struct.pack("<H", f16_bits(x)))[0]


def pack_values(dt, vals):
    if dt == "F32":
        return struct.pack("<%df" % len(vals), *vals)
    if dt == "BF16":
        return struct.pack("<%dH" % len(vals), *[bf16_bits(v) for v in vals])
    return struct.pack("<%dH" % len(vals), *[f16_bits(v) for v in vals])


def rint(x):
    """round half to even (Python's round on floats)."""
    if math.isnan(x) or math.isinf(x):
        return x
    return float(round(x))


def fdiv(a, b):
    """IEEE float division (Python raises on /0)."""
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return NAN
        return math.copysign(INF, a) * math.copysign(1.0, b)
    return a / b


# ---------------------------------------------------------------------------
# bit streams


def pack_codes(codes, bits):
    """LSB-first bit stream of `bits`-bit codes, as little-endian bytes."""
    acc = 0
    for j, q in enumerate(codes):
        assert 0 <= q < (1 << bits)
        acc |= q << (j * bits)
    nbytes = len(codes) * bits // 8
    return acc.to_bytes(nbytes, "little")


# ---------------------------------------------------------------------------
# affine (FORMATS.md section 2)


def affine_group(ws, bits):
    """ws: float32 values of one group. Returns (codes, scale, bias) in f32."""
    n = float((1 << bits) - 1)
    eps = f32(1e-7)
    wmax = max(ws)
    wmin = min(ws)
    s = f32(f32(wmax - wmin) / n)
    s = eps if s < eps else s
    mask = abs(wmin) > abs(wmax)
    if not mask:
        s = -s
    edge = wmin if mask else wmax
    q0 = rint(f32(edge / s))
    bias = 0.0
    if q0 != 0:
        s = f32(edge / q0)
        bias = edge
    codes = []
    for w in ws:
        q = rint(f32(f32(w - bias) / s))
        q = min(max(q, 0.0), n)
        codes.append(int(q))
    return codes, s, bias


def affine_case(dt, bits, group, rows_vals):
    wq = b""
    scales, biases, deq32, deqt = [], [], [], []
    for row in rows_vals:
        for g0 in range(0, len(row), group):
            codes, s, b = affine_group(row[g0:g0 + group], bits)
            wq += pack_codes(codes, bits)
            st, bt = round_to(dt, s), round_to(dt, b)
            scales.append(st)
            biases.append(bt)
            for q in codes:
                deq32.append(f32(f32(st * q) + bt))
                deqt.append(round_to(dt, round_to(dt, st * q) + bt))
    return wq, pack_values(dt, scales), pack_values(dt, biases), deq32, deqt


# ---------------------------------------------------------------------------
# E4M3 as MLX stores it: the "fn" variant. 0x7f/0xff are NaN, the largest
# finite magnitude is 0x7e = 448, and MLX's quantizer saturates: whatever
# would round above 448 (|x| > 464, and Inf/NaN) is 0x7e. (An earlier
# version of this generator let (464, 480) round to 0x7f as if it were 480;
# issue 15 records MLX's own output saturating at 0x7e.)


def e4m3_value(code):
    e, m = (code >> 3) & 15, code & 7
    if e == 15 and m == 7:
        return math.nan
    v = (m / 8.0) * 2.0 ** -6 if e == 0 else (1 + m / 8.0) * 2.0 ** (e - 7)
    return -v if code & 0x80 else v


E4M3_GRID = [(Fraction(e4m3_value(c)), c) for c in range(0x7F)]  # ascending, finite


def to_e4m3(x):
    sign = 0x80 if math.copysign(1.0, x) < 0 else 0
    a = abs(x)
    if math.isnan(a) or a > 448.0:
        return sign | 0x7E
    fa = Fraction(a)
    best = None
    for v, c in E4M3_GRID:  # nearest; a tie goes to the even code (even mantissa)
        d = abs(fa - v)
        if best is None or d < best[0] or (d == best[0] and c % 2 == 0):
            best = (d, c)
    return sign | best[1]


FP4_LUT = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
           -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def fp4_argmin(x, dt):
    """MLX: argmin(abs(x - lut)) in dtype dt; first minimum, NaN never wins."""
    ds = [abs(round_to(dt, x - L)) for L in FP4_LUT]
    idx, best = 0, ds[0]
    for k in range(1, 16):
        if ds[k] < best:
            idx, best = k, ds[k]
    return idx


def fp_group(mode, ws, dt, gs):
    """One group of an fp mode. Returns (codes, scale byte, deq_f32, deq_t)."""
    bits = 8 if mode == "mxfp8" else 4
    maxval = 448.0 if mode == "mxfp8" else 6.0
    amax = max(abs(w) for w in ws)
    s = round_to(dt, amax / maxval)
    elem_dt = dt
    if mode in ("mxfp4", "mxfp8"):
        if s == 0.0:
            e = 0
        else:
            e = int(rint(round_to(dt, math.log2(s))))
        # MLX's where() makes e a float again; its uint8 cast of a negative
        # value is undefined in C++, and Apple silicon (MLX's home) gives 0,
        # the byte of 2^-127. MLX still divides by 2^e, so its codes disagree
        # with the scale it stores; moekit divides by the stored 2^-127 (the
        # E8M0 floor, as the OCP MX spec clamps the shared exponent).
        e = max(e, -127)
        div = round_to(dt, 2.0 ** e)
        byte = e + 127
        sc32 = f32(2.0 ** (byte - 127))
        sct = round_to(dt, 2.0 ** (byte - 127))
    else:
        if gs:
            enc = f32(2688.0 / gs)
            byte = to_e4m3(f32(s * enc))
            div = f32(e4m3_value(byte) / enc)
            elem_dt = "F32"
            sc32 = div
            sct = round_to(dt, div)
        else:
            byte = to_e4m3(s)
            div = round_to(dt, e4m3_value(byte))
            sc32 = sct = div
    codes = []
    for w in ws:
        x = round_to(elem_dt, fdiv(w, div))
        codes.append(fp4_argmin(x, elem_dt) if bits == 4 else to_e4m3(x))
    vals = [FP4_LUT[c] if bits == 4 else e4m3_value(c) for c in codes]
    d32 = [f32(v * sc32) for v in vals]
    dt_ = [round_to(dt, v * sct) for v in vals]
    return codes, byte, d32, dt_


def fp_case(mode, dt, group, rows_vals, gs):
    bits = 8 if mode == "mxfp8" else 4
    wq, scales, deq32, deqt = b"", [], [], []
    for row in rows_vals:
        for g0 in range(0, len(row), group):
            codes, byte, d32, dt_ = fp_group(mode, row[g0:g0 + group], dt, gs)
            wq += pack_codes(codes, bits)
            scales.append(byte)
            deq32 += d32
            deqt += dt_
    return wq, bytes(scales), deq32, deqt


# ---------------------------------------------------------------------------
# inputs: each row is built group by group from one pattern


def affine_patterns(bits):
    n = (1 << bits) - 1

    def ties(rng, G, gi):
        if gi % 2 == 0:
            # edge / s0 = (n - 0.5) exactly: q0 is a rint tie
            hi = (n - 0.5) * 0.5
            v = [hi, -0.25] + [rng.choice([0.0, 0.25, -0.25, hi]) for _ in range(G - 2)]
        else:
            # s = -0.5, bias = n/2 exactly; w = k/2 + 1/4 gives q = n - k - 1/2
            v = [0.0, n * 0.5] + [rng.randrange(n) * 0.5 + 0.25 for _ in range(G - 2)]
        rng.shuffle(v)
        return v

    def outlier(rng, G, gi):
        v = [rng.gauss(0, 0.01) for _ in range(G)]
        v[rng.randrange(G)] = 1e4 if gi % 2 == 0 else -1e4
        return v

    def constant(rng, G, gi):
        return [(0.3671875, -1.5, 0.0, 100.0)[gi % 4]] * G

    def zeros(rng, G, gi):
        return [(-0.0 if (gi + j) % 5 == 0 else 0.0) for j in range(G)]

    def minus1_1(rng, G, gi):
        v = [-1.0, 1.0] + [rng.uniform(-1, 1) for _ in range(G - 2)]
        rng.shuffle(v)
        return v

    def symmetric(rng, G, gi):  # |wmin| == |wmax|: the negative-scale branch
        v = [-2.0, 2.0] + [rng.uniform(-2, 2) for _ in range(G - 2)]
        rng.shuffle(v)
        return v

    return [
        ("normal", lambda r, G, gi: [r.gauss(0, 1) for _ in range(G)]),
        ("weights", lambda r, G, gi: [r.gauss(0, 0.02) for _ in range(G)]),
        ("all_negative", lambda r, G, gi: [-r.uniform(0.5, 3) for _ in range(G)]),
        ("all_positive", lambda r, G, gi: [r.uniform(0.1, 2) for _ in range(G)]),
        ("constant", constant),
        ("zeros", zeros),
        ("sparse", lambda r, G, gi: [0.0 if r.random() < 0.4 else r.gauss(0, 1) for _ in range(G)]),
        ("outlier", outlier),
        ("tiny", lambda r, G, gi: [r.gauss(0, 1e-7 if gi % 2 else 3e-9) for _ in range(G)]),
        ("ties", ties),
        ("minus1_1", minus1_1),
        ("near_constant", lambda r, G, gi: [1000.0 + r.gauss(0, 1e-4) for _ in range(G)]),
        ("wide", lambda r, G, gi: [r.choice((-1, 1)) * 10 ** r.uniform(-4, 3) for _ in range(G)]),
        ("symmetric", symmetric),
    ]


def exponent_tie_amax(dt, maxval, count):
    """amax values whose scale amax/maxval has a log2 that rounds, in dt, to
    exactly k + 0.5 while the exact log2 is not k + 0.5: rint then gives the
    even k, which exact arithmetic would not. Found by scanning dt's values."""
    found = []
    if dt == "F32":
        # near sqrt(2) * 2^k * maxval
        for k in range(-3, 6):
            c = math.sqrt(2) * 2.0 ** k * maxval
            u = f32_bits(f32(c))
            for du in range(-40, 41):
                a = bits_f32(u + du)
                s = f32(a / maxval)
                l = f32(math.log2(s))
                if l - math.floor(l) == 0.5 and math.log2(s) != l:
                    found.append(a)
                    break
            if len(found) >= count:
                break
        return found
    step = (lambda u: bits_f32(u << 16)) if dt == "BF16" else \
        (lambda u: struct.unpack("<e", struct.pack("<H", u))[0])
    lo, hi = (0x3F80, 0x4700) if dt == "BF16" else (0x3C00, 0x7800)
    for u in range(lo, hi):
        a = step(u)
        s = round_to(dt, a / maxval)
        if s == 0:
            continue
        l = round_to(dt, math.log2(s))
        if l - math.floor(l) == 0.5 and math.log2(s) != l:
            found.append(a)
            if len(found) >= count:
                break
    return found


def fp_patterns(mode, dt):
    maxval = 448.0 if mode == "mxfp8" else 6.0
    tie_amax = exponent_tie_amax(dt, maxval, 8)

    def ties(rng, G, gi):
        if mode == "mxfp8":  # scale 1: E4M3 ties, saturation above 448 (464..480), subnormal ties
            v = [470.0, 464.0, 1.0625, 1.1875, -1.0625, 2.0 ** -10, 3 * 2.0 ** -10, -(2.0 ** -10),
                 479.0, 0.0, -3.25, 3.375]
        else:  # scale 1 (amax 6): fp4 ties go to the smaller magnitude
            v = [6.0, 0.75, 1.75, 3.5, 0.25, 1.25, 2.5, 5.0, -0.75, -1.75, -3.5, -0.25,
                 -5.0, -2.5, 0.2, -0.3]
        v = (v * ((G + len(v) - 1) // len(v)))[:G]
        v[0] = 6.0 if mode != "mxfp8" else 470.0
        return v

    def neg_to_zero(rng, G, gi):
        v = [-rng.uniform(0.0, 0.25) for _ in range(G)]
        v[gi % G] = 6.0 if mode != "mxfp8" else 448.0
        v[(gi + 1) % G] = -0.0
        return v

    def zeros(rng, G, gi):
        return [(-0.0 if (gi + j) % 3 == 0 else 0.0) for j in range(G)]

    def exp_ties(rng, G, gi):
        a = tie_amax[gi % len(tie_amax)] if tie_amax else 1.0
        v = [rng.uniform(-a, a) for _ in range(G)]
        v[rng.randrange(G)] = a if gi % 2 == 0 else -a
        return v

    def scale_edges(rng, G, gi):
        # nvfp4: amax/6 in E4M3's subnormal range, below it (scale byte 0),
        # in the 464..480 gap and above 480 (both saturated to 0x7e = 448);
        # mx*: huge and small exponents
        amax = [6 * 2.0 ** -11, 6 * 0.6 * 2.0 ** -9, 6 * 470.0, 6 * 1000.0,
                6 * 3 * 2.0 ** -9, 1e4, 2.0 ** -20, 7.0][gi % 8]
        v = [rng.uniform(-amax, amax) for _ in range(G)]
        v[gi % G] = amax
        return v

    def tiny(rng, G, gi):  # float32/bf16 subnormal scales; mx exponents below -127
        return [rng.gauss(0, 1e-39 if gi % 2 else 1e-30) for _ in range(G)]

    return [
        ("normal", lambda r, G, gi: [r.gauss(0, 1) for _ in range(G)]),
        ("weights", lambda r, G, gi: [r.gauss(0, 0.02) for _ in range(G)]),
        ("zeros", zeros),
        ("ties", ties),
        ("neg_to_zero", neg_to_zero),
        ("outlier", lambda r, G, gi: [r.gauss(0, 0.01) if j != gi % G else 50.0 for j in range(G)]),
        ("exp_ties", exp_ties),
        ("scale_edges", scale_edges),
        ("tiny", tiny),
        ("wide", lambda r, G, gi: [r.choice((-1, 1)) * 10 ** r.uniform(-4, 3) for _ in range(G)]),
        ("all_negative", lambda r, G, gi: [-r.uniform(0.5, 3) for _ in range(G)]),
        ("constant", lambda r, G, gi: [(0.3671875, -1.5, 2.0)[gi % 3]] * G),
    ]


def build_rows(patterns, dt, cols, group, seed):
    rng = random.Random(seed)
    rows, kinds = [], []
    for name, fn in patterns:
        row = []
        for gi in range(cols // group):
            row += [round_to(dt, f32(v)) for v in fn(rng, group, gi)]
        rows.append(row)
        kinds.append(name)
    return rows, kinds


# ---------------------------------------------------------------------------


def write_case(outdir, index, meta, sections):
    name = meta["name"]
    blob, offs = b"", {}
    for key, data in sections:
        offs[key] = [len(blob), len(data)]
        blob += data
    with open(os.path.join(outdir, name + ".bin"), "wb") as f:
        f.write(blob)
    meta = dict(meta)
    meta["file"] = name + ".bin"
    meta["sections"] = offs
    index.append(meta)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "data", "quant")
    os.makedirs(outdir, exist_ok=True)
    for f in os.listdir(outdir):
        if f.endswith(".bin"):
            os.remove(os.path.join(outdir, f))
    index = []
    cols = 128
    seed = 1
    for dt in ("F32", "F16", "BF16"):
        for bits in (2, 3, 4, 5, 6, 8):
            for group in (32, 64, 128):
                seed += 1
                rows, kinds = build_rows(affine_patterns(bits), dt, cols, group, seed)
                wq, sc, bi, d32, dt_ = affine_case(dt, bits, group, rows)
                secs = [("input", pack_values(dt, sum(rows, []))), ("wq", wq),
                        ("scales", sc), ("biases", bi),
                        ("deq_f32", struct.pack("<%df" % len(d32), *d32))]
                if dt != "F32":
                    secs.append(("deq_t", pack_values(dt, dt_)))
                write_case(outdir, index, {
                    "name": "affine_b%d_g%d_%s" % (bits, group, dt.lower()), "mode": "affine",
                    "bits": bits, "group": group, "dtype": dt, "rows": len(rows),
                    "cols": cols, "global_scale": 0.0, "row_kinds": kinds}, secs)
    for mode, group in (("mxfp4", 32), ("mxfp8", 32), ("nvfp4", 16)):
        for dt in ("F32", "F16", "BF16"):
            for gs_on in ((False, True) if mode == "nvfp4" else (False,)):
                seed += 1
                rows, kinds = build_rows(fp_patterns(mode, dt), dt, cols, group, seed)
                gs = 0.0
                if gs_on:  # MLX-style tensor scale: 448 * 6 / amax, float32
                    amax = max(abs(v) for r in rows for v in r)
                    gs = f32(2688.0 / amax)
                wq, sc, d32, dt_ = fp_case(mode, dt, group, rows, gs)
                secs = [("input", pack_values(dt, sum(rows, []))), ("wq", wq), ("scales", sc),
                        ("deq_f32", struct.pack("<%df" % len(d32), *d32))]
                if dt != "F32":
                    secs.append(("deq_t", pack_values(dt, dt_)))
                name = "%s_%s%s" % (mode, dt.lower(), "_gs" if gs_on else "")
                write_case(outdir, index, {
                    "name": name, "mode": mode, "bits": 8 if mode == "mxfp8" else 4,
                    "group": group, "dtype": dt, "rows": len(rows), "cols": cols,
                    "global_scale": gs, "row_kinds": kinds}, secs)
    with open(os.path.join(outdir, "index.json"), "w") as f:
        json.dump({"generator": "tests/gen/gen_quant_vectors.py", "cases": index}, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(outdir, x)) for x in os.listdir(outdir))
    print("%d cases, %d bytes in %s" % (len(index), total, outdir))


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Issue 9 item 14: quantize edge cases. Values near the float32 range give
# finite scales or a clear error (a group spanning -3e38..3e38 made an
# infinite affine scale, stored with exit 0); denormal groups give finite
# scales; an mxfp4 group of tiny amax is encoded consistently with the scale
# byte it stores: the codes are checked against an independent computation
# of the OCP MX rule (shared exponent floor(log2 amax) - 2 clamped to E8M0's
# -127, elements rounded to nearest-even E2M1), done here in awk.
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
. "$(dirname "${BASH_SOURCE[0]}")/crash_lib.bash"
W=$T/w
mkdir "$W"

# f32_file FILE V...: the values as float32 little-endian (round to nearest).
f32_file() {
    local f=$1
    shift
    printf "$(awk 'function bits(v,  s, a, e) {
            if (v == 0) return 0
            s = v < 0 ? 2147483648 : 0; a = v < 0 ? -v : v; e = 0
            while (a >= 2) { a /= 2; e++ }
            while (a < 1) { a *= 2; e-- }
            if (e < -126) return s + int(a * 2 ^ (e + 149) + 0.5)
            return s + (e + 127) * 8388608 + int((a - 1) * 8388608 + 0.5)
        }
        BEGIN { for (i = 1; i < ARGC; i++) { b = bits(ARGV[i] + 0)
            for (k = 0; k < 4; k++) { printf "\\%03o", b % 256; b = int(b / 256) } } }' "$@")" > "$f"
}

# tensor_u8 FILE NAME: the bytes of tensor NAME of a safetensors file, one
# unsigned decimal per line.
tensor_u8() {
    local n hdr off
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    hdr=$(head -c $((8 + n)) "$1" | tail -c "$n")
    off=$(grep -o "\"$2\":{[^}]*}" <<< "$hdr" | grep -o '"data_offsets":\[[0-9]*,[0-9]*\]' | grep -o '[0-9]*,[0-9]*')
    [ -n "$off" ] || fail "no tensor $2 in $1"
    od -An -v -tu1 -j $((8 + n + ${off%,*})) -N $((${off#*,} - ${off%,*})) "$1" | tr -s ' ' '\n' | grep -v '^$'
}
# tensor_f32 FILE NAME: its float32 values, one per line (od prints inf/nan)
tensor_f32() {
    local n hdr off
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    hdr=$(head -c $((8 + n)) "$1" | tail -c "$n")
    off=$(grep -o "\"$2\":{[^}]*}" <<< "$hdr" | grep -o '"data_offsets":\[[0-9]*,[0-9]*\]' | grep -o '[0-9]*,[0-9]*')
    [ -n "$off" ] || fail "no tensor $2 in $1"
    od -An -v -tf4 -j $((8 + n + ${off%,*})) -N $((${off#*,} - ${off%,*})) "$1" | tr -s ' ' '\n' | grep -v '^$'
}

# --- affine near the float32 range
vals=()
for ((i = 0; i < 64; i++)); do vals+=("$(((i % 3) - 1))e38"); done # -1e38, 0, 1e38 ...
vals[5]=3e38
vals[6]=-3e38
f32_file "$W/span.bin" "${vals[@]}"
ST_FILL=$W/span.bin st_make "$W/span.safetensors" "w.weight:F32:1,64"
snapshot "$W" all
expect 2 "w.weight|span more than float32|infinite" "$BIN" quantize "$W/span.safetensors" "$W/q_span" --group-size 64
unchanged "$W" all
[ ! -e "$W/q_span.partial" ] || fail "a partial output that no rerun can complete was kept"
ok "affine group spanning -3e38..3e38: clear error, nothing written"

vals=()
for ((i = 0; i < 64; i++)); do vals+=("$((i % 2))e38"); done
vals[3]=3.3e38
f32_file "$W/big.bin" "${vals[@]}"
ST_FILL=$W/big.bin st_make "$W/big.safetensors" "w.weight:F32:1,64"
expect 0 "" "$BIN" quantize "$W/big.safetensors" "$W/q_big" --group-size 64 --bits 2
tensor_f32 "$W/q_big/model.safetensors" w.scales > "$T/sc"
tensor_f32 "$W/q_big/model.safetensors" w.biases >> "$T/sc"
grep -qi "inf\|nan" "$T/sc" && fail "non-finite scale/bias for values up to 3.3e38: $(cat "$T/sc")"
ok "affine group 0..3.3e38 (2-bit): finite scale and bias"

vals=()
for ((i = 0; i < 64; i++)); do vals+=("$((i * 3))e-45"); done # float32 denormals
f32_file "$W/den.bin" "${vals[@]}"
ST_FILL=$W/den.bin st_make "$W/den.safetensors" "w.weight:F32:1,64"
for mode in affine mxfp4; do
    expect 0 "" "$BIN" quantize "$W/den.safetensors" "$W/q_den_$mode" --mode "$mode" --group-size 32
    if [ "$mode" = affine ]; then
        tensor_f32 "$W/q_den_$mode/model.safetensors" w.scales | grep -qi "inf\|nan" && fail "denormals: non-finite scale"
    fi
done
ok "denormal groups: finite scales"

# --- mxfp4: a group of tiny amax (3 * 2^-127: MLX's exponent round(log2(amax/6)) = -128)
r=(0 0.3 -0.3 0.6 0.9 -0.9 1.1 1.3 -1.3 1.6 1.9 2.2 -2.2 2.6 2.9 3 -3 0.1 0.7 1.2 1.7 2.4 2.7 -2.7
    0.2 -0.6 1.4 -1.9 2.1 0 -0 2.8)
w=()
for x in "${r[@]}"; do w+=("$(awk -v x="$x" 'BEGIN { printf "%.17g", x * 2 ^ -127 }')"); done
f32_file "$W/tiny.bin" "${w[@]}"
ST_FILL=$W/tiny.bin st_make "$W/tiny.safetensors" "w.weight:F32:1,32"
expect 0 "" "$BIN" quantize "$W/tiny.safetensors" "$W/q_tiny" --mode mxfp4
got_scale=$(tensor_u8 "$W/q_tiny/model.safetensors" w.scales)
got=$(tensor_u8 "$W/q_tiny/model.safetensors" w.weight | awk '{ printf "%d\n%d\n", $1 % 16, int($1 / 16) }')
# independent OCP MX reference from the float32 values actually stored
want=$(od -An -v -tf4 "$W/tiny.bin" | tr -s ' ' '\n' | grep -v '^$' | awk '
    { v[NR] = $1 + 0; a = v[NR] < 0 ? -v[NR] : v[NR]; if (a > amax) amax = a }
    END {
        x = int(log(amax) / log(2)); if (2 ^ x > amax) x--   # floor(log2 amax)
        X = x - 2; if (X < -127) X = -127                    # emax of E2M1 is 2
        print "scale", X + 127
        split("0 0.5 1 1.5 2 3 4 6", L, " ")
        for (i = 1; i <= NR; i++) {
            t = v[i] / 2 ^ X; m = t < 0 ? -t : t
            best = 1
            for (k = 2; k <= 8; k++) {
                d = m - L[k]; d = d < 0 ? -d : d; db = m - L[best]; db = db < 0 ? -db : db
                if (d < db || (d == db && (k - 1) % 2 == 0)) best = k   # ties to even code
            }
            c = best - 1; if (t < 0 && c) c += 8
            print c
        }
    }')
[ "$(head -1 <<< "$want")" = "scale $got_scale" ] || fail "mxfp4 tiny amax: stored scale byte $got_scale, OCP MX gives ${want%%$'\n'*}"
[ "$(tail -n +2 <<< "$want")" = "$got" ] ||
    fail "mxfp4 tiny amax: codes $(echo $got) differ from the OCP MX codes $(echo "$(tail -n +2 <<< "$want")") for scale byte $got_scale"
ok "mxfp4 group of amax 3*2^-127: scale byte and codes agree with the OCP MX rule"

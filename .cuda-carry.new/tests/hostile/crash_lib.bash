# Generators for the crash_*.sh hostile tests: small hand-built safetensors
# checkpoints written with printf (u64 LE header length + JSON header + data),
# independent of moekit's own writer. Source after lib.bash.
# (Named .bash so the tests/hostile/*.sh glob does not run it as a test.)

# st_make FILE SPEC...: write a safetensors file; each SPEC is
# NAME:DTYPE:D0,D1,... (DTYPE F32, BF16, F16, I32, U32, U8; no dims: scalar).
# The data is zeros unless ST_FILL names a file whose bytes are used
# (repeated/truncated to the data size).
st_make() {
    local file=$1
    shift
    local hdr="" off=0 spec name dt dims esz numel d
    for spec in "$@"; do
        name=${spec%%:*}
        dt=${spec#*:}
        dims=${dt#*:}
        dt=${dt%%:*}
        [ "$dims" = "$dt" ] && dims=""
        case $dt in F32 | I32 | U32) esz=4 ;; BF16 | F16) esz=2 ;; U8 | I8) esz=1 ;; *) esz=8 ;; esac
        numel=1
        for d in ${dims//,/ }; do numel=$((numel * d)); done
        hdr+="${hdr:+,}\"$name\":{\"dtype\":\"$dt\",\"shape\":[$dims],\"data_offsets\":[$off,$((off + numel * esz))]}"
        off=$((off + numel * esz))
    done
    hdr="{$hdr}"
    while [ $(((${#hdr} % 8))) -ne 0 ]; do hdr+=" "; done
    local n=${#hdr} i
    {
        for i in 0 1 2 3 4 5 6 7; do printf "\\$(printf '%03o' $(((n >> (8 * i)) & 255)))"; done
        printf '%s' "$hdr"
        if [ -n "${ST_FILL:-}" ]; then
            head -c "$off" "$ST_FILL"
        else
            head -c "$off" /dev/zero
        fi
    } > "$file"
}

# qwen3moe_specs L E: the tensor specs of a complete tiny qwen3_moe text model
# (hidden 64, 2 heads x 32, 1 kv head, vocab 64, L layers of E experts of 32);
# FUSED=1: HF fused experts (gate_up_proj [E, 64, 64], down_proj [E, 64, 32]).
qwen3moe_specs() {
    local L=$1 E=$2 l e p
    echo "model.embed_tokens.weight:BF16:64,64"
    echo "model.norm.weight:BF16:64"
    echo "lm_head.weight:BF16:64,64"
    for ((l = 0; l < L; l++)); do
        p=model.layers.$l
        echo "$p.input_layernorm.weight:BF16:64"
        echo "$p.post_attention_layernorm.weight:BF16:64"
        echo "$p.self_attn.q_proj.weight:BF16:64,64"
        echo "$p.self_attn.k_proj.weight:BF16:32,64"
        echo "$p.self_attn.v_proj.weight:BF16:32,64"
        echo "$p.self_attn.o_proj.weight:BF16:64,64"
        echo "$p.self_attn.q_norm.weight:BF16:32"
        echo "$p.self_attn.k_norm.weight:BF16:32"
        echo "$p.mlp.gate.weight:BF16:$E,64"
        if [ -n "${FUSED:-}" ]; then
            echo "$p.mlp.experts.gate_up_proj:BF16:$E,64,64"
            echo "$p.mlp.experts.down_proj:BF16:$E,64,32"
            continue
        fi
        for ((e = 0; e < E; e++)); do
            echo "$p.mlp.experts.$e.gate_proj.weight:BF16:32,64"
            echo "$p.mlp.experts.$e.up_proj.weight:BF16:32,64"
            echo "$p.mlp.experts.$e.down_proj.weight:BF16:64,32"
        done
    done
}

# qwen3moe_config DIR L E [EXTRA_JSON_FIELDS]: its config.json.
qwen3moe_config() {
    cat > "$1/config.json" << EOF
{"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 64,
 "num_hidden_layers": $2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
 "vocab_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32, "num_experts": $3,
 "num_experts_per_tok": 2, "max_position_embeddings": 256, "rms_norm_eps": 1e-06,
 "rope_theta": 1000000.0, "tie_word_embeddings": false, "hidden_act": "silu",
 "decoder_sparse_step": 1, "mlp_only_layers": [], "torch_dtype": "bfloat16"${4:+, $4}}
EOF
}

# make_qwen3moe DIR L E [DROP_REGEX [EXTRA_CONFIG]]: a tiny qwen3_moe
# checkpoint in DIR, without the tensors whose name matches DROP_REGEX.
make_qwen3moe() {
    local dir=$1 L=$2 E=$3 drop=${4:-} extra=${5:-}
    mkdir -p "$dir"
    local -a specs
    mapfile -t specs < <(qwen3moe_specs "$L" "$E" | { if [ -n "$drop" ]; then grep -Ev -- "$drop" || true; else cat; fi; })
    st_make "$dir/model.safetensors" "${specs[@]}"
    qwen3moe_config "$dir" "$L" "$E" "$extra"
}

# sanitized: whether $BIN is built with ASan/TSan (they reserve terabytes of
# address space, so such a binary cannot run under ulimit -v). Checked by the
# runtime's strings: clang links it statically, gcc dynamically.
sanitized() {
    grep -qa "AddressSanitizer\|ThreadSanitizer" "$BIN" 2> /dev/null ||
        ldd "$BIN" 2> /dev/null | grep -q 'libasan\|libtsan'
}

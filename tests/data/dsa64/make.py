#!/usr/bin/env python3
"""Writes model.safetensors and config.json here: a tiny DeepSeek-V3.2
checkpoint (deepseek_v32) whose lightning indexer has index_head_dim 64, the
smallest llama.cpp's indexer runs (its Hadamard rotation is at least 64 wide;
the shared fixtures' indexers are 32 wide), 16 indexer heads and positive
head weights, so that no two positions score exactly the same (with 4 heads
and signed weights many scores were exactly 0, every head's ReLU cut, and
the top-k of such ties is implementation-defined: llama.cpp and moekit broke
them differently). The test turns the same weights
into a glm_moe_dsa config too (the tensor names are the same). Deterministic
(a fixed LCG), bf16, scales like a trained model's (1/sqrt(fan_in)); not run
by the tests: its output is committed."""
import json, math, struct

cfg = {
    "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32", "dtype": "bfloat16",
    "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 1,
    "hidden_act": "silu", "hidden_size": 128, "intermediate_size": 256, "moe_intermediate_size": 64,
    "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 32,
    "q_lora_rank": 48, "kv_lora_rank": 32, "qk_nope_head_dim": 32, "qk_rope_head_dim": 32, "qk_head_dim": 64,
    "v_head_dim": 32, "index_n_heads": 16, "index_head_dim": 64, "index_topk": 8,
    "n_routed_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": 1, "n_group": 1, "topk_group": 1,
    "norm_topk_prob": True, "routed_scaling_factor": 2.5, "first_k_dense_replace": 1,
    "mlp_layer_types": ["dense", "sparse", "sparse"],
    "layer_types": ["deepseek_sparse_attention"] * 3,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-06,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
    "tie_word_embeddings": False, "vocab_size": 128, "pad_token_id": None, "initializer_range": 0.02,
    "mlp_bias": False, "use_cache": True,
}
H, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
QL, KL, NOPE, ROPE, VD = cfg["q_lora_rank"], cfg["kv_lora_rank"], 32, 32, 32
NH, IH, ID = cfg["num_attention_heads"], cfg["index_n_heads"], cfg["index_head_dim"]
FF, MF, E = cfg["intermediate_size"], cfg["moe_intermediate_size"], cfg["n_routed_experts"]

state = 12345
def rnd():
    global state
    state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
    return ((state >> 11) / float(1 << 53)) * 2 - 1  # uniform [-1, 1)

def bf16(x):
    b = struct.unpack("<I", struct.pack("<f", x))[0]
    b += 0x7FFF + ((b >> 16) & 1)  # round to nearest even
    return struct.pack("<H", (b >> 16) & 0xFFFF)

tensors = []
def mat(name, rows, cols, scale=None):
    s = math.sqrt(3.0 / cols) if scale is None else scale
    tensors.append((name, [rows, cols], b"".join(bf16(rnd() * s) for _ in range(rows * cols))))
def vec(name, n, base, spread):
    tensors.append((name, [n], b"".join(bf16(base + rnd() * spread) for _ in range(n))))

mat("model.embed_tokens.weight", V, H, 1.0)
for i in range(L):
    p = f"model.layers.{i}."
    vec(p + "input_layernorm.weight", H, 1.0, 0.1)
    vec(p + "post_attention_layernorm.weight", H, 1.0, 0.1)
    a = p + "self_attn."
    mat(a + "q_a_proj.weight", QL, H)
    vec(a + "q_a_layernorm.weight", QL, 1.0, 0.1)
    mat(a + "q_b_proj.weight", NH * (NOPE + ROPE), QL)
    mat(a + "kv_a_proj_with_mqa.weight", KL + ROPE, H)
    vec(a + "kv_a_layernorm.weight", KL, 1.0, 0.1)
    mat(a + "kv_b_proj.weight", NH * (NOPE + VD), KL)
    mat(a + "o_proj.weight", H, NH * VD)
    mat(a + "indexer.wq_b.weight", IH * ID, QL)
    mat(a + "indexer.wk.weight", ID, H)
    vec(a + "indexer.k_norm.weight", ID, 1.0, 0.1)
    vec(a + "indexer.k_norm.bias", ID, 0.0, 0.1)
    # positive head weights over queries of many heads: a score is rarely exactly 0 (every head's
    # ReLU cut), so the top-k has no ties whose order llama.cpp and moekit would break differently
    tensors.append((a + "indexer.weights_proj.weight", [IH, H],
                    b"".join(bf16(0.05 + 0.05 * rnd()) for _ in range(IH * H))))
    m = p + "mlp."
    if i == 0:
        mat(m + "gate_proj.weight", FF, H)
        mat(m + "up_proj.weight", FF, H)
        mat(m + "down_proj.weight", H, FF)
    else:
        mat(m + "gate.weight", E, H)
        vec(m + "gate.e_score_correction_bias", E, 0.0, 0.01)
        for e in range(E):
            mat(m + f"experts.{e}.gate_proj.weight", MF, H)
            mat(m + f"experts.{e}.up_proj.weight", MF, H)
            mat(m + f"experts.{e}.down_proj.weight", H, MF)
        mat(m + "shared_experts.gate_proj.weight", MF, H)
        mat(m + "shared_experts.up_proj.weight", MF, H)
        mat(m + "shared_experts.down_proj.weight", H, MF)
vec("model.norm.weight", H, 1.0, 0.1)
mat("lm_head.weight", V, H)

hdr, off = {"__metadata__": {"format": "pt"}}, 0
for name, shape, data in tensors:
    hdr[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + len(data)]}
    off += len(data)
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open("model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for _, _, data in tensors:
        f.write(data)
with open("config.json", "w") as f:
    json.dump(cfg, f, indent=2)
    f.write("\n")

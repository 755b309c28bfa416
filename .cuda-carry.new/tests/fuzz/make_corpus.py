#!/usr/bin/env python3
"""Regenerate the seed corpora of the fuzz targets under tests/fuzz/corpus/.

  python3 tests/fuzz/make_corpus.py [FIXTURES_DIR]

Seeds are small on purpose (libFuzzer's default max_len follows the largest
seed): real headers and configs from the shared fixtures, shrunk to a few
tensors with offsets recomputed, plus hand-written valid edge cases and the
malformed inputs of issue 2's "Bad input" list. Files found by fuzzing
(regressions) are named regress-* and are never touched by this script.
"""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared", "fixtures")

BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
        "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16,
        "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64,
        "U64": 64}


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def header_seed(hdr_text, data_len):
    return struct.pack("<Q", data_len) + hdr_text.encode()


def layout(entries, meta=None):
    """entries: [(name, dtype, shape)] -> (header JSON, data_len), contiguous."""
    h = {}
    if meta is not None:
        h["__metadata__"] = meta
    off = 0
    for name, dt, shape in entries:
        n = 1
        for s in shape:
            n *= s
        nb = n * BITS[dt] // 8
        h[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + nb]}
        off += nb
    return json.dumps(h, separators=(",", ":")), off


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def fixture_seeds():
    if not os.path.isdir(FIX):
        print("no fixtures at", FIX, "- skipping real seeds")
        return
    k = 0
    for root, _, files in sorted(os.walk(FIX)):
        rel = os.path.relpath(root, FIX).replace("/", "-")
        if "model.safetensors" in files:
            h = read_header(os.path.join(root, "model.safetensors"))
            meta = h.pop("__metadata__", None)
            # keep the real file order (by offset), shrink to a handful
            items = sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0])
            pick = items[:3] + items[len(items) // 2:len(items) // 2 + 2] + items[-2:]
            ents = [(n, v["dtype"], v["shape"]) for n, v in pick]
            text, dl = layout(ents, meta)
            put("fuzz_st_header", "fixture-%s" % rel, header_seed(text, dl))
            # an index for the same names over two shards
            wm = {n: "model-%05d-of-00002.safetensors" % (1 + (i % 2)) for i, (n, _, _) in enumerate(ents)}
            put("fuzz_st_index", "fixture-%s" % rel,
                json.dumps({"metadata": {"total_size": dl}, "weight_map": wm}, indent=2, sort_keys=True))
            k += 1
        if "config.json" in files:
            with open(os.path.join(root, "config.json")) as f:
                put("fuzz_config", "fixture-%s" % rel, f.read())
    print("fixture seeds:", k)


def header_edge_seeds():
    t = "fuzz_st_header"
    text, dl = layout([("t.%s" % d, d, [4] if BITS[d] == 6 else [2, 2]) for d in BITS], {"format": "pt"})
    put(t, "all-dtypes", header_seed(text, dl))
    put(t, "scalar-empty", header_seed(
        '{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},'
        '"e":{"dtype":"BF16","shape":[3,0,1099511627776],"data_offsets":[4,4]},'
        '"z":{"dtype":"I64","shape":[0],"data_offsets":[0,0]}}', 4))
    put(t, "whitespace-padded", header_seed(
        ' \n\t{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}     \r\n', 3))
    put(t, "mlx-unaligned", header_seed(
        '{"m.weight":{"dtype":"U32","shape":[2,1],"data_offsets":[0,8]},'
        '"m.scales":{"dtype":"BF16","shape":[2,1],"data_offsets":[8,12]},'
        '"m.biases":{"dtype":"BF16","shape":[2,1],"data_offsets":[12,16]}}', 16))
    put(t, "empty-object", header_seed("{}", 0))
    put(t, "metadata-only", header_seed('{"__metadata__":{"format":"mlx"}}', 0))
    put(t, "big-64bit", header_seed(
        '{"huge":{"dtype":"BF16","shape":[5,2147483648],"data_offsets":[0,21474836480]},'
        '"tail":{"dtype":"F32","shape":[2],"data_offsets":[21474836480,21474836488]}}', 21474836488))
    bad = {
        "bad-missing-dtype": ('{"w":{"shape":[2],"data_offsets":[0,8]}}', 8),
        "bad-missing-shape": ('{"w":{"dtype":"F32","data_offsets":[0,8]}}', 8),
        "bad-missing-offsets": ('{"w":{"dtype":"F32","shape":[2]}}', 8),
        "bad-unknown-dtype": ('{"w":{"dtype":"F128","shape":[2],"data_offsets":[0,8]}}', 8),
        "bad-byte-range": ('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,6]}}', 6),
        "bad-hole": ('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                     '"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}', 12),
        "bad-overlap": ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                        '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', 12),
        "bad-past-end": ('{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', 8),
        "bad-buffer-longer": ('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 16),
        "bad-duplicate": ('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                          '"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 8),
        "bad-overflow": ('{"w":{"dtype":"U8","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}}', 8),
        "bad-f4-odd": ('{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', 2),
        "bad-not-json": ('{"w": {"dtype": ', 0),
        "bad-not-object": ('[1,2]', 0),
        "bad-metadata": ('{"__metadata__":{"format":1}}', 0),
        "bad-nine-dims": ('{"w":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}', 1),
    }
    for name, (text, dl) in bad.items():
        put(t, name, header_seed(text, dl))


def index_edge_seeds():
    t = "fuzz_st_index"
    put(t, "minimal", '{"weight_map":{"a":"model.safetensors"}}')
    put(t, "bad-dotdot", '{"weight_map":{"a":"../model.safetensors"}}')
    put(t, "bad-slash", '{"weight_map":{"a":"sub/model.safetensors"}}')
    put(t, "bad-duplicate", '{"weight_map":{"a":"x.safetensors","a":"y.safetensors"}}')
    put(t, "bad-not-string", '{"weight_map":{"a":1}}')
    put(t, "bad-no-map", '{"metadata":{"total_size":0}}')
    put(t, "empty-map", '{"metadata":{},"weight_map":{}}')


def config_edge_seeds():
    t = "fuzz_config"
    put(t, "mlx-quant", json.dumps({
        "model_type": "qwen3_next", "num_hidden_layers": 4, "hidden_size": 64,
        "num_attention_heads": 4, "num_experts": 8, "full_attention_interval": 4,
        "quantization": {"group_size": 64, "bits": 4, "mode": "affine",
                         "model.layers.0.mlp.gate": {"group_size": 64, "bits": 8},
                         "model.layers.1.mlp.gate": {"bits": 8, "mode": "mxfp4"},
                         "lm_head": False}}))
    put(t, "fp8", json.dumps({
        "model_type": "deepseek_v3", "num_hidden_layers": 3, "first_k_dense_replace": 1,
        "n_routed_experts": 8, "rope_scaling": {"type": "yarn", "factor": 40,
                                                "original_max_position_embeddings": 4096},
        "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                "weight_block_size": [128, 128]}}))
    put(t, "compressed-tensors", json.dumps({
        "model_type": "kimi_k2", "num_hidden_layers": 2, "eos_token_id": [1, 2],
        "quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized",
                                "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                                    "num_bits": 4, "type": "int", "symmetric": True,
                                    "strategy": "group", "group_size": 32}}},
                                "ignore": ["lm_head", "re:.*self_attn.*"]}}))
    put(t, "vl-wrapper", json.dumps({
        "model_type": "qwen3_5_moe", "architectures": ["Qwen3_5MoeForConditionalGeneration"],
        "vision_config": {"depth": 1}, "tie_word_embeddings": False,
        "text_config": {"model_type": "qwen3_5_moe_text", "num_hidden_layers": 4,
                        "layer_types": ["linear_attention", "linear_attention", "linear_attention",
                                        "full_attention"],
                        "rope_parameters": {"rope_theta": 10000000, "partial_rotary_factor": 0.25},
                        "mlp_only_layers": [], "num_experts": 8, "dtype": "bfloat16"}}))
    put(t, "bad-layer-types", '{"model_type":"qwen3_next","num_hidden_layers":4,"layer_types":["full_attention"]}')
    put(t, "bad-types", '{"num_hidden_layers":"4","hidden_size":true}')
    put(t, "bad-mode", '{"quantization":{"bits":4,"group_size":64,"mode":"int3"}}')
    put(t, "bad-not-object", "[]")
    put(t, "bad-not-json", '{"model_type":')


if __name__ == "__main__":
    fixture_seeds()
    header_edge_seeds()
    index_edge_seeds()
    config_edge_seeds()

# Device-side check of the gptoss-a MXFP4 reference (shared fixtures, make_fixtures2.py):
# the same transformers load (Mxfp4Config(dequantize=True), dtype float32), then the
# experts' dtype is reported and the logits are computed twice: as loaded, and after
# model.float() (every parameter float32). Both are written for comparison with the
# shipped mxfp4_logits.f32 and with moekit (compared on the lead's machine).
import json, os, sys, torch
from transformers import AutoModelForCausalLM, Mxfp4Config
here = os.path.dirname(os.path.abspath(__file__)); out = sys.argv[1]
ids = json.load(open(os.path.join(here, "reference.json")))["input_ids"]
m = AutoModelForCausalLM.from_pretrained(os.path.join(here, "mxfp4"), dtype=torch.float32, device_map="cpu",
                                         quantization_config=Mxfp4Config(dequantize=True)).eval()
dts = {}
for n, p in m.named_parameters():
    dts.setdefault(str(p.dtype), []).append(n)
print("param dtypes:", {k: (len(v), v[:3]) for k, v in dts.items()})
with torch.no_grad():
    a = m(torch.tensor([ids]), use_cache=False).logits[0].float().numpy()
    m = m.float()
    b = m(torch.tensor([ids]), use_cache=False).logits[0].float().numpy()
a.tofile(os.path.join(out, "mxfp4_as_loaded.f32")); b.tofile(os.path.join(out, "mxfp4_float32.f32"))
import numpy as np
ref = np.fromfile(os.path.join(here, "mxfp4_logits.f32"), dtype=np.float32).reshape(a.shape)
rel = lambda x, y: float(np.linalg.norm(x - y) / np.linalg.norm(y))
print("as loaded vs shipped:", rel(a, ref), " float32 vs shipped:", rel(b, ref), " float32 vs as loaded:", rel(b, a))

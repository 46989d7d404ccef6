"""Which of MiniLM's linear layers can run in int8 within the 0.999 cosine bar, and with what help.

A study tool, not a product path: it emulates signaldesk's int8 scheme in PyTorch (fake
quantization) so that choices can be compared before a kernel is written. Emulated as
`src/embed/cpu_bert/int8.rs` does it: weights per output channel with every pair of adjacent
input channels' magnitudes summing to <= 127 levels (AVX2 `vpmaddubsw` never saturates),
activations per row, asymmetric u8. Optional SmoothQuant (Xiao et al. 2023): each input channel
j divided by s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) in the activations and multiplied
into the weights, max|X_j| from a calibration pass over the first N Reuters training texts.

Reports min and mean cosine to the unquantized model over the parity set (the 800 SciFact texts
of golden-datasets/scifact-minilm-reference) for each configuration asked for; its "o,i" row
reproduces the shipped int8 (0.9993 here against 0.99935 from `signaldesk bench embed`).

Usage (the venv `scripts/bench-embed-vs-st.sh` installs):
  .cache/st-venv/bin/python scripts/int8_layer_study.py [--calibration 64] CONFIG...
CONFIG is LAYERS[:ALPHA][:w] with LAYERS from q,k,v (the fused QKV projection), o (attention
output), i (FFN first projection), f (FFN second projection); ALPHA a SmoothQuant strength; a
trailing `w` quantizes weights only, `a` activations only. Example:
  ... int8_layer_study.py o,i q,k,v,o,i q,k,v,o,i:0.5
"""

import argparse
import gzip
import itertools
import json
import pathlib

import torch
from transformers import AutoModel, AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--model", default=str(ROOT / "models/all-MiniLM-L6-v2"))
    ap.add_argument("--calibration", type=int, default=64, help="Reuters training texts")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model).eval()
    ref_file = ROOT / "golden-datasets/scifact-minilm-reference/scifact_minilm_st.jsonl.gz"
    parity = [json.loads(line)["text"] for line in gzip.open(ref_file, "rt")]
    train = ROOT / "golden-datasets/reuters21578/modapte90/train.jsonl.gz"
    calibration = [
        (r.get("title", "") + "\n" + r.get("body", "")).strip()
        for r in map(json.loads, itertools.islice(gzip.open(train, "rt"), args.calibration))
    ]

    def embed(texts):
        out = []
        for i in range(0, len(texts), 32):
            b = tok(texts[i : i + 32], padding=True, truncation=True, max_length=256,
                    return_tensors="pt")
            with torch.no_grad():
                h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
        return torch.cat(out)

    linear = {}
    for n, layer in enumerate(model.encoder.layer):
        att = layer.attention
        for name, mod in [("q", att.self.query), ("k", att.self.key), ("v", att.self.value),
                          ("o", att.output.dense), ("i", layer.intermediate.dense),
                          ("f", layer.output.dense)]:
            linear[(n, name)] = mod
    original = {k: m.weight.data.clone() for k, m in linear.items()}

    # Per input channel: the largest |activation| over the calibration texts.
    amax = {}

    def record(key):
        def hook(_mod, inp):
            x = inp[0].detach().reshape(-1, inp[0].shape[-1]).abs().amax(0)
            amax[key] = torch.maximum(amax[key], x) if key in amax else x
        return hook

    hooks = [m.register_forward_pre_hook(record(k)) for k, m in linear.items()]
    embed(calibration)
    for h in hooks:
        h.remove()
    reference = embed(parity)

    def quantize_weights(w):  # [out, in], pair-bounded per output channel
        a = w.abs()
        if a.shape[1] % 2:
            a = torch.cat([a, torch.zeros(a.shape[0], 1)], 1)
        scale = (a[:, 0::2] + a[:, 1::2]).amax(1).clamp(min=1e-12) / 127
        return (w / scale[:, None]).round().clamp(-127, 127) * scale[:, None]

    def quantize_activations(x):  # per row, asymmetric u8, range holding 0
        lo = x.amin(-1, keepdim=True).clamp(max=0)
        hi = x.amax(-1, keepdim=True).clamp(min=0)
        scale = (hi - lo) / 255
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.floor(-lo / scale + 0.5).clamp(0, 255)
        return (torch.floor(x / scale + zero + 0.5).clamp(0, 255) - zero) * scale

    for config in args.configs:
        parts = config.split(":")
        layers = set(parts[0].split(","))
        alpha = float(parts[1]) if len(parts) > 1 and parts[1] else None
        only = parts[2] if len(parts) > 2 else ""
        hooks = []
        for (n, name), mod in linear.items():
            w = original[(n, name)]
            mod.weight.data = w.clone()
            if name not in layers:
                continue
            s = torch.ones(w.shape[1])
            if alpha is not None:
                # q, k and v read the same input: one smoothing for the fused projection.
                fused = name in "qkv"
                key = (n, "q") if fused else (n, name)
                wmax = (torch.cat([original[(n, c)] for c in "qkv"]) if fused else w).abs().amax(0)
                s = amax[key].clamp(min=1e-5) ** alpha / wmax.clamp(min=1e-5) ** (1 - alpha)
            if only != "a":
                mod.weight.data = quantize_weights(w * s[None, :])
            else:
                mod.weight.data = w * s[None, :]
            act = (lambda x: x) if only == "w" else quantize_activations
            hooks.append(mod.register_forward_pre_hook(
                lambda _m, inp, s=s, act=act: (act(inp[0] / s),)))
        cos = (embed(parity) * reference).sum(1)
        for h in hooks:
            h.remove()
        print(f"{config:24s} min cosine {cos.min():.5f}  mean {cos.mean():.5f}", flush=True)


if __name__ == "__main__":
    main()

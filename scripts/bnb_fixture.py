"""Generates test/fixtures/bnb-nf4-dq.json with real bitsandbytes (CUDA) NF4 + double quantization.

Run where torch, a GPU and bitsandbytes are present (see bench/README.md for the device command).
The fixture holds the inputs and everything bitsandbytes produced, so our reference
(ts/quant/reference.ts) can be compared code for code without bitsandbytes installed.
"""
import json
import sys

import numpy as np
import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F


def case(name, values):
    a = torch.tensor(values, dtype=torch.float32, device="cuda")
    packed, st = F.quantize_4bit(a, blocksize=64, compress_statistics=True, quant_type="nf4")
    deq = F.dequantize_4bit(packed, st)
    return {
        "name": name,
        "input": [float(v) for v in np.asarray(values, dtype=np.float32)],
        "packed": packed.flatten().cpu().tolist(),
        "absmaxCodes": st.absmax.cpu().tolist(),
        "offset": float(st.offset.cpu().item()),
        "absmax2": [float(v) for v in st.state2.absmax.cpu().tolist()],
        "dequantized": [float(v) for v in deq.flatten().cpu().tolist()],
    }


def main(out):
    rng = np.random.default_rng(1234)
    nf4 = F.get_4bit_type("nf4", device="cpu").tolist()
    mids = [(nf4[i] + nf4[i + 1]) / 2 for i in range(15)]
    edge = []
    for g in range(4):
        absmax = [0.5, 1.0, 3.0e-3, 17.0][g]
        vals = [m * absmax for m in mids] + [absmax, -absmax] + list(rng.normal(0, absmax / 3, 64 - 17))
        edge += vals
    cases = [
        case("gaussian 300 groups (2 double-quant blocks)", rng.normal(0, 0.02, 64 * 300).astype(np.float32)),
        case("heavy-tailed 513 groups (partial last block)", (rng.standard_t(3, 64 * 513) * 0.01).astype(np.float32)),
        case("midpoints and extremes", np.asarray(edge, dtype=np.float32)),
    ]
    doc = {
        "generator": "scripts/bnb_fixture.py",
        "bitsandbytes": bnb.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0),
        "dynamicMap": [float(v) for v in F.create_dynamic_map(signed=True).tolist()],
        "nf4": nf4,
        "cases": cases,
    }
    with open(out, "w") as f:
        json.dump(doc, f)
    print("wrote", out, [len(c["input"]) for c in cases])


if __name__ == "__main__":
    main(sys.argv[1])

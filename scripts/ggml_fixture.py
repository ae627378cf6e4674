#!/usr/bin/env python3
"""Reference fixtures for ts/io/ggml.ts and ts/io/gguf.ts, made with gguf-py (pip install gguf numpy).

Writes into test/fixtures/ggml/:
  <TYPE>.bin      raw ggml blocks (little-endian, as stored in a GGUF file)
  <TYPE>.f32      the reference dequantized values, little-endian f32
  manifest.json   types, element counts, and how each reference was made
  model-ref.json  (only when the default model exists) per-tensor type, shape, sha256 of the
                  dequantized f32 bytes, and a few sample values, from gguf-py's reader

Quantizable types (gguf.quants.quantize) get quantized Gaussian / heavy-tailed / constant / zero
/ tiny rows; every block type also gets random bytes with sane f16 scales, so all code paths and
bit patterns are covered. References come from gguf.quants.dequantize, except F64, the I-types
and Q8_K, which gguf-py cannot dequantize: numpy's astype(float32) (one correct rounding) and
d * q in f32 for Q8_K.

Usage: python3 scripts/ggml_fixture.py [model.gguf]
"""
import hashlib
import importlib.metadata
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize

OUT = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'ggml')
rng = np.random.default_rng(20240607)

# byte offsets of the f16 scale fields in each block type (randomized blocks get sane values there)
F16_FIELDS = {
    'Q4_0': [0], 'Q4_1': [0, 2], 'Q5_0': [0], 'Q5_1': [0, 2], 'Q8_0': [0],
    'Q2_K': [80, 82], 'Q3_K': [108], 'Q4_K': [0, 2], 'Q5_K': [0, 2], 'Q6_K': [208],
}
SIZES = {'Q4_0': 18, 'Q4_1': 20, 'Q5_0': 22, 'Q5_1': 24, 'Q8_0': 34,
         'Q2_K': 84, 'Q3_K': 110, 'Q4_K': 144, 'Q5_K': 176, 'Q6_K': 210, 'Q8_K': 292}


def sane_f16(n):
    """f16 scales: mostly 1e-5..10 with random sign, plus 0, -0, a subnormal and the largest f16."""
    v = (10.0 ** rng.uniform(-5, 1, n)) * rng.choice([-1.0, 1.0], n)
    for i, s in enumerate([0.0, -0.0, 6e-8, 65504.0]):
        if 2 * i + 1 < n:
            v[2 * i + 1] = s
    return v.astype(np.float16)


def random_blocks(name, n_blocks):
    size = SIZES[name]
    raw = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    for off in F16_FIELDS[name]:
        raw[:, off:off + 2] = sane_f16(n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)


def float_rows(n_rows, width):
    rows = [rng.normal(0, 0.02, width),                      # weight-like
            rng.standard_t(2, width) * 0.05,                 # heavy-tailed
            np.full(width, 0.37),                            # constant
            np.zeros(width),                                 # zero
            rng.normal(0, 1e-6, width),                      # tiny: subnormal f16 scales
            rng.normal(3, 0.5, width)]                       # offset (asymmetric formats)
    return np.stack([rows[i % len(rows)] for i in range(n_rows)]).astype(np.float32)


def as_bytes(a):
    return np.ascontiguousarray(a).view(np.uint8).reshape(-1)


def make(name):
    """(raw block bytes, reference f32, how the reference was made)"""
    if name == 'F32':
        x = np.concatenate([rng.normal(0, 1, 500), [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-40, 3.4e38]])
        raw = as_bytes(x.astype('<f4'))
        return raw, dequantize(raw, T.F32), 'gguf.quants.dequantize'
    if name in ('F16', 'BF16'):
        bits = rng.integers(0, 1 << 16, 512, dtype=np.uint16)   # every kind of pattern incl. NaN/Inf/subnormal
        bits[:4] = [0x0000, 0x8000, 0x0001, 0x7c00]
        raw = as_bytes(bits.astype('<u2'))
        return raw, dequantize(raw, getattr(T, name)), 'gguf.quants.dequantize (random bit patterns)'
    if name == 'F64':
        x = np.concatenate([rng.normal(0, 1, 500) * 10.0 ** rng.integers(-40, 40, 500),
                            [1e300, -1e300, 1e-300, np.nan, np.inf, -0.0, 1 + 2.0 ** -24, 1 + 3 * 2.0 ** -24,
                             1 + 2.0 ** -24 + 2.0 ** -50, 3.4028235677973366e38, 1.4e-45, 7e-46]])
        with np.errstate(over="ignore"):
            return as_bytes(x.astype("<f8")), x.astype(np.float32), "numpy astype(float32)"
    if name in ('I8', 'I16', 'I32', 'I64'):
        bits = int(name[1:])
        dt = np.dtype(f'<i{bits // 8}')
        info = np.iinfo(dt)
        x = rng.integers(info.min, info.max, 500, dtype=dt, endpoint=True)
        if bits == 64:   # values where rounding via double first would go wrong
            x = np.concatenate([x, np.array([2 ** 60 + 2 ** 36 + 1, -(2 ** 60 + 2 ** 36 + 1), 2 ** 60 + 2 ** 36,
                                             2 ** 53 + 1, info.max, info.min, 0, -1], dtype=dt)])
        return as_bytes(x), x.astype(np.float32), 'numpy astype(float32)'
    if name == 'Q8_K':
        n = 6
        raw = rng.integers(0, 256, (n, 292), dtype=np.uint8)
        d = (rng.normal(0, 0.01, n)).astype('<f4')
        d[0] = 0.0
        raw[:, 0:4] = d.view(np.uint8).reshape(n, 4)
        q = raw[:, 4:260].view(np.int8).astype(np.float32)
        return raw.reshape(-1), (d.reshape(n, 1) * q).reshape(-1), 'numpy f32 d * int8 q (gguf-py has no Q8_K)'
    qtype = getattr(T, name)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    parts = []
    how = 'gguf.quants.dequantize of random blocks with sane f16 scales'
    if name in ('Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0'):
        parts.append(as_bytes(quantize(float_rows(6, 2 * block), qtype)))
        how = 'gguf.quants.dequantize of gguf.quants.quantize(Gaussian, heavy-tailed, constant, zero, tiny rows) + random blocks'
    parts.append(random_blocks(name, 8 if block == 256 else 16))
    raw = np.concatenate(parts)
    return raw, dequantize(raw, qtype).reshape(-1), how


TYPES = ['F32', 'F16', 'BF16', 'F64', 'I8', 'I16', 'I32', 'I64', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0',
         'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'Q8_K']


def model_ref(path):
    reader = gguf.GGUFReader(path)
    out = {'file': os.path.basename(path), 'tensor_count': len(reader.tensors),
           'architecture': bytes(reader.fields['general.architecture'].parts[-1]).decode(), 'tensors': {}}
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type).astype('<f4').reshape(-1)
        n = values.size
        idx = sorted({0, 1, 31, 32, n // 3, n // 2, n - 1})
        out['tensors'][t.name] = {
            'type': t.tensor_type.name,
            'shape': [int(d) for d in reversed(t.shape.tolist())],
            'sha256': hashlib.sha256(values.tobytes()).hexdigest(),
            'samples': [[i, float(values[i])] for i in idx],
        }
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    manifest = {'gguf_py': importlib.metadata.version('gguf'), 'numpy': np.__version__, 'types': {}}
    for name in TYPES:
        raw, ref, how = make(name)
        ref = np.asarray(ref, dtype='<f4').reshape(-1)
        with open(os.path.join(OUT, f'{name}.bin'), 'wb') as f:
            f.write(raw.tobytes())
        with open(os.path.join(OUT, f'{name}.f32'), 'wb') as f:
            f.write(ref.tobytes())
        manifest['types'][name] = {'type': int(getattr(T, name)), 'count': int(ref.size), 'bytes': int(raw.size), 'reference': how}
    with open(os.path.join(OUT, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=1)
    model = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser('~/.cache/quantlora/models/SmolLM2-135M-Instruct.Q4_1.gguf')
    if os.path.exists(model):
        with open(os.path.join(OUT, 'model-ref.json'), 'w') as f:
            json.dump(model_ref(model), f, separators=(',', ':'))
    else:
        print(f'{model} not found: model-ref.json not written', file=sys.stderr)


if __name__ == '__main__':
    main()

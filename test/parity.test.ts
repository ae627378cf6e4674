// One table of cases, run on every available backend against the JS reference (values and
// gradients). CI sets QUANTLORA_EXPECT_BACKENDS=wasm so a backend that failed to load fails here.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as q from '../ts/index.js';
import { fromHandle, gaussianArray } from '../ts/tensor.js';
import { generateWeights } from '../ts/testing/index.js';
import { PART_NAMES } from '../ts/quant/layout.js';
import type { NativeAddon } from '../ts/backends/native/addon.js';
import { gpuOptionsFromEnv, openGpuBackend } from '../ts/backends/gpu/index.js';

type B = q.Backend;
interface Case {
  name: string;
  /** Builds inputs on backend b and returns the outputs to compare. */
  run: (b: B) => q.Tensor[];
  /** Relative tolerance (of max(1, |reference|)); 0 means bit-exact. */
  tol: number;
}

const js = q.backendByName('js');
const others = q.backends().filter((s) => s.available && s.name !== 'js').map((s) => s.name);
const expected = (process.env.QUANTLORA_EXPECT_BACKENDS ?? '').split(',').filter(Boolean);
// The gpu backend is registered only for a real GPU (or with QUANTLORA_GPU_SOFTWARE=1); the table
// still runs on a software adapter (Mesa's lavapipe in CI) when there is one.
const under: [string, B][] = others.map((name) => [name, q.backendByName(name)]);
let gpuFailure = q.backends().find((s) => s.name === 'gpu')?.failure;
if (!others.includes('gpu')) {
  try {
    under.push(['gpu', openGpuBackend({ ...gpuOptionsFromEnv(), allowSoftware: true })]);
  } catch (e) {
    gpuFailure = (e as Error).message;
  }
}
// QUANTLORA_PARITY_BOTH_CHECKS=1: the table also on the gpu kernels compiled with the other setting
// of wgpu's shader runtime checks (QUANTLORA_GPU_SHADER_CHECKS; off by default). Compiling
// everything twice takes minutes on lavapipe, so CI runs a sample of them in test/gpu.test.ts;
// scripts/device-gpu.sh parity runs all.
if (process.env.QUANTLORA_PARITY_BOTH_CHECKS === '1' && under.some(([n]) => n === 'gpu')) {
  const checks = !gpuOptionsFromEnv().checks;
  under.push([`gpu, shader checks ${checks ? 'on' : 'off'}`, openGpuBackend({ ...gpuOptionsFromEnv(), allowSoftware: true, checks })]);
}

const t = (b: B, shape: number[], seed: number, scale = 1) => q.tensor(gaussianArray(shape.reduce((x, y) => x * y, 1), seed, scale), shape, 'f32', b);
const pos = (b: B, shape: number[], seed: number) => q.abs(t(b, shape, seed)).dataSync().map((v) => v + 0.1) as Float32Array;
const ids = (b: B, values: number[], shape = [values.length]) => q.tensor(Int32Array.from(values), shape, 'i32', b);

/** Value and input gradients of L = sum(f(x)·r) for differentiable inputs. */
function withGrads(b: B, f: (...xs: q.Tensor[]) => q.Tensor, inputs: q.Tensor[]): q.Tensor[] {
  for (const x of inputs) if (x.dtype === 'f32') x.requireGrad();
  const y = f(...inputs);
  const loss = q.sum(q.mul(y, t(b, [...y.shape], 77)));
  const grads = q.grad(loss, inputs.filter((x) => x.dtype === 'f32'));
  return [y, ...grads.map((g) => g!)];
}

const cases: Case[] = [];
const add = (name: string, tol: number, run: Case['run']) => cases.push({ name, tol, run });

// matmul: shapes incl. 1 and odd sizes, every transpose, batches, broadcast of either side
for (const [m, k, n] of [[1, 1, 1], [1, 37, 5], [7, 13, 9], [33, 64, 17], [64, 96, 80]]) {
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      add(`matmul ${m}x${k}x${n} tA=${transA} tB=${transB}`, 1e-5, (b) =>
        withGrads(b, (x, y) => q.matmul(x, y, { transA, transB }), [t(b, transA ? [k, m] : [m, k], 1), t(b, transB ? [n, k] : [k, n], 2)]));
    }
  }
}
add('matmul batched', 1e-5, (b) => withGrads(b, (x, y) => q.matmul(x, y), [t(b, [3, 5, 7], 3), t(b, [3, 7, 4], 4)]));
add('matmul batch x shared 2-D', 1e-5, (b) => withGrads(b, (x, y) => q.matmul(x, y, { transB: true }), [t(b, [2, 3, 11], 5), t(b, [6, 11], 6)]));
add('matmul shared 2-D x batch', 1e-5, (b) => withGrads(b, (x, y) => q.matmul(x, y), [t(b, [4, 6], 7), t(b, [2, 6, 5], 8)]));
add('matmul 256x300x200 (blocking edges)', 1e-4, (b) => [q.matmul(t(b, [256, 300], 9), t(b, [300, 200], 10))]);
add('matmul 2x130x37x140 batched, both transposed (the GPU\'s 128x128 block)', 1e-4, (b) => withGrads(b, (x, y) => q.matmul(x, y, { transA: true, transB: true }), [t(b, [2, 37, 130], 90), t(b, [2, 140, 37], 91)]));

// elementwise
for (const op of ['add', 'sub', 'mul', 'div', 'maximum'] as const) {
  add(`${op} broadcasting`, 1e-6, (b) => withGrads(b, (x, y) => (op === 'div' ? q.div(x, q.add(q.abs(y), 0.5)) : q[op](x, y)), [t(b, [3, 1, 5], 11), t(b, [4, 1], 12)]));
  add(`${op} same shape`, 1e-6, (b) => withGrads(b, (x, y) => (op === 'div' ? q.div(x, q.add(q.abs(y), 0.5)) : q[op](x, y)), [t(b, [37], 13), t(b, [37], 14)]));
}
add('equal / greater', 0, (b) => { const x = q.tensor([1, 2, 3, 4, 5], [5], 'f32', b); const y = q.tensor([1, 0, 3, 9, 5], [5], 'f32', b); return [q.equal(x, y), q.greater(x, y)]; });
for (const op of ['neg', 'exp', 'sqrt', 'rsqrt', 'log', 'abs', 'square', 'sigmoid', 'silu', 'relu'] as const) {
  const positive = op === 'sqrt' || op === 'rsqrt' || op === 'log';
  add(`unary ${op}`, 1e-5, (b) => withGrads(b, q[op], [positive ? q.tensor(pos(b, [41], 15), [41], 'f32', b) : t(b, [41], 15)]));
}
add('siluMul (fused where the backend has it: the values of silu then mul)', 1e-5, (b) => withGrads(b, (x, y) => q.siluMul(x, y), [t(b, [3, 37], 103), t(b, [3, 37], 104)]));
add('siluMul and addRmsnorm broadcasting (composed on every backend)', 1e-5, (b) => withGrads(b, (x, y, w) => { const [s, n] = q.addRmsnorm(x, y, w); return q.concat([q.siluMul(x, y), s, n], 0); }, [t(b, [3, 37], 118), t(b, [37], 119), t(b, [37], 120)]));
add('siluMul without gradients', 1e-5, (b) => [q.siluMul(t(b, [2, 300], 105, 4), t(b, [2, 300], 106))]);
add('sign', 0, (b) => [q.sign(q.tensor([-2, 0, 3], [3], 'f32', b))]);
add('affine, pow', 1e-5, (b) => withGrads(b, (x) => q.pow(q.affine(x, 0.5, 3), 1.7), [t(b, [19], 16)]));

// reductions
add('sum over axes', 1e-5, (b) => withGrads(b, (x) => q.sum(x, [0, 2]), [t(b, [5, 3, 7], 17)]));
add('sum all', 1e-5, (b) => withGrads(b, (x) => q.sum(x), [t(b, [1000], 18)]));
add('mean last axis', 1e-5, (b) => withGrads(b, (x) => q.mean(x, -1), [t(b, [4, 33], 19)]));
add('max over axis', 1e-6, (b) => withGrads(b, (x) => q.max(x, 1), [t(b, [6, 9], 20)]));
add('sum / max over long rows and columns (chunked passes)', 1e-6, (b) => { const x = t(b, [3, 9000], 93); return [q.sum(x, 1), q.max(x, 1), q.sum(q.reshape(x, [9000, 3]), 0), q.max(q.reshape(x, [9000, 3]), 0), q.sum(x)]; });

// layout, for every dtype
add('transpose / slice / concat / broadcastTo (f32)', 0, (b) =>
  withGrads(b, (x, y) => q.concat([q.transpose(q.slice(x, [1, 0, 2], [2, 3, -1]), [2, 0, 1]), q.broadcastTo(y, [5, 2, 3])], 2), [t(b, [3, 3, 7], 21), t(b, [5, 1, 1], 22)]));
for (const dtype of ['i32', 'u8'] as const) {
  add(`layout ops on ${dtype}`, 0, (b) => {
    const x = q.cast(q.tensor(Float32Array.from({ length: 24 }, (_, i) => i * 7 % 11), [2, 3, 4], 'f32', b), dtype);
    return [q.cast(q.transpose(x, [2, 0, 1]), 'f32'), q.cast(q.slice(x, [0, 1, 1], [2, 2, 3]), 'f32'), q.cast(q.concat([x, x], 1), 'f32')];
  });
}
add('cast round trips', 0, (b) => [q.cast(q.cast(q.tensor([1.7, -2.2, 3, 250], [4], 'f32', b), 'i32'), 'f32')]);
add('gather and its scatter-add gradient', 1e-6, (b) => withGrads(b, (tab, i) => q.gather(tab, i), [t(b, [6, 5], 23), ids(b, [0, 5, 5, 2, 0, 1], [2, 3])]));

// transformer blocks
add('addRmsnorm (fused where the backend has it: the values of add then rmsnorm)', 1e-5, (b) => withGrads(b, (x, r, w) => { const [s, y] = q.addRmsnorm(x, r, w, 1e-5); return q.concat([s, y], 0); }, [t(b, [5, 33], 110), t(b, [5, 33], 111), t(b, [33], 112)]));
add('rmsnorm', 1e-5, (b) => withGrads(b, (x, w) => q.rmsnorm(x, w, 1e-5), [t(b, [5, 33], 24), t(b, [33], 25)]));
for (const style of ['half', 'interleaved'] as const) {
  add(`rope ${style}`, 1e-5, (b) => withGrads(b, (x) => q.rope(x, { theta: 10000, offset: 5, style }), [t(b, [2, 3, 7, 16], 26)]));
}
// attention: fused where the backend has the kernel (no gradient wanted), composed elsewhere and
// with gradients; key storage longer than the last query's position (a KvCache's), query heads
// sharing a key/value head, several chunks of keys, a head size that is not a multiple of 64
for (const [blocks, heads, tq, keys, past, dim] of [[3, 3, 1, 70, 40, 64], [2, 2, 4, 10, 3, 16], [1, 2, 2, 300, 250, 200], [2, 1, 5, 5, 0, 8]]) {
  add(`attention ${blocks} blocks, ${heads} heads x ${tq} positions, ${keys} keys, past ${past}, dim ${dim}`, 1e-5, (b) => [
    q.attention(t(b, [blocks, heads * tq, dim], 94), t(b, [blocks, keys, dim], 95), t(b, [blocks, keys, dim], 96), { t: tq, past }),
  ]);
}
// KvCache.extendRoped: one kernel where the backend has ropeAppend, composed elsewhere; a prompt of
// 3 positions, then single positions across a doubling of the storage (room for 4 at first), 2
// sequences of 3 query heads over 1 key/value head; the query rows and the whole storages
for (const style of ['half', 'interleaved'] as const) {
  add(`KvCache.extendRoped (${style}): rope on q and k, k and v written into storage that doubles`, 1e-6, (b) => {
    const cache = new q.KvCache({ capacity: 4 });
    const outs: q.Tensor[] = [];
    let at = 0;
    for (const [T, seed] of [[3, 130], [1, 133], [1, 136]]) {
      const [y, ck, cv] = cache.extendRoped(0, t(b, [2, T, 24], seed), t(b, [2, T, 8], seed + 1), t(b, [2, T, 8], seed + 2), { q: 3, kv: 1 }, { theta: 500, offset: at + 7, style });
      outs.push(y);
      at += T;
      if (at === 5) outs.push(q.mul(ck, 1), q.mul(cv, 1)); // copies: the cache owns its storage
    }
    assert.equal(cache.capacity, 8);
    cache.dispose();
    return outs;
  });
}

// a quantized layer's LoRA branch at inference: in the GEMV's epilogue where the backend has
// dequantizeMatmulLowRank (1 and 3 x rows), composed elsewhere (and for 9 x rows, past the GEMV)
add('QuantLinear with a LoRA branch under noGrad (fused into the GEMV where the backend has it)', 1e-5, (b) => {
  const lora = new q.Lora(t(b, [8, 128], 200, 0.1), t(b, [24, 8], 201, 0.1), { alpha: 16 });
  const layer = new q.QuantLinear(q.quantize(t(b, [24, 128], 202, 0.05), q.formats.int(4, { group: 32 })), undefined, lora);
  // and with IR-QLoRA's IEC scalars (nonzero)
  const iec = { betaA: q.tensor([0.6], [1], 'f32', b), betaB: q.tensor([-0.9], [1], 'f32', b) };
  const withIec = new q.QuantLinear(layer.weight, undefined, new q.Lora(lora.a, lora.b, { alpha: 16 }, iec));
  return [1, 3, 9].flatMap((rows) => [layer, withIec].map((l) => q.noGrad(() => l.forward(t(b, [rows, 128], 203 + rows)))));
});

// several quantized weights on one x: one kernel where the backend has dequantizeMatmulMany (1 to
// 3 x rows; q/k/v with 3 query rows per key row, and a gated MLP's gate and up with silu·mul),
// one GEMV per weight elsewhere (and for 9 x rows, past the GEMV); with a grad wanted it composes
add('dequantizeMatmulMany (q/k/v, glu; one kernel where the backend has it)', 1e-5, (b) => {
  const f = q.formats.int(4, { group: 32 });
  const [wq, wk, wv] = [[48, 128], [16, 128], [16, 128]].map((shape, i) => q.quantize(t(b, shape, 220 + i, 0.05), f));
  const [wg, wu] = [0, 1].map((i) => q.quantize(t(b, [40, 128], 224 + i, 0.05), q.formats.nf(4, { group: 64, doubleQuant: true })));
  // and with LoRA branches (one per weight)
  const lora = [48, 16, 16].map((rows, i) => ({ a: t(b, [4 + i, 128], 232 + i, 0.1), b: t(b, [rows, 4 + i], 235 + i, 0.1), scale: 1.5 }));
  const all = (x: q.Tensor) => [...q.dequantizeMatmulMany(x, [wq, wk, wv]), ...q.dequantizeMatmulMany(x, [wg, wu], { glu: true }), ...q.dequantizeMatmulMany(x, [wq, wk, wv], { lora })];
  return [
    ...[1, 3, 9].flatMap((rows) => q.noGrad(() => all(t(b, [rows, 128], 226 + rows)))),
    // x requiring grad: composed, and the gradient reaches x
    ...withGrads(b, (x) => q.concat(all(x), 1), [t(b, [2, 128], 230)]),
  ];
});

// argmaxRows: a kernel where the backend has it, read on the host elsewhere; ties (the first wins),
// -Infinity, NaNs passed over, a row of NaNs (0), one column, and a wide row (decoding's vocabulary)
add('argmaxRows: ties, -Infinity, NaN, wide rows', 0, (b) => {
  const n = NaN;
  const small = q.tensor([1, 3, 3, 2, -Infinity, -Infinity, -Infinity, -Infinity, n, 2, n, 2, n, n, n, n, 5, n, 7, n], [5, 4], 'f32', b);
  const wide = t(b, [3, 5000], 210);
  return [q.cast(q.argmaxRows(small), 'f32'), q.cast(q.argmaxRows(wide), 'f32'), q.cast(q.argmaxRows(t(b, [2, 3, 1], 211)), 'f32')];
});

add('attention gradients (causal, and over longer key storage)', 1e-5, (b) => [
  ...withGrads(b, (x, k, v) => q.attention(x, k, v, { t: 3 }), [t(b, [2, 6, 8], 97), t(b, [2, 3, 8], 98), t(b, [2, 3, 8], 99)]),
  ...withGrads(b, (x, k, v) => q.attention(x, k, v, { t: 3, past: 2 }), [t(b, [2, 6, 8], 100), t(b, [2, 9, 8], 101), t(b, [2, 9, 8], 102)]),
]);
add('softmax', 1e-6, (b) => withGrads(b, (x) => q.softmax(x), [t(b, [7, 13], 27, 3)]));
add('softmax causal', 1e-6, (b) => withGrads(b, (x) => q.softmax(x, { causal: true }), [t(b, [2, 9, 9], 28, 3)]));
add('softmax causal with past keys', 1e-6, (b) => withGrads(b, (x) => q.softmax(x, { causal: true }), [t(b, [3, 4, 10], 29, 3)]));
add('crossEntropy with ignore index', 1e-5, (b) => withGrads(b, (l, tg) => q.crossEntropy(l, tg), [t(b, [2, 5, 31], 30, 2), ids(b, [1, 30, -100, 0, 7, 7, -100, 2, 3, 4], [2, 5])]));
// long rows (several elements per thread of a row workgroup), dw summed over many rows, far rope positions
add('rmsnorm 100 rows', 1e-5, (b) => withGrads(b, (x, w) => q.rmsnorm(x, w, 1e-5), [t(b, [100, 40], 33), t(b, [40], 34)]));
add('softmax long rows', 1e-6, (b) => withGrads(b, (x) => q.softmax(x), [t(b, [3, 2500], 35, 3)]));
add('crossEntropy long rows', 1e-5, (b) => withGrads(b, (l, tg) => q.crossEntropy(l, tg), [t(b, [3, 2500], 36, 2), ids(b, [5, -100, 2499])]));
add('rope far positions', 1e-5, (b) => withGrads(b, (x) => q.rope(x, { theta: 10000, offset: 70000, style: 'half' }), [t(b, [2, 3, 8], 37)]));
add('mse', 1e-5, (b) => withGrads(b, (x, y) => q.mse(x, y), [t(b, [4, 9], 31), t(b, [4, 9], 32)]));

// quantization: every format; parts bit-exact, dequantize bit-exact, fused matmul within tolerance
const fmts: q.QuantFormat[] = [];
for (const bits of [2, 3, 4]) {
  for (const group of [7, 32, 64]) {
    fmts.push(q.formats.nf(bits, { group, doubleQuant: true }), q.formats.nf(bits, { group, doubleQuant: false }));
    fmts.push(q.formats.int(bits, { group, symmetric: false }), q.formats.int(bits, { group, symmetric: true }));
  }
}
const shapes: [number, number][] = [[1, 1], [3, 70], [9, 129], [300, 64]];
for (const f of fmts) {
  add(`quantize + dequantize ${f.name}`, 0, (b) =>
    shapes.flatMap(([r, c], i) => {
      const w = q.tensor(generateWeights(i % 2 ? 'heavyTailed' : 'gaussian', r, c, i + 40), [r, c], 'f32', b);
      const qt = q.quantize(w, f);
      return [...PART_NAMES.flatMap((k) => (qt.parts[k] ? [q.cast(qt.parts[k]!, 'f32')] : [])), q.dequantize(qt)];
    }));
  add(`dequantizeMatmul ${f.name}`, 1e-4, (b) =>
    [[1, 3, 70], [5, 9, 129], [64, 33, 200]].map(([tokens, r, c], i) => {
      const w = q.tensor(generateWeights('gaussian', r, c, i + 50), [r, c], 'f32', b);
      return q.dequantizeMatmul(t(b, [tokens, c], i + 60), q.quantize(w, f));
    }));
}
// the fused backward dx = dy · W (Backend.dequantizeMatmulT) directly, and as dequantizeMatmul's x
// gradient: odd token counts, partial groups, columns past a 32/64-column boundary
for (const f of fmts) {
  add(`dequantizeMatmulT ${f.name} (and the x gradient of dequantizeMatmul)`, 1e-4, (b) =>
    [[1, 3, 70], [7, 9, 129], [13, 40, 300]].flatMap(([tokens, r, c], i) => {
      const qt = q.quantize(q.tensor(generateWeights('gaussian', r, c, i + 100), [r, c], 'f32', b), f);
      const dy = t(b, [tokens, r], i + 110);
      const dx = fromHandle(b, b.dequantizeMatmulT(dy.handle, tokens, qt.handles(), r, c, f), [tokens, c], 'f32');
      return [dx, ...withGrads(b, (x) => q.dequantizeMatmul(x, qt), [t(b, [2, tokens, c], i + 120)]).slice(1)];
    }));
}
// ICQ: the searched τ / clip ratio and every part bit-exact (a short grid keeps the js side fast),
// dequantize with τ bit-exact, the fused product with τ and its x gradient within tolerance
const icqGrid = { n: 12, clipPoints: 13 };
for (const f of fmts) {
  add(`quantizeIcq ${f.name}`, 0, (b) =>
    ([[1, 1], [3, 70], [9, 129]] as [number, number][]).flatMap(([r, c], i) => {
      const qt = q.quantizeIcq(q.tensor(generateWeights(i % 2 ? 'heavyTailed' : 'gaussian', r, c, i + 80), [r, c], 'f32', b), f, icqGrid);
      return [...qt.tensors().map((p) => (p.dtype === 'f32' ? p : q.cast(p, 'f32'))), q.dequantize(qt)];
    }));
}
add('quantizeIcq default grid nf4-g64-dq and int4-g64-asym', 0, (b) => {
  const w = q.tensor(generateWeights('gaussian', 32, 200, 90), [32, 200], 'f32', b);
  return [q.formats.nf(4), q.formats.int(4)].flatMap((f) => q.quantizeIcq(w, f).tensors().map((p) => (p.dtype === 'f32' ? p : q.cast(p, 'f32'))));
});
// GPU paths the cases above do not reach: more than 65535 groups (2-D grids of workgroups) and
// ICQ groups longer than 2048 values (sorted in a scratch buffer instead of workgroup memory)
add('quantize and quantizeIcq past 65535 groups and with groups of 4096', 0, (b) => {
  const parts = (qt: q.QuantizedTensor) => qt.tensors().map((p) => (p.dtype === 'f32' ? p : q.cast(p, 'f32')));
  const many = q.tensor(generateWeights('gaussian', 2, 66000, 93), [2, 66000], 'f32', b);
  const long = q.tensor(generateWeights('heavyTailed', 3, 5000, 94), [3, 5000], 'f32', b);
  return [
    ...parts(q.quantize(many, q.formats.nf(4, { group: 2 }))),
    ...parts(q.quantizeIcq(many, q.formats.int(3, { group: 2 }), icqGrid)),
    ...parts(q.quantizeIcq(long, q.formats.nf(3, { group: 4096 }), icqGrid)),
    ...parts(q.quantizeIcq(long, q.formats.int(4, { group: 4096, symmetric: true }), icqGrid)),
  ];
});
add('dequantizeMatmul with ICQ τ, and its gradient in x', 1e-4, (b) => {
  const qt = q.quantizeIcq(t(b, [7, 45], 91), q.formats.nf(3, { group: 16 }), icqGrid);
  return withGrads(b, (x) => q.dequantizeMatmul(x, qt), [t(b, [2, 3, 45], 92)]);
});
add('dequantizeMatmul gradient in x', 1e-4, (b) => {
  const qt = q.quantize(t(b, [6, 40], 70), q.formats.nf(4, { group: 16 }));
  return withGrads(b, (x) => q.dequantizeMatmul(x, qt), [t(b, [2, 3, 40], 71)]);
});
// the GPU kernels' fast decoders (columns and group multiples of 8): GEMV for 1-8 x rows (weight
// rows not a multiple of its row block), tiled above 8 (both tile sizes), unaligned 3-bit rows
for (const f of [q.formats.nf(2, { group: 32 }), q.formats.nf(3, { group: 16, doubleQuant: false }), q.formats.nf(4, { group: 32 }),
  q.formats.int(2, { group: 8, symmetric: true }), q.formats.int(3, { group: 32 }), q.formats.int(4, { group: 16, symmetric: true }), q.formats.int(4, { group: 64 })]) {
  add(`dequantizeMatmul and dequantizeMatmulT ${f.name}, columns a multiple of 8`, 1e-4, (b) =>
    [[1, 37, 64], [3, 5, 40], [8, 9, 96], [130, 70, 128]].flatMap(([tokens, r, c], i) => {
      const qt = q.quantize(q.tensor(generateWeights('gaussian', r, c, i + 130), [r, c], 'f32', b), f);
      const dy = t(b, [tokens, r], i + 140);
      return [q.dequantizeMatmul(t(b, [tokens, c], i + 150), qt), fromHandle(b, b.dequantizeMatmulT(dy.handle, tokens, qt.handles(), r, c, f), [tokens, c], 'f32')];
    }));
}

// the GPU GEMV's wide decoder (columns and group multiples of 32) over several 1024-column strides
// of a team's lanes (the next unit's loads fetched while the current one is decoded)
add('dequantizeMatmul GEMV, columns multiples of 32 over several lane strides', 1e-4, (b) =>
  [q.formats.nf(4, { group: 64 }), q.formats.nf(2, { group: 32, doubleQuant: false }), q.formats.nf(3, { group: 128 }),
    q.formats.int(4, { group: 64 }), q.formats.int(3, { group: 32, symmetric: true }), q.formats.int(2, { group: 64 })].flatMap((f, i) =>
    [[1, 37, 2112], [8, 5, 3104]].map(([tokens, r, c], j) => {
      const qt = q.quantize(q.tensor(generateWeights('gaussian', r, c, 160 + 2 * i + j), [r, c], 'f32', b), f);
      return q.dequantizeMatmul(t(b, [tokens, c], 180 + 2 * i + j), qt);
    })));

test('every expected backend is available', () => {
  const status = q.backends();
  for (const name of expected) {
    const s = status.find((x) => x.name === name);
    if (name === 'gpu') assert.ok(under.some(([n]) => n === 'gpu'), `backend 'gpu' is not available (not even a software adapter): ${gpuFailure}`);
    else assert.ok(s?.available, `backend '${name}' is not available: ${s?.failure ?? 'not registered'}`);
  }
});

test('native dequantizeMatmulT: split over threads by output columns, bit-identical to one thread', { skip: !others.includes('native') && 'no native backend' }, () => {
  const b = q.backendByName('native');
  const addon = (b as unknown as { addon: NativeAddon }).addon;
  const threads = addon.info().threads;
  try {
    for (const f of [q.formats.nf(2), q.formats.nf(3, { group: 7 }), q.formats.int(4, { group: 32 }), q.formats.int(2, { group: 100, symmetric: true })]) {
      for (const [tokens, r, c] of [[128, 96, 1536], [7, 333, 1000], [64, 256, 257]]) {
        q.tidy(() => {
          const qt = q.quantize(q.tensor(generateWeights('gaussian', r, c, r + c), [r, c], 'f32', b), f);
          const dy = t(b, [tokens, r], tokens);
          const run = () => fromHandle(b, b.dequantizeMatmulT(dy.handle, tokens, qt.handles(), r, c, f), [tokens, c], 'f32').dataSync();
          addon.setThreads(1);
          const one = run();
          for (const n of [2, 3, 4]) {
            addon.setThreads(n);
            const got = run();
            assert.ok(got.every((v, i) => Object.is(v, one[i])), `${f.name} ${tokens}x${r}x${c}: ${n} threads differ from one`);
          }
        });
      }
    }
  } finally {
    addon.setThreads(threads);
  }
});

function compare(name: string, got: q.Tensor[], want: q.Tensor[], tol: number) {
  assert.equal(got.length, want.length, `${name}: number of outputs`);
  got.forEach((g, i) => {
    assert.deepEqual(g.shape, want[i].shape, `${name}: output ${i} shape`);
    const a = g.dataSync();
    const e = want[i].dataSync();
    for (let j = 0; j < e.length; j++) {
      const diff = Math.abs(a[j] - e[j]);
      const ok = tol === 0 ? Object.is(a[j], e[j]) || (Number.isNaN(a[j]) && Number.isNaN(e[j])) : diff <= tol * Math.max(1, Math.abs(e[j]));
      assert.ok(ok, `${name}: output ${i}[${j}] = ${a[j]}, reference ${e[j]} (diff ${diff.toExponential(2)}, tol ${tol})`);
    }
  });
}

for (const [name, b] of under) {
  test(`parity: ${name} matches the js reference on every case`, () => {
    const before = b.liveBuffers();
    // QUANTLORA_PARITY_ONLY=substring narrows the table while debugging a kernel
    for (const c of cases.filter((x) => x.name.includes(process.env.QUANTLORA_PARITY_ONLY ?? ''))) {
      q.tidy(() => compare(`${c.name} [${name}]`, c.run(b), c.run(js), c.tol));
    }
    assert.equal(b.liveBuffers(), before, `${name}: parity cases leaked buffers`);
  });

  test(`parity: ${name} raises the same typed errors`, () => {
    q.tidy(() => {
      assert.throws(() => q.gather(t(b, [3, 2], 1), ids(b, [0, 3])), (e: Error) => e instanceof q.ValueError && /id 3/.test(e.message));
      assert.throws(() => q.crossEntropy(t(b, [2, 3], 2), ids(b, [0, 9])), (e: Error) => e instanceof q.ValueError && /target 9/.test(e.message));
      const bad = q.tensor([0.1, 0.2, 0.3, Infinity], [2, 2], 'f32', b);
      assert.throws(() => q.quantize(bad, q.formats.nf(4)), (e: Error) => e instanceof q.NonFiniteError && /row 1, col 1/.test(e.message));
      // the fused ops check their operands the same way whether the backend fuses them or not
      const [qa, kv] = [t(b, [2, 3, 8], 3), t(b, [2, 5, 8], 4)];
      assert.throws(() => q.attention(qa, t(b, [2, 5, 4], 5), kv), (e: Error) => e instanceof q.ShapeError && /k \[2, 5, 4\] and v \[2, 5, 8\] must be \[2, keys, 8\]/.test(e.message));
      assert.throws(() => q.attention(t(b, [3, 8], 6), kv, kv), (e: Error) => e instanceof q.ShapeError && /q must be \[blocks, rows, dim\]/.test(e.message));
      assert.throws(() => q.attention(qa, kv, kv, { t: 2 }), (e: Error) => e instanceof q.ValueError && /t = 2 positions must divide the 3 query rows/.test(e.message));
      assert.throws(() => q.attention(qa, kv, kv, { t: 1, past: 5 }), (e: Error) => e instanceof q.ValueError && /past = 5 with 1 positions needs 6 keys, k has 5/.test(e.message));
      assert.throws(() => q.attention(qa, kv, kv, { t: 1, scale: NaN }), (e: Error) => e instanceof q.ValueError && /scale must be finite/.test(e.message));
      assert.throws(() => q.addRmsnorm(t(b, [2, 8], 7), t(b, [2, 8], 8), t(b, [4], 9)), (e: Error) => e instanceof q.ShapeError && /addRmsnorm: weight must be \[8\]/.test(e.message));
      assert.throws(() => q.addRmsnorm(t(b, [2, 8], 7), t(b, [2, 8], 8), t(b, [8], 9), -1), (e: Error) => e instanceof q.ValueError && /addRmsnorm: eps must be >= 0/.test(e.message));
      assert.throws(() => q.siluMul(q.cast(t(b, [4], 10), 'i32'), t(b, [4], 11)), (e: Error) => e instanceof q.DTypeError && /siluMul/.test(e.message));
      assert.throws(() => q.argmaxRows(t(b, [2, 0], 20)), (e: Error) => e instanceof q.ValueError && /argmaxRows: rows of \[2, 0\] are empty/.test(e.message));
      assert.throws(() => q.argmaxRows(q.cast(t(b, [2, 3], 21), 'i32')), (e: Error) => e instanceof q.DTypeError && /argmaxRows/.test(e.message));
      const w4 = q.quantize(t(b, [4, 32], 16), q.formats.int(4, { group: 32 }));
      assert.throws(() => q.dequantizeMatmulLowRank(t(b, [1, 32], 17), w4, t(b, [2, 32], 18), t(b, [4, 2], 19), 1, { betaA: t(b, [2], 22), betaB: t(b, [1], 23) }), (e: Error) => e instanceof q.ShapeError && /IEC scalars/.test(e.message));
      assert.throws(() => q.dequantizeMatmulLowRank(t(b, [1, 32], 17), w4, t(b, [2, 16], 18), t(b, [4, 2], 19), 1), (e: Error) => e instanceof q.ShapeError && /a \[2, 16\] and b \[4, 2\] must be \[rank, 32\] and \[4, rank\]/.test(e.message));
      const w6 = q.quantize(t(b, [6, 32], 24), q.formats.int(4, { group: 32 }));
      assert.throws(() => q.dequantizeMatmulMany(t(b, [1, 32], 17), []), (e: Error) => e instanceof q.ShapeError && /dequantizeMatmulMany: no weights/.test(e.message));
      assert.throws(() => q.dequantizeMatmulMany(t(b, [1, 32], 17), [w4, w6], { glu: true }), (e: Error) => e instanceof q.ShapeError && /glu needs two weights of equal out size, got \[4, 32\] and \[6, 32\]/.test(e.message));
      assert.throws(() => q.dequantizeMatmulMany(t(b, [1, 16], 17), [w4, w6]), (e: Error) => e instanceof q.ShapeError && /x \[1, 16\] must end in the weight's input size 32/.test(e.message));
      assert.throws(() => q.dequantizeMatmulMany(t(b, [1, 32], 17), [w4, w6], { lora: [{ a: t(b, [2, 32], 18), b: t(b, [4, 2], 19), scale: 1 }] }), (e: Error) => e instanceof q.ShapeError && /1 LoRA branches for 2 weights/.test(e.message));
      assert.throws(() => q.dequantizeMatmulMany(t(b, [1, 32], 17), [w4, w6], { lora: [{ a: t(b, [2, 32], 18), b: t(b, [4, 2], 19), scale: 1 }, { a: t(b, [2, 32], 18), b: t(b, [4, 2], 19), scale: 1 }] }), (e: Error) => e instanceof q.ShapeError && /branch 1's a \[2, 32\] and b \[4, 2\] must be \[rank, 32\] and \[6, rank\]/.test(e.message));
      const cache = new q.KvCache();
      const heads = { q: 2, kv: 1 };
      assert.throws(() => cache.extendRoped(0, t(b, [1, 1, 16], 12), t(b, [1, 1, 4], 13), t(b, [1, 1, 4], 14), heads, {}), (e: Error) => e instanceof q.ShapeError && /q \[1, 1, 16\], k \[1, 1, 4\] and v \[1, 1, 4\] are not \[batch, t, heads · headDim\] of 2 and 1 heads/.test(e.message));
      assert.throws(() => cache.extendRoped(0, t(b, [1, 1, 6], 12), t(b, [1, 1, 3], 13), t(b, [1, 1, 3], 14), heads, {}), (e: Error) => e instanceof q.ShapeError && /one even headDim/.test(e.message));
      assert.throws(() => cache.extendRoped(0, t(b, [1, 1, 16], 12), t(b, [1, 1, 8], 13), t(b, [1, 2, 8], 14), heads, {}), (e: Error) => e instanceof q.ShapeError && /v \[1, 2, 8\]/.test(e.message));
      assert.throws(() => cache.extendRoped(0, t(b, [1, 1, 16], 12), t(b, [1, 1, 8], 13), t(b, [1, 1, 8], 14), heads, { theta: 0 }), (e: Error) => e instanceof q.ValueError && /theta must be > 0/.test(e.message));
      const g = t(b, [1, 1, 8], 15).requireGrad();
      assert.throws(() => cache.extendRoped(0, t(b, [1, 1, 16], 12), g, g, heads, {}), (e: Error) => e instanceof q.ValueError && /noGrad/.test(e.message));
      cache.extendRoped(0, t(b, [1, 1, 16], 12), t(b, [1, 1, 8], 13), t(b, [1, 1, 8], 14), heads, {});
      assert.throws(() => cache.extendRoped(0, t(b, [1, 1, 32], 12), t(b, [1, 1, 16], 13), t(b, [1, 1, 16], 14), heads, {}), (e: Error) => e instanceof q.ShapeError && /layer 0 holds \[1, 1, 64, 8\], extended with \[1, 1, 1, 16\]/.test(e.message));
      cache.dispose();
    });
  });
}

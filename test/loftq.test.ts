// LoftQ initialization: beats plain quantization, the reported errors are the real ones, scaling
// is folded into the factors, odd shapes and 2/3/4-bit formats, typed errors, no leaks.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as q from '../ts/index.js';
import { loftqInit } from '../ts/methods/loftq.js';

const be = q.getBackend();

function frob(t: q.Tensor): number {
  let s = 0;
  for (const x of t.dataSync()) s += x * x;
  return Math.sqrt(s);
}

/** ||W − deq(Q) − scaling·B·A||_F / ||W||_F, recomputed from the returned tensors. */
function relError(w: q.Tensor, qt: q.QuantizedTensor, a: q.Tensor | undefined, b: q.Tensor | undefined, scaling = 1): number {
  return q.tidy(() => {
    let r = q.sub(w, q.dequantize(qt));
    if (a && b) r = q.sub(r, q.mul(q.matmul(b, a), scaling));
    return frob(r) / frob(w);
  });
}

// 48 x 80: 80 is not a multiple of the group of 64; 40 x 70 with group 32 neither.
const cases = [
  { format: q.formats.nf(4), shape: [48, 80], monotone: true },
  { format: q.formats.int(3), shape: [48, 80], monotone: true },
  { format: q.formats.nf(2), shape: [48, 80], monotone: false },
  { format: q.formats.nf(3, { group: 32 }), shape: [40, 70], monotone: true },
  { format: q.formats.int(4, { group: 32, symmetric: true }), shape: [40, 70], monotone: true },
];

for (const { format, shape, monotone } of cases) {
  test(`loftqInit ${format.name} on [${shape}]: beats plain quantization, errors are the real ones`, () => {
    const w = q.randn(shape, { seed: shape[0] + format.bits, std: 0.02 }, be);
    const before = q.liveBuffers(be);
    const plainQ = q.quantize(w, format);
    const plain = relError(w, plainQ, undefined, undefined);
    plainQ.dispose();
    const rank = 6;
    const { q: qt, a, b, errors } = loftqInit(w, { format, rank, iters: 4, seed: 3 });
    assert.deepEqual([a.shape, b.shape, qt.shape], [[rank, shape[1]], [shape[0], rank], shape]);
    assert.equal(errors.length, 4);
    assert.ok(errors[0] < plain, `iteration 1 ${errors[0]} vs plain ${plain}`);
    for (const e of errors) assert.ok(e < plain, `${errors} vs plain ${plain}`);
    // LoftQ is not guaranteed monotone: at 2 bits requantizing can cost slightly more than the SVD gains.
    if (monotone) assert.ok(errors[errors.length - 1] <= errors[0], `${errors}`);
    else assert.ok(errors[errors.length - 1] <= errors[0] * 1.05, `${errors}`);
    assert.ok(Math.abs(relError(w, qt, a, b) - errors[errors.length - 1]) <= 1e-5, 'reported error differs from the recomputed one');
    qt.dispose(); a.dispose(); b.dispose();
    assert.equal(q.liveBuffers(be), before, 'loftqInit leaked tensors');
    w.dispose();
  });
}

test('loftqInit: scaling is folded into A and B (scaling·B·A is the same correction)', () => {
  const w = q.randn([32, 72], { seed: 9, std: 0.05 }, be);
  const format = q.formats.nf(4);
  const one = loftqInit(w, { format, rank: 4, iters: 2 });
  const four = loftqInit(w, { format, rank: 4, iters: 2, scaling: 4 });
  // scaling·B·A ≈ W − deq(Q) up to the rank-4 tail: the reported error is that tail
  assert.ok(Math.abs(relError(w, four.q, four.a, four.b, 4) - four.errors[1]) <= 1e-5);
  assert.ok(Math.abs(four.errors[1] - one.errors[1]) <= 1e-4, `${four.errors} vs ${one.errors}`);
  q.tidy(() => {
    const c1 = q.matmul(one.b, one.a).dataSync();
    const c4 = q.mul(q.matmul(four.b, four.a), 4).dataSync();
    let d = 0, n = 0;
    for (let i = 0; i < c1.length; i++) { d = Math.max(d, Math.abs(c1[i] - c4[i])); n = Math.max(n, Math.abs(c1[i])); }
    assert.ok(d <= 1e-3 * n, `corrections differ by ${d} (max ${n})`);
    // the factors are balanced: each carries √(S/scaling)
    assert.ok(Math.abs(frob(one.a) / frob(four.a) - 2) < 1e-3 && Math.abs(frob(one.b) / frob(four.b) - 2) < 1e-3);
  });
  for (const r of [one, four]) { r.q.dispose(); r.a.dispose(); r.b.dispose(); }
  w.dispose();
});

test('loftqInit: a custom quantizer, rank above min(out, in) padded with zeros', () => {
  const w = q.randn([5, 40], { seed: 4, std: 0.1 }, be);
  let calls = 0;
  const format = q.formats.int(2, { group: 16 });
  const r = loftqInit(w, { format, rank: 8, iters: 3, quantizer: (x) => { calls++; return q.quantize(x, format); } });
  assert.equal(calls, 3);
  assert.deepEqual([r.a.shape, r.b.shape], [[8, 40], [5, 8]]);
  const bv = r.b.dataSync();
  for (let i = 0; i < 5; i++) for (let j = 5; j < 8; j++) assert.equal(bv[i * 8 + j], 0);
  // rank 8 >= 5 rows: the residual is captured completely
  assert.ok(r.errors[2] <= 1e-5, `${r.errors}`);
  r.q.dispose(); r.a.dispose(); r.b.dispose(); w.dispose();
});

test('loftqInit: the same result on every available backend', () => {
  const names = q.backends().filter((s) => s.available).map((s) => s.name);
  const values = q.randn([24, 64], { seed: 12, std: 0.02 }, q.backendByName('js')).dataSync();
  const runs = names.map((name) => {
    const w = q.tensor(values, [24, 64], 'f32', q.backendByName(name));
    const r = loftqInit(w, { format: q.formats.nf(4), rank: 4, iters: 2 });
    const out = { name, errors: r.errors, b: r.b.dataSync().slice() };
    r.q.dispose(); r.a.dispose(); r.b.dispose(); w.dispose();
    return out;
  });
  for (const r of runs.slice(1)) {
    assert.ok(r.errors.every((e, i) => Math.abs(e - runs[0].errors[i]) <= 1e-5), `${r.name}: ${r.errors} vs ${runs[0].errors}`);
    assert.ok(r.b.every((x, i) => Math.abs(x - runs[0].b[i]) <= 1e-4), `${r.name}: B differs`);
  }
});

test('loftqInit: typed errors, no leak when it throws', () => {
  const w = q.randn([8, 16], { seed: 1 }, be);
  const format = q.formats.nf(4);
  assert.throws(() => loftqInit(w, { format, rank: 2, iters: 0 }), q.ValueError);
  assert.throws(() => loftqInit(w, { format, rank: 0 }), q.ValueError);
  assert.throws(() => loftqInit(w, { format, rank: 2, scaling: 0 }), q.ValueError);
  const cube = q.zeros([2, 8, 16], 'f32', be);
  assert.throws(() => loftqInit(cube, { format, rank: 2 }), q.ShapeError);
  const values = w.dataSync().slice() as Float32Array;
  values[17] = NaN;
  const bad = q.tensor(values, [8, 16], 'f32', be);
  assert.throws(() => loftqInit(bad, { format, rank: 2 }), (e: Error) => e instanceof q.NonFiniteError && /loftqInit/.test(e.message));
  const before = q.liveBuffers(be);
  assert.throws(() => loftqInit(w, { format, rank: 2, quantizer: (x) => q.quantize(q.reshape(x, [16, 8]), format) }), q.ShapeError);
  assert.equal(q.liveBuffers(be), before);
  for (const t of [w, cube, bad]) t.dispose();
});

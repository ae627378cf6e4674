// The LoRA branch (with IR-QLoRA's elastic connections) and QuantLinear: forward against a float64
// reference, IEC merged = unmerged, gradients, the frozen quantized weight, dropout, memory.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as q from '../ts/index.js';
import { Lora, groupMean, groupMeanMatrix } from '../ts/nn/lora.js';
import { QuantLinear } from '../ts/nn/quant-linear.js';
import { gradCheck } from './gradcheck.js';

const available = q.backends().filter((b) => b.available).map((b) => b.name);

function onBackend<T>(name: string, fn: () => T): T {
  const prev = q.getBackend().name;
  q.setBackend(name);
  try { return fn(); } finally { q.setBackend(prev); }
}

/** A branch with nonzero A, B, βA, βB. */
function randomLora(inF: number, outF: number, rank: number, iec: boolean, seed: number, alpha = 2 * rank): Lora {
  const be = q.getBackend();
  const a = q.randn([rank, inF], { seed, std: 0.3 }).requireGrad();
  const b = q.randn([outF, rank], { seed: seed + 1, std: 0.3 }).requireGrad();
  const betas = iec ? { betaA: q.tensor([0.7], [1], 'f32', be).requireGrad(), betaB: q.tensor([-0.4], [1], 'f32', be).requireGrad() } : undefined;
  return new Lora(a, b, { alpha }, betas);
}

/** float64 forward of the IEC branch written from the definition (one row x). */
function reference(l: Lora, x: Float32Array): Float64Array {
  const [r, n] = l.a.shape;
  const m = l.b.shape[0];
  const A = l.a.dataSync();
  const B = l.b.dataSync();
  const bA = l.iec ? l.iec.betaA.dataSync()[0] : 0;
  const bB = l.iec ? l.iec.betaB.dataSync()[0] : 0;
  const gcd = (a: number, b: number): number => (b ? gcd(b, a % b) : a);
  const meanMap = (v: Float64Array, len: number, outLen: number): Float64Array => {
    const g = gcd(len, outLen);
    const res = new Float64Array(outLen);
    for (let j = 0; j < outLen; j++) {
      const grp = Math.floor(j / (outLen / g));
      let s = 0;
      for (let c = grp * (len / g); c < (grp + 1) * (len / g); c++) s += v[c];
      res[j] = s / (len / g);
    }
    return res;
  };
  const xv = Float64Array.from(x);
  const xa = new Float64Array(r);
  const ma = meanMap(xv, n, r);
  for (let j = 0; j < r; j++) {
    let s = 0;
    for (let c = 0; c < n; c++) s += A[j * n + c] * xv[c];
    xa[j] = s + bA * ma[j];
  }
  const mb = meanMap(xa, r, m);
  const y = new Float64Array(m);
  for (let i = 0; i < m; i++) {
    let s = 0;
    for (let j = 0; j < r; j++) s += B[i * r + j] * xa[j];
    y[i] = l.scaling * (s + bB * mb[i]);
  }
  return y;
}

// (in, out, rank): divisible dims, and dims where gcd groups are needed
const SHAPES: [number, number, number][] = [[16, 24, 4], [18, 10, 4], [15, 9, 6], [7, 5, 3]];

for (const backend of available) {
  test(`lora on ${backend}: IEC forward matches the float64 definition; merged factors give the same output`, () => onBackend(backend, () => {
    for (const [inF, outF, rank] of SHAPES) {
      for (const iec of [false, true]) {
        const live = q.liveBuffers();
        const l = randomLora(inF, outF, rank, iec, inF * 7 + rank);
        const x = q.randn([3, inF], { seed: 5 });
        const xs = x.dataSync() as Float32Array;
        q.tidy(() => {
          const y = l.forward(x).dataSync();
          const { a, b } = l.merged();
          const ym = q.affine(q.matmul(q.matmul(x, a, { transB: true }), b, { transB: true }), l.scaling).dataSync();
          for (let row = 0; row < 3; row++) {
            const ref = reference(l, xs.subarray(row * inF, (row + 1) * inF));
            for (let i = 0; i < outF; i++) {
              const tag = `${inF}x${outF} r${rank} iec=${iec} row ${row} out ${i}`;
              assert.ok(Math.abs(y[row * outF + i] - ref[i]) < 1e-4 * Math.max(1, Math.abs(ref[i])), `${tag}: forward ${y[row * outF + i]} vs ${ref[i]}`);
              assert.ok(Math.abs(ym[row * outF + i] - ref[i]) < 1e-4 * Math.max(1, Math.abs(ref[i])), `${tag}: merged ${ym[row * outF + i]} vs ${ref[i]}`);
            }
          }
        });
        l.dispose();
        x.dispose();
        assert.equal(q.liveBuffers(), live, 'no tensors leak');
      }
    }
  }));
}

test('groupMean and groupMeanMatrix agree (the map IEC merges into A and B)', () => {
  for (const [n, m] of [[12, 4], [10, 4], [4, 12], [9, 6], [5, 3]]) {
    q.tidy(() => {
      const x = q.randn([2, n], { seed: n * m });
      const got = groupMean(x, m).dataSync();
      const M = q.tensor(groupMeanMatrix(n, m, 1), [m, n]);
      const want = q.matmul(x, M, { transB: true }).dataSync();
      for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i] - want[i]) < 1e-6, `n=${n} m=${m} [${i}]: ${got[i]} vs ${want[i]}`);
    });
  }
});

test('lora gradients (A, B, βA, βB and x) match finite differences on js', () => onBackend('js', () => {
  for (const [inF, outF, rank] of [[8, 6, 2], [9, 6, 4]] as const) {
    gradCheck(`lora ${inF}x${outF} r${rank}`, (x, a, b, ba, bb) => {
      const l = new Lora(a, b, { alpha: 3 }, { betaA: ba, betaB: bb });
      return l.forward(x);
    }, [{ shape: [3, inF] }, { shape: [rank, inF] }, { shape: [outF, rank] }, { shape: [1] }, { shape: [1] }], { eps: 1e-2, tol: 2e-2 });
  }
}));

test('Lora.create: kaiming A within ±1/√in, B zero, IEC scalars zero, so the branch starts at 0', () => {
  const l = Lora.create(64, 32, { rank: 8, iec: true, seed: 3 }, q.getBackend());
  const a = l.a.dataSync();
  const bound = 1 / Math.sqrt(64);
  assert.ok(a.every((v) => Math.abs(v) <= bound));
  assert.ok(Math.max(...Array.from(a, Math.abs)) > 0.8 * bound, 'A spans its range');
  assert.ok(l.b.dataSync().every((v) => v === 0));
  const x = q.randn([2, 64], { seed: 1 });
  assert.ok(l.forward(x).dataSync().every((v) => v === 0));
  assert.equal(l.parameters().length, 4);
  const g = Lora.create(64, 32, { rank: 8, init: 'gaussian', seed: 3 }, q.getBackend());
  const gv = g.a.dataSync() as Float32Array;
  const std = Math.sqrt(gv.reduce((s, v) => s + v * v, 0) / gv.length);
  assert.ok(Math.abs(std - 1 / 8) < 0.02, `gaussian std ${std}`);
  assert.throws(() => Lora.create(8, 4, { rank: 5 }, q.getBackend()), q.ValueError);
  assert.throws(() => Lora.create(8, 4, { rank: 2, dropout: 1 }, q.getBackend()), q.ValueError);
  for (const t of [l, g]) t.dispose();
  x.dispose();
});

test('dropout: only while training, scaled by 1/(1-p), seeded', () => {
  const l = randomLora(32, 16, 4, false, 9);
  const lora = new Lora(l.a, l.b, { dropout: 0.5, seed: 4 });
  const x = q.ones([4, 32]);
  q.tidy(() => {
    const eval0 = lora.forward(x).dataSync().slice();
    lora.training = true;
    const t1 = lora.forward(x).dataSync().slice();
    lora.training = false;
    assert.deepEqual(lora.forward(x).dataSync(), eval0, 'no dropout at evaluation');
    assert.ok(t1.some((v, i) => Math.abs(v - eval0[i]) > 1e-6), 'training output differs');
  });
  l.dispose();
  x.dispose();
});

for (const backend of available) {
  test(`QuantLinear on ${backend}: base = x·dequantize(Q)ᵀ + b, adapter added, Q frozen, dense() merges`, () => onBackend(backend, () => {
    const live = q.liveBuffers();
    const [inF, outF] = [40, 24];
    const w = q.randn([outF, inF], { seed: 2 });
    const qw = q.quantize(w, q.formats.nf(4, { group: 16 }));
    w.dispose();
    const bias = q.randn([outF], { seed: 3 });
    const lora = randomLora(inF, outF, 4, true, 11);
    const layer = new QuantLinear(qw, bias, lora);
    const x = q.randn([2, 3, inF], { seed: 4 }).requireGrad();
    q.tidy(() => {
      const dq = q.dequantize(qw);
      const want = q.add(q.add(q.matmul(x, dq, { transB: true }), bias), lora.forward(x));
      const y = layer.forward(x);
      assert.deepEqual(y.shape, [2, 3, outF]);
      const yv = y.dataSync();
      const wv = want.dataSync();
      for (let i = 0; i < yv.length; i++) assert.ok(Math.abs(yv[i] - wv[i]) < 1e-4, `[${i}] ${yv[i]} vs ${wv[i]}`);
      const grads = q.grad(q.sum(q.square(y)), [x, lora.a, lora.b, lora.iec!.betaA, lora.iec!.betaB, qw.codes]);
      assert.ok(grads.slice(0, 5).every((g) => g !== null), 'x and the adapter get gradients');
      assert.equal(grads[5], null, 'the packed weight gets none');
      const { weight, owned } = layer.dense();
      assert.ok(owned);
      const yd = q.add(q.matmul(x, weight, { transB: true }), bias).dataSync();
      for (let i = 0; i < yv.length; i++) assert.ok(Math.abs(yv[i] - yd[i]) < 1e-4, `dense [${i}] ${yd[i]} vs ${yv[i]}`);
      weight.dispose();
    });
    assert.equal(layer.parameters().length, 4);
    assert.throws(() => layer.forward(q.zeros([2, inF + 1])), q.ShapeError);
    assert.throws(() => new QuantLinear(qw, undefined, randomLora(inF + 1, outF, 2, false, 1)), q.ShapeError);
    layer.dispose();
    x.dispose();
    assert.ok(q.liveBuffers() - live <= 3, 'only the throwaway tensors of the error cases remain');
  }));
}

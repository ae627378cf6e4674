// LWC (learnable weight clipping): forward against a float64 oracle written from the spec, the
// straight-through gradients against forward-mode dual numbers through the same spec, finalize()
// bit-exact with fakeQuant() on every backend, behaviour at init and under training, errors.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as q from '../ts/index.js';
import { gaussianArray } from '../ts/tensor.js';
import { Lwc, lwcFakeQuant, LWC_EPS, withLogits } from '../ts/quant/lwc.js';
import { unpackCodes } from '../ts/quant/packing.js';
import { roundHalfAway, type QuantFormat } from '../ts/quant/formats.js';
import { AdamW } from '../ts/train/optim.js';
import { assignHost } from '../ts/train/tensors.js';

const js = q.backendByName('js');
const available = q.backends().filter((s) => s.available).map((s) => s.name);

// ---- the oracle: the spec in float64, each quantity a dual number (value, d/dθ) ----
type D = [number, number];
const dmul = (a: D, b: D): D => [a[0] * b[0], a[0] * b[1] + a[1] * b[0]];
const ddiv = (a: D, b: D): D => [a[0] / b[0], (a[1] * b[0] - a[0] * b[1]) / (b[0] * b[0])];
const dsub = (a: D, b: D): D => [a[0] - b[0], a[1] - b[1]];
const dadd = (a: D, b: D): D => [a[0] + b[0], a[1] + b[1]];
const c = (x: number): D => [x, 0];
const round = (a: D): D => [roundHalfAway(a[0]), a[1]]; // straight-through
const clamp = (a: D, lo: number, hi: number): D => (a[0] < lo ? [lo, 0] : a[0] > hi ? [hi, 0] : a); // torch.clamp: bounds pass
const sig = (x: number, seed: boolean): D => { const s = 1 / (1 + Math.exp(-x)); return [s, seed ? s * (1 - s) : 0]; };

/** The fake-quantized group (values and derivatives w.r.t. u when wrt = 'u', l when 'l'). */
function oracleGroup(w: Float32Array, u: number, l: number, f: QuantFormat, wrt: 'u' | 'l' | 'none'): D[] {
  const maxq = 2 ** f.bits - 1;
  const half = 2 ** (f.bits - 1) - 1;
  const su = sig(u, wrt === 'u');
  let s: D;
  let z: D;
  if (f.symmetric) {
    const absmax = Math.max(...Array.from(w, Math.abs));
    const raw = ddiv(dmul(su, c(absmax)), c(half));
    s = raw[0] >= LWC_EPS ? raw : c(LWC_EPS);
    z = c(half);
  } else {
    const hi = Math.max(0, ...w);
    const lo = Math.min(0, ...w);
    const xmax = dmul(su, c(hi));
    const xmin = dmul(sig(l, wrt === 'l'), c(lo));
    const raw = ddiv(dsub(xmax, xmin), c(maxq));
    s = raw[0] >= LWC_EPS ? raw : c(LWC_EPS);
    z = clamp(round(ddiv(dsub(c(0), xmin), s)), 0, maxq);
  }
  return Array.from(w, (x) => {
    const qv = clamp(dadd(round(ddiv(c(x), s)), z), 0, maxq);
    return dmul(dsub(qv, z), s);
  });
}

interface Setup { rows: number; cols: number; f: QuantFormat; w: Float32Array; u: Float32Array; l: Float32Array }

function setup(bits: 2 | 3 | 4, symmetric: boolean, group: number, rows: number, cols: number, seed: number): Setup {
  const f = q.formats.int(bits, { group, symmetric });
  const gpr = Math.ceil(cols / group);
  const w = gaussianArray(rows * cols, seed, 0.05);
  // logits spread from strong clipping (σ(-1) ≈ 0.27) to none (σ(6) ≈ 1)
  const r = q.rng(seed + 1);
  const u = Float32Array.from({ length: rows * gpr }, () => -1 + 7 * r());
  const l = Float32Array.from({ length: rows * gpr }, () => -1 + 7 * r());
  if (rows * cols > 3) w[3] = 0.4; // an outlier to clip
  return { rows, cols, f, w, u, l };
}

/** Oracle output [rows*cols] and du, dl (per group) of L = Σ y·dy. */
function oracle(s: Setup, dy: Float32Array): { y: Float64Array; du: Float64Array; dl: Float64Array } {
  const { rows, cols, f } = s;
  const gpr = Math.ceil(cols / f.group);
  const y = new Float64Array(rows * cols);
  const du = new Float64Array(rows * gpr);
  const dl = new Float64Array(rows * gpr);
  for (let r = 0; r < rows; r++) {
    for (let gi = 0; gi < gpr; gi++) {
      const b = r * cols + gi * f.group;
      const e = r * cols + Math.min((gi + 1) * f.group, cols);
      const wg = s.w.subarray(b, e);
      const k = r * gpr + gi;
      const byU = oracleGroup(wg, s.u[k], s.l[k], f, 'u');
      const byL = oracleGroup(wg, s.u[k], s.l[k], f, 'l');
      byU.forEach((d, j) => { y[b + j] = d[0]; du[k] += dy[b + j] * d[1]; dl[k] += dy[b + j] * byL[j][1]; });
    }
  }
  return { y, du, dl };
}

const configs: [2 | 3 | 4, boolean, number, number, number][] = [
  [2, false, 16, 6, 40], [3, false, 32, 4, 64], [4, false, 7, 3, 30],
  [2, true, 16, 6, 40], [3, true, 32, 4, 64], [4, true, 64, 2, 100],
];

for (const [bits, sym, group, rows, cols] of configs) {
  test(`lwc int${bits} g${group} ${sym ? 'sym' : 'asym'}: forward and STE gradients match the float64 oracle`, () => {
    const s = setup(bits, sym, group, rows, cols, bits * 10 + group);
    const dyv = gaussianArray(rows * cols, 5);
    const live = q.liveBuffers(js);
    q.tidy(() => {
      const w = q.tensor(s.w, [rows, cols], 'f32', js);
      const gpr = Math.ceil(cols / group);
      const u = q.tensor(s.u, [rows, gpr], 'f32', js).requireGrad();
      const l = q.tensor(s.l, [rows, gpr], 'f32', js).requireGrad();
      const y = lwcFakeQuant(w, sym ? { u } : { u, l }, s.f);
      const loss = q.sum(q.mul(y, q.tensor(dyv, [rows, cols], 'f32', js)));
      const [du, dl] = q.grad(loss, [u, l]);
      const o = oracle(s, dyv);
      const yv = y.dataSync() as Float32Array;
      for (let i = 0; i < yv.length; i++) assert.ok(Math.abs(yv[i] - o.y[i]) <= 1e-6 * Math.max(1e-3, Math.abs(o.y[i])), `y[${i}] ${yv[i]} vs ${o.y[i]}`);
      const duv = du!.dataSync() as Float32Array;
      for (let k = 0; k < duv.length; k++) assert.ok(Math.abs(duv[k] - o.du[k]) <= 1e-4 * Math.max(1e-3, Math.abs(o.du[k])), `du[${k}] ${duv[k]} vs ${o.du[k]}`);
      assert.ok(o.du.some((x) => Math.abs(x) > 1e-4), 'the oracle gradient is not trivially zero');
      if (sym) assert.equal(dl, null, 'l gets no gradient in the symmetric format');
      else {
        const dlv = dl!.dataSync() as Float32Array;
        for (let k = 0; k < dlv.length; k++) assert.ok(Math.abs(dlv[k] - o.dl[k]) <= 1e-4 * Math.max(1e-3, Math.abs(o.dl[k])), `dl[${k}] ${dlv[k]} vs ${o.dl[k]}`);
      }
    });
    assert.equal(q.liveBuffers(js), live, 'no leaked buffers');
  });
}

test('lwc: finalize() dequantizes to fakeQuant() bit for bit, on every backend', () => {
  assert.ok(available.includes('js'));
  for (const name of available) {
    const be = q.backendByName(name);
    for (const [bits, sym, group, rows, cols] of [...configs, [4, false, 64, 5, 64] as const, [2, true, 3, 3, 10] as const]) {
      const s = setup(bits, sym, group, rows, cols, 7);
      const live = q.liveBuffers(be);
      q.tidy(() => {
        const lwc = new Lwc(q.tensor(s.w, [rows, cols], 'f32', be), s.f);
        // non-trivial logits
        assignHost(lwc.u, s.u);
        if (lwc.l) assignHost(lwc.l, s.l);
        const fq = lwc.fakeQuant().dataSync() as Float32Array;
        const qt = lwc.finalize();
        assert.deepEqual(qt.shape, [rows, cols]);
        assert.equal(qt.format, s.f);
        const dq = q.dequantize(qt).dataSync() as Float32Array;
        assert.deepEqual(new Uint32Array(dq.buffer), new Uint32Array(fq.buffer), `${name} ${s.f.name} [${rows}, ${cols}]`);
        if (sym) {
          // clipped symmetric groups use code maxq (one step above +zero): decoded like any other
          const codes = unpackCodes(qt.codes.dataSync() as Uint8Array, rows, cols, bits);
          assert.ok(codes.includes(2 ** bits - 1), `${s.f.name}: code maxq is exercised`);
        }
        // and the same packed parts on every backend as on js
        const ref = new Lwc(q.tensor(s.w, [rows, cols], 'f32', js), s.f);
        assignHost(ref.u, s.u);
        if (ref.l) assignHost(ref.l, s.l);
        const rq = ref.finalize();
        for (const part of ['codes', 'scales', 'zeros'] as const) {
          const a = qt.parts[part];
          const b = rq.parts[part];
          assert.equal(!!a, !!b, part);
          if (a && b) assert.deepEqual(a.dataSync(), b.dataSync(), `${name}: part ${part}`);
        }
        ref.dispose();
        rq.dispose();
      });
      assert.equal(q.liveBuffers(be), live, `${name}: no leaked buffers`);
    }
  }
});

test('lwc: at init (σ(4) ≈ 0.982) the error is close to plain round-to-nearest', () => {
  for (const sym of [false, true]) {
    for (const bits of [2, 3, 4] as const) {
      const f = q.formats.int(bits, { group: 64, symmetric: sym });
      const wv = gaussianArray(32 * 128, 11, 0.02);
      q.tidy(() => {
        const w = q.tensor(wv, [32, 128], 'f32', js);
        const lwc = new Lwc(w, f);
        assert.deepEqual(Array.from(new Set(lwc.u.dataSync())), [4]);
        const err = (x: Float32Array) => x.reduce((a, v, i) => a + (v - wv[i]) ** 2, 0);
        const eLwc = err(lwc.fakeQuant().dataSync() as Float32Array);
        const eRtn = err(q.dequantize(q.quantize(w, f)).dataSync() as Float32Array);
        const ratio = eLwc / eRtn;
        assert.ok(ratio > 0.7 && ratio < 1.3, `${f.name}: LWC/RTN squared error ${ratio.toFixed(3)}`);
      });
    }
  }
});

test('lwc: gradient descent on ||w_fq·x − w·x||² lowers the loss (2-bit)', () => {
  for (const sym of [false, true]) {
    const f = q.formats.int(2, { group: 32, symmetric: sym });
    q.tidy(() => {
      const w = q.tensor(gaussianArray(16 * 64, 21, 0.05), [16, 64], 'f32', js);
      const x = q.tensor(gaussianArray(48 * 64, 22), [48, 64], 'f32', js);
      const target = q.matmul(x, w, { transB: true });
      const lwc = new Lwc(w, f);
      const opt = new AdamW([{ params: lwc.params(), lr: 0.1, weightDecay: 0 }]);
      const lossOf = () => q.sum(q.square(q.sub(q.matmul(x, lwc.fakeQuant(), { transB: true }), target)));
      const losses: number[] = [];
      for (let step = 0; step < 30; step++) {
        q.tidy(() => {
          const loss = lossOf();
          losses.push((loss.dataSync() as Float32Array)[0]);
          opt.step(q.grad(loss, lwc.params()));
        });
      }
      const final = q.noGrad(() => (lossOf().dataSync() as Float32Array)[0]);
      assert.ok(final < 0.85 * losses[0], `${f.name}: loss ${losses[0]} -> ${final}`);
      // the learned grid is what finalize() packs
      const qt = lwc.finalize();
      assert.deepEqual(q.dequantize(qt).dataSync(), q.noGrad(() => lwc.fakeQuant()).dataSync());
      opt.dispose();
      lwc.dispose();
      qt.dispose();
    });
  }
});

test('lwc: errors — NaN weights, NF formats, wrong parameter shapes, missing l', () => {
  const wv = gaussianArray(4 * 8, 3);
  wv[5] = NaN;
  assert.throws(() => new Lwc(q.tensor(wv, [4, 8], 'f32', js), q.formats.int(4, { group: 4 })), q.NonFiniteError);
  const w = q.tensor(gaussianArray(4 * 8, 3), [4, 8], 'f32', js);
  assert.throws(() => new Lwc(w, q.formats.nf(4)), q.FormatError);
  assert.throws(() => lwcFakeQuant(w, { u: q.zeros([4, 2], 'f32', js) }, q.formats.nf(2, { group: 4 })), q.FormatError);
  const f = q.formats.int(3, { group: 4 });
  assert.throws(() => lwcFakeQuant(w, { u: q.zeros([4, 3], 'f32', js), l: q.zeros([4, 2], 'f32', js) }, f), q.ShapeError);
  assert.throws(() => lwcFakeQuant(w, { u: q.zeros([4, 2], 'f32', js) }, f), q.ValueError);
  const bad = q.zeros([4, 2], 'f32', js);
  assert.throws(() => lwcFakeQuant(w, { u: q.full([4, 2], NaN, js), l: bad }, f), q.NonFiniteError);
  // the symmetric format needs only u, and the one-off op agrees with the class
  const fs = q.formats.int(3, { group: 4, symmetric: true });
  const lwc = new Lwc(w, fs);
  assert.equal(lwc.l, undefined);
  assert.deepEqual(lwcFakeQuant(w, { u: lwc.u }, fs).dataSync(), lwc.fakeQuant().dataSync());
});

test('withLogits: the logits of many layers read once, the same fake-quantized weights', () => {
  const be = q.backendByName('js');
  const f = q.formats.int(3, { group: 16 });
  const lwcs = [0, 1, 2].map((s) => new Lwc(q.tensor(gaussianArray(8 * 40, 60 + s), [8, 40], 'f32', be), f));
  try {
    const plain = lwcs.map((l) => q.tidy(() => Float32Array.from(l.fakeQuant().dataSync() as Float32Array)));
    const real = be.readSync!.bind(be);
    let reads = 0;
    be.readSync = (...a: Parameters<typeof real>) => { reads++; return real(...a); };
    try {
      const once = withLogits(lwcs, () => lwcs.map((l) => l.fakeQuant()));
      assert.equal(reads, 1, 'one read for the logits of three layers');
      once.forEach((t, i) => { assert.deepEqual(t.dataSync(), plain[i]); t.dispose(); });
    } finally {
      be.readSync = real;
    }
  } finally {
    for (const l of lwcs) l.dispose();
  }
});

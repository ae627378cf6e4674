// LWC's per-element work on the gpu backend (Backend.lwcFakeQuant / lwcGrad, ts/backends/gpu/lwc.ts)
// against the host path on the js backend (the reference): the kernels' codes on quotients at and
// next to half-integers, fakeQuant bit for bit and the u/l gradients within f32 summation error,
// finalize() bit-exact with fakeQuant on the gpu, and one ApiQ layer-mode run without leaks. Runs on
// the registry's gpu backend or, where only a software adapter exists (lavapipe), on that one.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as q from '../ts/index.js';
import type { GpuBackend } from '../ts/backends/gpu/index.js';
import { gaussianArray } from '../ts/tensor.js';
import { gpuSkip, testGpu } from './gpu-helper.js';
import { Lwc, lwcFakeQuant, withLogits } from '../ts/quant/lwc.js';
import { roundHalfAway, type QuantFormat } from '../ts/quant/formats.js';
import { unpackCodes } from '../ts/quant/packing.js';
import { assignHost } from '../ts/train/tensors.js';
import { loadModel } from '../ts/io/load-model.js';
import { apiq } from '../ts/methods/apiq.js';
import { calibrationWindows } from '../ts/methods/calibration.js';
import { quantizeModel, rtnLayers } from '../ts/methods/quantize-model.js';
import { QuantLinear } from '../ts/nn/quant-linear.js';


const gpu = testGpu;
const skip = gpuSkip;
const js = q.backendByName('js');
const bitsOf = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

test('gpu lwcFakeQuant: codes from the exact quotient at and next to half-integers, clamps, extremes', { skip }, () => {
  const g = gpu as GpuBackend;
  assert.ok(g.lwcFakeQuant && g.lwcGrad, 'the gpu backend has the lwc kernels');
  const r = q.rng(3);
  for (const bits of [2, 3, 4] as const) {
    const maxq = (1 << bits) - 1;
    const group = 8;
    const groups = 96;
    const scales = new Float32Array(groups);
    const zeros = new Uint8Array(groups);
    const w = new Float32Array(groups * group);
    const f32 = Math.fround;
    const next = (x: number, ulps: number) => { const b = new Float32Array([x]); new Int32Array(b.buffer)[0] += ulps; return b[0]; };
    for (let gi = 0; gi < groups; gi++) {
      // scales from the smallest LWC allows (f32(1e-5)) up, some with few significant bits (exact products)
      const s = gi % 3 === 0 ? f32(2 ** -(5 + (gi % 12)) * 3) : f32(1e-5 * 10 ** (5 * r()));
      scales[gi] = s;
      zeros[gi] = gi % (maxq + 1);
      for (let j = 0; j < group; j++) {
        const k = Math.floor(r() * (2 * maxq + 6)) - maxq - 3; // half-integers past the clamp on both sides
        const h = f32((k + 0.5) * s);
        w[gi * group + j] = j === 0 ? 0 : j === 1 ? (gi % 2 ? -1e-42 : 3e38 * (gi % 4 === 1 ? -1 : 1)) : next(h, [-2, -1, 0, 0, 1, 2][j % 6]);
      }
    }
    const d = { rows: groups, cols: group, group, bits };
    const wh = g.upload(w);
    const sh = g.upload(scales);
    const zh = g.upload(zeros);
    const yh = g.lwcFakeQuant!(wh, sh, zh, d);
    const y = g.readSync(yh, 'f32', w.length) as Float32Array;
    let half = 0;
    for (let i = 0; i < w.length; i++) {
      const gi = Math.floor(i / group);
      const x = w[i] / scales[gi];
      if (Math.abs(x) % 1 === 0.5) half++;
      const code = Math.min(Math.max(roundHalfAway(x) + zeros[gi], 0), maxq);
      const want = f32((code - zeros[gi]) * scales[gi]);
      assert.equal(bitsOf(y.subarray(i, i + 1))[0], bitsOf(Float32Array.of(want))[0], `int${bits} element ${i}: w ${w[i]} scale ${scales[gi]} zero ${zeros[gi]}: ${y[i]} vs ${want}`);
    }
    assert.ok(half > 50, `exact half-integer quotients exercised (${half})`);
    for (const h of [wh, sh, zh, yh]) g.free(h);
  }
});

interface Case { bits: 2 | 3 | 4; symmetric: boolean; group: number; rows: number; cols: number }
const cases: Case[] = [
  { bits: 2, symmetric: false, group: 16, rows: 6, cols: 40 },
  { bits: 3, symmetric: false, group: 32, rows: 5, cols: 100 },
  { bits: 4, symmetric: false, group: 7, rows: 3, cols: 30 },
  { bits: 2, symmetric: true, group: 16, rows: 6, cols: 40 },
  { bits: 3, symmetric: true, group: 64, rows: 4, cols: 150 },
  { bits: 4, symmetric: true, group: 128, rows: 3, cols: 300 },
  { bits: 3, symmetric: false, group: 1000, rows: 3, cols: 200 }, // one group per row, longer than a thread's segment
];

/** Weights, logits (strong clipping to none, and a few at the EPS floor), dy. */
function inputs(c: Case, seed: number) {
  const gpr = Math.ceil(c.cols / c.group);
  const w = gaussianArray(c.rows * c.cols, seed, 0.05);
  w[3] = 0.4; // an outlier to clip
  w[c.cols + 1] = -0.3;
  const r = q.rng(seed + 1);
  const logit = () => (r() < 0.05 ? -30 : -1 + 7 * r());
  const u = Float32Array.from({ length: c.rows * gpr }, logit);
  const l = Float32Array.from({ length: c.rows * gpr }, logit);
  return { w, u, l, gpr, dy: gaussianArray(c.rows * c.cols, seed + 2) };
}

/** fakeQuant values and u/l gradients of L = Σ y·dy on backend b. */
function run(b: q.Backend, c: Case, f: QuantFormat, x: ReturnType<typeof inputs>, oneOff: boolean) {
  return q.tidy(() => {
    const w = q.tensor(x.w, [c.rows, c.cols], 'f32', b);
    const lwc = new Lwc(w, f);
    assignHost(lwc.u, x.u);
    if (lwc.l) assignHost(lwc.l, x.l);
    const y = oneOff ? lwcFakeQuant(w, { u: lwc.u, l: lwc.l }, f) : lwc.fakeQuant();
    const [du, dl] = q.grad(q.sum(q.mul(y, q.tensor(x.dy, [c.rows, c.cols], 'f32', b))), lwc.params());
    const out = {
      y: Float32Array.from(y.dataSync() as Float32Array),
      du: Float32Array.from(du!.dataSync() as Float32Array),
      dl: dl ? Float32Array.from(dl.dataSync() as Float32Array) : undefined,
    };
    lwc.dispose();
    return out;
  });
}

function close(got: Float32Array, want: Float32Array, what: string): void {
  const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  assert.ok(scale > 0, `${what}: not trivially zero`);
  for (let i = 0; i < want.length; i++) {
    assert.ok(Math.abs(got[i] - want[i]) <= 1e-5 * Math.abs(want[i]) + 1e-6 * scale, `${what}[${i}]: gpu ${got[i]} vs host ${want[i]}`);
  }
}

for (const c of cases) {
  const f = q.formats.int(c.bits, { group: c.group, symmetric: c.symmetric });
  test(`gpu lwc ${f.name} [${c.rows}, ${c.cols}]: fakeQuant bit for bit and u/l gradients as the host path; finalize() equals fakeQuant`, { skip }, () => {
    const g = gpu as GpuBackend;
    const x = inputs(c, c.bits * 31 + c.group);
    const live = g.liveBuffers();
    for (const oneOff of [false, true]) {
      const want = run(js, c, f, x, oneOff);
      const got = run(g, c, f, x, oneOff);
      assert.deepEqual(bitsOf(got.y), bitsOf(want.y), `${f.name}${oneOff ? ' (lwcFakeQuant)' : ''}: values`);
      close(got.du, want.du, 'du');
      if (c.symmetric) assert.equal(got.dl, undefined);
      else close(got.dl!, want.dl!, 'dl');
    }
    // finalize on the gpu: the codes hit both clamp bounds, and dequantize is fakeQuant bit for bit
    q.tidy(() => {
      const lwc = new Lwc(q.tensor(x.w, [c.rows, c.cols], 'f32', g), f);
      assignHost(lwc.u, x.u);
      if (lwc.l) assignHost(lwc.l, x.l);
      const fq = q.noGrad(() => lwc.fakeQuant()).dataSync() as Float32Array;
      const qt = lwc.finalize();
      const codes = unpackCodes(qt.codes.dataSync() as Uint8Array, c.rows, c.cols, c.bits);
      assert.ok(codes.includes(0) && codes.includes((1 << c.bits) - 1), `${f.name}: codes at both clamp bounds`);
      assert.deepEqual(bitsOf(q.dequantize(qt).dataSync() as Float32Array), bitsOf(fq));
      lwc.dispose();
      qt.dispose();
    });
    assert.equal(g.liveBuffers(), live, 'no leaked buffers');
  });
}

test('gpu lwc: the graph keeps the device weight past Lwc.dispose(); a graph dropped without backward frees it', { skip }, () => {
  const g = gpu as GpuBackend;
  const f = q.formats.int(3, { group: 16 });
  const wv = gaussianArray(8 * 40, 9, 0.05);
  const live = g.liveBuffers();
  q.tidy(() => {
    const a = new Lwc(q.tensor(wv, [8, 40], 'f32', g), f);
    const y = a.fakeQuant();
    const u = a.u;
    a.dispose();
    const [du] = q.grad(q.sum(y), [u]);
    assert.ok((du!.dataSync() as Float32Array).some((v) => v !== 0));
  });
  q.tidy(() => {
    const b = new Lwc(q.tensor(wv, [8, 40], 'f32', g), f);
    b.fakeQuant().dispose();
    b.dispose();
  });
  assert.equal(g.liveBuffers(), live, 'no leaked buffers');
});

test('gpu apiq layer mode with LWC: runs on the lwc kernels, weights end packed, no leaked buffers', { skip }, () => {
  const g = gpu as GpuBackend;
  const calls = { fq: 0, grad: 0 };
  const fq = g.lwcFakeQuant!;
  const gr = g.lwcGrad!;
  g.lwcFakeQuant = (...a) => { calls.fq++; return fq(...a); };
  g.lwcGrad = (...a) => { calls.grad++; return gr(...a); };
  const live = g.liveBuffers();
  try {
    const fp = loadModel('test/fixtures/tiny-llama/llama-tied', { backend: g }).model;
    const format = q.formats.int(2, { group: 16 });
    const qm = quantizeModel(fp, rtnLayers({ format, lora: { rank: 4 } }));
    const next = q.rng(2);
    const stream = Int32Array.from({ length: 2000 }, (_, i) => (next() < 0.8 ? 3 + ((i * 7) % 23) : 3 + Math.floor(next() * 50)));
    const data = calibrationWindows(stream, { count: 4, seqlen: 16, validation: 1, seed: 1 });
    const report = apiq(fp, qm, { mode: 'layer', windows: data.train, epochs: 2, lrLora: 5e-3 });
    assert.equal(report.parts.length, 14);
    assert.ok(report.parts.every((p) => Number.isFinite(p.after)), JSON.stringify(report.parts));
    const fell = report.parts.filter((p) => p.after < p.before).length;
    assert.ok(fell >= report.parts.length - 2, `losses fell in ${fell} of ${report.parts.length} parts`);
    for (const b of qm.blocks) for (const k of ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const) assert.ok(b[k] instanceof QuantLinear);
    assert.ok(calls.fq > 0 && calls.grad >= 14 * 2 * data.train.length, `lwc kernels used: ${JSON.stringify(calls)}`);
    fp.dispose();
    qm.dispose();
  } finally {
    g.lwcFakeQuant = fq;
    g.lwcGrad = gr;
  }
  assert.equal(g.liveBuffers(), live, 'no leaked buffers');
});

test('gpu LWC step: one read for the logits of all layers, none in the backward pass', { skip }, () => {
  const g = gpu as GpuBackend;
  const addon = g.dev.addon as { gpuReadSync: (...a: unknown[]) => Uint8Array };
  const real = addon.gpuReadSync;
  const f = q.formats.int(3, { group: 16 });
  const lwcs = [0, 1].map((s) => new Lwc(q.tensor(gaussianArray(8 * 48, 70 + s), [8, 48], 'f32', g), f));
  const params = lwcs.flatMap((l) => l.params());
  let reads = 0;
  try {
    addon.gpuReadSync = (...a: unknown[]) => { reads++; return real.apply(addon, a); };
    const grads = q.tidy(() => {
      const loss = withLogits(lwcs, () => q.add(q.sum(q.square(lwcs[0].fakeQuant())), q.sum(lwcs[1].fakeQuant())));
      return q.grad(loss, params);
    });
    assert.equal(reads, 1, 'the logits of both layers in one read; the backward reads nothing');
    addon.gpuReadSync = real;
    for (const t of grads) { assert.ok(t && (t.dataSync() as Float32Array).every(Number.isFinite)); t?.dispose(); }
  } finally {
    addon.gpuReadSync = real;
    for (const l of lwcs) l.dispose();
  }
});

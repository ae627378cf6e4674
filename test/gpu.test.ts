// The gpu backend's own pieces beyond the parity table: the fused Adam/AdamW update against the
// op-by-op path on the js backend, command batching, and device errors. Runs on the registry's gpu
// backend or, where only a software adapter exists (lavapipe in CI), on that one.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as q from '../ts/index.js';
import { gpuOptionsFromEnv, openGpuBackend, type GpuBackend } from '../ts/backends/gpu/index.js';
import { gaussianArray } from '../ts/tensor.js';
import { gpuExpected, gpuSkip, testGpu } from './gpu-helper.js';
import { gemvShape } from '../ts/backends/gpu/quant.js';
import type { WordsShape } from '../ts/backends/gpu/gemv.js';
import type { GpuHandle } from '../ts/backends/gpu/device.js';
import { gemvFits, matmulPlan } from '../ts/backends/gpu/matmul.js';
import { AdamW } from '../ts/train/optim.js';
import { BackendError } from '../ts/errors.js';
import { trainStep } from '../ts/methods/trainer.js';
import { KvCache, LlamaModel } from '../ts/nn/llama.js';
import { quantizeModel, rtnLayers } from '../ts/methods/quantize-model.js';


const gpu = testGpu;
const expected = gpuExpected;
const skip = gpuSkip;
const js = q.backendByName('js');

test('gpu is available where CI expects it', { skip: !expected && 'QUANTLORA_EXPECT_BACKENDS does not name gpu' }, () => {
  assert.ok(typeof gpu !== 'string', `gpu backend: ${gpu}`);
});

test('fused adamStep matches the op-by-op Adam/AdamW update', { skip }, () => {
  const g = gpu as GpuBackend;
  for (const [Opt, wd] of [[q.AdamW, 0.1], [q.Adam, 0.05], [q.AdamW, 0]] as const) {
    const run = (b: q.Backend) => {
      const p = q.tensor(gaussianArray(1000, 1), [10, 100], 'f32', b);
      const p2 = q.tensor(gaussianArray(7, 2), [7], 'f32', b);
      const opt = new Opt([{ params: [p, p2], lr: 0.01, weightDecay: wd }]);
      for (let s = 0; s < 3; s++) {
        const grads = [q.tensor(gaussianArray(1000, 10 + s), [10, 100], 'f32', b), q.tensor(gaussianArray(7, 20 + s), [7], 'f32', b)];
        opt.step(grads);
        for (const t of grads) t.dispose();
      }
      const out = [Float32Array.from(p.dataSync() as Float32Array), Float32Array.from(p2.dataSync() as Float32Array)];
      p.dispose();
      p2.dispose();
      return out;
    };
    const got = run(g);
    const want = run(js);
    for (let k = 0; k < 2; k++) {
      for (let i = 0; i < want[k].length; i++) {
        assert.ok(Math.abs(got[k][i] - want[k][i]) <= 1e-6 * Math.max(1, Math.abs(want[k][i])), `${Opt.name} wd ${wd}: param ${k}[${i}] = ${got[k][i]}, op path ${want[k][i]}`);
      }
    }
  }
  assert.ok(typeof g.adamStep === 'function');
});

test('many kernels per submit, freed buffers reused by later outputs', { skip }, () => {
  const g = gpu as GpuBackend;
  const stats0 = g.dev.addon.gpuStats();
  const before = g.liveBuffers();
  let x = q.tensor(Float32Array.from({ length: 4096 }, (_, i) => i), [4096], 'f32', g);
  for (let i = 0; i < 300; i++) {
    const y = q.affine(x, 1, 1); // each input is freed while the pending batch still reads it
    x.dispose();
    x = y;
  }
  const out = x.dataSync();
  assert.equal(out[0], 300);
  assert.equal(out[4095], 4395);
  x.dispose();
  const stats = g.dev.addon.gpuStats();
  assert.ok(stats.dispatches - stats0.dispatches >= 300);
  // batches of 32, then 64 dispatches (the default cap) after the test's first upload's sync at the
  // latest, the rest at the read
  assert.ok(stats.submits - stats0.submits <= 7, `300 kernels took ${stats.submits - stats0.submits} submits`);
  assert.equal(g.liveBuffers(), before);
});

test('memory: a batch reuses what its kernels freed; an upload never takes a buffer the batch still reads', { skip }, () => {
  const g = gpu as GpuBackend;
  const n = 1 << 18; // 1 MiB of f32
  let x = q.tensor(new Float32Array(n).fill(1), [n], 'f32', g);
  x.dataSync();
  g.dev.addon.gpuTrim();
  const s0 = g.dev.addon.gpuStats(true);
  for (let i = 0; i < 200; i++) {
    const y = q.affine(x, 1, 1);
    x.dispose();
    x = y;
  }
  const s1 = g.dev.addon.gpuStats();
  assert.ok(s1.submits - s0.submits <= 3, 'the chain is recorded in few batches');
  // two 1 MiB buffers alternate: without reuse inside a batch it would hold up to 128 of them
  assert.ok(s1.peakBytes - s0.liveBytes <= 3 * 4 * n, `peak ${s1.peakBytes} bytes, ${s0.liveBytes} live before`);
  assert.equal(x.dataSync()[n - 1], 201);
  // an upload of the same size as a buffer freed in the pending batch gets a fresh one
  const a = q.tensor(new Float32Array(n).fill(2), [n], 'f32', g);
  a.dataSync();
  const b = q.affine(a, 3, 0);
  a.dispose();
  const c = q.tensor(new Float32Array(n).fill(7), [n], 'f32', g);
  assert.equal(b.dataSync()[0], 6);
  assert.equal(c.dataSync()[n - 1], 7);
  for (const t of [x, b, c]) t.dispose();
  const s2 = g.dev.addon.gpuStats();
  assert.equal(s2.live, s0.live - 1);
  assert.equal(s2.liveBytes, s0.liveBytes - 4 * n);
});

test('a memory limit: the pool is emptied and the buffer tried again, then a BackendError naming the limit', { skip }, () => {
  const g = gpu as GpuBackend;
  const MiB = 1 << 20;
  g.dev.addon.gpuWait();
  g.dev.addon.gpuTrim();
  const s0 = g.dev.addon.gpuStats();
  assert.equal(s0.poolBytes, 0);
  const prev = g.dev.setMemoryLimit(s0.liveBytes + s0.deferredBytes + 4 * MiB);
  const held: GpuHandle[] = [];
  try {
    // 3 MiB freed into the pool; a new 2 MiB buffer fits only once the pool is emptied
    const a = g.dev.alloc(3 * MiB);
    g.dev.addon.gpuWait();
    g.dev.free(a);
    assert.equal(g.dev.addon.gpuStats().poolBytes, 3 * MiB);
    held.push(g.dev.alloc(2 * MiB));
    assert.equal(g.dev.addon.gpuStats().poolBytes, 0, 'the pool was emptied for the new buffer');
    // 2 + 3 MiB is past the limit with nothing left to give back
    assert.throws(() => g.dev.alloc(3 * MiB), (e: Error) => e instanceof q.BackendError && /a 3145728-byte buffer: .*over the GPU memory limit.*limit of \d+ MiB/.test(e.message));
    assert.throws(() => q.tensor(new Float32Array(MiB), [MiB], 'f32', g), (e: Error) => e instanceof q.BackendError && /memory limit/.test(e.message));
    // nothing was lost: the device still computes, and what fits still allocates
    const x = q.tensor(Float32Array.from([1, 2, 3]), [3], 'f32', g);
    assert.deepEqual(Array.from(q.mul(x, x).dataSync()), [1, 4, 9]);
    x.dispose();
    held.push(g.dev.alloc(MiB));
  } finally {
    for (const h of held) g.dev.free(h);
    assert.equal(g.dev.setMemoryLimit(prev), s0.liveBytes + s0.deferredBytes + 4 * MiB);
  }
  assert.throws(() => g.dev.setMemoryLimit(-1), /finite number of bytes >= 0/);
});

test('bind groups are reused per buffers and parameter window, with the results of one per dispatch', { skip }, () => {
  const g = gpu as GpuBackend;
  const run = () => q.tidy(() => {
    const a = q.tensor(gaussianArray(40 * 300, 51), [40, 300], 'f32', g);
    const b = q.tensor(gaussianArray(300 * 24, 52), [300, 24], 'f32', g);
    const w = q.quantize(q.tensor(gaussianArray(24 * 256, 53, 0.05), [24, 256], 'f32', g), q.formats.nf(4, { group: 64, doubleQuant: true }));
    let x = q.matmul(a, b);
    for (let i = 0; i < 20; i++) x = q.add(q.mul(x, 0.5), q.softmax(x)); // the same kernels on recycled buffers
    const y = q.dequantizeMatmul(q.tensor(gaussianArray(3 * 256, 54), [3, 256], 'f32', g), w);
    return [x, y].map((t) => Float32Array.from(t.dataSync() as Float32Array));
  });
  const was = g.dev.addon.gpuSetBindCache(false);
  try {
    const fresh = run();
    g.dev.addon.gpuSetBindCache(true);
    const h0 = g.dev.addon.gpuStats().bindHits;
    const outs = [run(), run()];
    assert.ok(g.dev.addon.gpuStats().bindHits - h0 > 20, `the runs reuse bind groups (${g.dev.addon.gpuStats().bindHits - h0} hits)`);
    // the pool hands out free buffers lowest serial first: the same pattern gets the same buffers
    const s0 = g.dev.addon.gpuStats();
    outs.push(run());
    const s1 = g.dev.addon.gpuStats();
    assert.equal(s1.bindHits - s0.bindHits, s1.dispatches - s0.dispatches, 'a repeated run reuses every bind group');
    for (const out of outs) out.forEach((o, k) => o.forEach((v, i) => assert.ok(Object.is(v, fresh[k][i]), `output ${k}[${i}]: cached ${v}, fresh ${fresh[k][i]}`)));
    g.dev.addon.gpuTrim(); // destroys the pooled buffers: their replacements get new serials, and no stale bind group is used
    assert.deepEqual(run(), fresh);
  } finally {
    g.dev.addon.gpuSetBindCache(was);
  }
});

test('after a wait the first kernels are submitted early (the GPU starts while the host records), later batches double up to 64 kernels', { skip: skip || (process.env.QUANTLORA_GPU_FIRST_BATCH || process.env.QUANTLORA_GPU_MAX_BATCH ? 'QUANTLORA_GPU_FIRST_BATCH / _MAX_BATCH change the schedule' : false) }, () => {
  const g = gpu as GpuBackend;
  let x = q.tensor(new Float32Array(1024).fill(1), [1024], 'f32', g);
  x.dataSync(); // a sync: the host waited, the GPU is idle
  const s0 = g.dev.addon.gpuStats().submits;
  const steps = (n: number) => {
    for (let i = 0; i < n; i++) {
      const y = q.affine(x, 1, 1);
      x.dispose();
      x = y;
    }
  };
  steps(31);
  assert.equal(g.dev.addon.gpuStats().submits, s0, 'nothing submitted before the first batch is full');
  steps(1);
  assert.equal(g.dev.addon.gpuStats().submits, s0 + 1, 'the 32nd kernel after a wait submits');
  steps(63);
  assert.equal(g.dev.addon.gpuStats().submits, s0 + 1, 'the second batch twice as long');
  steps(1);
  assert.equal(g.dev.addon.gpuStats().submits, s0 + 2, 'the second batch: 64 kernels');
  steps(3 * 64);
  assert.equal(g.dev.addon.gpuStats().submits, s0 + 5, 'then batches of at most 64');
  assert.equal(x.dataSync()[0], 1 + 32 + 64 + 192);
  // another first batch at run time (benchmarks compare schedules in one process)
  const before = g.dev.addon.gpuSetFirstBatch(4);
  try {
    assert.equal(before, 32);
    const s1 = g.dev.addon.gpuStats().submits;
    steps(4);
    assert.equal(g.dev.addon.gpuStats().submits, s1 + 1, 'a first batch of 4');
  } finally {
    g.dev.addon.gpuSetFirstBatch(before);
  }
  // and another cap: batches double past 64 up to it
  const cap = g.dev.addon.gpuSetMaxBatch(256);
  try {
    assert.equal(cap, 64);
    x.dataSync();
    const s2 = g.dev.addon.gpuStats().submits;
    steps(32 + 64 + 128 + 255);
    assert.equal(g.dev.addon.gpuStats().submits, s2 + 3, '32, 64, 128, then 255 of 256 pending');
    steps(1);
    assert.equal(g.dev.addon.gpuStats().submits, s2 + 4, 'a batch of 256');
  } finally {
    g.dev.addon.gpuSetMaxBatch(cap);
  }
  x.dispose();
});

test('device errors come back as JS errors naming the kernel', { skip }, () => {
  const g = gpu as GpuBackend;
  assert.throws(() => g.dev.pipeline('bad-shader', 'fn broken(', 'main'), /compiling GPU kernel bad-shader:main/);
  assert.throws(() => g.dev.addon.gpuFree(987654), /does not exist/);
  // selections: checked on every open, also once the process holds its device
  assert.throws(() => openGpuBackend({ backends: 'bogus', allowSoftware: true }), (e: Error) => e instanceof q.BackendError && /unknown GPU backend 'bogus'/.test(e.message));
  assert.throws(() => openGpuBackend({ adapter: 'no-such-adapter-xyz', allowSoftware: true }), (e: Error) => e instanceof q.BackendError && /name containing 'no-such-adapter-xyz'/.test(e.message));
  if (g.dev.info.deviceType === 'Cpu') {
    assert.throws(() => openGpuBackend({ allowSoftware: false }), (e: Error) => e instanceof q.BackendError && /software adapters need QUANTLORA_GPU_SOFTWARE=1/.test(e.message));
  }
  assert.throws(() => g.dev.run(g.dev.pipeline('optim-adam-missing', '@group(0) @binding(0) var<storage, read> P: array<u32>; @compute @workgroup_size(1) fn main() { _ = P[0]; }'), [1], [], [70000, 1, 1]), /exceeds/);
});

test('row kernels with subgroup reductions match the workgroup-tree fallback', { skip }, () => {
  const g = gpu as GpuBackend;
  if (!g.dev.info.subgroups) return; // nothing to compare on this adapter
  assert.ok(g.dev.subgroups || process.env.QUANTLORA_GPU_SUBGROUPS === '0', 'an adapter with subgroups uses them by default');
  const tree = treeBackend();
  assert.equal(tree.dev.subgroups, false);
  const run = (b: q.Backend) => q.tidy(() => {
    const x = q.tensor(gaussianArray(37 * 3001, 5, 3), [37, 3001], 'f32', b);
    const w = q.tensor(gaussianArray(3001, 6), [3001], 'f32', b);
    const targets = q.tensor(Int32Array.from({ length: 37 }, (_, i) => (i * 97) % 3001), [37], 'i32', b);
    x.requireGrad();
    const y = q.softmax(q.rmsnorm(x, w, 1e-5));
    const loss = q.add(q.crossEntropy(x, targets), q.sum(q.mul(y, y)));
    const [dx] = q.grad(loss, [x]);
    return [y, loss, dx!].map((t) => Float32Array.from(t.dataSync() as Float32Array));
  });
  const a = run(g);
  const b = run(tree);
  a.forEach((out, k) => out.forEach((v, i) => assert.ok(Math.abs(v - b[k][i]) <= 1e-5 * Math.max(1, Math.abs(b[k][i])), `output ${k}[${i}]: subgroups ${v}, tree ${b[k][i]}`)));
});

test('kernels compiled without shader runtime checks compute exactly what the checked ones do', { skip }, () => {
  const g = gpu as GpuBackend;
  const was = g.dev.checks;
  // a sample across the kernel files (QUANTLORA_PARITY_BOTH_CHECKS=1 runs the whole parity table both ways)
  const run = () => q.tidy(() => {
    const outs: q.Tensor[] = [];
    for (const [f, T] of [[q.formats.nf(4, { group: 64, doubleQuant: true }), 1], [q.formats.int(4, { group: 64 }), 2], [q.formats.nf(3, { group: 32 }), 1], [q.formats.nf(2, { group: 64 }), 20]] as const) {
      const w = q.quantize(q.tensor(gaussianArray(48 * 256, 31, 0.05), [48, 256], 'f32', g), f);
      const x = q.tensor(gaussianArray(T * 256, 32 + T), [T, 256], 'f32', g);
      x.requireGrad();
      const y = q.dequantizeMatmul(x, w);
      const [dx] = q.grad(q.sum(q.mul(y, y)), [x]);
      outs.push(y, dx!, q.dequantize(w));
    }
    const a = q.tensor(gaussianArray(33 * 700, 41), [33, 700], 'f32', g);
    const b = q.tensor(gaussianArray(700 * 70, 42), [700, 70], 'f32', g);
    const ids = q.tensor(Int32Array.of(3, 0, 32, 7), [4], 'i32', g);
    outs.push(q.matmul(a, b), q.softmax(q.rmsnorm(a, q.tensor(gaussianArray(700, 43), [700], 'f32', g))), q.sum(a, 0), q.gather(a, ids),
      q.div(a, q.add(q.slice(a, [0, 0], [1, 700]), 3)));
    return outs.map((t) => Float32Array.from(t.dataSync() as Float32Array));
  });
  try {
    g.dev.checks = true;
    const checked = run();
    g.dev.checks = false;
    const unchecked = run();
    checked.forEach((out, k) => out.forEach((v, i) => assert.ok(Object.is(v, unchecked[k][i]), `output ${k}[${i}]: checked ${v}, unchecked ${unchecked[k][i]}`)));
  } finally {
    g.dev.checks = was;
  }
});

test('GPU timestamps sum the time of every pass, past one query set', { skip }, () => {
  const g = gpu as GpuBackend;
  const addon = g.dev.addon;
  assert.equal(addon.gpuTimingStop(), null, 'not started: null');
  if (!addon.gpuTimingStart()) return; // no timestamp queries on this adapter
  const x = q.tensor(new Float32Array(4096).fill(1), [4096], 'f32', g);
  // one pass per flush: more passes than one query set has pairs (2048), so a harvest runs midway
  const passes = 2100;
  for (let i = 0; i < passes; i++) {
    q.exp(x).dispose();
    addon.gpuFlush();
  }
  const t = addon.gpuTimingStop();
  x.dispose();
  assert.ok(t && t.passes === passes, `timed ${t?.passes} passes, recorded ${passes}`);
  assert.ok(t.ms > 0 && Number.isFinite(t.ms), `GPU time ${t.ms} ms`);
  assert.equal(addon.gpuTimingStop(), null, 'stopped: null');
});

test('reads at any byte offset and length (sync and async)', { skip }, async () => {
  const g = gpu as GpuBackend;
  const bytes = Uint8Array.from({ length: 99 }, (_, i) => (i * 7 + 3) & 255);
  const h = g.dev.upload(bytes);
  try {
    for (const [off, n] of [[0, 99], [5, 7], [97, 2], [3, 1], [4, 8], [96, 3]]) {
      assert.deepEqual(Array.from(g.dev.addon.gpuReadSync(h.id, off, n)), Array.from(bytes.subarray(off, off + n)), `sync ${off}+${n}`);
      assert.deepEqual(Array.from(await g.dev.addon.gpuRead(h.id, off, n)), Array.from(bytes.subarray(off, off + n)), `async ${off}+${n}`);
    }
    assert.throws(() => g.dev.addon.gpuReadSync(h.id, 98, 2), /run past buffer/);
  } finally {
    g.dev.free(h);
  }
});

let tree0: GpuBackend | undefined;
/** One gpu backend without subgroups (the workgroup-tree reductions), shared by the tests. */
const treeBackend = () => (tree0 ??= openGpuBackend({ ...gpuOptionsFromEnv(), allowSoftware: true, subgroups: false }));

/** Runs the words GEMV of every format in `fmts` with the shapes `pick(fi, T)` chooses, on the gpu
 *  backend with subgroups and with the tree reduction, against the js reference (within `tol` of
 *  Σ|x·w|); returns the number of runs and the shape indices used. */
function wordsAgainstJs(fmts: q.QuantFormat[], shapes: WordsShape[], Ts: number[], pick: (fi: number, T: number) => number[], tol = 1e-5): { ran: number; used: Set<number> } {
  const g = gpu as GpuBackend;
  const tree = treeBackend();
  const used = new Set<number>();
  const rows = 37;
  const cols = 448; // a multiple of 64, not of 128: the last group of g128 is partial
  const base = { ...gemvShape };
  let ran = 0;
  try {
    for (const [fi, f] of fmts.entries()) {
      const w = q.tensor(gaussianArray(rows * cols, 21, 0.05), [rows, cols], 'f32', js);
      const qw = q.quantize(w, f);
      const dq = q.dequantize(qw).dataSync() as Float32Array;
      for (const T of Ts) {
        const xs = gaussianArray(T * cols, 22 + T);
        const want = q.dequantizeMatmul(q.tensor(xs, [T, cols], 'f32', js), qw).dataSync() as Float32Array;
        for (const b of [g, tree]) {
          const qb = q.quantize(q.tensor(w.dataSync() as Float32Array, [rows, cols], 'f32', b), f);
          const xb = q.tensor(xs, [T, cols], 'f32', b);
          for (const si of pick(fi, T)) {
            const s = shapes[si];
            used.add(si);
            Object.assign(gemvShape, { words: true, wordsShape: () => s });
            const got = q.dequantizeMatmul(xb, qb).dataSync() as Float32Array;
            ran++;
            for (let t = 0; t < T; t++) {
              for (let r = 0; r < rows; r++) {
                let mag = 0;
                for (let c = 0; c < cols; c++) mag += Math.abs(xs[t * cols + c] * dq[r * cols + c]);
                const i = t * rows + r;
                assert.ok(Math.abs(got[i] - want[i]) <= tol * mag + 1e-30, `${f.name} T${T} ${JSON.stringify(s)} sg ${b.dev.subgroups}: y[${t},${r}] = ${got[i]}, want ${want[i]}`);
              }
            }
          }
          qb.dispose();
          xb.dispose();
        }
      }
      qw.dispose();
      w.dispose();
    }
  } finally {
    Object.assign(gemvShape, base);
  }
  return { ran, used };
}

test('the words GEMV matches the js reference in every shape, with subgroups and with the tree', { skip }, () => {
  const fmts = [
    q.formats.nf(4, { group: 64, doubleQuant: true }), q.formats.nf(2, { group: 64 }), q.formats.int(4, { group: 32 }),
    q.formats.int(2, { group: 64, symmetric: true }), q.formats.nf(4, { group: 128 }),
  ];
  const shapes: WordsShape[] = [
    { R: 8, NW: 4, W: 1, pf: false }, { R: 3, NW: 1, W: 2, pf: true }, { R: 5, NW: 2, W: 4, pf: false }, { R: 16, NW: 8, W: 1, pf: true },
    { R: 8, NW: 4, W: 1, pf: false, ss: true }, { R: 3, NW: 2, W: 2, pf: true, ss: true }, { R: 5, NW: 2, W: 2, pf: true, pw: 3 },
  ];
  // each format x T pair takes two of the shapes in rotation; 8 x rows only with few weight rows
  // per workgroup (as gemvShape picks; R·T accumulators unrolled compile slowly on lavapipe)
  const { ran, used } = wordsAgainstJs(fmts, shapes, [1, 3, 8], (fi, T) => {
    const cand = shapes.map((_, i) => i).filter((i) => T < 8 || shapes[i].R <= 5);
    return [cand[(fi + T) % cand.length], cand[(fi + T + 3) % cand.length]];
  });
  assert.equal(ran, fmts.length * 3 * 2 * 2);
  assert.equal(used.size, shapes.length, 'every shape ran');
});

test('the words GEMV decoders: the replicated 4-bit pair table, the INT x sums (xs, hl, ip), fma chains, persistent workgroups, deeper prefetch and the x prefetch and staging match the js reference', { skip }, () => {
  const fmts = [
    q.formats.nf(4, { group: 64, doubleQuant: true }), q.formats.nf(4, { group: 128 }), q.formats.int(4, { group: 32 }), q.formats.int(4, { group: 64, symmetric: true }),
    q.formats.int(2, { group: 64, symmetric: true }),
  ];
  const shapes: WordsShape[] = [
    { R: 8, NW: 2, W: 2, pf: true, pt: 16, xs: true }, { R: 3, NW: 1, W: 1, pf: false, pt: 1, xs: true, pw: 2 },
    { R: 5, NW: 2, W: 4, pf: true, pt: 4, xs: true, ss: true }, { R: 4, NW: 4, W: 2, pf: false, pt: 32, xs: true, ss: true },
    { R: 8, NW: 2, W: 2, pf: true, px: true, sx: true, pw: 3 }, { R: 3, NW: 1, W: 2, pf: true, pt: 8, xs: true, px: true },
    { R: 8, NW: 2, W: 2, pf: true, pd: 2, hl: true }, { R: 3, NW: 1, W: 4, pf: true, hl: true, ss: true, pw: 2 },
    { R: 5, NW: 2, W: 1, pf: true, pd: 3, fc: true }, { R: 4, NW: 4, W: 2, pf: false, fc: true, xs: true, ss: true },
    { R: 8, NW: 2, W: 2, pf: true, ip: true }, { R: 3, NW: 1, W: 4, pf: false, ip: true, ss: true, pw: 2 }, { R: 5, NW: 2, W: 1, pf: true, pd: 2, ip: true },
  ];
  // hl and ip serve 4-bit INT only: their shapes run on the two int4 formats, the others on all but
  // the symmetric int4 (lavapipe compiles each format x shape x T once: slow)
  const hl = shapes.map((sh, i) => (sh.hl || sh.ip ? i : -1)).filter((i) => i >= 0);
  const { ran, used } = wordsAgainstJs(fmts, shapes, [1, 3], (fi) => shapes.map((_, i) => i).filter((i) => (fi === 3 ? hl.includes(i) : !hl.includes(i) || fi === 2)));
  assert.equal(ran, 2 * 2 * (4 * shapes.length - 3 * hl.length + hl.length));
  assert.equal(used.size, shapes.length);
});

test('the words GEMV in f16 (opt-in, shader-f16 adapters): within f16 error of the js reference, and really f16', { skip }, () => {
  const g = gpu as GpuBackend;
  if (!g.dev.info.f16) return; // the f32 kernels serve such adapters (gemvWords drops h)
  const fmts = [q.formats.nf(4, { group: 64, doubleQuant: true }), q.formats.nf(4, { group: 128 }), q.formats.int(4, { group: 32 }), q.formats.int(4, { group: 64, symmetric: true })];
  const shapes: WordsShape[] = [
    { R: 8, NW: 2, W: 2, pf: true, h: true }, { R: 3, NW: 1, W: 1, pf: false, h: true, pt: 4 },
    { R: 5, NW: 2, W: 4, pf: true, h: true, ss: true }, { R: 4, NW: 4, W: 2, pf: false, h: true, pt: 16, pw: 3 },
  ];
  const { ran } = wordsAgainstJs(fmts, shapes, [1, 3], () => shapes.map((_, i) => i), 1e-3);
  assert.equal(ran, fmts.length * 2 * 2 * shapes.length);
  // Device.gemv 'f16' (QUANTLORA_GPU_GEMV=f16) turns it on for the default shapes: results differ from f32's
  const base = { ...gemvShape };
  try {
    const f = q.formats.nf(4, { group: 64, doubleQuant: true });
    const w = q.quantize(q.tensor(gaussianArray(64 * 512, 3, 0.05), [64, 512], 'f32', g), f);
    const x = q.tensor(gaussianArray(512, 4), [1, 512], 'f32', g);
    const y32 = q.dequantizeMatmul(x, w).dataSync() as Float32Array;
    g.dev.gemv = 'f16';
    const y16 = q.dequantizeMatmul(x, w).dataSync() as Float32Array;
    const diff = y32.reduce((m, v, i) => Math.max(m, Math.abs(v - y16[i])), 0);
    const scale = y32.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assert.ok(diff > 0 && diff < 1e-2 * scale, `f16 against f32: max difference ${diff} of ${scale}`);
    w.dispose();
    x.dispose();
  } finally {
    Object.assign(gemvShape, base);
    (gpu as GpuBackend).dev.gemv = 'f32';
  }
});

test('the words GEMV with int8 x (opt-in, 2/4-bit INT and 4-bit NF): within int8 error of the js reference, really int8 (x quantized in the GEMV or by a pass before it, x prefetched or not: the same values), and NaN stays NaN', { skip }, () => {
  const g = gpu as GpuBackend;
  const fmts = [q.formats.int(4, { group: 32 }), q.formats.int(4, { group: 64, symmetric: true }), q.formats.int(4, { group: 128 }), q.formats.int(2, { group: 64 }), q.formats.int(2, { group: 32, symmetric: true })];
  const shapes: WordsShape[] = [
    { R: 8, NW: 2, W: 2, pf: true, i8: true, xf: false }, { R: 3, NW: 1, W: 4, pf: false, i8: true, xf: false }, { R: 6, NW: 2, W: 1, pf: true, i8: true, pd: 2, xf: false },
    { R: 5, NW: 2, W: 2, pf: true, i8: true, ss: true, xf: false }, { R: 4, NW: 4, W: 4, pf: true, i8: true, pw: 3 },
    { R: 8, NW: 2, W: 2, pf: true, i8: true }, { R: 3, NW: 1, W: 4, pf: false, i8: true, xf: true, ss: true },
    { R: 5, NW: 2, W: 2, pf: true, i8: true, px: true }, { R: 4, NW: 2, W: 4, pf: true, i8: true, px: true, pw: 3 },
  ];
  const { ran } = wordsAgainstJs(fmts, shapes, [1, 3], () => shapes.map((_, i) => i), 1e-2);
  assert.equal(ran, fmts.length * 2 * 2 * shapes.length);
  // NF values rounded to int8 as well (through the int8 pair table; 8 copies unless pt says)
  const nfs = [q.formats.nf(4, { group: 64, doubleQuant: true }), q.formats.nf(4, { group: 128 })];
  const nfShapes: WordsShape[] = [{ R: 8, NW: 2, W: 2, pf: true, i8: true }, { R: 3, NW: 1, W: 4, pf: false, i8: true, pt: 2 }, { R: 4, NW: 4, W: 2, pf: true, i8: true, pt: 32, pw: 3 }];
  assert.equal(wordsAgainstJs(nfs, nfShapes, [1, 3], () => nfShapes.map((_, i) => i), 2e-2).ran, nfs.length * 2 * 2 * nfShapes.length);
  const base = { ...gemvShape };
  try {
    for (const f of [q.formats.int(4, { group: 64 }), q.formats.nf(4, { group: 64 }), q.formats.int(2, { group: 64 })]) {
      const w = q.quantize(q.tensor(gaussianArray(64 * 512, 3, 0.05), [64, 512], 'f32', g), f);
      const xs = gaussianArray(2 * 512, 4);
      const x = q.tensor(xs, [2, 512], 'f32', g);
      const y32 = q.dequantizeMatmul(x, w).dataSync() as Float32Array;
      g.dev.gemv = 'int8';
      const y8 = q.dequantizeMatmul(x, w).dataSync() as Float32Array;
      const diff = y32.reduce((m, v, i) => Math.max(m, Math.abs(v - y8[i])), 0);
      const scale = y32.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      assert.ok(diff > 0 && diff < 2e-2 * scale, `${f.name} int8 against f32: max difference ${diff} of ${scale}`);
      const shape = gemvShape.wordsShape;
      // x8Source's int8 copy of x and its scales go with the call (NF always; INT with xf: false)
      if (f.kind === 'int') gemvShape.wordsShape = (T) => ({ ...shape(T), xf: false });
      const live = g.dev.addon.gpuStats().live;
      q.dequantizeMatmul(x, w).dispose();
      assert.equal(g.dev.addon.gpuStats().live, live, `${f.name}: buffers left by the int8 x pass`);
      gemvShape.wordsShape = shape;
      if (f.kind === 'int') {
        // INT: x quantized in the GEMV itself (xf, the default) or first by x8Source: the same int8
        // values, so the same results
        gemvShape.wordsShape = (T) => ({ ...shape(T), xf: false });
        assert.deepEqual(q.dequantizeMatmul(x, w).dataSync(), y8, `${f.name}: x8Source against xf`);
        // and with the next step's x slice prefetched (px)
        gemvShape.wordsShape = (T) => ({ ...shape(T), px: true });
        assert.deepEqual(q.dequantizeMatmul(x, w).dataSync(), y8, `${f.name}: xf with px against xf`);
      }
      // with the shape asking for f16 as well, int8 takes precedence (the same results)
      gemvShape.wordsShape = (T) => ({ ...shape(T), h: true });
      assert.deepEqual(q.dequantizeMatmul(x, w).dataSync(), y8, `${f.name}: int8 and f16 both on`);
      gemvShape.wordsShape = shape;
      // a NaN in x row 1 (columns 16..31: one slice) makes that row's outputs NaN, row 0's stay finite
      xs[512 + 20] = NaN;
      const xn = q.tensor(xs, [2, 512], 'f32', g);
      const yn = q.dequantizeMatmul(xn, w).dataSync() as Float32Array;
      assert.ok(yn.slice(0, 64).every(Number.isFinite) && yn.slice(64).every(Number.isNaN), `${f.name}: NaN in x row 1 only reaches row 1: ${yn.slice(0, 3)} / ${yn.slice(64, 67)}`);
      if (f.kind === 'int') {
        gemvShape.wordsShape = (T) => ({ ...shape(T), xf: false });
        const yf = q.dequantizeMatmul(xn, w).dataSync() as Float32Array;
        assert.ok(yf.slice(0, 64).every(Number.isFinite) && yf.slice(64).every(Number.isNaN), `${f.name} x8Source: NaN in x row 1 only reaches row 1`);
        gemvShape.wordsShape = shape;
      }
      for (const t of [w, x, xn]) t.dispose();
      g.dev.gemv = 'f32';
    }
  } finally {
    Object.assign(gemvShape, base);
    (gpu as GpuBackend).dev.gemv = 'f32';
  }
});

test('the GEMV compute dtype: from QUANTLORA_GPU_GEMV, named by info(), and a bad value is a BackendError before a device opens', { skip }, () => {
  assert.equal(gpuOptionsFromEnv({ QUANTLORA_GPU_GEMV: 'int8' }).gemv, 'int8');
  assert.equal(gpuOptionsFromEnv({}).gemv, undefined);
  assert.throws(() => openGpuBackend({ allowSoftware: true, gemv: 'int4' }), (e: unknown) => e instanceof BackendError && /'int4'.*f32, f16, int8/.test(e.message));
  const g = gpu as GpuBackend;
  assert.equal(g.info().details?.gemv, 'f32');
  g.dev.gemv = 'int8';
  try {
    assert.match(String(g.info().details?.gemv), /^int8/);
  } finally {
    g.dev.gemv = 'f32';
  }
});

test('matmul work sizing: shrunk tiles and k split into ordered slices match the js reference', { skip }, () => {
  const g = gpu as GpuBackend;
  const cases: { m: number; k: number; n: number; batch: number; transA: boolean; transB: boolean }[] = [
    { m: 512, k: 576, n: 576, batch: 1, transA: false, transB: true }, // a projection of 512 tokens: 64x64 tiles, k in 3
    { m: 16, k: 512, n: 576, batch: 1, transA: true, transB: false }, // a LoRA A gradient
    { m: 96, k: 1000, n: 40, batch: 3, transA: false, transB: false }, // batched, k not a multiple of 16
    { m: 33, k: 4096, n: 17, batch: 2, transA: true, transB: true },
  ];
  for (const c of cases) {
    const plan = matmulPlan(c);
    assert.ok(plan.splits > 1, `${JSON.stringify(c)} splits k (${JSON.stringify(plan)})`);
    assert.ok((plan.splits - 1) * plan.chunk < c.k && plan.splits * plan.chunk >= c.k && plan.chunk % 16 === 0);
    const aShape = c.transA ? [c.batch, c.k, c.m] : [c.batch, c.m, c.k];
    const bShape = c.transB ? [c.batch, c.n, c.k] : [c.batch, c.k, c.n];
    const av = gaussianArray(c.batch * c.m * c.k, 31);
    const bv = gaussianArray(c.batch * c.k * c.n, 32);
    const run = (be: q.Backend) => q.tidy(() => {
      let a = q.tensor(av, aShape, 'f32', be);
      let b = q.tensor(bv, bShape, 'f32', be);
      if (c.transA) a = q.transpose(a, [0, 2, 1]);
      if (c.transB) b = q.transpose(b, [0, 2, 1]);
      return Float32Array.from(q.matmul(a, b).dataSync() as Float32Array);
    });
    const want = run(js);
    const got = run(g);
    const tol = 1e-5 * Math.sqrt(c.k) * 4;
    got.forEach((v, i) => assert.ok(Math.abs(v - want[i]) <= tol * Math.max(1, Math.abs(want[i])), `${JSON.stringify(c)} [${i}]: ${v} vs ${want[i]}`));
  }
  // big problems keep the 128x128 block and one k range
  assert.deepEqual(matmulPlan({ m: 4096, n: 4096, k: 4096, batch: 1 }), { tm: 8, tn: 8, splits: 1, chunk: 4096 });
});

test('matmul of up to 8 rows against a transposed b (the GEMV kernel) matches the js reference, with subgroups and with the tree', { skip }, () => {
  const cases: { m: number; k: number; n: number; batch: number; shared?: boolean }[] = [
    { m: 1, k: 576, n: 1001, batch: 1 }, // decoding's logits: one row against [vocab, hidden]
    { m: 8, k: 37, n: 5, batch: 1 }, // k below the workgroup's threads, n not a multiple of 4
    { m: 3, k: 300, n: 9, batch: 4 },
    { m: 2, k: 129, n: 7, batch: 3, shared: true }, // one b for every batch (stride 0)
  ];
  for (const c of cases) {
    assert.ok(gemvFits({ ...c, transA: false, transB: true, aBatchStride: c.m * c.k, bBatchStride: c.shared ? 0 : c.n * c.k }), JSON.stringify(c));
    const av = gaussianArray(c.batch * c.m * c.k, 61);
    const bv = gaussianArray((c.shared ? 1 : c.batch) * c.n * c.k, 62);
    const run = (be: q.Backend) => q.tidy(() => {
      const a = q.tensor(av, [c.batch, c.m, c.k], 'f32', be);
      const b = q.tensor(bv, c.shared ? [c.n, c.k] : [c.batch, c.n, c.k], 'f32', be);
      return Float32Array.from(q.matmul(a, b, { transB: true }).dataSync() as Float32Array);
    });
    const want = run(js);
    for (const be of [gpu as GpuBackend, treeBackend()]) {
      const got = run(be);
      assert.equal(got.length, want.length);
      const tol = 1e-5 * Math.sqrt(c.k) * 4;
      got.forEach((v, i) => assert.ok(Math.abs(v - want[i]) <= tol * Math.max(1, Math.abs(want[i])), `${JSON.stringify(c)} sg ${be.dev.subgroups} [${i}]: ${v} vs ${want[i]}`));
    }
  }
  // 9 rows, a transposed a or an untransposed b take the tiled kernel
  assert.ok(!gemvFits({ m: 9, k: 8, n: 8, batch: 1, transA: false, transB: true, aBatchStride: 0, bBatchStride: 0 }));
  assert.ok(!gemvFits({ m: 1, k: 8, n: 8, batch: 1, transA: false, transB: false, aBatchStride: 0, bBatchStride: 0 }));
});

test('ids and targets made from host data are not read back (no GPU wait) by gather and crossEntropy', { skip }, () => {
  const g = gpu as GpuBackend;
  const reads = () => g.dev.addon.gpuStats().submits; // a read submits its own copy
  q.tidy(() => {
    const table = q.tensor(gaussianArray(50 * 8, 41), [50, 8], 'f32', g).requireGrad();
    const ids = q.tensor(Int32Array.from({ length: 12 }, (_, i) => (i * 7) % 50), [1, 12], 'i32', g);
    const h = q.gather(table, q.slice(ids, [0, 0], [1, 11]));
    const logits = q.matmul(h, q.transpose(table));
    g.dev.addon.gpuWait();
    const r0 = reads();
    const loss = q.crossEntropy(logits, q.slice(ids, [0, 1], [1, 11]));
    const [dt] = q.grad(loss, [table]);
    assert.equal(reads(), r0, 'no submit (so no read back) while recording the loss and its gradient');
    // the same values through the js reference
    const js2 = q.backendByName('js');
    const tj = q.tensor(table.dataSync() as Float32Array, [50, 8], 'f32', js2).requireGrad();
    const ij = q.tensor(ids.dataSync() as Int32Array, [1, 12], 'i32', js2);
    const lj = q.crossEntropy(q.matmul(q.gather(tj, q.slice(ij, [0, 0], [1, 11])), q.transpose(tj)), q.slice(ij, [0, 1], [1, 11]));
    const [dj] = q.grad(lj, [tj]);
    assert.ok(Math.abs((loss.dataSync()[0]) - lj.dataSync()[0]) < 1e-5);
    const a = dt!.dataSync() as Float32Array;
    (dj!.dataSync() as Float32Array).forEach((v, i) => assert.ok(Math.abs(a[i] - v) < 1e-5, `d[${i}]`));
    // targets with the ignore index, and out-of-range targets, still go through the checking read
    const withIgnore = q.tensor(Int32Array.from([3, -100, 7]), [1, 3], 'i32', g);
    assert.ok(Number.isFinite(q.crossEntropy(q.slice(logits, [0, 0, 0], [1, 3, 50]), withIgnore).dataSync()[0]));
    const bad = q.tensor(Int32Array.from([3, 60, 7]), [1, 3], 'i32', g);
    assert.throws(() => q.crossEntropy(q.slice(logits, [0, 0, 0], [1, 3, 50]), bad), (e: Error) => e instanceof q.ValueError && /target 60 of row 1/.test(e.message));
  });
});

test('a training step reads back once: the losses and the gradient checks together', { skip }, () => {
  const g = gpu as GpuBackend;
  const addon = g.dev.addon as { gpuReadSync: (...a: unknown[]) => Uint8Array };
  const real = addon.gpuReadSync;
  let reads = 0;
  const w = q.tensor(gaussianArray(16 * 8, 51), [16, 8], 'f32', g).requireGrad();
  const x = q.tensor(gaussianArray(4 * 8, 52), [4, 8], 'f32', g);
  const targets = q.tensor(Int32Array.from([1, 5, 9, 15]), [4], 'i32', g);
  const opt = new AdamW([{ params: [w], lr: 1e-2 }]);
  const guard = new q.NanGuard();
  const lossOf = () => q.crossEntropy(q.matmul(x, q.transpose(w)), targets);
  try {
    addon.gpuReadSync = (...a: unknown[]) => { reads++; return real.apply(addon, a); };
    for (const clip of [undefined, 1]) {
      reads = 0;
      const r = trainStep(opt, [lossOf, lossOf], { guard, clip });
      assert.equal(reads, 1, `clip ${clip}: one read per step`);
      assert.ok(r.applied && Number.isFinite(r.loss));
    }
  } finally {
    addon.gpuReadSync = real;
    for (const t of [w, x, targets]) t.dispose();
    opt.dispose?.();
  }
});

test('siluMul on the GPU: one kernel, the same bits as silu then mul, and its gradients those of the pair', { skip }, () => {
  const g = gpu as GpuBackend;
  const a = q.tensor(gaussianArray(1000, 107, 3), [10, 100], 'f32', g);
  const b = q.tensor(gaussianArray(1000, 108), [10, 100], 'f32', g);
  const d0 = g.dev.addon.gpuStats().dispatches;
  const fused = q.siluMul(a, b);
  assert.equal(g.dev.addon.gpuStats().dispatches - d0, 1);
  assert.deepEqual(fused.dataSync(), q.mul(q.silu(a), b).dataSync());
  const r = q.tensor(gaussianArray(1000, 109), [10, 100], 'f32', g);
  const grads = (f: (x: q.Tensor, y: q.Tensor) => q.Tensor) => {
    const x = q.tensor(a.dataSync() as Float32Array, [10, 100], 'f32', g).requireGrad();
    const y = q.tensor(b.dataSync() as Float32Array, [10, 100], 'f32', g).requireGrad();
    return q.grad(q.sum(q.mul(f(x, y), r)), [x, y]).map((t) => t!.dataSync());
  };
  assert.deepEqual(grads(q.siluMul), grads((x, y) => q.mul(q.silu(x), y)));
  for (const t of [a, b, fused, r]) t.dispose();
});

test('KvCache.extendRoped on the GPU: one kernel, the same bits as the heads\' transposes, rope and the storage writes', { skip }, () => {
  const g = gpu as GpuBackend;
  const mk = (seed: number, shape: number[]) => q.tensor(gaussianArray(shape.reduce((a, b) => a * b, 1), seed), shape, 'f32', g);
  const run = (fused: boolean) => {
    const saved = g.ropeAppend;
    if (!fused) g.ropeAppend = undefined;
    try {
      const cache = new q.KvCache({ capacity: 4 }); // 3 positions, 1 more, then 2 past the room: 8
      const got: Float32Array[] = [];
      let at = 0;
      for (const [T, seed] of [[3, 140], [1, 143], [2, 146]]) {
        const d0 = g.dev.addon.gpuStats().dispatches;
        const [y, ck, cv] = cache.extendRoped(3, mk(seed, [2, T, 9 * 64]), mk(seed + 1, [2, T, 3 * 64]), mk(seed + 2, [2, T, 3 * 64]), { q: 9, kv: 3 }, { theta: 1e5, offset: at, style: 'half' });
        // fused: one dispatch, or two more where the storage doubles (zeros, then the old positions)
        if (fused && T === 1) assert.equal(g.dev.addon.gpuStats().dispatches - d0, 1);
        at += T;
        got.push(y.dataSync() as Float32Array, ck.dataSync() as Float32Array, cv.dataSync() as Float32Array);
        y.dispose();
      }
      cache.dispose();
      return got;
    } finally {
      g.ropeAppend = saved;
    }
  };
  assert.deepEqual(run(true), run(false));
});

/** f's result and the kernels it recorded on b (Device.run calls). */
function kernels<T>(b: GpuBackend, f: () => T): { y: T; kernels: number } {
  const run = b.dev.run;
  let n = 0;
  b.dev.run = (...args) => {
    n++;
    return run.apply(b.dev, args);
  };
  try {
    return { y: f(), kernels: n };
  } finally {
    b.dev.run = run;
  }
}

test('a quantized layer\'s LoRA branch at inference rides on the words GEMV (u = x · Aᵀ made by the GEMV itself with subgroups, else by a matmul first; B in its epilogue; IEC where the GEMV makes u): within f32 rounding of the composed branch, for f32 and int8 compute, with subgroups and with the tree', { skip }, () => {
  const fmts = [q.formats.int(4, { group: 64 }), q.formats.nf(4, { group: 64, doubleQuant: true }), q.formats.int(2, { group: 64, symmetric: true }), q.formats.int(4, { group: 32, symmetric: true })];
  const [rows, cols] = [37, 448];
  // ranks per format: 16; 5 and 33 (not multiples of the 4 ranks a subgroup takes per pass; 33
  // takes passes over the ranks where subgroups are 32 wide)
  const ranks = [16, 5, 33, 16];
  let fusedRuns = 0;
  eachGemvCompute((b, compute) => {
    for (const [fi, f] of fmts.entries()) for (const withIec of [false, true]) {
      const w = q.tensor(gaussianArray(rows * cols, 150 + fi, 0.05), [rows, cols], 'f32', b);
      const rank = ranks[fi];
      // IR-QLoRA's IEC scalars on the second pass (made nonzero: they start at 0)
      const iec = withIec ? { betaA: q.tensor([0.7], [1], 'f32', b).requireGrad(), betaB: q.tensor([-1.3], [1], 'f32', b).requireGrad() } : undefined;
      const lora = new q.Lora(q.tensor(gaussianArray(rank * cols, 160 + fi, 0.05), [rank, cols], 'f32', b).requireGrad(), q.tensor(gaussianArray(rows * rank, 170 + fi, 0.05), [rows, rank], 'f32', b).requireGrad(), { alpha: 32 }, iec);
      const layer = new q.QuantLinear(q.quantize(w, f), q.tensor(gaussianArray(rows, 180 + fi), [rows], 'f32', b), lora);
      for (const T of [1, 3]) {
        const x = q.tensor(gaussianArray(T * cols, 190 + T), [T, cols], 'f32', b);
        q.noGrad(() => layer.forward(x)).dispose(); // first uses upload tables (the double quantization's map)
        const fused = kernels(b, () => q.noGrad(() => layer.forward(x)));
        const saved = b.dequantizeMatmulLowRank;
        b.dequantizeMatmulLowRank = undefined;
        const composed = kernels(b, () => q.noGrad(() => layer.forward(x)));
        b.dequantizeMatmulLowRank = saved;
        // the GEMV and the bias: 2 kernels, and x · Aᵀ before them where the GEMV cannot make it
        // itself (no subgroups, or int8 x from a pass of its own: NF under int8 compute);
        // composed: the GEMV, the bias, x · Aᵀ, · Bᵀ, the scaling, the sum
        // (with IEC: the GEMV and the bias where it makes u itself, else all composed)
        const x8 = compute === 'int8' && f.kind === 'nf' ? 1 : 0;
        const u = b.dev.subgroups && !x8 ? 0 : 1;
        const label = `${f.name} ${compute} T${T} sg ${b.dev.subgroups}${withIec ? ' IEC' : ''}`;
        if (!withIec) assert.equal(composed.kernels, 6 + x8);
        assert.equal(fused.kernels, !withIec ? 2 + u + x8 : u ? composed.kernels : 2, `${label}: ${fused.kernels} kernels`);
        assertNear(fused.y, composed.y, 1e-5, `${label}: y`);
        fusedRuns++;
        for (const t of [x, fused.y, composed.y]) t.dispose();
      }
      // with a gradient wanted, the branch composes (the fused kernel records none)
      const x = q.tensor(gaussianArray(cols, 199), [1, cols], 'f32', b);
      const y = layer.forward(x);
      assert.ok(q.grad(q.sum(y), [lora.b])[0], 'the gradient reaches B');
      for (const t of [x, y, w, ...layer.tensors()]) t.dispose();
    }
  });
  assert.equal(fusedRuns, 2 * 2 * fmts.length * 2 * 2);
});

/** Runs f on the gpu backend and on the workgroup-tree one (no subgroups), each at the f32 and the
 *  int8 GEMV compute (restored to f32 after). */
function eachGemvCompute(f: (b: GpuBackend, compute: 'f32' | 'int8') => void): void {
  const backends = [gpu as GpuBackend, treeBackend()];
  try {
    for (const b of backends) {
      for (const compute of ['f32', 'int8'] as const) {
        b.dev.gemv = compute;
        f(b, compute);
      }
    }
  } finally {
    for (const b of backends) b.dev.gemv = 'f32';
  }
}

/** Asserts got within rel · max |want| of want, element by element. */
function assertNear(got: q.Tensor, want: q.Tensor, rel: number, label: string): void {
  const [g, w] = [got.dataSync() as Float32Array, want.dataSync() as Float32Array];
  const mag = w.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  for (let k = 0; k < w.length; k++) assert.ok(Math.abs(g[k] - w[k]) <= rel * mag, `${label}: [${k}] = ${g[k]}, want ${w[k]}`);
}

/** `run` with the backend's dequantizeMatmulMany, then without it (one GEMV per weight), each
 *  with its kernel count. */
function fusedAndEach(b: GpuBackend, run: () => q.Tensor[]): [{ y: q.Tensor[]; kernels: number }, { y: q.Tensor[]; kernels: number }] {
  const fused = kernels(b, run);
  const saved = b.dequantizeMatmulMany;
  b.dequantizeMatmulMany = undefined;
  try {
    return [fused, kernels(b, run)];
  } finally {
    b.dequantizeMatmulMany = saved;
  }
}

test('several weights on one x in one words GEMV (dequantizeMatmulMany: attention\'s q/k/v, a gated MLP\'s gate and up with silu·mul): the same values as one GEMV per weight, one kernel, for f32 and int8 compute, with subgroups and with the tree', { skip }, () => {
  const fmts = [q.formats.int(4, { group: 64 }), q.formats.nf(4, { group: 64, doubleQuant: true }), q.formats.int(2, { group: 64, symmetric: true }), q.formats.nf(2, { group: 32, doubleQuant: false })];
  const cols = 448;
  // q/k/v with 3 query heads per kv head (5 slots), with 1 (3 slots, 2 row blocks per slot), and
  // a gated MLP (glu: 8 slots at one x row); row counts not multiples of the workgroup's rows
  const cases: { rows: number[]; glu: boolean }[] = [{ rows: [57, 19, 19], glu: false }, { rows: [40, 40, 40], glu: false }, { rows: [37, 37], glu: true }];
  let ran = 0;
  eachGemvCompute((b, compute) => {
    for (const [fi, f] of fmts.entries()) for (const c of cases) for (const T of [1, 2, 3]) {
      const ws = c.rows.map((r, i) => q.quantize(q.tensor(gaussianArray(r * cols, 300 + 10 * fi + i, 0.05), [r, cols], 'f32', b), f));
      const x = q.tensor(gaussianArray(T * cols, 330 + T), [T, cols], 'f32', b);
      const label = `${f.name} ${compute} rows ${c.rows.join('/')}${c.glu ? ' glu' : ''} T${T} sg ${b.dev.subgroups}`;
      const run = () => q.noGrad(() => q.dequantizeMatmulMany(x, ws, { glu: c.glu }));
      run().forEach((t) => t.dispose()); // the first use uploads tables
      const [fused, each] = fusedAndEach(b, run);
      // one kernel (and int8 x's pass for NF), where the slots fit the shape's rows (T <= 2: 8;
      // T 3: 4, too few for 5 slots of q/k/v, and glu's 2 x 2)
      const x8 = compute === 'int8' && f.kind === 'nf' && f.bits === 4 ? 1 : 0;
      const served = T <= 2 || c.rows[0] === c.rows[c.rows.length - 1];
      assert.equal(fused.kernels, served ? 1 + x8 : each.kernels, `${label}: ${fused.kernels} kernels`);
      assert.equal(fused.y.length, c.glu ? 1 : c.rows.length);
      for (const [i, y] of fused.y.entries()) {
        assert.deepEqual(y.shape, [T, c.rows[i]]);
        assertNear(y, each.y[i], 1e-6, `${label}: y${i}`);
      }
      ran++;
      for (const t of [x, ...fused.y, ...each.y, ...ws.flatMap((w) => w.tensors())]) t.dispose();
    }
  });
  assert.equal(ran, 2 * 2 * fmts.length * cases.length * 3);
  // the plans kept per device follow gemvShape: without the words kernel, one GEMV per weight
  const g = gpu as GpuBackend;
  const ws = [24, 8, 8].map((r, i) => q.quantize(q.tensor(gaussianArray(r * 64, 390 + i, 0.05), [r, 64], 'f32', g), fmts[0]));
  const x = q.tensor(gaussianArray(64, 395), [1, 64], 'f32', g);
  const count = () => { const r = kernels(g, () => q.noGrad(() => q.dequantizeMatmulMany(x, ws))); r.y.forEach((t) => t.dispose()); return r.kernels; };
  assert.equal(count(), 1);
  gemvShape.words = false;
  try {
    assert.equal(count(), 3);
  } finally {
    gemvShape.words = true;
  }
  assert.equal(count(), 1);
  for (const t of [x, ...ws.flatMap((w) => w.tensors())]) t.dispose();
});

test('several weights on one x with LoRA branches (dequantizeMatmulMany\'s lora: u = x · Aᵢᵀ made in the kernel, each Bᵢ in its epilogue, before silu·mul with glu): the values of one low-rank GEMV per weight, one kernel with subgroups and f32 x', { skip }, () => {
  const fmts = [q.formats.int(4, { group: 64 }), q.formats.nf(4, { group: 64, doubleQuant: true })];
  const cols = 448;
  const cases: { rows: number[]; glu: boolean; ranks: number[] }[] = [{ rows: [57, 19, 19], glu: false, ranks: [16, 5, 33] }, { rows: [37, 37], glu: true, ranks: [8, 16] }];
  let ran = 0;
  eachGemvCompute((b, compute) => {
    for (const [fi, f] of fmts.entries()) for (const c of cases) for (const T of [1, 2]) {
      const ws = c.rows.map((r, i) => q.quantize(q.tensor(gaussianArray(r * cols, 340 + 10 * fi + i, 0.05), [r, cols], 'f32', b), f));
      const lora = c.rows.map((r, i) => ({
        a: q.tensor(gaussianArray(c.ranks[i] * cols, 360 + i, 0.05), [c.ranks[i], cols], 'f32', b),
        b: q.tensor(gaussianArray(r * c.ranks[i], 370 + i, 0.05), [r, c.ranks[i]], 'f32', b),
        scale: 0.5 + i,
      }));
      const x = q.tensor(gaussianArray(T * cols, 380 + T), [T, cols], 'f32', b);
      const label = `${f.name} ${compute} rows ${c.rows.join('/')}${c.glu ? ' glu' : ''} T${T} sg ${b.dev.subgroups}`;
      const run = () => q.noGrad(() => q.dequantizeMatmulMany(x, ws, { glu: c.glu, lora }));
      run().forEach((t) => t.dispose());
      const [fused, each] = fusedAndEach(b, run);
      // the kernel makes u itself: subgroups and x as f32 (not NF's int8 x from a pass)
      const served = b.dev.subgroups && !(compute === 'int8' && f.kind === 'nf');
      assert.equal(fused.kernels, served ? 1 : each.kernels, `${label}: ${fused.kernels} kernels`);
      for (const [i, y] of fused.y.entries()) assertNear(y, each.y[i], 1e-5, `${label}: y${i}`);
      ran++;
      for (const t of [x, ...fused.y, ...each.y, ...ws.flatMap((w) => w.tensors()), ...lora.flatMap((l) => [l.a, l.b])]) t.dispose();
    }
  });
  assert.equal(ran, 2 * 2 * fmts.length * cases.length * 2);
});

test('a decoded token of a quantized model, plain or with LoRA adapters, takes 8 kernels per layer on the GPU (q/k/v in one, rope and the cache writes, attention, o, add and norm, gate/up with silu·mul in one, down, add and norm)', { skip }, () => {
  const g = gpu as GpuBackend;
  const perStep = (layers: number, rank = 0) => {
    const c = { family: 'llama' as const, vocabSize: 64, hiddenSize: 64, intermediateSize: 128, numLayers: layers, numHeads: 4, numKvHeads: 2, headDim: 16, ropeTheta: 10000, rmsNormEps: 1e-5, maxPositions: 64, tieWordEmbeddings: true, attentionBias: false };
    let seed = 400;
    const fp = LlamaModel.fromWeights(c, { has: () => true, read: (name, shape) => gaussianArray(shape.reduce((x, y) => x * y, 1), seed++, 0.05) }, g);
    const qm = quantizeModel(fp, rtnLayers({ format: q.formats.int(4, { group: 32 }), lora: rank ? { rank } : undefined }));
    const cache = new KvCache();
    const ids = (a: number[]) => q.tensor(Int32Array.from(a), [1, a.length], 'i32', g);
    q.noGrad(() => q.tidy(() => qm.logits(ids([1, 2, 3]), cache).dispose()));
    const d0 = g.dev.addon.gpuStats().dispatches;
    q.noGrad(() => q.tidy(() => qm.logits(ids([4]), cache).dispose()));
    const n = g.dev.addon.gpuStats().dispatches - d0;
    cache.dispose();
    qm.dispose();
    fp.dispose();
    return n;
  };
  assert.equal(perStep(3) - perStep(2), 8);
  // (with subgroups: the GEMVs make x · Aᵀ themselves)
  if (g.dev.subgroups) assert.equal(perStep(3, 8) - perStep(2, 8), 8);
});

test('addRmsnorm on the GPU: one kernel, the same bits as add then rmsnorm, and the gradients of the pair', { skip }, () => {
  const g = gpu as GpuBackend;
  const mk = (seed: number, shape: number[]) => q.tensor(gaussianArray(shape.reduce((a, b) => a * b, 1), seed), shape, 'f32', g);
  const x = mk(113, [7, 600]);
  const r = mk(114, [7, 600]);
  const w = mk(115, [600]);
  const d0 = g.dev.addon.gpuStats().dispatches;
  const [s, y] = q.addRmsnorm(x, r, w, 1e-5);
  assert.equal(g.dev.addon.gpuStats().dispatches - d0, 1);
  const s2 = q.add(x, r);
  assert.deepEqual(s.dataSync(), s2.dataSync());
  assert.deepEqual(y.dataSync(), q.rmsnorm(s2, w, 1e-5).dataSync());
  const dy = mk(116, [7, 600]);
  const ds = mk(117, [7, 600]);
  const grads = (fused: boolean) => {
    const xs = [x, r, w].map((t) => q.tensor(t.dataSync() as Float32Array, [...t.shape], 'f32', g).requireGrad());
    const [a, b] = fused ? q.addRmsnorm(xs[0], xs[1], xs[2], 1e-5) : ((sum) => [sum, q.rmsnorm(sum, xs[2], 1e-5)])(q.add(xs[0], xs[1]));
    return q.grad(q.add(q.sum(q.mul(a, ds)), q.sum(q.mul(b, dy))), xs).map((t) => t!.dataSync());
  };
  assert.deepEqual(grads(true), grads(false));
});

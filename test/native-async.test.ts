// The async kernels of the native addon (crates/node/src/tasks.rs) and the tensor-level helpers
// (ts/ops/async.ts): bit-identical to the synchronous kernels, the event loop runs while a long
// kernel works, argument errors reject, release() of a buffer in use defers the free, many calls
// in flight, and the sync/async decision around the threshold.
// Skips only when the addon is not built and QUANTLORA_EXPECT_BACKENDS does not name 'native'.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { NativeAddon } from '../ts/backends/native/addon.js';
import { nativeAddonForTests } from './native-helper.js';
import { NativeBackend } from '../ts/backends/native/index.js';
import { JsBackend } from '../ts/backends/js/index.js';
import { formats, type QuantFormat } from '../ts/quant/formats.js';
import { PART_NAMES, partLayout } from '../ts/quant/layout.js';
import { gaussianArray } from '../ts/tensor.js';
import * as q from '../ts/index.js';

const { addon, skip } = nativeAddonForTests('matmulAsync');
if (skip) console.log(`# native-async: skipped: ${skip}`);
const A = (): NativeAddon => addon!;

/** A Float32Array over native memory (alloc), filled with gaussian values. */
function native(n: number, seed: number): Float32Array {
  const v = new Float32Array(A().alloc(n * 4, false));
  v.set(gaussianArray(n, seed));
  return v;
}
const nativeOut = (n: number) => new Float32Array(A().alloc(n * 4, true));

function bitEqual(name: string, a: Float32Array, b: Float32Array) {
  assert.equal(a.length, b.length, `${name}: length`);
  const [x, y] = [new Uint32Array(a.buffer, a.byteOffset, a.length), new Uint32Array(b.buffer, b.byteOffset, b.length)];
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) assert.fail(`${name}: element ${i} differs: ${a[i]} vs ${b[i]}`);
}

/** Quantized parts of a [rows, cols] gaussian weight as native byte views (PART_NAMES order). */
function quantParts(rows: number, cols: number, f: QuantFormat, seed: number): Uint8Array[] {
  const layout = partLayout(rows, cols, f);
  const parts = PART_NAMES.map((k) => {
    const s = layout[k];
    return s ? new Uint8Array(A().alloc(s.size * (s.dtype === 'u8' ? 1 : 4), true)) : new Uint8Array(0);
  });
  const w = gaussianArray(rows * cols, seed, 0.05);
  assert.equal(A().quantize(w, rows, cols, f.kind === 'nf' ? 0 : 1, f.bits, f.group, f.doubleQuant, f.symmetric, parts), -1);
  return parts;
}
const fmtArgs = (f: QuantFormat) => [f.kind === 'nf' ? 0 : 1, f.bits, f.group, f.doubleQuant, f.symmetric] as const;
const releaseAll = (...bufs: ArrayBufferView[]) => { for (const b of bufs) if (b.byteLength) A().release(b.buffer as ArrayBuffer); };

describe('native async kernels', { skip }, () => {
  test('matmulAsync is bit-identical to matmul (shapes, transposes, batches, 1 and 2 threads, plain arrays)', async () => {
    const a = A();
    const before = a.liveAllocations();
    const cases: [number, number, number, number, boolean, boolean][] = [
      [1, 1, 1, 1, false, false], [1, 7, 5, 3, false, false], [1, 64, 96, 80, false, true], [1, 96, 64, 80, true, false],
      [3, 33, 40, 17, true, true], [2, 200, 128, 144, false, false], [1, 300, 256, 200, false, true], [1, 0, 4, 4, false, false],
    ];
    for (const threads of [1, 2]) {
      a.setThreads(threads);
      for (const [batch, m, k, n, ta, tb] of cases) {
        const [sa, sb] = [m * k, k * n];
        const x = native(batch * sa, 1), y = native(batch * sb, 2);
        const want = nativeOut(batch * m * n), got = nativeOut(batch * m * n);
        a.matmul(x, y, batch, m, k, n, ta, tb, sa, sb, want);
        const p = a.matmulAsync(x, y, batch, m, k, n, ta, tb, sa, sb, got);
        assert.ok(p instanceof Promise);
        assert.equal(await p, undefined);
        const name = `${batch}x${m}x${k}x${n} tA=${ta} tB=${tb} threads=${threads}`;
        bitEqual(name, got, want);
        // plain JS typed arrays (copied in, written back on resolve)
        const plain = new Float32Array(batch * m * n);
        await a.matmulAsync(x.slice(), y.slice(), batch, m, k, n, ta, tb, sa, sb, plain);
        bitEqual(`${name} (plain arrays)`, plain, want);
        releaseAll(x, y, want, got);
      }
    }
    a.setThreads(0);
    // an input that is also the output (copied first, as the sync kernel does)
    const s = native(64 * 64, 3), s2 = new Float32Array(s.buffer.slice(0));
    const want = nativeOut(64 * 64);
    a.matmul(s, s, 1, 64, 64, 64, false, false, 0, 0, want);
    await a.matmulAsync(s2, s2, 1, 64, 64, 64, false, false, 0, 0, s2);
    bitEqual('aliased in/out', s2, want);
    await a.matmulAsync(s, s, 1, 64, 64, 64, false, false, 0, 0, s);
    bitEqual('aliased in/out (native)', s, want);
    releaseAll(s, want);
    assert.equal(a.liveAllocations(), before);
  });

  test('dequantizeMatmulAsync and dequantizeAsync are bit-identical to the sync kernels', async () => {
    const a = A();
    for (const f of [formats.nf(4, { group: 64, doubleQuant: true }), formats.int(3, { group: 32 }), formats.int(2, { group: 16, symmetric: true })] as QuantFormat[]) {
      for (const [xRows, rows, cols] of [[1, 96, 128], [5, 256, 192], [1, 1024, 512]]) {
        const parts = quantParts(rows, cols, f, 7);
        const x = native(xRows * cols, 8);
        const want = nativeOut(xRows * rows), got = nativeOut(xRows * rows);
        a.dequantizeMatmul(x, xRows, parts, rows, cols, ...fmtArgs(f), want);
        await a.dequantizeMatmulAsync(x, xRows, parts, rows, cols, ...fmtArgs(f), got);
        bitEqual(`${f.name} dequantizeMatmul ${xRows}x${rows}x${cols}`, got, want);
        const wd = nativeOut(rows * cols), gd = new Float32Array(rows * cols);
        a.dequantize(parts, rows, cols, ...fmtArgs(f), wd);
        await a.dequantizeAsync(parts.map((p) => p.slice()), rows, cols, ...fmtArgs(f), gd);
        bitEqual(`${f.name} dequantize ${rows}x${cols}`, gd, wd);
        releaseAll(x, want, got, wd, ...parts);
      }
    }
  });

  test('the event loop keeps running while a 1024³ matmul works', async () => {
    const a = A();
    a.setThreads(0);
    const n = 1024;
    const x = native(n * n, 1), y = native(n * n, 2), o = nativeOut(n * n);
    let ticks = 0;
    let running = true;
    const tick = () => { ticks++; if (running) setImmediate(tick); };
    const t0 = performance.now();
    setImmediate(tick);
    await a.matmulAsync(x, y, 1, n, n, n, false, false, 0, 0, o);
    running = false;
    const ms = performance.now() - t0;
    assert.ok(ticks >= 10, `only ${ticks} event-loop turns during a ${ms.toFixed(1)} ms matmul`);
    const want = nativeOut(n * n);
    a.matmul(x, y, 1, n, n, n, false, false, 0, 0, want);
    bitEqual('1024³', o, want);
    releaseAll(x, y, o, want);
  });

  test('bad arguments reject (never throw) with the kernel name and argument', async () => {
    const a = A();
    const x = native(16, 1), o = nativeOut(16);
    const rejects = async (p: () => Promise<unknown>, re: RegExp) => {
      let r: Promise<unknown>;
      assert.doesNotThrow(() => { r = p(); });
      await assert.rejects(r!, re);
    };
    await rejects(() => a.matmulAsync(x, x, 1, 4, 4, 5, false, false, 0, 0, o), /matmulAsync: b has 16 elements, needs at least 20/);
    await rejects(() => a.matmulAsync(x, x, 1, 4, 4, 4, false, false, 0, 0, new Float32Array(15)), /matmulAsync: out has 15 elements, needs at least 16/);
    await rejects(() => a.matmulAsync(x, x, 1, -1, 4, 4, false, false, 0, 0, o), /matmulAsync: m must be a non-negative integer, got -1/);
    await rejects(() => a.matmulAsync(x, new Int32Array(16) as unknown as Float32Array, 1, 4, 4, 4, false, false, 0, 0, o), /matmulAsync: b: expected a Float32Array, got another typed array/);
    await rejects(() => a.matmulAsync(x, [1, 2] as unknown as Float32Array, 1, 1, 1, 1, false, false, 0, 0, o), /matmulAsync: b: expected a Float32Array, got a value that is not a typed array/);
    const f = formats.nf(4, { group: 64, doubleQuant: false });
    const parts = quantParts(8, 64, f, 1);
    const x64 = native(64, 1), x128 = native(128, 1);
    await rejects(() => a.dequantizeMatmulAsync(x64, 1, parts, 8, 64, 0, 5, 64, false, true, o), /dequantizeMatmulAsync: bits must be 2, 3 or 4, got 5/);
    await rejects(() => a.dequantizeMatmulAsync(x64, 1, parts.slice(0, 5), 8, 64, ...fmtArgs(f), o), /dequantizeMatmulAsync: parts must be an array of 6 Uint8Arrays/);
    await rejects(() => a.dequantizeMatmulAsync(x128, 1, parts, 8, 128, ...fmtArgs(f), o), /dequantizeMatmulAsync: parts\[0\] \(codes\) has 256 elements, needs at least 512/);
    await rejects(() => a.dequantizeAsync(parts, 8, 64, ...fmtArgs(f), new Float32Array(10)), /dequantizeAsync: out has 10 elements, needs at least 512/);
    await rejects(() => a.dequantizeAsync('x' as unknown as Uint8Array[], 8, 64, ...fmtArgs(f), o), /dequantizeAsync: parts: expected an array of 6 Uint8Arrays/);
    releaseAll(x, o, x64, x128, ...parts);
    // the backend frees the output it allocated when the kernel rejects
    const be = new NativeBackend(a);
    const h = be.upload(new Float32Array(4));
    const live = be.liveBuffers();
    await assert.rejects(be.matmulAsync(h, h, { batch: 1, m: 4, k: 4, n: 4, transA: false, transB: false, aBatchStride: 0, bBatchStride: 0 }), /matmulAsync: a has 4 elements, needs at least 16/);
    assert.equal(be.liveBuffers(), live);
    be.free(h);
  });

  test('release() of buffers a task is using detaches them at once and frees them when it is done', async () => {
    const a = A();
    a.setThreads(0);
    const n = 512;
    const before = a.liveAllocations();
    const x = native(n * n, 1), y = native(n * n, 2), o = nativeOut(n * n);
    const want = new Float32Array(n * n);
    a.matmul(x, y, 1, n, n, n, false, false, 0, 0, want);
    // inputs released right after the call: the result is still right
    const p = a.matmulAsync(x, y, 1, n, n, n, false, false, 0, 0, o);
    a.release(x.buffer as ArrayBuffer);
    a.release(y.buffer as ArrayBuffer);
    assert.equal(x.length, 0, 'released: detached at once');
    assert.equal(a.liveAllocations(), before + 3, 'the memory is still allocated while the task runs');
    a.release(x.buffer as ArrayBuffer); // a second release stays a no-op
    await p;
    assert.equal(a.liveAllocations(), before + 1, 'freed when the task finished');
    bitEqual('inputs released during the task', o, want);
    // the output released too: the task writes into memory still owned by it, then it is freed
    const x2 = native(n * n, 1), y2 = native(n * n, 2), o2 = nativeOut(n * n);
    const p2 = a.matmulAsync(x2, y2, 1, n, n, n, false, false, 0, 0, o2);
    releaseAll(x2, y2, o2, o);
    await p2;
    assert.equal(a.liveAllocations(), before);
    // tensors disposed while their async op is pending
    const be = new NativeBackend(a);
    const ta = q.tensor(gaussianArray(n * n, 1), [n, n], 'f32', be), tb = q.tensor(gaussianArray(n * n, 2), [n, n], 'f32', be);
    const pr = q.matmulAsync(ta, tb, { mode: 'async' });
    ta.dispose();
    tb.dispose();
    const r = await pr;
    bitEqual('tensors disposed during the task', (await r.data()) as Float32Array, want);
    r.dispose();
    assert.equal(be.liveBuffers(), 0);
    assert.equal(a.liveAllocations(), before);
  });

  test('many async calls in flight all resolve to the right results', async () => {
    const a = A();
    a.setThreads(0);
    const jobs = Array.from({ length: 40 }, (_, i) => {
      const [m, k, n] = [8 + 13 * i, 16 + 7 * (i % 9), 24 + 11 * (i % 5)];
      const x = native(m * k, i), y = native(k * n, 100 + i), o = nativeOut(m * n), want = nativeOut(m * n);
      a.matmul(x, y, 1, m, k, n, false, i % 2 === 1, 0, 0, want);
      return { x, y, o, want, p: a.matmulAsync(x, y, 1, m, k, n, false, i % 2 === 1, 0, 0, o), name: `job ${i} ${m}x${k}x${n}` };
    });
    // one shared input read by many tasks at once
    const f = formats.nf(4, { group: 64, doubleQuant: true });
    const parts = quantParts(512, 256, f, 3);
    const xs = native(3 * 256, 4), wq = nativeOut(3 * 512);
    a.dequantizeMatmul(xs, 3, parts, 512, 256, ...fmtArgs(f), wq);
    const qs = Array.from({ length: 12 }, () => nativeOut(3 * 512));
    await Promise.all([...jobs.map((j) => j.p), ...qs.map((o) => a.dequantizeMatmulAsync(xs, 3, parts, 512, 256, ...fmtArgs(f), o))]);
    for (const j of jobs) bitEqual(j.name, j.o, j.want);
    for (const o of qs) bitEqual('shared-input dequantizeMatmul', o, wq);
    for (const j of jobs) releaseAll(j.x, j.y, j.o, j.want);
    releaseAll(xs, wq, ...qs, ...parts);
  });
});

describe('tensor-level async helpers (ts/ops/async.ts)', { skip }, () => {
  const be = () => new NativeBackend(A());

  test('pick sync below ASYNC_MIN_MACS and async from it; results equal the sync ops', async () => {
    const b = be();
    const t = (shape: number[], seed: number) => q.tensor(gaussianArray(shape.reduce((x, y) => x * y, 1), seed), shape, 'f32', b);
    const lim = q.ASYNC_MIN_MACS.matmul;
    assert.ok(lim > 0);
    // m·k·n just below and at the threshold (k = n = 256)
    const mBelow = Math.max(1, Math.floor((lim - 1) / (256 * 256)));
    const mAt = Math.ceil(lim / (256 * 256));
    const w = t([256, 256], 1);
    for (const [m, want] of [[mBelow, 'sync'], [mAt, 'async']] as const) {
      const x = t([m, 256], 2);
      assert.equal(q.matmulAsyncDecision(x, w), want, `matmul ${m}x256x256`);
      assert.equal(q.matmulAsyncDecision(x, w, { mode: want === 'sync' ? 'async' : 'sync' }), want === 'sync' ? 'async' : 'sync');
      const y = await q.matmulAsync(x, w);
      bitEqual(`matmulAsync ${m}x256x256`, (await y.data()) as Float32Array, (await q.matmul(x, w).data()) as Float32Array);
      x.dispose();
      y.dispose();
    }
    // batched, transposed, folded shapes: same shape and bits as matmul
    for (const [sa, sb, o] of [[[2, 3, 5, 7], [7, 4], {}], [[3, 7, 5], [3, 4, 5], { transB: true }], [[5, 7], [2, 5, 4], { transA: true }]] as [number[], number[], q.MatmulOptions][]) {
      const x = t(sa, 3), y = t(sb, 4);
      const want = q.matmul(x, y, o);
      const got = await q.matmulAsync(x, y, { ...o, mode: 'async' });
      assert.deepEqual(got.shape, want.shape);
      bitEqual(`matmulAsync ${sa} ${sb}`, (await got.data()) as Float32Array, (await want.data()) as Float32Array);
    }
    // shape errors: the sync op's message, as a rejection
    const bad = q.matmulAsync(t([2, 3], 5), t([4, 5], 6));
    assert.ok(bad instanceof Promise);
    await assert.rejects(bad, /matmul: inner dimensions differ: a \[2, 3\] has 3, b \[4, 5\] has 4/);
    // dequantizeMatmul: GEMV below and at the threshold
    const lq = q.ASYNC_MIN_MACS.dequantizeMatmul;
    const f = formats.nf(4, { group: 64, doubleQuant: true });
    const cols = 1024;
    for (const [rows, want] of [[Math.max(64, Math.floor((lq - 1) / cols / 64) * 64), 'sync'], [Math.ceil(lq / cols / 64) * 64, 'async']] as const) {
      const wq = q.quantize(t([rows, cols], 7), f);
      const x = t([1, cols], 8);
      assert.equal(q.dequantizeMatmulAsyncDecision(x, wq), rows * cols >= lq ? 'async' : 'sync');
      assert.equal(q.dequantizeMatmulAsyncDecision(x, wq), want, `gemv ${rows}x${cols}`);
      const got = await q.dequantizeMatmulAsync(x, wq);
      bitEqual(`dequantizeMatmulAsync ${rows}`, (await got.data()) as Float32Array, (await q.dequantizeMatmul(x, wq).data()) as Float32Array);
      const d = await q.dequantizeAsync(wq, { mode: 'async' });
      bitEqual(`dequantizeAsync ${rows}`, (await d.data()) as Float32Array, (await q.dequantize(wq).data()) as Float32Array);
      await assert.rejects(q.dequantizeMatmulAsync(t([1, cols + 1], 9), wq), /dequantizeMatmul: x \[1, 1025\] must end in the weight's input size 1024/);
    }
  });

  test('a weight with parts composed in TS (NF-ICQ offsets) takes the sync op, same result', async () => {
    const b = be();
    const w = q.tensor(gaussianArray(512 * 256, 1, 0.05), [512, 256], 'f32', b);
    const qt = q.quantizeIcq(w, formats.nf(4, { group: 64, doubleQuant: true }));
    assert.ok(qt.parts.offsetCodes, 'NF-ICQ has offset parts');
    const x = q.tensor(gaussianArray(3 * 256, 2), [3, 256], 'f32', b);
    assert.equal(q.dequantizeMatmulAsyncDecision(x, qt, { mode: 'async' }), 'sync');
    const got = await q.dequantizeMatmulAsync(x, qt, { mode: 'async' });
    bitEqual('NF-ICQ dequantizeMatmulAsync', (await got.data()) as Float32Array, (await q.dequantizeMatmul(x, qt).data()) as Float32Array);
    const d = await q.dequantizeAsync(qt, { mode: 'async' });
    bitEqual('NF-ICQ dequantizeAsync', (await d.data()) as Float32Array, (await q.dequantize(qt).data()) as Float32Array);
  });

  test('backends without async kernels always run sync; results are never tracked by tidy', async () => {
    const js = new JsBackend();
    const x = q.tensor(gaussianArray(2048 * 2048, 1), [2048, 2048], 'f32', js);
    assert.equal(q.matmulAsyncDecision(x, x), 'sync');
    assert.equal(q.matmulAsyncDecision(x, x, { mode: 'async' }), 'sync');
    assert.equal(q.asyncDecision(js, 'matmul', 1e12), 'sync');
    assert.equal(q.asyncDecision(be(), 'matmul', 1e12), 'async');
    assert.equal(q.asyncDecision(be(), 'matmul', 1), 'sync');
    assert.equal(q.asyncDecision(be(), 'matmul', 1, 'async'), 'async');
    x.dispose();
    const b = be();
    const s = q.tensor([1, 2, 3, 4], [2, 2], 'f32', b);
    let p!: Promise<q.Tensor>;
    q.tidy(() => { p = q.matmulAsync(s, s); });
    const r = await p;
    assert.deepEqual(Array.from((await r.data()) as Float32Array), [7, 10, 15, 22]);
    r.dispose();
    s.dispose();
    assert.equal(b.liveBuffers(), 0);
  });
});

// The native addon (crates/node) at the addon level: memory (alloc / release / finalizer
// accounting / detach), every kernel against the JS reference backend on random inputs, threaded
// matmul, dequantizeMatmul and dequantize bit-identical to one thread, and argument checks that throw.
// Skips only when the addon is not built and QUANTLORA_EXPECT_BACKENDS does not name 'native'.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { NativeAddon } from '../ts/backends/native/addon.js';
import { nativeAddonForTests } from './native-helper.js';
import { JsBackend } from '../ts/backends/js/index.js';
import type { BinaryOp, Handle, QuantHandles, ReduceOp, UnaryOp } from '../ts/backend.js';
import { formats, type QuantFormat } from '../ts/quant/formats.js';
import { PART_NAMES, partLayout } from '../ts/quant/layout.js';
import { gaussianArray } from '../ts/tensor.js';

const { addon, skip } = nativeAddonForTests();
const A = (): NativeAddon => addon!;

const js = new JsBackend();
const UNARY: UnaryOp[] = ['neg', 'exp', 'log', 'sqrt', 'rsqrt', 'abs', 'sign', 'square', 'sigmoid', 'silu', 'siluGrad', 'relu', 'step'];
const BINARY: BinaryOp[] = ['add', 'sub', 'mul', 'div', 'max', 'min', 'eq', 'gt'];
const REDUCE: ReduceOp[] = ['sum', 'max'];
const u32 = (xs: number[]) => Uint32Array.from(xs);
const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
const rand = (n: number, seed: number, std = 1) => gaussianArray(n, seed, std);
const f32 = (h: Handle) => h as Float32Array;

/** Relative tolerance of max(1, |want|); 0 = bit-exact (NaN equals NaN). */
function close(name: string, got: ArrayLike<number>, want: ArrayLike<number>, tol: number) {
  assert.equal(got.length, want.length, `${name}: length`);
  for (let i = 0; i < want.length; i++) {
    const [g, w] = [got[i], want[i]];
    const ok = tol === 0 ? Object.is(g, w) || (Number.isNaN(g) && Number.isNaN(w)) : Math.abs(g - w) <= tol * Math.max(1, Math.abs(w)) || (Number.isNaN(g) && Number.isNaN(w));
    if (!ok) assert.fail(`${name}: [${i}] = ${g}, reference ${w} (tol ${tol})`);
  }
}

function bitEqual(name: string, a: Float32Array, b: Float32Array) {
  assert.equal(a.length, b.length);
  const [x, y] = [new Uint32Array(a.buffer, a.byteOffset, a.length), new Uint32Array(b.buffer, b.byteOffset, b.length)];
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) assert.fail(`${name}: element ${i} differs: ${a[i]} vs ${b[i]}`);
}

const bytes = (a: Float32Array | Int32Array | Uint8Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

describe('native addon', { skip }, () => {
  test('streamRead sums every element', () => {
    const x = rand(100_003, 9);
    const want = x.reduce((s, v) => s + v, 0);
    assert.ok(Math.abs(A().streamRead(x) - want) < 1e-3 * Math.max(1, Math.abs(want)));
    assert.ok(A().streamRead(new Float32Array(0)) === 0);
  });

  test('info', () => {
    const i = A().info();
    assert.equal(typeof i.simd, 'string');
    assert.ok(i.threads >= 1);
    assert.match(i.version, /^\d+\.\d+\.\d+/);
  });

  test('alloc / release / liveAllocations / detach', () => {
    const a = A();
    const before = a.liveAllocations();
    const z = a.alloc(1000, true);
    assert.ok(z instanceof ArrayBuffer);
    assert.equal(z.byteLength, 1000);
    assert.ok(new Uint8Array(z).every((v) => v === 0), 'zeroed');
    const u = a.alloc(4096, false);
    assert.equal(a.liveAllocations(), before + 2);
    const view = new Float32Array(u);
    view.fill(2.5);
    assert.equal(view[1023], 2.5);
    a.release(u);
    assert.equal(a.liveAllocations(), before + 1);
    // detached: views are empty, reads give undefined, writes are dropped
    assert.equal(u.byteLength, 0);
    assert.equal(view.length, 0);
    assert.equal(view[0], undefined);
    view[0] = 1;
    assert.equal(view[0], undefined);
    assert.throws(() => new Float32Array(u, 0, 4), TypeError);
    a.release(u); // double release: no-op
    assert.equal(a.liveAllocations(), before + 1);
    a.release(z);
    assert.equal(a.liveAllocations(), before);
    // empty allocations are plain ArrayBuffers, not counted
    const e = a.alloc(0, false);
    assert.equal(e.byteLength, 0);
    assert.equal(a.liveAllocations(), before);
    a.release(e);
    // alignment: 64 bytes (Float64Array views at any multiple-of-8 offset work)
    const b = a.alloc(24, false);
    new Float64Array(b).fill(1);
    a.release(b);
    // release of foreign buffers and non-buffers throws
    assert.throws(() => a.release(new ArrayBuffer(8)), /not allocated by alloc/);
    assert.throws(() => a.release(new Float32Array(4) as unknown as ArrayBuffer), /expected an ArrayBuffer/);
    assert.throws(() => a.alloc(-1, false), /non-negative integer/);
    assert.throws(() => a.alloc(1.5, false), /non-negative integer/);
  });

  test('alloc / release of the same size many times does not grow the process', () => {
    // Regression: 64-byte aligned chunks from glibc < 2.38 memalign were rarely reused, so an
    // alloc/release loop of 36 KiB tensors grew the process by ~38 KiB per iteration (4000
    // iterations: ~150 MB). The margin below is far under that and far over allocator noise.
    const a = A();
    const loop = (n: number) => {
      for (let i = 0; i < n; i++) {
        const b = a.alloc(36864, false);
        new Uint8Array(b).fill(1); // touch every page
        a.release(b);
      }
    };
    loop(200);
    const before = process.memoryUsage().rss;
    loop(4000);
    const grown = (process.memoryUsage().rss - before) / 2 ** 20;
    assert.ok(grown < 40, `rss grew by ${grown.toFixed(1)} MiB over 4000 alloc/release pairs`);
  });

  test('finalizer frees what JS drops', async (t) => {
    let gc = (globalThis as { gc?: () => void }).gc;
    if (!gc) {
      // expose gc at run time (a fresh context sees the flag)
      const v8 = await import('node:v8');
      const vm = await import('node:vm');
      v8.setFlagsFromString('--expose-gc');
      gc = vm.runInNewContext('gc') as (() => void) | undefined;
    }
    if (!gc) {
      t.skip('could not expose gc to check finalizers');
      return;
    }
    const a = A();
    const before = a.liveAllocations();
    (() => {
      for (let i = 0; i < 200; i++) a.alloc(1 << 16, false);
    })();
    assert.equal(a.liveAllocations(), before + 200);
    for (let i = 0; i < 10 && a.liveAllocations() > before; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(a.liveAllocations(), before);
  });

  test('elementwise vs JS reference', () => {
    const a = A();
    for (const n of [1, 7, 64, 1001]) {
      const x = rand(n, n);
      const xp = x.map((v) => Math.abs(v) + 0.1);
      for (let op = 0; op < UNARY.length; op++) {
        const positive = ['log', 'sqrt', 'rsqrt'].includes(UNARY[op]);
        const src = positive ? xp : x;
        const out = new Float32Array(n);
        a.unary(op, src, out);
        close(`unary ${UNARY[op]} n=${n}`, out, f32(js.unary(UNARY[op], src, n)), 1e-5);
      }
      const o2 = new Float32Array(n);
      a.affine(x, 0.5, 3, o2);
      close('affine', o2, f32(js.affine(x, n, 0.5, 3)), 1e-6);
      a.power(xp, 1.7, o2);
      close('power', o2, f32(js.pow(xp, n, 1.7)), 1e-5);
    }
    // backends get shapes of equal rank (the front end pads them)
    for (const [as, bs, os] of [[[3, 1, 5], [1, 4, 1], [3, 4, 5]], [[37], [37], [37]], [[2, 3], [1, 1], [2, 3]], [[1, 1], [6, 7], [6, 7]]]) {
      const x = rand(size(as), 1);
      const y = rand(size(bs), 2).map((v) => Math.abs(v) + 0.5);
      for (let op = 0; op < BINARY.length; op++) {
        const out = new Float32Array(size(os));
        a.binary(op, x, u32(as), y, u32(bs), u32(os), out);
        close(`binary ${BINARY[op]} ${as}/${bs}`, out, f32(js.binary(BINARY[op], x, as, y, bs, os)), 1e-6);
      }
    }
    for (const [shape, axes] of [[[5, 3, 7], [0, 2]], [[1000], [0]], [[4, 33], [1]], [[6, 9], [0]], [[2, 3], []]] as [number[], number[]][]) {
      const x = rand(size(shape), 3);
      for (let op = 0; op < REDUCE.length; op++) {
        const want = f32(js.reduce(REDUCE[op], x, shape, axes));
        const out = new Float32Array(want.length);
        a.reduce(op, x, u32(shape), u32(axes), out);
        close(`reduce ${REDUCE[op]} ${shape}/${axes}`, out, want, 1e-5);
      }
    }
  });

  test('cast, strided, writeStrided, gather, scatterAddRows vs JS reference (bit-exact)', () => {
    const a = A();
    const vals = Float32Array.from([1.7, -2.2, 3, 250, 256, -129, NaN, 1e10, -0.5, 0]);
    const typed = { f32: vals, i32: js.cast(vals, 'f32', 'i32', vals.length) as Int32Array, u8: js.cast(vals, 'f32', 'u8', vals.length) as Uint8Array };
    const codes = { f32: 0, i32: 1, u8: 2 } as const;
    const Ctor = { f32: Float32Array, i32: Int32Array, u8: Uint8Array } as const;
    for (const from of ['f32', 'i32', 'u8'] as const) {
      for (const to of ['f32', 'i32', 'u8'] as const) {
        const src = typed[from];
        const out = new Ctor[to](src.length);
        a.cast(codes[from], codes[to], bytes(src), src.length, bytes(out));
        close(`cast ${from}->${to}`, out, js.cast(src, from, to, src.length) as ArrayLike<number>, 0);
      }
    }
    // strided / writeStrided for each dtype: a transpose-like walk and a slice with offset
    for (const dt of ['f32', 'i32', 'u8'] as const) {
      const src = new Ctor[dt](3 * 4 * 5).map((_, i) => (i * 7) % 101);
      for (const [offset, strides, shape] of [[0, [1, 5, 20], [5, 4, 3]], [6, [20, 1], [2, 3]], [0, [0, 1], [4, 60]], [3, [2], [0]]] as [number, number[], number[]][]) {
        const want = js.strided(src, dt, offset, strides, shape) as ArrayLike<number>;
        const out = new Ctor[dt](size(shape));
        a.strided(codes[dt], bytes(src), offset, u32(strides), u32(shape), bytes(out));
        close(`strided ${dt} ${strides}/${shape}`, out, want, 0);
      }
      const dst1 = new Ctor[dt](60).fill(9);
      const dst2 = new Ctor[dt](60).fill(9);
      const piece = new Ctor[dt](6).map((_, i) => i + 1);
      js.writeStrided(dst1, dt, piece, 7, [20, 2], [2, 3]);
      a.writeStrided(codes[dt], bytes(dst2), bytes(piece), 7, u32([20, 2]), u32([2, 3]));
      close(`writeStrided ${dt}`, dst2, dst1, 0);
    }
    // byte views at odd offsets (unaligned f32 data) are handled by copying
    const raw = new Uint8Array(4 * 6 + 1);
    const unaligned = new Uint8Array(raw.buffer, 1, 24);
    unaligned.set(bytes(Float32Array.from([1, 2, 3, 4, 5, 6])));
    const tOut = new Float32Array(6);
    a.strided(0, unaligned, 0, u32([1, 3]), u32([3, 2]), bytes(tOut));
    close('strided unaligned', tOut, [1, 4, 2, 5, 3, 6], 0);

    const table = rand(6 * 5, 23);
    const ids = Int32Array.from([0, 5, 5, 2, 0, 1]);
    const out = new Float32Array(6 * 5);
    assert.equal(a.gather(table, 6, 5, ids, out), -1);
    close('gather', out, f32(js.gather(table, 6, 5, ids, 6)), 0);
    assert.equal(a.gather(table, 6, 5, Int32Array.from([0, 1, 6, -1]), new Float32Array(20)), 2);
    assert.equal(a.gather(table, 6, 5, Int32Array.from([-1]), new Float32Array(5)), 0);
    const grad = rand(6 * 5, 24);
    const sOut = new Float32Array(6 * 5).fill(7);
    a.scatterAddRows(grad, 6, 5, ids, 6, sOut);
    close('scatterAddRows', sOut, f32(js.scatterAddRows(grad, 6, 5, ids, 6)), 0);
  });

  test('matmul vs JS reference', () => {
    const a = A();
    for (const [m, k, n] of [[1, 1, 1], [1, 37, 5], [7, 13, 9], [33, 64, 17], [65, 96, 80], [130, 300, 71]]) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          const x = rand(m * k, 1);
          const y = rand(k * n, 2);
          const d = { batch: 1, m, k, n, transA, transB, aBatchStride: m * k, bBatchStride: k * n };
          const out = new Float32Array(m * n);
          a.matmul(x, y, 1, m, k, n, transA, transB, m * k, k * n, out);
          close(`matmul ${m}x${k}x${n} tA=${transA} tB=${transB}`, out, f32(js.matmul(x, y, d)), 1e-4);
        }
      }
    }
    // batches, shared B and shared A
    for (const [batch, m, k, n, sa, sb] of [[3, 5, 7, 4, 35, 28], [2, 3, 11, 6, 33, 0], [2, 4, 6, 5, 0, 30]]) {
      const x = rand(sa * (batch - 1) + m * k, 3);
      const y = rand(sb * (batch - 1) + k * n, 4);
      const d = { batch, m, k, n, transA: false, transB: false, aBatchStride: sa, bBatchStride: sb };
      const out = new Float32Array(batch * m * n);
      a.matmul(x, y, batch, m, k, n, false, false, sa, sb, out);
      close(`matmul batch ${batch} strides ${sa}/${sb}`, out, f32(js.matmul(x, y, d)), 1e-5);
    }
  });

  test('transformer blocks vs JS reference', () => {
    const a = A();
    for (const [rows, dim] of [[5, 33], [1, 8], [3, 576]]) {
      const x = rand(rows * dim, 24);
      const w = rand(dim, 25);
      const dy = rand(rows * dim, 26);
      const out = new Float32Array(rows * dim);
      a.rmsnorm(x, w, rows, dim, 1e-5, out);
      close('rmsnorm', out, f32(js.rmsnorm(x, w, rows, dim, 1e-5)), 1e-5);
      const [dx, dw] = [new Float32Array(rows * dim), new Float32Array(dim)];
      a.rmsnormBackward(x, w, dy, rows, dim, 1e-5, dx, dw);
      const [wdx, wdw] = js.rmsnormBackward(x, w, dy, rows, dim, 1e-5);
      close('rmsnormBackward dx', dx, f32(wdx), 1e-5);
      close('rmsnormBackward dw', dw, f32(wdw), 1e-5);
    }
    for (const interleaved of [false, true]) {
      for (const inverse of [false, true]) {
        const [outer, seq, dim] = [6, 7, 16];
        const x = rand(outer * seq * dim, 26);
        const out = new Float32Array(x.length);
        a.rope(x, outer, seq, dim, 10000, 5, interleaved, inverse, out);
        const want = js.rope(x, { outer, seq, dim, theta: 10000, offset: 5, style: interleaved ? 'interleaved' : 'half', inverse });
        close(`rope interleaved=${interleaved} inverse=${inverse}`, out, f32(want), 1e-5);
      }
    }
    for (const [rows, cols, cq] of [[7, 13, 0], [18, 9, 9], [12, 10, 4], [3, 1000, 0]]) {
      const x = rand(rows * cols, 27, 3);
      const out = new Float32Array(rows * cols);
      a.softmax(x, rows, cols, cq, out);
      const y = f32(js.softmax(x, rows, cols, cq));
      close(`softmax ${rows}x${cols} causal ${cq}`, out, y, 1e-6);
      const dy = rand(rows * cols, 28);
      const dx = new Float32Array(rows * cols);
      a.softmaxBackward(y, dy, rows, cols, dx);
      close('softmaxBackward', dx, f32(js.softmaxBackward(y, dy, rows, cols)), 1e-6);
    }
    const [rows, vocab] = [10, 31];
    const logits = rand(rows * vocab, 30, 2);
    const targets = Int32Array.from([1, 30, -100, 0, 7, 7, -100, 2, 3, 4]);
    const loss = new Float32Array(1);
    assert.equal(a.crossEntropy(logits, targets, rows, vocab, -100, loss), -1);
    close('crossEntropy', loss, f32(js.crossEntropy(logits, targets, rows, vocab, -100)), 1e-5);
    const dLoss = Float32Array.of(0.7);
    const dl = new Float32Array(rows * vocab);
    assert.equal(a.crossEntropyBackward(logits, targets, dLoss, rows, vocab, -100, dl), -1);
    close('crossEntropyBackward', dl, f32(js.crossEntropyBackward(logits, targets, dLoss, rows, vocab, -100)), 1e-5);
    const bad = Int32Array.from([1, 2, 31, 0, 0, 0, 0, 0, 0, 0]);
    assert.equal(a.crossEntropy(logits, bad, rows, vocab, -100, loss), 2);
    assert.equal(a.crossEntropyBackward(logits, bad, dLoss, rows, vocab, -100, dl), 2);
  });

  const fmts: QuantFormat[] = [];
  for (const bits of [2, 3, 4]) {
    for (const group of [7, 32, 64]) {
      fmts.push(formats.nf(bits, { group, doubleQuant: true }), formats.nf(bits, { group, doubleQuant: false }));
      fmts.push(formats.int(bits, { group, symmetric: false }), formats.int(bits, { group, symmetric: true }));
    }
  }
  const fargs = (f: QuantFormat) => [f.kind === 'nf' ? 0 : 1, f.bits, f.group, f.doubleQuant, f.symmetric] as const;
  /** Native part buffers for [rows, cols] in format f (PART_NAMES order, empty where absent). */
  function nativeParts(rows: number, cols: number, f: QuantFormat): Uint8Array[] {
    const l = partLayout(rows, cols, f);
    return PART_NAMES.map((k) => new Uint8Array((l[k]?.size ?? 0) * (l[k]?.dtype === 'f32' ? 4 : 1)));
  }
  function quantizeNative(w: Float32Array, rows: number, cols: number, f: QuantFormat): Uint8Array[] {
    const parts = nativeParts(rows, cols, f);
    assert.equal(A().quantize(w, rows, cols, ...fargs(f), parts), -1);
    return parts;
  }

  test('quantize / dequantize / dequantizeMatmul vs JS reference', () => {
    const a = A();
    for (const f of fmts) {
      for (const [rows, cols] of [[1, 1], [3, 70], [9, 129], [40, 64]]) {
        const w = rand(rows * cols, rows + cols, 0.05);
        const parts = quantizeNative(w, rows, cols, f);
        const want = js.quantize(w, rows, cols, f) as unknown as Record<string, Float32Array | Uint8Array | undefined>;
        PART_NAMES.forEach((k, i) => {
          const wk = want[k];
          if (!wk) return assert.equal(parts[i].length, 0, `${f.name} ${k} absent`);
          close(`quantize ${f.name} ${rows}x${cols} ${k}`, parts[i], bytes(wk), 0);
        });
        const deq = new Float32Array(rows * cols);
        a.dequantize(parts, rows, cols, ...fargs(f), deq);
        close(`dequantize ${f.name}`, deq, f32(js.dequantize(want as unknown as QuantHandles, rows, cols, f)), 0);
        for (const xRows of [1, 5]) {
          const x = rand(xRows * cols, 60 + xRows);
          const out = new Float32Array(xRows * rows);
          a.dequantizeMatmul(x, xRows, parts, rows, cols, ...fargs(f), out);
          close(`dequantizeMatmul ${f.name} ${xRows}x${rows}x${cols}`, out, f32(js.dequantizeMatmul(x, xRows, want as unknown as QuantHandles, rows, cols, f)), 1e-4);
        }
      }
    }
    const w = Float32Array.from([1, 2, NaN, 4]);
    assert.equal(a.quantize(w, 2, 2, ...fargs(formats.nf(4)), nativeParts(2, 2, formats.nf(4))), 2);
  });

  test('threaded matmul, dequantizeMatmul and dequantize are bit-identical to one thread', () => {
    const a = A();
    const threads = a.info().threads;
    try {
      const cases: [number, number, number, number, boolean, boolean, number, number][] = [
        // batch, m, k, n, transA, transB, aBatchStride, bBatchStride
        [1, 257, 300, 129, false, false, 0, 0],
        [1, 130, 300, 100, false, false, 0, 0], // two 65-row pieces (cut off the 12-row grid)
        [1, 200, 513, 96, false, true, 0, 0],
        [1, 150, 280, 200, true, false, 0, 0],
        [1, 131, 260, 77, true, true, 0, 0],
        [1, 64, 1024, 512, false, false, 0, 0], // small path, split in row pairs
        [1, 31, 1024, 700, false, true, 0, 0],
        [1, 1, 4096, 1024, false, false, 0, 0], // one row: never split
        [4, 40, 256, 128, false, false, 40 * 256, 0], // batches fold into one 160-row matmul
        [3, 70, 200, 90, false, false, 70 * 200, 200 * 90],
        [6, 20, 300, 100, true, true, 20 * 300, 300 * 100],
        [2, 100, 128, 128, false, false, 0, 128 * 128], // A shared
      ];
      for (const [batch, m, k, n, tA, tB, sa, sb] of cases) {
        const x = rand(sa * (batch - 1) + m * k, m + k);
        const y = rand(sb * (batch - 1) + k * n, n);
        const run = () => {
          const out = new Float32Array(batch * m * n);
          a.matmul(x, y, batch, m, k, n, tA, tB, sa, sb, out);
          return out;
        };
        a.setThreads(1);
        const one = run();
        for (const t of [2, 3, 4]) {
          a.setThreads(t);
          bitEqual(`matmul ${batch}x${m}x${k}x${n} tA=${tA} tB=${tB} threads=${t}`, run(), one);
        }
      }
      for (const f of [formats.nf(4), formats.nf(3, { group: 7 }), formats.int(2, { group: 32, symmetric: false }), formats.int(4, { group: 128, symmetric: true })]) {
        for (const [xRows, rows, cols] of [[1, 1000, 512], [7, 333, 384], [64, 256, 257]]) {
          const w = rand(rows * cols, rows, 0.05);
          const parts = quantizeNative(w, rows, cols, f);
          const x = rand(xRows * cols, cols);
          const run = () => {
            const out = new Float32Array(xRows * rows);
            a.dequantizeMatmul(x, xRows, parts, rows, cols, ...fargs(f), out);
            return out;
          };
          a.setThreads(1);
          const one = run();
          for (const t of [2, 3, 4]) {
            a.setThreads(t);
            bitEqual(`dequantizeMatmul ${f.name} ${xRows}x${rows}x${cols} threads=${t}`, run(), one);
          }
        }
        // dequantize: row ranges over the pool from 128K elements (cuts inside double-quant blocks)
        for (const [rows, cols] of [[1000, 512], [517, 301]]) {
          const parts = quantizeNative(rand(rows * cols, rows + 1, 0.05), rows, cols, f);
          const run = () => {
            const out = new Float32Array(rows * cols);
            a.dequantize(parts, rows, cols, ...fargs(f), out);
            return out;
          };
          a.setThreads(1);
          const one = run();
          for (const t of [2, 3, 4]) {
            a.setThreads(t);
            bitEqual(`dequantize ${f.name} ${rows}x${cols} threads=${t}`, run(), one);
          }
        }
      }
    } finally {
      a.setThreads(threads);
    }
  });

  test('inputs may alias outputs; outputs may not overlap each other', () => {
    const a = A();
    const x = rand(64, 1);
    const want = f32(js.unary('exp', x, 64));
    a.unary(1, x, x);
    close('unary in place', x, want, 1e-5);
    const m = rand(16, 2);
    const mm = new Float32Array(16);
    a.matmul(m, m, 1, 4, 4, 4, false, false, 16, 16, mm);
    a.matmul(m, m, 1, 4, 4, 4, false, false, 16, 16, m);
    close('matmul in place', m, mm, 0);
    const buf = new Float32Array(8);
    assert.throws(() => a.rmsnormBackward(rand(8, 3), rand(4, 4), rand(8, 5), 2, 4, 1e-5, buf, buf.subarray(2, 6)), /overlap/);
  });

  test('bad arguments throw JS errors', () => {
    const a = A();
    const f = new Float32Array(16);
    assert.throws(() => a.unary(99, f, f), /unary: unknown op code 99/);
    assert.throws(() => a.unary(0, f, new Float32Array(3)), /unary: out has 3 elements/);
    assert.throws(() => a.unary(0, new Int32Array(4) as unknown as Float32Array, f), /expected a Float32Array/);
    assert.throws(() => a.unary(0, [1, 2] as unknown as Float32Array, f), /expected a Float32Array/);
    assert.throws(() => a.binary(0, f, u32([4, 4]), f, u32([3, 4]), u32([4, 4]), f), /do not broadcast/);
    assert.throws(() => a.binary(0, f, u32([4, 4]), f, u32([4]), u32([4, 4]), f), /ranks differ/);
    assert.throws(() => a.binary(0, f, u32([4, 5]), f, u32([4, 5]), u32([4, 5]), f), /a has 16 elements, needs at least 20/);
    assert.throws(() => a.reduce(0, f, u32([4, 4]), u32([2]), f), /axes/);
    assert.throws(() => a.reduce(0, f, u32([4, 4]), u32([1, 1]), f), /axes/);
    assert.throws(() => a.cast(0, 7, bytes(f), 4, bytes(f)), /dtype code 7/);
    assert.throws(() => a.cast(0, 1, bytes(f), 17, bytes(new Float32Array(17))), /a \(bytes\) has 64 elements/);
    assert.throws(() => a.strided(0, bytes(f), 1, u32([4, 1]), u32([4, 4]), bytes(f)), /a \(bytes\)/);
    assert.throws(() => a.strided(0, bytes(f), 0, u32([4]), u32([4, 4]), bytes(f)), /different ranks/);
    assert.throws(() => a.writeStrided(0, bytes(f), bytes(f), 0, u32([8, 1]), u32([4, 4])), /dst \(bytes\)/);
    assert.throws(() => a.gather(f, 5, 4, Int32Array.of(0), new Float32Array(4)), /table has 16 elements, needs at least 20/);
    assert.throws(() => a.scatterAddRows(f, 5, 4, Int32Array.of(0), 4, f), /grad/);
    assert.throws(() => a.matmul(f, f, 1, 4, 5, 4, false, false, 20, 20, f), /matmul: a has 16 elements, needs at least 20/);
    assert.throws(() => a.matmul(f, f, 2, 2, 2, 2, false, false, 13, 4, f), /matmul: a has 16 elements, needs at least 17/);
    assert.throws(() => a.matmul(f, f, 1, -1, 2, 2, false, false, 0, 0, f), /m must be a non-negative integer/);
    assert.throws(() => a.matmul(f, f, 1, 2.5, 2, 2, false, false, 0, 0, f), /m must be a non-negative integer/);
    assert.throws(() => a.matmul(f, f, 1, 2 ** 40, 2 ** 40, 2, false, false, 0, 0, f), /overflows|needs at least/);
    assert.throws(() => a.rmsnorm(f, new Float32Array(3), 4, 4, 1e-5, f), /w has 3 elements/);
    assert.throws(() => a.rope(f, 1, 2, 7, 1e4, 0, false, false, f), /dim must be even/);
    assert.throws(() => a.rope(f, 2, 2, 8, 1e4, 0, false, false, f), /x has 16 elements, needs at least 32/);
    assert.throws(() => a.softmax(f, 4, 5, 0, f), /softmax: x/);
    assert.throws(() => a.softmaxBackward(f, f, 4, 4, new Float32Array(2)), /dx/);
    assert.throws(() => a.crossEntropy(f, Int32Array.of(0), 2, 8, -100, f), /targets/);
    assert.throws(() => a.crossEntropyBackward(f, Int32Array.of(0, 0), new Float32Array(0), 2, 8, -100, f), /dLoss/);
    const nf4 = formats.nf(4);
    assert.throws(() => a.quantize(f, 4, 4, ...fargs(nf4), nativeParts(4, 4, nf4).slice(0, 5)), /array of 6/);
    assert.throws(() => a.quantize(f, 4, 4, 0, 5, 64, true, false, nativeParts(4, 4, nf4)), /bits must be 2, 3 or 4/);
    assert.throws(() => a.quantize(f, 4, 4, 0, 4, 0, true, false, nativeParts(4, 4, nf4)), /group must be >= 1/);
    assert.throws(() => a.quantize(f, 4, 8, ...fargs(nf4), nativeParts(4, 8, nf4)), /w has 16 elements/);
    const short = nativeParts(4, 4, nf4);
    short[0] = new Uint8Array(1);
    assert.throws(() => a.dequantize(short, 4, 4, ...fargs(nf4), f), /parts\[0\] \(codes\)/);
    assert.throws(() => a.dequantizeMatmul(f, 3, nativeParts(4, 8, nf4), 4, 8, ...fargs(nf4), new Float32Array(12)), /x has 16 elements, needs at least 24/);
    assert.throws(() => a.dequantizeMatmul(new Float32Array(16), 2, nativeParts(4, 8, nf4), 4, 8, ...fargs(nf4), new Float32Array(7)), /out has 7/);
    assert.throws(() => a.setThreads(-1), /non-negative/);
    // still alive and correct after all that
    const out = new Float32Array(4);
    a.affine(Float32Array.of(1, 2, 3, 4), 2, 1, out);
    close('affine after errors', out, [3, 5, 7, 9], 0);
  });
});

describe('native addon: matmul split in rows and columns', { skip }, () => {
  // crates/node/src/pool.rs cuts a matmul into a 2-D grid (mm::split_grid: row and column pieces
  // at the kernel's tile multiples) once rows alone cannot feed the threads; every element must
  // still equal the one-thread result bit for bit, on every kernel (AVX-512, AVX2, portable).
  test('2-D split matmul is bit-identical to one thread', () => {
    const a = A();
    const threads = a.info().threads;
    try {
      const cases: [number, number, number, number, boolean, boolean, number, number][] = [
        // batch, m, k, n, transA, transB, aBatchStride, bBatchStride
        [1, 96, 256, 1000, false, false, 0, 0], // few rows, wide: mostly column pieces
        [1, 257, 300, 515, false, false, 0, 0], // square-ish with tails in both directions
        [1, 200, 513, 333, false, true, 0, 0],
        [1, 150, 280, 400, true, false, 0, 0],
        [1, 131, 260, 277, true, true, 0, 0],
        [1, 13, 1024, 2000, false, false, 0, 0], // rows past the few-row path, columns only
        [1, 9, 700, 1500, true, true, 0, 0],
        [1, 4, 1024, 1100, false, false, 0, 0], // the few-row path: whole rows only
        [4, 12, 256, 600, false, false, 12 * 256, 0], // batches folded into one 48-row matmul, then a grid
        [3, 70, 200, 300, false, false, 70 * 200, 200 * 300], // own batches, a grid each
        [2, 100, 128, 300, true, true, 100 * 128, 128 * 300],
      ];
      for (const [batch, m, k, n, tA, tB, sa, sb] of cases) {
        const x = rand(sa * (batch - 1) + m * k, 3 * m + k);
        const y = rand(sb * (batch - 1) + k * n, 5 * n + 1);
        const run = () => {
          const out = new Float32Array(batch * m * n).fill(NaN);
          a.matmul(x, y, batch, m, k, n, tA, tB, sa, sb, out);
          return out;
        };
        a.setThreads(1);
        const one = run();
        assert.ok(one.every(Number.isFinite), `matmul ${batch}x${m}x${k}x${n}: every element written`);
        for (const t of [2, 3, 5, 8, 16]) {
          a.setThreads(t);
          bitEqual(`2-D matmul ${batch}x${m}x${k}x${n} tA=${tA} tB=${tB} threads=${t}`, run(), one);
        }
      }
    } finally {
      a.setThreads(threads);
    }
  });
});

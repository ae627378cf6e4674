// The native backend: the Rust kernels of crates/kernels in a Node addon (napi-rs), with AVX2+FMA
// chosen at run time on x86-64 and the big kernels split over a process-wide thread pool. Tensors
// live in native memory (ArrayBuffers the addon allocates); JS reads them through views without
// copies; dispose() releases them at once, a finalizer covers what is never disposed.

import type { Backend, BackendInfo, BinaryOp, Handle, IcqSearchParams, MatmulDims, QuantHandles, ReduceOp, RopeParams, UnaryOp } from '../../backend.js';
import { BYTES_PER_ELEMENT, type AnyTypedArray, type DType } from '../../dtype.js';
import { NonFiniteError, ValueError } from '../../errors.js';
import { checkFormat, type QuantFormat } from '../../quant/formats.js';
import { PART_NAMES, partLayout } from '../../quant/layout.js';
import { registerBackend } from '../../registry.js';
import { BINARY, DTYPE_CODE, REDUCE, UNARY } from '../kernel-codes.js';
import { loadNativeAddon, type NativeAddon } from './addon.js';

interface NativeHandle {
  buf: ArrayBuffer;
  bytes: number;
}

const EMPTY = new Uint8Array(0);

const f32 = (h: Handle): Float32Array => new Float32Array((h as NativeHandle).buf);
const i32 = (h: Handle): Int32Array => new Int32Array((h as NativeHandle).buf);
const u8 = (h: Handle): Uint8Array => new Uint8Array((h as NativeHandle).buf);
const u32 = (xs: number[]): Uint32Array => Uint32Array.from(xs);

export class NativeBackend implements Backend {
  readonly name = 'native';
  private readonly live = new Set<NativeHandle>();

  constructor(readonly addon: NativeAddon) {}

  info(): BackendInfo {
    const i = this.addon.info();
    return { name: this.name, details: { kind: 'Node addon (napi-rs)', simd: i.simd, threads: i.threads, version: i.version } };
  }

  // ---- memory ----

  private alloc(bytes: number, zeroed = false): NativeHandle {
    const h = { buf: this.addon.alloc(bytes, zeroed), bytes };
    this.live.add(h);
    return h;
  }
  private out(dtype: DType, size: number): NativeHandle {
    return this.alloc(size * BYTES_PER_ELEMENT[dtype]);
  }
  private view(h: Handle, dtype: DType, size: number): AnyTypedArray {
    const buf = (h as NativeHandle).buf;
    if (dtype === 'f32') return new Float32Array(buf, 0, size);
    if (dtype === 'i32') return new Int32Array(buf, 0, size);
    return new Uint8Array(buf, 0, size);
  }

  upload(data: AnyTypedArray): Handle {
    const h = this.alloc(data.byteLength);
    new Uint8Array(h.buf).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return h;
  }
  zeros(dtype: DType, size: number): Handle {
    return this.alloc(size * BYTES_PER_ELEMENT[dtype], true);
  }
  fill(size: number, value: number): Handle {
    const h = this.out('f32', size);
    f32(h).fill(value);
    return h;
  }
  async read(h: Handle, dtype: DType, size: number): Promise<AnyTypedArray> {
    return this.readSync(h, dtype, size);
  }
  readSync(h: Handle, dtype: DType, size: number): AnyTypedArray {
    return this.view(h, dtype, size).slice();
  }
  free(h: Handle): void {
    const n = h as NativeHandle;
    if (!this.live.delete(n)) return;
    this.addon.release(n.buf);
  }
  liveBuffers(): number {
    return this.live.size;
  }

  // ---- elementwise ----

  unary(op: UnaryOp, a: Handle, size: number): Handle {
    const o = this.out('f32', size);
    this.addon.unary(UNARY.indexOf(op), f32(a).subarray(0, size), f32(o));
    return o;
  }
  affine(a: Handle, size: number, mul: number, add: number): Handle {
    const o = this.out('f32', size);
    this.addon.affine(f32(a).subarray(0, size), mul, add, f32(o));
    return o;
  }
  pow(a: Handle, size: number, p: number): Handle {
    const o = this.out('f32', size);
    this.addon.power(f32(a).subarray(0, size), p, f32(o));
    return o;
  }
  binary(op: BinaryOp, a: Handle, aShape: number[], b: Handle, bShape: number[], outShape: number[]): Handle {
    const o = this.out('f32', outShape.reduce((x, y) => x * y, 1));
    this.addon.binary(BINARY.indexOf(op), f32(a), u32(aShape), f32(b), u32(bShape), u32(outShape), f32(o));
    return o;
  }
  cast(a: Handle, from: DType, to: DType, size: number): Handle {
    const o = this.out(to, size);
    this.addon.cast(DTYPE_CODE[from], DTYPE_CODE[to], u8(a).subarray(0, size * BYTES_PER_ELEMENT[from]), size, u8(o));
    return o;
  }
  reduce(op: ReduceOp, a: Handle, shape: number[], axes: number[]): Handle {
    const o = this.out('f32', shape.reduce((x, d, i) => x * (axes.includes(i) ? 1 : d), 1));
    this.addon.reduce(REDUCE.indexOf(op), f32(a), u32(shape), u32(axes), f32(o));
    return o;
  }

  // ---- layout ----

  strided(a: Handle, dtype: DType, offset: number, strides: number[], outShape: number[]): Handle {
    const o = this.out(dtype, outShape.reduce((x, y) => x * y, 1));
    this.addon.strided(DTYPE_CODE[dtype], u8(a), offset, u32(strides), u32(outShape), u8(o));
    return o;
  }
  writeStrided(dst: Handle, dtype: DType, src: Handle, offset: number, strides: number[], srcShape: number[]): void {
    this.addon.writeStrided(DTYPE_CODE[dtype], u8(dst), u8(src), offset, u32(strides), u32(srcShape));
  }
  gather(table: Handle, rows: number, dim: number, ids: Handle, count: number): Handle {
    const o = this.out('f32', count * dim);
    const bad = this.addon.gather(f32(table), rows, dim, i32(ids).subarray(0, count), f32(o));
    if (bad >= 0) {
      const id = i32(ids)[bad];
      this.free(o);
      throw new ValueError(`gather: id ${id} at position ${bad} is outside [0, ${rows})`);
    }
    return o;
  }
  scatterAddRows(grad: Handle, count: number, dim: number, ids: Handle, rows: number): Handle {
    const o = this.out('f32', rows * dim);
    this.addon.scatterAddRows(f32(grad), count, dim, i32(ids).subarray(0, count), rows, f32(o));
    return o;
  }

  // ---- linear algebra ----

  matmul(a: Handle, b: Handle, d: MatmulDims): Handle {
    const o = this.out('f32', d.batch * d.m * d.n);
    this.addon.matmul(f32(a), f32(b), d.batch, d.m, d.k, d.n, d.transA, d.transB, d.aBatchStride, d.bBatchStride, f32(o));
    return o;
  }

  // ---- transformer blocks ----

  rmsnorm(x: Handle, w: Handle, rows: number, dim: number, eps: number): Handle {
    const o = this.out('f32', rows * dim);
    this.addon.rmsnorm(f32(x), f32(w), rows, dim, eps, f32(o));
    return o;
  }
  rmsnormBackward(x: Handle, w: Handle, dy: Handle, rows: number, dim: number, eps: number): [Handle, Handle] {
    const dx = this.out('f32', rows * dim);
    const dw = this.out('f32', dim);
    this.addon.rmsnormBackward(f32(x), f32(w), f32(dy), rows, dim, eps, f32(dx), f32(dw));
    return [dx, dw];
  }
  rope(x: Handle, p: RopeParams): Handle {
    const o = this.out('f32', p.outer * p.seq * p.dim);
    this.addon.rope(f32(x), p.outer, p.seq, p.dim, p.theta, p.offset, p.style === 'interleaved', p.inverse, f32(o));
    return o;
  }
  softmax(x: Handle, rows: number, cols: number, causalQueries: number): Handle {
    const o = this.out('f32', rows * cols);
    this.addon.softmax(f32(x), rows, cols, causalQueries, f32(o));
    return o;
  }
  softmaxBackward(y: Handle, dy: Handle, rows: number, cols: number): Handle {
    const o = this.out('f32', rows * cols);
    this.addon.softmaxBackward(f32(y), f32(dy), rows, cols, f32(o));
    return o;
  }
  private targetError(targets: Handle, row: number, vocab: number): ValueError {
    return new ValueError(`crossEntropy: target ${i32(targets)[row]} of row ${row} is outside [0, ${vocab}) and is not the ignore index`);
  }
  crossEntropy(logits: Handle, targets: Handle, rows: number, vocab: number, ignoreIndex: number): Handle {
    const o = this.out('f32', 1);
    const bad = this.addon.crossEntropy(f32(logits), i32(targets).subarray(0, rows), rows, vocab, ignoreIndex, f32(o));
    if (bad >= 0) { this.free(o); throw this.targetError(targets, bad, vocab); }
    return o;
  }
  crossEntropyBackward(logits: Handle, targets: Handle, dLoss: Handle, rows: number, vocab: number, ignoreIndex: number): Handle {
    const o = this.out('f32', rows * vocab);
    const bad = this.addon.crossEntropyBackward(f32(logits), i32(targets).subarray(0, rows), f32(dLoss), rows, vocab, ignoreIndex, f32(o));
    if (bad >= 0) { this.free(o); throw this.targetError(targets, bad, vocab); }
    return o;
  }

  // ---- quantization ----

  private formatArgs(f: QuantFormat): [number, number, number, boolean, boolean] {
    return [f.kind === 'nf' ? 0 : 1, f.bits, f.group, f.doubleQuant, f.symmetric];
  }
  private parts(q: QuantHandles): Uint8Array[] {
    const h = q as unknown as Record<string, NativeHandle | undefined>;
    return PART_NAMES.map((k) => (h[k] ? u8(h[k]!) : EMPTY));
  }
  quantize(w: Handle, rows: number, cols: number, f: QuantFormat): QuantHandles {
    checkFormat('quantize', f);
    const layout = partLayout(rows, cols, f);
    const parts: Record<string, NativeHandle> = {};
    for (const k of PART_NAMES) {
      const spec = layout[k];
      if (spec) parts[k] = this.out(spec.dtype, spec.size);
    }
    const q = parts as unknown as QuantHandles;
    const bad = this.addon.quantize(f32(w).subarray(0, rows * cols), rows, cols, ...this.formatArgs(f), this.parts(q));
    if (bad >= 0) {
      const v = f32(w)[bad];
      for (const h of Object.values(parts)) this.free(h);
      throw new NonFiniteError(`quantize: expected finite weights, got ${v} at row ${Math.floor(bad / cols)}, col ${bad % cols} of [${rows}, ${cols}]`);
    }
    return q;
  }
  dequantize(q: QuantHandles, rows: number, cols: number, f: QuantFormat): Handle {
    const o = this.out('f32', rows * cols);
    this.addon.dequantize(this.parts(q), rows, cols, ...this.formatArgs(f), f32(o));
    return o;
  }
  dequantizeMatmul(x: Handle, xRows: number, q: QuantHandles, rows: number, cols: number, f: QuantFormat): Handle {
    const o = this.out('f32', xRows * rows);
    this.addon.dequantizeMatmul(f32(x).subarray(0, xRows * cols), xRows, this.parts(q), rows, cols, ...this.formatArgs(f), f32(o));
    return o;
  }
  dequantizeMatmulT(dy: Handle, n: number, q: QuantHandles, rows: number, cols: number, f: QuantFormat): Handle {
    const o = this.out('f32', n * cols);
    this.addon.dequantizeMatmulT(f32(dy).subarray(0, n * rows), n, this.parts(q), rows, cols, ...this.formatArgs(f), f32(o));
    return o;
  }
  icqSearch(w: Handle, rows: number, cols: number, f: QuantFormat, p: IcqSearchParams): Handle {
    checkFormat('icqSearch', f);
    const o = this.out('f32', rows * Math.ceil(cols / f.group));
    const params = [p.lambda, p.n, p.sigma, p.clipLow, p.clipHigh, p.clipPoints];
    const bad = this.addon.icqSearch(f32(w).subarray(0, rows * cols), rows, cols, ...this.formatArgs(f), params, f32(o));
    if (bad >= 0) {
      const v = f32(w)[bad];
      this.free(o);
      throw new NonFiniteError(`icqSearch: expected finite weights, got ${v} at row ${Math.floor(bad / cols)}, col ${bad % cols} of [${rows}, ${cols}]`);
    }
    return o;
  }

  // ---- async (inference only: ts/ops/async.ts) ----
  // The kernel runs off the JS thread on the pool; the promise resolves to the new output handle.
  // Freeing an input while the promise is pending is safe (the addon defers the free until the
  // kernel is done) and does not change the result; writing an input meanwhile does.

  private async settle(o: NativeHandle, run: Promise<void>): Promise<Handle> {
    try {
      await run;
    } catch (e) {
      this.free(o);
      throw e;
    }
    return o;
  }
  async matmulAsync(a: Handle, b: Handle, d: MatmulDims): Promise<Handle> {
    const o = this.out('f32', d.batch * d.m * d.n);
    return this.settle(o, this.addon.matmulAsync(f32(a), f32(b), d.batch, d.m, d.k, d.n, d.transA, d.transB, d.aBatchStride, d.bBatchStride, f32(o)));
  }
  async dequantizeMatmulAsync(x: Handle, xRows: number, q: QuantHandles, rows: number, cols: number, f: QuantFormat): Promise<Handle> {
    const o = this.out('f32', xRows * rows);
    return this.settle(o, this.addon.dequantizeMatmulAsync(f32(x).subarray(0, xRows * cols), xRows, this.parts(q), rows, cols, ...this.formatArgs(f), f32(o)));
  }
  async dequantizeAsync(q: QuantHandles, rows: number, cols: number, f: QuantFormat): Promise<Handle> {
    const o = this.out('f32', rows * cols);
    return this.settle(o, this.addon.dequantizeAsync(this.parts(q), rows, cols, ...this.formatArgs(f), f32(o)));
  }
}

registerBackend('native', () => new NativeBackend(loadNativeAddon()), 20);

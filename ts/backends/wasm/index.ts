// The WASM backend: tensors live in the module's linear memory (alloc/free are exports), kernels
// are single calls taking byte offsets, and JS views are re-created after memory grows. The SIMD
// build is used where the runtime supports simd128, the scalar build elsewhere.

import type { Backend, BackendInfo, BinaryOp, Handle, IcqSearchParams, MatmulDims, QuantHandles, ReduceOp, RopeParams, UnaryOp } from '../../backend.js';
import { BYTES_PER_ELEMENT, type AnyTypedArray, type DType } from '../../dtype.js';
import { BackendError, NonFiniteError, ValueError } from '../../errors.js';
import { checkFormat, type QuantFormat } from '../../quant/formats.js';
import { PART_NAMES, partLayout } from '../../quant/layout.js';
import { registerBackend } from '../../registry.js';
import { BINARY, DTYPE_CODE, REDUCE, UNARY } from '../kernel-codes.js';
import { compileWasm, compileWasmSync, defaultModuleUrl, instantiate, simdSupported, type WasmSource } from './loader.js';

interface WasmHandle {
  ptr: number;
  bytes: number;
}

type Fn = (...args: number[]) => number;

const SCRATCH_WORDS = 1024;
const REQUIRED_EXPORTS = [
  'simd', 'alloc_bytes', 'alloc_zeroed_bytes', 'free_bytes', 'fill_f32', 'unary', 'affine', 'power', 'binary', 'reduce', 'cast',
  'strided', 'write_strided', 'gather', 'scatter_add_rows', 'matmul', 'rmsnorm', 'rmsnorm_backward', 'rope', 'softmax',
  'softmax_backward', 'cross_entropy', 'cross_entropy_backward', 'quantize', 'dequantize', 'dequantize_matmul', 'dequantize_matmul_t', 'icq_search',
];

export class WasmBackend implements Backend {
  readonly name: string;
  private readonly fn: Record<string, Fn>;
  private readonly memory: WebAssembly.Memory;
  private readonly live = new Set<WasmHandle>();
  private readonly scratch: number;

  constructor(module: WebAssembly.Module, readonly simd: boolean, name = 'wasm') {
    this.name = name;
    const exports = instantiate(module);
    this.memory = exports.memory;
    this.fn = exports as unknown as Record<string, Fn>;
    const missing = REQUIRED_EXPORTS.filter((k) => typeof this.fn[k] !== 'function');
    if (missing.length) throw new BackendError(`the wasm module is not a quantlora build: it lacks ${missing.join(', ')}`);
    this.scratch = this.fn.alloc_bytes(SCRATCH_WORDS * 4) >>> 0;
    if (!!this.fn.simd() !== simd) throw new ValueError(`wasm module: expected a ${simd ? 'SIMD' : 'scalar'} build`);
  }

  info(): BackendInfo {
    return { name: this.name, details: { kind: 'WebAssembly', simd: this.simd, threads: 1, memoryMiB: +(this.memory.buffer.byteLength / 2 ** 20).toFixed(1) } };
  }

  // ---- memory ----

  private alloc(bytes: number, zeroed = false): WasmHandle {
    const ptr = (zeroed ? this.fn.alloc_zeroed_bytes(bytes) : this.fn.alloc_bytes(bytes)) >>> 0;
    if (!ptr) throw new ValueError(`wasm: out of memory allocating ${bytes} bytes`);
    const h = { ptr, bytes };
    this.live.add(h);
    return h;
  }

  private out(dtype: DType, size: number): WasmHandle {
    return this.alloc(size * BYTES_PER_ELEMENT[dtype]);
  }

  private view(h: WasmHandle, dtype: DType, size: number): AnyTypedArray {
    const buf = this.memory.buffer; // fresh after any growth
    if (dtype === 'f32') return new Float32Array(buf, h.ptr, size);
    if (dtype === 'i32') return new Int32Array(buf, h.ptr, size);
    return new Uint8Array(buf, h.ptr, size);
  }

  /** Writes integer lists into the scratch area; returns their offsets. */
  private lists(...xs: number[][]): number[] {
    const words = new Uint32Array(this.memory.buffer, this.scratch, SCRATCH_WORDS);
    let at = 0;
    return xs.map((list) => {
      if (at + list.length > SCRATCH_WORDS) throw new ValueError(`wasm: shape lists longer than ${SCRATCH_WORDS} entries`);
      words.set(list, at);
      const ptr = this.scratch + at * 4;
      at += list.length;
      return ptr;
    });
  }

  upload(data: AnyTypedArray): Handle {
    const h = this.alloc(data.byteLength);
    new Uint8Array(this.memory.buffer, h.ptr, data.byteLength).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return h;
  }
  zeros(dtype: DType, size: number): Handle {
    return this.alloc(size * BYTES_PER_ELEMENT[dtype], true);
  }
  fill(size: number, value: number): Handle {
    const h = this.out('f32', size);
    this.fn.fill_f32(h.ptr, size, value);
    return h;
  }
  async read(h: Handle, dtype: DType, size: number): Promise<AnyTypedArray> {
    return this.readSync(h, dtype, size);
  }
  readSync(h: Handle, dtype: DType, size: number): AnyTypedArray {
    return this.view(h as WasmHandle, dtype, size).slice();
  }
  free(h: Handle): void {
    const w = h as WasmHandle;
    if (!this.live.delete(w)) return;
    this.fn.free_bytes(w.ptr, w.bytes);
  }
  liveBuffers(): number {
    return this.live.size;
  }

  // ---- elementwise ----

  unary(op: UnaryOp, a: Handle, size: number): Handle {
    const o = this.out('f32', size);
    this.fn.unary(UNARY.indexOf(op), (a as WasmHandle).ptr, size, o.ptr);
    return o;
  }
  affine(a: Handle, size: number, mul: number, add: number): Handle {
    const o = this.out('f32', size);
    this.fn.affine((a as WasmHandle).ptr, size, mul, add, o.ptr);
    return o;
  }
  pow(a: Handle, size: number, p: number): Handle {
    const o = this.out('f32', size);
    this.fn.power((a as WasmHandle).ptr, size, p, o.ptr);
    return o;
  }
  binary(op: BinaryOp, a: Handle, aShape: number[], b: Handle, bShape: number[], outShape: number[]): Handle {
    const o = this.out('f32', outShape.reduce((x, y) => x * y, 1));
    const [as, bs, os] = this.lists(aShape, bShape, outShape);
    this.fn.binary(BINARY.indexOf(op), (a as WasmHandle).ptr, as, (b as WasmHandle).ptr, bs, os, outShape.length, o.ptr);
    return o;
  }
  cast(a: Handle, from: DType, to: DType, size: number): Handle {
    const o = this.out(to, size);
    this.fn.cast(DTYPE_CODE[from], DTYPE_CODE[to], (a as WasmHandle).ptr, size, o.ptr);
    return o;
  }
  reduce(op: ReduceOp, a: Handle, shape: number[], axes: number[]): Handle {
    const o = this.out('f32', shape.reduce((x, d, i) => x * (axes.includes(i) ? 1 : d), 1));
    const [sh, ax] = this.lists(shape, axes);
    this.fn.reduce(REDUCE.indexOf(op), (a as WasmHandle).ptr, sh, shape.length, ax, axes.length, o.ptr);
    return o;
  }

  // ---- layout ----

  strided(a: Handle, dtype: DType, offset: number, strides: number[], outShape: number[]): Handle {
    const o = this.out(dtype, outShape.reduce((x, y) => x * y, 1));
    const [st, sh] = this.lists(strides, outShape);
    this.fn.strided(DTYPE_CODE[dtype], (a as WasmHandle).ptr, offset, st, sh, outShape.length, o.ptr);
    return o;
  }
  writeStrided(dst: Handle, dtype: DType, src: Handle, offset: number, strides: number[], srcShape: number[]): void {
    const [st, sh] = this.lists(strides, srcShape);
    this.fn.write_strided(DTYPE_CODE[dtype], (dst as WasmHandle).ptr, (src as WasmHandle).ptr, offset, st, sh, srcShape.length);
  }
  gather(table: Handle, rows: number, dim: number, ids: Handle, count: number): Handle {
    const o = this.out('f32', count * dim);
    const bad = this.fn.gather((table as WasmHandle).ptr, rows, dim, (ids as WasmHandle).ptr, count, o.ptr);
    if (bad >= 0) {
      const id = this.view(ids as WasmHandle, 'i32', count)[bad];
      this.free(o);
      throw new ValueError(`gather: id ${id} at position ${bad} is outside [0, ${rows})`);
    }
    return o;
  }
  scatterAddRows(grad: Handle, count: number, dim: number, ids: Handle, rows: number): Handle {
    const o = this.out('f32', rows * dim);
    this.fn.scatter_add_rows((grad as WasmHandle).ptr, count, dim, (ids as WasmHandle).ptr, rows, o.ptr);
    return o;
  }

  // ---- linear algebra ----

  matmul(a: Handle, b: Handle, d: MatmulDims): Handle {
    const o = this.out('f32', d.batch * d.m * d.n);
    this.fn.matmul((a as WasmHandle).ptr, (b as WasmHandle).ptr, d.batch, d.m, d.k, d.n, +d.transA, +d.transB, d.aBatchStride, d.bBatchStride, o.ptr);
    return o;
  }

  // ---- transformer blocks ----

  rmsnorm(x: Handle, w: Handle, rows: number, dim: number, eps: number): Handle {
    const o = this.out('f32', rows * dim);
    this.fn.rmsnorm((x as WasmHandle).ptr, (w as WasmHandle).ptr, rows, dim, eps, o.ptr);
    return o;
  }
  rmsnormBackward(x: Handle, w: Handle, dy: Handle, rows: number, dim: number, eps: number): [Handle, Handle] {
    const dx = this.out('f32', rows * dim);
    const dw = this.out('f32', dim);
    this.fn.rmsnorm_backward((x as WasmHandle).ptr, (w as WasmHandle).ptr, (dy as WasmHandle).ptr, rows, dim, eps, dx.ptr, dw.ptr);
    return [dx, dw];
  }
  rope(x: Handle, p: RopeParams): Handle {
    const o = this.out('f32', p.outer * p.seq * p.dim);
    this.fn.rope((x as WasmHandle).ptr, p.outer, p.seq, p.dim, p.theta, p.offset, +(p.style === 'interleaved'), +p.inverse, o.ptr);
    return o;
  }
  softmax(x: Handle, rows: number, cols: number, causalQueries: number): Handle {
    const o = this.out('f32', rows * cols);
    this.fn.softmax((x as WasmHandle).ptr, rows, cols, causalQueries, o.ptr);
    return o;
  }
  softmaxBackward(y: Handle, dy: Handle, rows: number, cols: number): Handle {
    const o = this.out('f32', rows * cols);
    this.fn.softmax_backward((y as WasmHandle).ptr, (dy as WasmHandle).ptr, rows, cols, o.ptr);
    return o;
  }
  private targetError(targets: Handle, rows: number, row: number, vocab: number): ValueError {
    const t = this.view(targets as WasmHandle, 'i32', rows)[row];
    return new ValueError(`crossEntropy: target ${t} of row ${row} is outside [0, ${vocab}) and is not the ignore index`);
  }
  crossEntropy(logits: Handle, targets: Handle, rows: number, vocab: number, ignoreIndex: number): Handle {
    const o = this.out('f32', 1);
    const bad = this.fn.cross_entropy((logits as WasmHandle).ptr, (targets as WasmHandle).ptr, rows, vocab, ignoreIndex, o.ptr);
    if (bad >= 0) { this.free(o); throw this.targetError(targets, rows, bad, vocab); }
    return o;
  }
  crossEntropyBackward(logits: Handle, targets: Handle, dLoss: Handle, rows: number, vocab: number, ignoreIndex: number): Handle {
    const o = this.out('f32', rows * vocab);
    const bad = this.fn.cross_entropy_backward((logits as WasmHandle).ptr, (targets as WasmHandle).ptr, (dLoss as WasmHandle).ptr, rows, vocab, ignoreIndex, o.ptr);
    if (bad >= 0) { this.free(o); throw this.targetError(targets, rows, bad, vocab); }
    return o;
  }

  // ---- quantization ----

  private formatArgs(f: QuantFormat): number[] {
    return [f.kind === 'nf' ? 0 : 1, f.bits, f.group, +f.doubleQuant, +f.symmetric];
  }
  private partsList(q: QuantHandles): number {
    const h = q as unknown as Record<string, WasmHandle | undefined>;
    return this.lists(PART_NAMES.map((k) => h[k]?.ptr ?? 0))[0];
  }
  quantize(w: Handle, rows: number, cols: number, f: QuantFormat): QuantHandles {
    checkFormat('quantize', f);
    const layout = partLayout(rows, cols, f);
    const parts: Record<string, WasmHandle> = {};
    for (const k of PART_NAMES) {
      const spec = layout[k];
      if (spec) parts[k] = this.out(spec.dtype, spec.size);
    }
    const q = parts as unknown as QuantHandles;
    const bad = this.fn.quantize((w as WasmHandle).ptr, rows, cols, ...this.formatArgs(f), this.partsList(q));
    if (bad >= 0) {
      const v = this.view(w as WasmHandle, 'f32', rows * cols)[bad];
      for (const h of Object.values(parts)) this.free(h);
      throw new NonFiniteError(`quantize: expected finite weights, got ${v} at row ${Math.floor(bad / cols)}, col ${bad % cols} of [${rows}, ${cols}]`);
    }
    return q;
  }
  dequantize(q: QuantHandles, rows: number, cols: number, f: QuantFormat): Handle {
    const o = this.out('f32', rows * cols);
    this.fn.dequantize(this.partsList(q), rows, cols, ...this.formatArgs(f), o.ptr);
    return o;
  }
  dequantizeMatmul(x: Handle, xRows: number, q: QuantHandles, rows: number, cols: number, f: QuantFormat): Handle {
    const o = this.out('f32', xRows * rows);
    this.fn.dequantize_matmul((x as WasmHandle).ptr, xRows, this.partsList(q), rows, cols, ...this.formatArgs(f), o.ptr);
    return o;
  }
  dequantizeMatmulT(dy: Handle, n: number, q: QuantHandles, rows: number, cols: number, f: QuantFormat): Handle {
    const o = this.out('f32', n * cols);
    this.fn.dequantize_matmul_t((dy as WasmHandle).ptr, n, this.partsList(q), rows, cols, ...this.formatArgs(f), o.ptr);
    return o;
  }
  icqSearch(w: Handle, rows: number, cols: number, f: QuantFormat, p: IcqSearchParams): Handle {
    checkFormat('icqSearch', f);
    const o = this.out('f32', rows * Math.ceil(cols / f.group));
    const bad = this.fn.icq_search((w as WasmHandle).ptr, rows, cols, ...this.formatArgs(f), p.lambda, p.n, p.sigma, p.clipLow, p.clipHigh, p.clipPoints, o.ptr);
    if (bad >= 0) {
      const v = this.view(w as WasmHandle, 'f32', rows * cols)[bad];
      this.free(o);
      throw new NonFiniteError(`icqSearch: expected finite weights, got ${v} at row ${Math.floor(bad / cols)}, col ${bad % cols} of [${rows}, ${cols}]`);
    }
    return o;
  }
}

/** A wasm backend from any source of the module (bytes, URL, or compiled module). */
export async function loadWasmBackend(source?: WasmSource, opts: { simd?: boolean; name?: string } = {}): Promise<WasmBackend> {
  const simd = opts.simd ?? simdSupported();
  return new WasmBackend(await compileWasm(source ?? defaultModuleUrl(simd)), simd, opts.name);
}

/** Synchronous variant (bytes, a compiled module, or a file: URL in Node). */
export function loadWasmBackendSync(source?: WasmSource, opts: { simd?: boolean; name?: string } = {}): WasmBackend {
  const simd = opts.simd ?? simdSupported();
  return new WasmBackend(compileWasmSync(source ?? defaultModuleUrl(simd)), simd, opts.name);
}

/** Sync where the runtime can read the module file directly (Node), else async (fetch). */
function defaultFactory(simd: boolean, name: string): WasmBackend | Promise<WasmBackend> {
  try {
    return loadWasmBackendSync(undefined, { simd, name });
  } catch (err) {
    if ((err as Error).message.includes('synchronously')) return loadWasmBackend(undefined, { simd, name });
    throw err;
  }
}

registerBackend('wasm', () => defaultFactory(simdSupported(), 'wasm'), 10);
// The scalar build as a backend of its own, so parity tests and benchmarks cover it everywhere.
registerBackend('wasm-scalar', () => defaultFactory(false, 'wasm-scalar'), 5);

// The native addon (crates/node, napi-rs): its JS interface and a loader. Every kernel of
// crates/kernels with the op codes, dtype codes and return codes of the wasm layer
// (crates/wasm/src/lib.rs), over typed arrays instead of offsets. Outputs are caller-allocated
// typed arrays the kernel writes into; a view may be longer than a kernel needs (only its first
// elements are used), never shorter: every length is checked against the shape numbers and a
// mismatch throws an Error naming the function and argument. Shapes, strides and axes are
// Uint32Arrays. Inputs may alias outputs (they are copied first); two outputs may not overlap.
//
// This file has no static `node:` imports: it is bundled for browsers too, where
// loadNativeAddon() just throws.

import { BackendError } from '../../errors.js';

/** The six quantized-weight parts as byte views, in ts/quant/layout.ts PART_NAMES order:
 *  codes (u8), scales (f32), zeros (u8), scaleCodes (u8), scale2 (f32), scaleOffset (f32);
 *  an empty Uint8Array where the format has no such part. */
export type NativeParts = readonly Uint8Array[];

export interface NativeInfo {
  /** Best x86-64 feature set found at run time ('avx512f', 'avx2+fma', 'sse2'), else the arch name. */
  simd: string;
  /** Size of the process-wide thread pool. */
  threads: number;
  /** Version of the addon crate. */
  version: string;
}

export interface NativeAddon {
  // ---- memory ----
  /** Native memory (64-byte aligned) as an external ArrayBuffer, no copy; zeroed on request.
   *  Freed by release(), or by a finalizer if JS collects it first. 0 bytes: a plain empty
   *  ArrayBuffer, not counted by liveAllocations(). */
  alloc(bytes: number, zeroed: boolean): ArrayBuffer;
  /** Detaches buf (every view of it becomes length 0) and frees its memory now. Releasing a
   *  released (detached) or empty buffer is a no-op; a buffer alloc() did not make throws. */
  release(buf: ArrayBuffer): void;
  /** Allocations not yet freed by release() or a finalizer. */
  liveAllocations(): number;
  info(): NativeInfo;
  /** Rebuilds the thread pool with n threads (0 = one per core; default: QUANTLORA_THREADS or 0). */
  setThreads(n: number): void;
  /** out[0 .. out.length) = value. */
  fillF32(out: Float32Array, value: number): void;
  /** Reads every element of a on the whole pool and returns their sum (memory-bandwidth probe). */
  streamRead(a: Float32Array): number;

  // ---- elementwise (op codes: ts/backends/native/index.ts UNARY / BINARY / REDUCE order) ----
  /** out[i] = op(a[i]) for i < a.length. */
  unary(op: number, a: Float32Array, out: Float32Array): void;
  affine(a: Float32Array, mul: number, add: number, out: Float32Array): void;
  power(a: Float32Array, p: number, out: Float32Array): void;
  binary(op: number, a: Float32Array, aShape: Uint32Array, b: Float32Array, bShape: Uint32Array, outShape: Uint32Array, out: Float32Array): void;
  reduce(op: number, a: Float32Array, shape: Uint32Array, axes: Uint32Array, out: Float32Array): void;
  /** dtype codes 0 f32, 1 i32, 2 u8; a and out are byte views; n elements. */
  cast(from: number, to: number, a: Uint8Array, n: number, out: Uint8Array): void;

  // ---- layout (byte views of `dtype` elements; offset and strides in elements) ----
  strided(dtype: number, a: Uint8Array, offset: number, strides: Uint32Array, shape: Uint32Array, out: Uint8Array): void;
  writeStrided(dtype: number, dst: Uint8Array, src: Uint8Array, offset: number, strides: Uint32Array, shape: Uint32Array): void;
  /** out [ids.length, dim] = table rows; returns -1, or the position of the first id outside [0, rows). */
  gather(table: Float32Array, rows: number, dim: number, ids: Int32Array, out: Float32Array): number;
  scatterAddRows(grad: Float32Array, count: number, dim: number, ids: Int32Array, rows: number, out: Float32Array): void;

  // ---- linear algebra ----
  /** out [batch, m, n] = op(a) · op(b); split over the thread pool when large (bit-identical). */
  matmul(a: Float32Array, b: Float32Array, batch: number, m: number, k: number, n: number, transA: boolean, transB: boolean, aBatchStride: number, bBatchStride: number, out: Float32Array): void;

  // ---- transformer blocks ----
  rmsnorm(x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number, out: Float32Array): void;
  rmsnormBackward(x: Float32Array, w: Float32Array, dy: Float32Array, rows: number, dim: number, eps: number, dx: Float32Array, dw: Float32Array): void;
  rope(x: Float32Array, outer: number, seq: number, dim: number, theta: number, offset: number, interleaved: boolean, inverse: boolean, out: Float32Array): void;
  softmax(x: Float32Array, rows: number, cols: number, causalQueries: number, out: Float32Array): void;
  softmaxBackward(y: Float32Array, dy: Float32Array, rows: number, cols: number, dx: Float32Array): void;
  /** out[0] = mean loss; returns -1, or the row whose target is out of range. */
  crossEntropy(logits: Float32Array, targets: Int32Array, rows: number, vocab: number, ignoreIndex: number, out: Float32Array): number;
  /** dLoss[0] scales the gradient; returns -1, or the row whose target is out of range. */
  crossEntropyBackward(logits: Float32Array, targets: Int32Array, dLoss: Float32Array, rows: number, vocab: number, ignoreIndex: number, out: Float32Array): number;

  // ---- quantization (kind 0 nf, 1 int) ----
  /** Writes every present part; returns -1, or the index of the first non-finite weight. */
  quantize(w: Float32Array, rows: number, cols: number, kind: number, bits: number, group: number, doubleQuant: boolean, symmetric: boolean, parts: NativeParts): number;
  dequantize(parts: NativeParts, rows: number, cols: number, kind: number, bits: number, group: number, doubleQuant: boolean, symmetric: boolean, out: Float32Array): void;
  /** out [xRows, rows] = x [xRows, cols] · Wᵀ; split over the thread pool by weight rows when large. */
  dequantizeMatmul(x: Float32Array, xRows: number, parts: NativeParts, rows: number, cols: number, kind: number, bits: number, group: number, doubleQuant: boolean, symmetric: boolean, out: Float32Array): void;
  /** out [n, cols] = dy [n, rows] · W (dequantizeMatmul's backward, W never materialized); split
   *  over the thread pool by output columns when large (bit-identical to one thread). */
  dequantizeMatmulT(dy: Float32Array, n: number, parts: NativeParts, rows: number, cols: number, kind: number, bits: number, group: number, doubleQuant: boolean, symmetric: boolean, out: Float32Array): void;
  /** ICQ search: out[g] = τ (nf) or clip ratio (int) per group; params = [lambda, n, sigma,
   *  clipLow, clipHigh, clipPoints]; rows split over the pool. Returns -1, or the index of the
   *  first non-finite weight. */
  icqSearch(w: Float32Array, rows: number, cols: number, kind: number, bits: number, group: number, doubleQuant: boolean, symmetric: boolean, params: number[], out: Float32Array): number;

  // ---- async (crates/node/src/tasks.rs): the same kernels on a libuv worker thread, which hands
  // the work to the thread pool; the promise resolves (to undefined) once out is written, with the
  // bits the synchronous kernel would write. Argument errors reject the promise (with the
  // synchronous kernel's message, named <kernel>Async) instead of throwing; a panic rejects too.
  // Memory made by alloc() is used in place and pinned: release() of a buffer a task uses
  // detaches it at once but frees it only when the task is done (liveAllocations() counts it
  // until then). Other typed arrays are copied (inputs at the call, out when the task resolves).
  // Until the promise settles, do not write the inputs or read out.
  matmulAsync(a: Float32Array, b: Float32Array, batch: number, m: number, k: number, n: number, transA: boolean, transB: boolean, aBatchStride: number, bBatchStride: number, out: Float32Array): Promise<void>;
  dequantizeMatmulAsync(x: Float32Array, xRows: number, parts: NativeParts, rows: number, cols: number, kind: number, bits: number, group: number, doubleQuant: boolean, symmetric: boolean, out: Float32Array): Promise<void>;
  dequantizeAsync(parts: NativeParts, rows: number, cols: number, kind: number, bits: number, group: number, doubleQuant: boolean, symmetric: boolean, out: Float32Array): Promise<void>;
}

interface ProcessLike {
  platform?: string;
  arch?: string;
  env?: Record<string, string | undefined>;
  getBuiltinModule?: (id: string) => unknown;
}

/** The addon's file names as napi-rs names them, most likely first:
 *  quantlora.<platform>-<arch>[-gnu|-musl|-msvc].node (on Linux both libc variants). */
export function nativeAddonFileNames(proc: ProcessLike): string[] {
  const base = `quantlora.${proc.platform ?? 'unknown'}-${proc.arch ?? 'unknown'}`;
  if (proc.platform === 'linux') return [`${base}-gnu.node`, `${base}-musl.node`];
  if (proc.platform === 'win32') return [`${base}-msvc.node`];
  return [`${base}.node`];
}

let cached: NativeAddon | undefined;

/** Loads the addon: $QUANTLORA_NATIVE_ADDON, then crates/node/ of the repository (from
 *  ts/backends/native/), then native/ next to a bundled dist/ file, then the platform package
 *  @quantlora/<platform>-<arch>[-libc] a published build would install. Throws BackendError listing
 *  every path tried and why it failed. */
export function loadNativeAddon(): NativeAddon {
  if (cached) return cached;
  const proc = (globalThis as { process?: ProcessLike }).process;
  const mod = proc?.getBuiltinModule?.('node:module') as { createRequire(url: string | URL): (id: string) => unknown } | undefined;
  const fs = proc?.getBuiltinModule?.('node:fs') as { existsSync(p: string): boolean } | undefined;
  const url = proc?.getBuiltinModule?.('node:url') as { fileURLToPath(u: URL): string } | undefined;
  if (!proc || !mod || !fs || !url) {
    throw new BackendError('native addon: needs Node.js >= 20.16 (process.getBuiltinModule); not available in this runtime');
  }
  const names = nativeAddonFileNames(proc);
  const candidates: string[] = [];
  const envPath = proc.env?.QUANTLORA_NATIVE_ADDON;
  if (envPath) candidates.push(envPath);
  const here = import.meta.url;
  for (const dir of ['../../../crates/node/', './native/']) {
    const found: string[] = [];
    for (const name of names) {
      try {
        const u = new URL(dir + name, here);
        if (u.protocol === 'file:') found.push(url.fileURLToPath(u));
      } catch {
        // not a base URL this runtime resolves: skip
      }
    }
    // the other libc's name is only worth a line when its file is there
    candidates.push(...found.filter((p, i) => i === 0 || fs.existsSync(p)));
  }
  const require = mod.createRequire(here);
  const failures: string[] = [];
  for (const path of candidates) {
    if (!fs.existsSync(path)) {
      failures.push(`${path}: missing`);
      continue;
    }
    try {
      const addon = require(path) as NativeAddon;
      if (typeof addon?.matmul !== 'function' || typeof addon?.alloc !== 'function') {
        failures.push(`${path}: loaded, but it is not the quantlora addon (no matmul/alloc export)`);
        continue;
      }
      cached = addon;
      return addon;
    } catch (e) {
      failures.push(`${path}: load error: ${(e as Error).message}`);
    }
  }
  // the per-platform npm packages a published build ships (napi-rs' layout): @quantlora/<triple>
  for (const name of names) {
    const pkg = `@quantlora/${name.replace(/^quantlora\./, '').replace(/\.node$/, '')}`;
    try {
      const addon = require(pkg) as NativeAddon;
      if (typeof addon?.matmul === 'function' && typeof addon?.alloc === 'function') {
        cached = addon;
        return addon;
      }
      failures.push(`${pkg}: installed, but it is not the quantlora addon`);
    } catch (e) {
      failures.push(`${pkg}: ${(e as { code?: string }).code === 'MODULE_NOT_FOUND' ? 'not installed' : `load error: ${(e as Error).message}`}`);
    }
  }
  throw new BackendError(
    `native addon not found or not loadable (build it with \`bash crates/node/build.sh\`); tried:\n  ${failures.join('\n  ')}`,
  );
}

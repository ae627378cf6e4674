// Long kernels off the JS thread: matmulAsync, dequantizeMatmulAsync, dequantizeAsync. When the
// tensors' backend has an async kernel (the native backend does) and the problem is big enough
// for the hand-off to a worker thread to be noise, the kernel runs there and the event loop keeps
// running meanwhile; otherwise the synchronous kernel runs and the promise is already settled.
//
// Inference only: nothing is recorded for autograd (the result never requires grad). Shapes and
// dtypes are checked exactly as by matmul / dequantizeMatmul (the same helpers: matmulPlan,
// dequantizeMatmulPlan); a failed check rejects the promise with the sync op's error. A quantized
// weight with parts the kernels do not read (composed in TS, e.g. NF-ICQ's offsets) always takes
// the sync op.
//
// The result is a new tensor the caller owns: it is never tracked by a tidy() scope (tidy is
// synchronous; the async result arrives after it). While the promise is pending the inputs must
// not be written; disposing them is safe on the native backend (it frees their memory only once
// the kernel is done).

import type { Backend } from '../backend.js';
import { noGrad } from '../autograd.js';
import { dequantize, dequantizeMatmul, dequantizeMatmulPlan, type QuantizedTensor } from '../quant/api.js';
import { PART_NAMES } from '../quant/layout.js';
import { keep, tidy, type Tensor } from '../tensor.js';
import { matmulPlan, type MatmulOptions } from './matmul.js';
import { out } from './util.js';

export type AsyncMode = 'auto' | 'sync' | 'async';

export interface AsyncOptions {
  /** 'auto' (default): async when the backend has the kernel and the problem is at least the
   *  op's ASYNC_MIN_MACS; 'async': whenever the backend has it; 'sync': never. */
  mode?: AsyncMode;
}

export type AsyncOp = 'matmul' | 'dequantizeMatmul' | 'dequantize';

/**
 * Work (multiply-adds; weight elements for dequantize) from which the 'auto' mode hands a kernel
 * to a worker thread. bench/async-line.ts measured (native backend, 2-core VM, 2 pool threads,
 * medians, sync call vs awaiting the async call, output alloc/free included; bench/README.md
 * "Async kernels: where the line is") a hand-off of ~25-35 µs (more on a loaded machine):
 *   matmul    256x256x256 (2^24): 501 vs 537 µs, +7%;  128x256x256: +12%;  512³: +2%
 *   GEMV nf4  1x2048x2048 (2^22): 431 vs 461 µs, +7%;  1x1024²: +19%;      1x4096²: +4%
 *   dequantize nf4 1024x1024 (2^20): 630 vs 610 µs (noise); 512x512: +17%
 * i.e. async from ~0.4-0.5 ms of work, where the hand-off is under 10%.
 */
export const ASYNC_MIN_MACS: Readonly<Record<AsyncOp, number>> = {
  matmul: 1 << 24,
  dequantizeMatmul: 1 << 22,
  dequantize: 1 << 20,
};

const hasAsync = (be: Backend, op: AsyncOp): boolean =>
  typeof (op === 'matmul' ? be.matmulAsync : op === 'dequantizeMatmul' ? be.dequantizeMatmulAsync : be.dequantizeAsync) === 'function';

/** How an async op runs a problem of `work` (see ASYNC_MIN_MACS) on backend be: 'async' on a worker
 *  thread, or 'sync' on the calling thread (always, when the backend has no async kernel). */
export function asyncDecision(be: Backend, op: AsyncOp, work: number, mode: AsyncMode = 'auto'): 'sync' | 'async' {
  if (mode === 'sync' || !hasAsync(be, op)) return 'sync';
  return mode === 'async' || work >= ASYNC_MIN_MACS[op] ? 'async' : 'sync';
}

/** True when the backend kernels alone compute q's product (no part composed in TS on top, such
 *  as NF-ICQ's per-group offsets): only then can the async kernel stand in for the sync op. */
const kernelOnly = (q: QuantizedTensor): boolean =>
  Object.entries(q.parts).every(([k, t]) => !t || (PART_NAMES as readonly string[]).includes(k));

/** The sync op's result, intermediates freed, outside any tidy scope. */
const syncOp = (f: () => Tensor): Tensor => keep(tidy(() => noGrad(f)));

/** The decision matmulAsync(a, b, opts) makes (after matmul's checks). */
export function matmulAsyncDecision(a: Tensor, b: Tensor, opts: MatmulOptions & AsyncOptions = {}): 'sync' | 'async' {
  const { be, dims: d } = matmulPlan(a, b, opts);
  return asyncDecision(be, 'matmul', d.batch * d.m * d.k * d.n, opts.mode);
}

/** The decision dequantizeMatmulAsync(x, q, opts) makes (after dequantizeMatmul's checks). */
export function dequantizeMatmulAsyncDecision(x: Tensor, q: QuantizedTensor, opts: AsyncOptions = {}): 'sync' | 'async' {
  const { rows, cols, xRows } = dequantizeMatmulPlan(x, q);
  return kernelOnly(q) ? asyncDecision(x.backend, 'dequantizeMatmul', xRows * rows * cols, opts.mode) : 'sync';
}

/** matmul(a, b, opts) (same shapes, same bits), on a worker thread when large; inference only. */
export async function matmulAsync(a: Tensor, b: Tensor, opts: MatmulOptions & AsyncOptions = {}): Promise<Tensor> {
  const { be, dims: d, shape } = matmulPlan(a, b, opts);
  const how = asyncDecision(be, 'matmul', d.batch * d.m * d.k * d.n, opts.mode);
  const h = how === 'async' ? await be.matmulAsync!(a.handle, b.handle, d) : be.matmul(a.handle, b.handle, d);
  return keep(out(be, h, shape));
}

/** dequantizeMatmul(x, q) (x [..., in] · Wᵀ), on a worker thread when large; inference only. */
export async function dequantizeMatmulAsync(x: Tensor, q: QuantizedTensor, opts: AsyncOptions = {}): Promise<Tensor> {
  const { rows, cols, xRows, shape } = dequantizeMatmulPlan(x, q);
  if (!kernelOnly(q)) return syncOp(() => dequantizeMatmul(x, q));
  const be = x.backend;
  const how = asyncDecision(be, 'dequantizeMatmul', xRows * rows * cols, opts.mode);
  const h = how === 'async'
    ? await be.dequantizeMatmulAsync!(x.handle, xRows, q.handles(), rows, cols, q.format)
    : be.dequantizeMatmul(x.handle, xRows, q.handles(), rows, cols, q.format);
  return keep(out(be, h, shape));
}

/** dequantize(q) (the float weight), on a worker thread when large. */
export async function dequantizeAsync(q: QuantizedTensor, opts: AsyncOptions = {}): Promise<Tensor> {
  if (!kernelOnly(q)) return syncOp(() => dequantize(q));
  const be = q.backend;
  const how = asyncDecision(be, 'dequantize', q.rows * q.cols, opts.mode);
  const h = how === 'async' ? await be.dequantizeAsync!(q.handles(), q.rows, q.cols, q.format) : be.dequantize(q.handles(), q.rows, q.cols, q.format);
  return keep(out(be, h, q.shape));
}

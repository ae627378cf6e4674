// Batched matmul with optional transposes and batch broadcasting, and its backward.

import type { Backend, MatmulDims } from '../backend.js';
import { record } from '../autograd.js';
import { ShapeError, describeShape } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { sumTo } from './reduce.js';
import { reshape } from './shape.js';
import { backendOf, expectDType, out, sizeOf } from './util.js';

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
}

/** What matmul(a, b, opts) computes, after its checks: the backend, the kernel's dimensions and
 *  the output shape. `fold`: a has batch dimensions and b is a shared 2-D matrix (not transA), so
 *  the batch is folded into the rows (dims is then that plain 2-D product). Throws as matmul does. */
export function matmulPlan(a: Tensor, b: Tensor, opts: MatmulOptions = {}): { be: Backend; dims: MatmulDims; shape: number[]; fold: boolean } {
  const transA = !!opts.transA;
  const transB = !!opts.transB;
  const be = backendOf('matmul', a, b);
  expectDType('matmul', a, 'f32', 'a');
  expectDType('matmul', b, 'f32', 'b');
  if (a.rank < 2 || b.rank < 2) throw new ShapeError(`matmul: both inputs need rank >= 2, got ${describeShape(a.shape)} and ${describeShape(b.shape)}`);
  const [m, k] = transA ? [a.shape[a.rank - 1], a.shape[a.rank - 2]] : [a.shape[a.rank - 2], a.shape[a.rank - 1]];
  const [kb, n] = transB ? [b.shape[b.rank - 1], b.shape[b.rank - 2]] : [b.shape[b.rank - 2], b.shape[b.rank - 1]];
  if (k !== kb) {
    throw new ShapeError(`matmul: inner dimensions differ: a ${describeShape(a.shape)}${transA ? 'ᵀ' : ''} has ${k}, b ${describeShape(b.shape)}${transB ? 'ᵀ' : ''} has ${kb}`);
  }
  const aBatch = a.shape.slice(0, -2);
  const bBatch = b.shape.slice(0, -2);
  if (bBatch.length === 0 && aBatch.length > 0 && !transA) {
    const dims = { batch: 1, m: sizeOf(aBatch) * m, k, n, transA, transB, aBatchStride: 0, bBatchStride: 0 };
    return { be, dims, shape: [...aBatch, m, n], fold: true };
  }
  if (aBatch.length && bBatch.length && (aBatch.length !== bBatch.length || aBatch.some((d, i) => d !== bBatch[i]))) {
    throw new ShapeError(`matmul: batch dimensions differ: ${describeShape(a.shape)} vs ${describeShape(b.shape)}`);
  }
  const batchShape = aBatch.length ? aBatch : bBatch;
  const dims = {
    batch: sizeOf(batchShape), m, k, n, transA, transB,
    aBatchStride: aBatch.length ? m * k : 0,
    bBatchStride: bBatch.length ? k * n : 0,
  };
  return { be, dims, shape: [...batchShape, m, n], fold: false };
}

/**
 * a [..., m, k] · b [..., k, n] -> [..., m, n] (with transA: a is [..., k, m]; transB: b is [..., n, k]).
 * Batch dimensions must be equal, or one side has none (it is then shared by every batch).
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const { be, dims, shape, fold } = matmulPlan(a, b, opts);
  // x·W with a shared 2-D W: fold the batch into the rows, so forward and backward are plain 2-D.
  if (fold) return reshape(matmul(reshape(a, [-1, dims.k]), b, opts), shape);
  const y = out(be, be.matmul(a.handle, b.handle, dims), shape);
  const { transA, transB } = dims;
  return record('matmul', [a, b], y, (g, { inputs: [x, w], needs }) => [
    // C = op(A)·op(B):  dA = dC·op(B)ᵀ (or its transpose),  dB = op(A)ᵀ·dC (or its transpose)
    needs[0] ? sumTo(transA ? matmul(w, g, { transA: transB, transB: true }) : matmul(g, w, { transB: !transB }), x.shape) : null,
    needs[1] ? sumTo(transB ? matmul(g, x, { transA: true, transB: transA }) : matmul(x, g, { transA: !transA }), w.shape) : null,
  ]);
}

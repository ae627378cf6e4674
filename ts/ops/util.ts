// Shared checks and helpers for ops.

import type { Backend, Handle } from '../backend.js';
import type { DType } from '../dtype.js';
import { BackendError, DTypeError, ShapeError, ValueError, describeShape } from '../errors.js';
import { fromHandle, sizeOf, type Tensor } from '../tensor.js';

export function out(backend: Backend, handle: Handle, shape: readonly number[], dtype: DType = 'f32'): Tensor {
  return fromHandle(backend, handle, shape, dtype);
}

/** The common backend of an op's inputs (all must live on the same one). */
export function backendOf(op: string, ...ts: Tensor[]): Backend {
  const b = ts[0].backend;
  for (const t of ts) {
    t.assertAlive();
    if (t.backend !== b) throw new BackendError(`${op}: inputs live on different backends ('${b.name}' and '${t.backend.name}'); move them first`);
  }
  return b;
}

export function expectDType(op: string, t: Tensor, dtype: DType, what = 'input'): void {
  if (t.dtype !== dtype) throw new DTypeError(`${op}: ${what} must be ${dtype}, got ${t.dtype} ${describeShape(t.shape)}`);
}

/** NumPy-style broadcast of two shapes; throws ShapeError naming both. */
export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const rank = Math.max(a.length, b.length);
  const outShape: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new ShapeError(`${op}: shapes ${describeShape(a)} and ${describeShape(b)} do not broadcast (dimension ${i}: ${da} vs ${db})`);
    outShape.push(da === 1 ? db : da);
  }
  return outShape;
}

export function padShape(shape: readonly number[], rank: number): number[] {
  return [...new Array<number>(rank - shape.length).fill(1), ...shape];
}

/** Normalizes possibly negative axes; undefined means all axes. */
export function normalizeAxes(op: string, rank: number, axes?: number | number[]): number[] {
  if (axes === undefined) return [...Array(rank).keys()];
  const list = Array.isArray(axes) ? axes : [axes];
  const result = list.map((a) => {
    if (!Number.isInteger(a) || a < -rank || a >= rank) throw new ValueError(`${op}: axis ${a} is out of range for a tensor of rank ${rank} (expected -${rank}..${rank - 1})`);
    return a < 0 ? a + rank : a;
  });
  if (new Set(result).size !== result.length) throw new ValueError(`${op}: axes ${list.join(', ')} repeat an axis`);
  return result.sort((x, y) => x - y);
}

export function rowMajorStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    strides[d] = s;
    s *= shape[d];
  }
  return strides;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export { sizeOf };

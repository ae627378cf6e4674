// Small helpers the training toolkit shares: in-place writes into a tensor's storage (so a parameter
// keeps its identity across optimizer steps and restores) and host reads.

import { noGrad } from '../autograd.js';
import { ShapeError, ValueError, describeShape } from '../errors.js';
import { sum } from '../ops/reduce.js';
import { concat, reshape } from '../ops/shape.js';
import { backendOf } from '../ops/util.js';
import { tidy, type Tensor } from '../tensor.js';

/** Overwrites dst's storage with src's values (same size, f32, same backend). */
export function assignInPlace(dst: Tensor, src: Tensor): void {
  const be = backendOf('assignInPlace', dst, src);
  if (dst.size !== src.size) throw new ShapeError(`assignInPlace: ${describeShape(src.shape)} does not fit ${describeShape(dst.shape)}`);
  if (dst.dtype !== 'f32' || src.dtype !== 'f32') throw new ValueError(`assignInPlace: expected f32 tensors, got ${src.dtype} into ${dst.dtype}`);
  if (dst.size === 0) return;
  be.writeStrided(dst.handle, 'f32', src.handle, 0, [1], [src.size]);
}

/** Overwrites dst's storage with host values. */
export function assignHost(dst: Tensor, values: Float32Array): void {
  dst.assertAlive();
  if (values.length !== dst.size) throw new ShapeError(`assignHost: ${values.length} values do not fit ${describeShape(dst.shape)}`);
  if (dst.dtype !== 'f32') throw new ValueError(`assignHost: expected an f32 tensor, got ${dst.dtype}`);
  if (dst.size === 0) return;
  const be = dst.backend;
  const h = be.upload(values);
  try {
    be.writeStrided(dst.handle, 'f32', h, 0, [1], [values.length]);
  } finally {
    be.free(h);
  }
}

/** A synchronous host copy of an f32 tensor. */
export function readF32(t: Tensor, where: string): Float32Array {
  if (!t.backend.readSync) throw new ValueError(`${where}: backend '${t.backend.name}' has no synchronous reads`);
  if (t.dtype !== 'f32') throw new ValueError(`${where}: expected an f32 tensor, got ${t.dtype} ${describeShape(t.shape)}`);
  return (t.dataSync() as Float32Array).slice();
}

/** The values of every tensor (f32, one backend, ts non-empty), flattened one after the other, in
 *  one read: a GPU waits once and not once per tensor. */
export function readAll(ts: readonly Tensor[], where: string): Float32Array {
  return noGrad(() => tidy(() => readF32(concat(ts.map((t) => reshape(t, [t.size])), 0), where)));
}

/** sum(fn(t, i)) of every tensor, read back together (readAll). */
export function hostSums(ts: readonly Tensor[], fn: (t: Tensor, i: number) => Tensor, where: string): Float32Array {
  return noGrad(() => tidy(() => readAll(ts.map((t, i) => sum(fn(t, i))), where)));
}

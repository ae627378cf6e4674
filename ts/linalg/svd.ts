// Truncated SVD of a float32 matrix on any backend: the randomized range finder of Halko,
// Martinsson and Tropp (2011, Algorithm 4.4, randomized subspace iteration). The big products
// (a·Ω, aᵀ·Q, a·Q̃) are the engine's matmul on a's backend; the panels they produce come to the
// host and are orthonormalized there in float64 (Householder QR), and the small (r+p)-column
// factor is decomposed exactly by svdSmall (dense.ts).
//
//   Y = a·Ω                      Ω [n, l] Gaussian, l = r + oversample (at most min(m, n))
//   Q = qr(Y)
//   repeat powerIters times:     Q̃ = qr(aᵀ·Q),  Q = qr(a·Q̃)       (re-orthonormalized each half step)
//   Bᵀ = aᵀ·Q  [n, l]            B = Qᵀ·a
//   Bᵀ = Ub·S·Vbᵀ (svdSmall)     so a ≈ Q·B = (Q·Vb)·S·Ubᵀ:  u = Q·Vb[:, :r],  v = Ub[:, :r]
//
// Cost: 2q + 2 products with a on the backend (O(m·n·l) each) and 2q + 2 float64 Householder QRs
// of m×l or n×l panels on the host (O((m + n)·l²) each); on the native backend the host QRs take
// most of the time (1536×576, r = 64: ~60 ms of products, the rest QR).
// Error: with q power iterations the tail is damped by (σ_{r+p+1}/σ_r)^(2q+1); a spectrum that
// decays at all is resolved to float32 precision with the defaults.

import { noGrad } from '../autograd.js';
import { DTypeError, NonFiniteError, ShapeError, ValueError, describeShape } from '../errors.js';
import { matmul } from '../ops/matmul.js';
import { assertFinite, gaussianArray, tensor, type Tensor } from '../tensor.js';
import { fixSigns, fromColMajor, householderQr, svdSmall, toColMajor } from './dense.js';

export interface TruncatedSvdOptions {
  /** Extra random directions beyond the rank (default 8). */
  oversample?: number;
  /** Power (subspace) iterations, each one aᵀ·Q and a·Q̃ product (default 4). */
  powerIters?: number;
  /** Seed of the Gaussian test matrix (default 0): the result is deterministic per backend. */
  seed?: number;
}

export interface TruncatedSvd {
  /** [m, r] left singular vectors, orthonormal columns (f32, on a's backend). */
  u: Tensor;
  /** r singular values, descending (float64). */
  s: Float64Array;
  /** [n, r] right singular vectors, orthonormal columns (f32, on a's backend). */
  v: Tensor;
}

function checkCount(name: string, x: unknown, min: number): number {
  if (typeof x !== 'number' || !Number.isInteger(x) || x < min) throw new ValueError(`truncatedSvd: expected ${name} to be an integer >= ${min}, got ${String(x)}`);
  return x;
}

/**
 * Rank-r SVD of a float32 matrix a [m, n]: a ≈ u · diag(s) · vᵀ. A rank above min(m, n) is
 * clamped to min(m, n) (the result then has fewer columns than asked: read s.length). Zero and
 * rank-deficient matrices are fine (trailing singular values 0, vectors still orthonormal).
 * Throws NonFiniteError when a holds NaN or Infinity. Needs a backend with synchronous reads.
 * Not differentiable (no graph is recorded); every intermediate tensor is freed.
 * Signs: the largest-magnitude entry of each column of v is positive.
 */
export function truncatedSvd(a: Tensor, rank: number, opts: TruncatedSvdOptions = {}): TruncatedSvd {
  if (a.dtype !== 'f32') throw new DTypeError(`truncatedSvd: a must be f32, got ${a.dtype} ${describeShape(a.shape)}`);
  if (a.rank !== 2) throw new ShapeError(`truncatedSvd: a must be a matrix [m, n], got ${describeShape(a.shape)}`);
  const [m, n] = a.shape;
  if (m === 0 || n === 0) throw new ShapeError(`truncatedSvd: a must be non-empty, got ${describeShape(a.shape)}`);
  checkCount('rank', rank, 1);
  const oversample = checkCount('oversample', opts.oversample ?? 8, 0);
  const powerIters = checkCount('powerIters', opts.powerIters ?? 4, 0);
  const seed = opts.seed ?? 0;
  if (!Number.isFinite(seed)) throw new ValueError(`truncatedSvd: expected a finite seed, got ${seed}`);
  const r = Math.min(rank, m, n);
  const l = Math.min(r + oversample, m, n);
  const be = a.backend;

  // Every tensor made here goes through own(); all but u and v are freed, also when a check throws.
  const owned: Tensor[] = [];
  const own = (t: Tensor): Tensor => { owned.push(t); return t; };
  try {
    return noGrad(() => {
      const omega = own(tensor(gaussianArray(n * l, seed), [n, l], 'f32', be));
      const y0 = own(matmul(a, omega));
      const first = y0.dataSync();
      if (!allFinite(first)) {
        assertFinite(a.dataSync(), a.shape, 'truncatedSvd'); // names the bad element of a
        throw new NonFiniteError(`truncatedSvd: a·Ω overflowed float32 for a ${describeShape(a.shape)} (scale a down first)`);
      }
      let q = own(orthonormalize(first, m, l, be));
      for (let i = 0; i < powerIters; i++) {
        const qz = own(orthonormalize(readFinite(own(matmul(a, q, { transA: true }))), n, l, be)); // basis of aᵀ·Q [n, l]
        q = own(orthonormalize(readFinite(own(matmul(a, qz))), m, l, be)); // basis of a·Q̃ [m, l]
        freeAll(owned, q);
      }
      const bt = own(matmul(a, q, { transA: true })); // [n, l] = (Qᵀ·a)ᵀ
      const small = svdSmall({ rows: n, cols: l, data: Float64Array.from(readFinite(bt)) }); // Ub [n, l], Vb [l, l]
      // a ≈ (Q·Vb)·S·Ubᵀ: the roles of the small factors swap; fix signs by the final v = Ub.
      fixSigns({ u: small.v, s: small.s, v: small.u });
      const vbR = own(tensor(Float32Array.from(takeColumns(small.v.data, l, l, r)), [l, r], 'f32', be));
      const u = matmul(q, vbR); // [m, r]
      const v = tensor(Float32Array.from(takeColumns(small.u.data, n, l, r)), [n, r], 'f32', be);
      return { u, s: small.s.slice(0, r), v };
    });
  } finally {
    freeAll(owned);
  }
}

/** Disposes the tensors of `list` except `keepOne`, and leaves only that one in the list. */
function freeAll(list: Tensor[], keepOne?: Tensor): void {
  for (const t of list) if (t !== keepOne) t.dispose();
  list.length = 0;
  if (keepOne) list.push(keepOne);
}

function allFinite(x: ArrayLike<number>): boolean {
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) return false;
  return true;
}

function readFinite(t: Tensor): ArrayLike<number> {
  const x = t.dataSync();
  if (!allFinite(x)) throw new NonFiniteError(`truncatedSvd: a product of ${describeShape(t.shape)} overflowed float32 (scale the matrix down first)`);
  return x;
}

/** Orthonormal basis (Householder, float64) of the columns of a row-major rows×cols panel, as an f32 tensor. */
function orthonormalize(panel: ArrayLike<number>, rows: number, cols: number, be: Tensor['backend']): Tensor {
  const { q } = householderQr(toColMajor(panel, rows, cols), rows, cols);
  return tensor(Float32Array.from(fromColMajor(q, rows, cols)), [rows, cols], 'f32', be);
}

/** The first `take` columns of a row-major rows×cols array. */
function takeColumns(x: Float64Array, rows: number, cols: number, take: number): Float64Array {
  const out = new Float64Array(rows * take);
  for (let i = 0; i < rows; i++) for (let j = 0; j < take; j++) out[i * take + j] = x[i * cols + j];
  return out;
}

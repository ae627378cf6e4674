// Truncated SVD of a float32 matrix on any backend: the randomized range finder of Halko,
// Martinsson and Tropp (2011, Algorithm 4.4, randomized subspace iteration). Everything of size
// m·l or n·l runs as the engine's matmul on a's backend; only l×l matrices come to the host.
//
//   Y = a·Ω                      Ω [n, l] Gaussian (or the caller's start columns, then Gaussian), l = r + oversample
//   Q = orth(Y)
//   repeat powerIters times:     Q̃ = orth(aᵀ·Q),  Q = orth(a·Q̃)     (re-orthonormalized each half step)
//   Bᵀ = aᵀ·Q  [n, l] = Qb·Rb    (orth again, keeping the triangular factor)
//   Rb = Ur·S·Vrᵀ (svdSmall, l×l, float64)
//   a ≈ Q·B = (Q·Vr)·S·(Qb·Ur)ᵀ:  u = Q·Vr[:, :r],  v = Qb·Ur[:, :r]
//
// orth is CholeskyQR on the engine (Yamamoto et al. 2015; Fukaya et al. 2020): G = YᵀY (engine,
// l×l), Cholesky of G in float64 on the host, Y ← Y·R⁻¹ (engine, with the host's l×l inverse),
// repeated until the Gram of the current panel is within 0.25 of the identity; that last pass is
// unshifted, so the result is orthonormal to float32 working precision (CholeskyQR2 for a
// well-conditioned panel). Passes before the last one Cholesky-factor G + 1e-4·diag(G) (a
// shift scaled by the diagonal, which the Cholesky factorization is invariant to, so the panel's
// column scaling does not matter): the factorization cannot break down on an ill-conditioned or
// numerically rank-deficient panel, and each shifted pass brings κ² of the panel under ~1e4, so
// the next Gram in float32 still resolves it (shifted CholeskyQR3 for a well-posed ill-conditioned
// panel, up to 6 passes for spectra falling by 1e-6 inside one panel). The panels inside the
// power iteration get a single pass (only their span matters). A panel with an exactly zero
// column, a non-finite Gram, or one still not orthonormal after 6 passes falls back to float64
// Householder QR on the host (dense.ts); Bᵀ then goes to svdSmall whole, as before.
//
// Warm start (opts.start): LoftQ (576×1536 Gaussian with outlier entries and channels, rank 16,
// 5 iterations, 4 seeds) started from the previous iteration's v with 2 power iterations instead
// of 4 ends 0.00-0.05% above the cold errors (nf2 ~0.81, nf4 ~0.103; seed-to-seed spread ~1%),
// with 4 it matches them: not a free win, so loftq.ts does not use it.
//
// Time (native backend, 2 shared cores under load from other jobs, old and new interleaved in one
// process, median (min) of 15 runs, powerIters 4, oversample 8; the old code was float64
// Householder QR of every panel on the host):
//   1536×576 rank 64: 256 ms (235) → 85 ms (58)     576×576 rank 16: 23.6 ms (21.0) → 9.0 ms (8.1)
// (an earlier, more loaded run: 1536×576 rank 64 557 ms → 176 ms; the new code's products use the
// native backend's threads and suffer more from contention). What is left at rank 64: 10 products
// with a (~25 ms), ~12 CholeskyQR passes (~13 ms), and svdSmall's one-sided Jacobi on the 72×72
// factor (~25-30 ms in plain JS; at rank 16 it is under 1 ms).
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
  /**
   * Starting directions [n, c] on a's backend (f32), e.g. the right singular vectors of a
   * previous, similar matrix (a warm start: fewer power iterations reach the same accuracy).
   * They become the first min(c, l) columns of Ω; the rest stay Gaussian. Not modified or freed.
   */
  start?: Tensor;
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
  const start = opts.start;
  if (start) {
    if (start.dtype !== 'f32' || start.rank !== 2 || start.shape[0] !== n || start.shape[1] === 0) {
      throw new ShapeError(`truncatedSvd: start must be an f32 matrix [${n}, c] with c >= 1 for a ${describeShape(a.shape)}, got ${start.dtype} ${describeShape(start.shape)}`);
    }
    if (start.backend !== be) throw new ValueError('truncatedSvd: start must be on the backend of a');
  }

  // Every tensor made here goes through own(); all but u and v are freed, also when a check throws.
  const owned: Tensor[] = [];
  const own = (t: Tensor): Tensor => { owned.push(t); return t; };
  try {
    return noGrad(() => {
      const omega = own(tensor(startMatrix(start, n, l, seed), [n, l], 'f32', be));
      const y0 = own(matmul(a, omega));
      const first = y0.dataSync();
      if (!allFinite(first)) {
        assertFinite(a.dataSync(), a.shape, 'truncatedSvd'); // names the bad element of a
        throw new NonFiniteError(`truncatedSvd: a·Ω overflowed float32 for a ${describeShape(a.shape)} (scale a down first)`);
      }
      let q = orthonormalize(y0, own, powerIters === 0);
      freeAll(owned, q);
      for (let i = 0; i < powerIters; i++) {
        const qz = orthonormalize(own(matmul(a, q, { transA: true })), own, false); // basis of aᵀ·Q [n, l]
        q = orthonormalize(own(matmul(a, qz)), own, i === powerIters - 1); // basis of a·Q̃ [m, l]
        freeAll(owned, q);
      }
      const bt = own(matmul(a, q, { transA: true })); // [n, l] = (Qᵀ·a)ᵀ
      const f = cholQr(bt, own, true);
      let vbR: Float64Array; // Vb[:, :r] [l, r] row-major, signs fixed
      let v: Tensor;
      let s: Float64Array;
      if (f?.r) {
        // Bᵀ = Qb·Rb = (Qb·Ur)·S·Vrᵀ: Ub = Qb·Ur, Vb = Vr.
        const small = svdSmall({ rows: l, cols: l, data: f.r });
        s = small.s.slice(0, r);
        const vRaw = own(matmul(f.q, own(tensor(Float32Array.from(takeColumns(small.u.data, l, l, r)), [l, r], 'f32', be))));
        const vHost = Float32Array.from(vRaw.dataSync());
        const signs = columnSigns(vHost, n, r);
        for (let i = 0; i < n; i++) for (let j = 0; j < r; j++) vHost[i * r + j] *= signs[j];
        v = tensor(vHost, [n, r], 'f32', be);
        vbR = takeColumns(small.v.data, l, l, r);
        for (let i = 0; i < l; i++) for (let j = 0; j < r; j++) vbR[i * r + j] *= signs[j];
      } else {
        // Cholesky broke down on Bᵀ (rank-deficient a): the exact host SVD of the n×l factor.
        const small = svdSmall({ rows: n, cols: l, data: Float64Array.from(readFinite(bt)) }); // Ub [n, l], Vb [l, l]
        // a ≈ (Q·Vb)·S·Ubᵀ: the roles of the small factors swap; fix signs by the final v = Ub.
        fixSigns({ u: small.v, s: small.s, v: small.u });
        s = small.s.slice(0, r);
        v = tensor(Float32Array.from(takeColumns(small.u.data, n, l, r)), [n, r], 'f32', be);
        vbR = takeColumns(small.v.data, l, l, r);
      }
      try {
        const u = matmul(q, own(tensor(Float32Array.from(vbR), [l, r], 'f32', be))); // [m, r]
        return { u, s, v };
      } catch (e) {
        v.dispose();
        throw e;
      }
    });
  } finally {
    freeAll(owned);
  }
}

/** Ω [n, l] row-major: the columns of `start` first (at most l), then Gaussian columns. */
function startMatrix(start: Tensor | undefined, n: number, l: number, seed: number): Float32Array {
  const g = gaussianArray(n * l, seed);
  if (!start) return g;
  const c = start.shape[1];
  const take = Math.min(c, l);
  const x = start.dataSync();
  if (!allFinite(x)) throw new NonFiniteError('truncatedSvd: start holds NaN or Infinity');
  for (let i = 0; i < n; i++) for (let j = 0; j < take; j++) g[i * l + j] = x[i * c + j];
  return g;
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

/** Shift of the non-final CholeskyQR passes, relative to the diagonal of the Gram. */
const SHIFT = 1e-4;
/** A pass whose Gram is within this (max entry) of the identity is the last one, unshifted. */
const FINAL_DEV = 0.25;
const MAX_PASSES = 6;

/**
 * Basis [rows, k] of the columns of y [rows, k]: cholQr, or Householder QR on the host when it
 * breaks down. exact: orthonormal to working precision; otherwise one pass, which is all the
 * panels inside the power iteration need: subspace iteration only needs each panel's span, and
 * one (shifted) pass keeps the panels well-conditioned (κ² ≲ 1/SHIFT). Only the last panel (the
 * Q of B = Qᵀa) and Bᵀ need orthonormal bases.
 */
function orthonormalize(y: Tensor, own: (t: Tensor) => Tensor, exact: boolean): Tensor {
  const f = cholQr(y, own, false, exact);
  if (f) return f.q;
  const [rows, k] = y.shape;
  const { q } = householderQr(toColMajor(readFinite(y), rows, k), rows, k);
  return own(tensor(Float32Array.from(fromColMajor(q, rows, k)), [rows, k], 'f32', y.backend));
}

/**
 * CholeskyQR on the engine (see the top of the file): y [rows, k] = q·r with q orthonormal
 * [rows, k] and, with wantR, r the k×k upper-triangular factor (row-major, float64); undefined
 * when it breaks down (a zero column, a non-finite Gram, not orthonormal after MAX_PASSES).
 * y is not freed; everything new is own()'d.
 */
function cholQr(y: Tensor, own: (t: Tensor) => Tensor, wantR: boolean, exact = true): { q: Tensor; r?: Float64Array } | undefined {
  const k = y.shape[1];
  let cur = y;
  let rAcc: Float64Array | undefined = wantR ? identity(k) : undefined;
  for (let pass = 0; pass < MAX_PASSES; pass++) {
    const g = own(matmul(cur, cur, { transA: true })).dataSync(); // [k, k]
    if (!allFinite(g)) return undefined;
    let dev = 0;
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) dev = Math.max(dev, Math.abs(g[i * k + j] - (i === j ? 1 : 0)));
    const final = dev <= FINAL_DEV;
    const chol = cholesky(g, k, final ? 0 : SHIFT);
    if (!chol) return undefined;
    const rinv = Float32Array.from(invertUpper(chol, k)); // what the engine multiplies by
    cur = own(matmul(cur, own(tensor(rinv, [k, k], 'f32', y.backend))));
    // y = cur · rinv⁻¹ ··· (up to the products' rounding): accumulate the exact inverses of the f32 factors.
    if (rAcc) rAcc = mulUpper(invertUpper(rinv, k), rAcc, k);
    if (final || !exact) return { q: cur, r: rAcc };
  }
  return undefined;
}

function identity(k: number): Float64Array {
  const x = new Float64Array(k * k);
  for (let i = 0; i < k; i++) x[i * k + i] = 1;
  return x;
}

/**
 * Upper Cholesky factor r (row-major, float64) of g + shift·diag(g), g a symmetric k×k (its
 * upper and lower halves averaged), so that rᵀr = g + shift·diag(g); undefined when a pivot is
 * not positive (an exactly zero column, or g indefinite beyond the shift).
 */
function cholesky(g: ArrayLike<number>, k: number, shift: number): Float64Array | undefined {
  const r = new Float64Array(k * k);
  for (let j = 0; j < k; j++) {
    for (let i = 0; i < j; i++) {
      let x = 0.5 * (g[i * k + j] + g[j * k + i]);
      for (let p = 0; p < i; p++) x -= r[p * k + i] * r[p * k + j];
      r[i * k + j] = x / r[i * k + i];
    }
    const gjj = g[j * k + j];
    let d = gjj * (1 + shift);
    for (let p = 0; p < j; p++) d -= r[p * k + j] * r[p * k + j];
    if (!(gjj > 0 && d > 1e-7 * gjj)) return undefined;
    r[j * k + j] = Math.sqrt(d);
  }
  return r;
}

/** Inverse of an upper-triangular k×k (row-major, nonzero diagonal), in float64. */
function invertUpper(r: ArrayLike<number>, k: number): Float64Array {
  const x = new Float64Array(k * k);
  for (let c = 0; c < k; c++) {
    x[c * k + c] = 1 / r[c * k + c];
    for (let i = c - 1; i >= 0; i--) {
      let acc = 0;
      for (let p = i + 1; p <= c; p++) acc += r[i * k + p] * x[p * k + c];
      x[i * k + c] = -acc / r[i * k + i];
    }
  }
  return x;
}

/** a·b for upper-triangular k×k row-major matrices. */
function mulUpper(a: Float64Array, b: Float64Array, k: number): Float64Array {
  const out = new Float64Array(k * k);
  for (let i = 0; i < k; i++) {
    for (let p = i; p < k; p++) {
      const x = a[i * k + p];
      if (x === 0) continue;
      for (let j = p; j < k; j++) out[i * k + j] += x * b[p * k + j];
    }
  }
  return out;
}

/** ±1 per column of a row-major rows×cols array: the sign of its largest-magnitude entry (first on ties). */
function columnSigns(x: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const signs = new Float64Array(cols);
  for (let j = 0; j < cols; j++) {
    let best = 0;
    for (let i = 1; i < rows; i++) if (Math.abs(x[i * cols + j]) > Math.abs(x[best * cols + j])) best = i;
    signs[j] = x[best * cols + j] < 0 ? -1 : 1;
  }
  return signs;
}

/** The first `take` columns of a row-major rows×cols array. */
function takeColumns(x: Float64Array, rows: number, cols: number, take: number): Float64Array {
  const out = new Float64Array(rows * take);
  for (let i = 0; i < rows; i++) for (let j = 0; j < take; j++) out[i * take + j] = x[i * cols + j];
  return out;
}

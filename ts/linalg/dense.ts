// Small dense linear algebra in float64 plain TypeScript: Householder QR and an exact thin SVD
// (QR, then one-sided Jacobi on the square factor). For matrices that fit comfortably on the
// host (panels of a few hundred columns at most); the big products of truncatedSvd (svd.ts) run
// on a tensor backend instead.
//
// Internally every routine works on column-major Float64Arrays (column j of an m-row matrix is
// data[j*m .. j*m+m)), so the inner loops of QR and Jacobi walk contiguous memory. The public
// Matrix64 type is row-major, like tensors.

import { NonFiniteError, ShapeError } from '../errors.js';

/** A row-major float64 matrix on the host. */
export interface Matrix64 {
  readonly rows: number;
  readonly cols: number;
  /** rows * cols values, row-major. */
  readonly data: Float64Array;
}

/** Builds a Matrix64 from row-major values (copied) or a nested array. */
export function matrix64(rows: number, cols: number, values?: ArrayLike<number>): Matrix64 {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new ShapeError(`matrix64: expected non-negative integer dimensions, got [${rows}, ${cols}]`);
  }
  if (values && values.length !== rows * cols) throw new ShapeError(`matrix64: ${values.length} values do not fill [${rows}, ${cols}]`);
  const data = new Float64Array(rows * cols);
  if (values) data.set(values);
  return { rows, cols, data };
}

/** Thin SVD: a = u · diag(s) · vᵀ with k = min(rows, cols) columns each. */
export interface Svd64 {
  /** [rows, k], orthonormal columns. */
  u: Matrix64;
  /** k singular values, descending, >= 0. */
  s: Float64Array;
  /** [cols, k], orthonormal columns. */
  v: Matrix64;
}

export function toColMajor(data: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = data[i * cols + j];
  return out;
}

export function fromColMajor(cm: Float64Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[i * cols + j] = cm[j * rows + i];
  return out;
}

/**
 * Householder QR of a column-major m×n matrix with m >= n: a = q · r, q m×n with orthonormal
 * columns (column-major), r n×n upper triangular (column-major). A zero column gets the identity
 * reflector, so q stays orthonormal for rank-deficient input (its column is then e_j rotated by
 * the later reflectors).
 */
export function householderQr(a: Float64Array, m: number, n: number): { q: Float64Array; r: Float64Array } {
  if (m < n) throw new ShapeError(`householderQr: expected rows >= cols, got [${m}, ${n}]`);
  const w = a.slice();
  const vs = new Float64Array(m * n); // reflector j: unit vector in rows j..m-1 of column j (zero: identity)
  const r = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    const col = j * m;
    for (let i = 0; i < j; i++) r[j * n + i] = w[col + i];
    let norm2 = 0;
    for (let i = j; i < m; i++) norm2 += w[col + i] * w[col + i];
    if (norm2 === 0) continue;
    const norm = Math.sqrt(norm2);
    const x0 = w[col + j];
    const alpha = x0 >= 0 ? -norm : norm; // reflect onto -sign(x0)·e_j: no cancellation in x0 - alpha
    const v0 = x0 - alpha;
    const inv = 1 / Math.sqrt(norm2 - x0 * x0 + v0 * v0);
    vs[col + j] = v0 * inv;
    for (let i = j + 1; i < m; i++) vs[col + i] = w[col + i] * inv;
    r[j * n + j] = alpha;
    applyReflectorToColumns(vs, col, w, j + 1, n, j, m);
  }
  // q = H_0 ··· H_{n-1} [I; 0], accumulated backwards: H_j only touches columns j.. at that point.
  const q = new Float64Array(m * n);
  for (let j = 0; j < n; j++) q[j * m + j] = 1;
  for (let j = n - 1; j >= 0; j--) {
    if (vs[j * m + j] === 0 && isZeroTail(vs, j * m, j, m)) continue;
    applyReflectorToColumns(vs, j * m, q, j, n, j, m);
  }
  return { q, r };
}

/**
 * x_k -= 2 (vᵀx_k) v over rows from..m-1 for columns k0..k1-1 of a column-major x (v at v[vOff..]).
 * Four columns per pass over v: a quarter of the loads of v and four independent sums (the JIT
 * does not vectorize, so this is where the time goes in QR).
 */
function applyReflectorToColumns(v: Float64Array, vOff: number, x: Float64Array, k0: number, k1: number, from: number, m: number): void {
  let k = k0;
  for (; k + 3 < k1; k += 4) {
    const a = k * m, b = a + m, c = b + m, d = c + m;
    let da = 0, db = 0, dc = 0, dd = 0;
    for (let i = from; i < m; i++) {
      const vi = v[vOff + i];
      da += vi * x[a + i];
      db += vi * x[b + i];
      dc += vi * x[c + i];
      dd += vi * x[d + i];
    }
    da *= 2; db *= 2; dc *= 2; dd *= 2;
    for (let i = from; i < m; i++) {
      const vi = v[vOff + i];
      x[a + i] -= da * vi;
      x[b + i] -= db * vi;
      x[c + i] -= dc * vi;
      x[d + i] -= dd * vi;
    }
  }
  for (; k < k1; k++) {
    const a = k * m;
    let da = 0;
    for (let i = from; i < m; i++) da += v[vOff + i] * x[a + i];
    da *= 2;
    for (let i = from; i < m; i++) x[a + i] -= da * v[vOff + i];
  }
}

function isZeroTail(v: Float64Array, off: number, from: number, m: number): boolean {
  for (let i = from; i < m; i++) if (v[off + i] !== 0) return false;
  return true;
}

const EPS = 2.220446049250313e-16;
const MAX_SWEEPS = 60;

/**
 * One-sided (Hestenes) Jacobi on a column-major m×n matrix g: rotates pairs of columns until all
 * are mutually orthogonal to working precision, accumulating the rotations into v (n×n,
 * column-major, starts as the identity). Afterwards g = a·v has orthogonal columns whose norms
 * are the singular values.
 */
function oneSidedJacobi(g: Float64Array, m: number, n: number, v: Float64Array): void {
  const tol = EPS * Math.max(m, 4);
  for (let sweep = 0; sweep < MAX_SWEEPS; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      const po = p * m;
      for (let q = p + 1; q < n; q++) {
        const qo = q * m;
        let alpha = 0, beta = 0, gamma = 0;
        for (let i = 0; i < m; i++) {
          const x = g[po + i], y = g[qo + i];
          alpha += x * x; beta += y * y; gamma += x * y;
        }
        if (gamma === 0 || Math.abs(gamma) <= tol * Math.sqrt(alpha) * Math.sqrt(beta)) continue;
        rotated = true;
        // the rotation that zeroes the (p, q) entry of gᵀg: t = tan θ, the smaller root of t² + 2ζt − 1 = 0
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.hypot(1, zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        rotate(g, po, qo, m, c, s);
        rotate(v, p * n, q * n, n, c, s);
      }
    }
    if (!rotated) return;
  }
}

function rotate(x: Float64Array, po: number, qo: number, len: number, c: number, s: number): void {
  for (let i = 0; i < len; i++) {
    const a = x[po + i], b = x[qo + i];
    x[po + i] = c * a - s * b;
    x[qo + i] = s * a + c * b;
  }
}

/** Replaces column j of a column-major m×k matrix by a unit vector orthogonal to columns `others`. */
function completeColumn(u: Float64Array, m: number, j: number, others: number[]): void {
  let bestNorm = -1;
  const cand = new Float64Array(m);
  const pick = new Float64Array(m);
  for (let e = 0; e < m; e++) {
    cand.fill(0);
    cand[e] = 1;
    for (let pass = 0; pass < 2; pass++) { // Gram-Schmidt twice: orthogonal to working precision
      for (const o of others) {
        let d = 0;
        for (let i = 0; i < m; i++) d += u[o * m + i] * cand[i];
        for (let i = 0; i < m; i++) cand[i] -= d * u[o * m + i];
      }
    }
    let nrm = 0;
    for (let i = 0; i < m; i++) nrm += cand[i] * cand[i];
    if (nrm > bestNorm) { bestNorm = nrm; pick.set(cand); }
    if (nrm > 0.5) break; // good enough: well away from the span of the others
  }
  // fewer than m others: the squared residuals of e_0..e_{m-1} sum to m - others.length >= 1
  const inv = 1 / Math.sqrt(bestNorm);
  for (let i = 0; i < m; i++) u[j * m + i] = pick[i] * inv;
}

/**
 * Exact thin SVD in float64 of a small host matrix: a [m, n] = u · diag(s) · vᵀ with
 * k = min(m, n), s descending. Tall input is reduced by Householder QR first (Jacobi then runs on
 * the n×n factor); wide input is transposed. Columns of u for zero singular values are completed
 * to an orthonormal set. Signs: the largest-magnitude entry of each column of v is positive.
 * Cost O(m·n² + sweeps·n³); meant for n up to a few hundred.
 */
export function svdSmall(a: Matrix64): Svd64 {
  const { rows: m, cols: n, data } = a;
  if (data.length !== m * n) throw new ShapeError(`svdSmall: ${data.length} values do not fill [${m}, ${n}]`);
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      throw new NonFiniteError(`svdSmall: expected finite values, got ${data[i]} at [${Math.floor(i / n)}, ${i % n}] of a [${m}, ${n}] matrix`);
    }
  }
  if (m < n) {
    const t = svdSmall({ rows: n, cols: m, data: toColMajor(data, m, n) }); // column-major a = row-major aᵀ
    return fixSigns({ u: t.v, s: t.s, v: t.u });
  }
  const k = n;
  let g: Float64Array;
  let q: Float64Array | undefined;
  const cm = toColMajor(data, m, n);
  if (m > n) {
    const f = householderQr(cm, m, n);
    q = f.q;
    g = f.r;
  } else g = cm;
  const gm = m > n ? n : m; // rows of g
  const v = new Float64Array(n * n);
  for (let j = 0; j < n; j++) v[j * n + j] = 1;
  oneSidedJacobi(g, gm, n, v);

  const norms = new Float64Array(k);
  for (let j = 0; j < k; j++) {
    let s2 = 0;
    for (let i = 0; i < gm; i++) s2 += g[j * gm + i] * g[j * gm + i];
    norms[j] = Math.sqrt(s2);
  }
  const order = [...norms.keys()].sort((x, y) => norms[y] - norms[x] || x - y);
  const s = new Float64Array(k);
  const ug = new Float64Array(gm * k); // left vectors of g, column-major
  const vOut = new Float64Array(n * k);
  const zero: number[] = [];
  order.forEach((src, j) => {
    s[j] = norms[src];
    if (norms[src] > 1e-290) for (let i = 0; i < gm; i++) ug[j * gm + i] = g[src * gm + i] / norms[src];
    else zero.push(j);
    for (let i = 0; i < n; i++) vOut[j * n + i] = v[src * n + i];
  });
  const filled = [...Array(k).keys()].filter((j) => !zero.includes(j));
  for (const j of zero) { completeColumn(ug, gm, j, filled); filled.push(j); }

  let uCm = ug;
  if (q) { // u = q · ug: m×n times n×k
    uCm = new Float64Array(m * k);
    for (let j = 0; j < k; j++) {
      for (let p = 0; p < n; p++) {
        const c = ug[j * n + p];
        if (c === 0) continue;
        for (let i = 0; i < m; i++) uCm[j * m + i] += q[p * m + i] * c;
      }
    }
  }
  return fixSigns({
    u: { rows: m, cols: k, data: fromColMajor(uCm, m, k) },
    s,
    v: { rows: n, cols: k, data: fromColMajor(vOut, n, k) },
  });
}

/** Flips column pairs (u_j, v_j) so that the largest-magnitude entry of v_j is positive. */
export function fixSigns(r: Svd64): Svd64 {
  const { u, v } = r;
  for (let j = 0; j < v.cols; j++) {
    let best = 0;
    for (let i = 1; i < v.rows; i++) if (Math.abs(v.data[i * v.cols + j]) > Math.abs(v.data[best * v.cols + j])) best = i;
    if (v.rows && v.data[best * v.cols + j] < 0) {
      for (let i = 0; i < v.rows; i++) v.data[i * v.cols + j] = -v.data[i * v.cols + j];
      for (let i = 0; i < u.rows; i++) u.data[i * u.cols + j] = -u.data[i * u.cols + j];
    }
  }
  return r;
}

// svdSmall (exact float64 SVD) against reconstructions, and truncatedSvd (randomized, on every
// available backend) against svdSmall on matrices with a known spectrum.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as q from '../ts/index.js';
import { householderQr, matrix64, svdSmall, truncatedSvd, type Matrix64 } from '../ts/linalg/index.js';
import { gaussianArray } from '../ts/tensor.js';

const available = q.backends().filter((s) => s.available).map((s) => s.name);

function gaussian(rows: number, cols: number, seed: number): Matrix64 {
  return matrix64(rows, cols, gaussianArray(rows * cols, seed));
}

/** (aᵀ·b) for row-major matrices with the same row count. */
function gram(a: Matrix64, b: Matrix64): Matrix64 {
  const out = matrix64(a.cols, b.cols);
  for (let i = 0; i < a.rows; i++) {
    for (let p = 0; p < a.cols; p++) {
      const x = a.data[i * a.cols + p];
      for (let j = 0; j < b.cols; j++) out.data[p * b.cols + j] += x * b.data[i * b.cols + j];
    }
  }
  return out;
}

function maxOrthError(u: Matrix64): number {
  const g = gram(u, u);
  let e = 0;
  for (let i = 0; i < g.rows; i++) for (let j = 0; j < g.cols; j++) e = Math.max(e, Math.abs(g.data[i * g.cols + j] - (i === j ? 1 : 0)));
  return e;
}

/** u · diag(s) · vᵀ */
function reconstruct(u: Matrix64, s: ArrayLike<number>, v: Matrix64): Matrix64 {
  const out = matrix64(u.rows, v.rows);
  for (let i = 0; i < u.rows; i++) {
    for (let j = 0; j < v.rows; j++) {
      let x = 0;
      for (let p = 0; p < s.length; p++) x += u.data[i * u.cols + p] * s[p] * v.data[j * v.cols + p];
      out.data[i * v.rows + j] = x;
    }
  }
  return out;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let e = 0;
  for (let i = 0; i < a.length; i++) e = Math.max(e, Math.abs(a[i] - b[i]));
  return e;
}

function checkSvd(name: string, a: Matrix64, tol = 1e-12): void {
  const { u, s, v } = svdSmall(a);
  const k = Math.min(a.rows, a.cols);
  assert.deepEqual([u.rows, u.cols, v.rows, v.cols, s.length], [a.rows, k, a.cols, k, k], name);
  const scale = Math.max(1, ...Array.from(a.data, Math.abs));
  assert.ok(maxAbsDiff(reconstruct(u, s, v).data, a.data) <= tol * scale, `${name}: u·s·vᵀ != a`);
  assert.ok(maxOrthError(u) <= tol, `${name}: u columns not orthonormal (${maxOrthError(u)})`);
  assert.ok(maxOrthError(v) <= tol, `${name}: v columns not orthonormal (${maxOrthError(v)})`);
  for (let i = 0; i < k; i++) {
    assert.ok(s[i] >= 0, `${name}: s[${i}] = ${s[i]} < 0`);
    if (i) assert.ok(s[i] <= s[i - 1], `${name}: s not descending at ${i}`);
  }
}

/** A random [rows, k] matrix with orthonormal columns (Householder Q of a Gaussian panel). */
function orthonormal(rows: number, k: number, seed: number): Matrix64 {
  const { q: cm } = householderQr(Float64Array.from(gaussianArray(rows * k, seed)), rows, k);
  const out = matrix64(rows, k);
  for (let i = 0; i < rows; i++) for (let j = 0; j < k; j++) out.data[i * k + j] = cm[j * rows + i];
  return out;
}

/** u0 · diag(sigma) · v0ᵀ with random orthonormal u0, v0: a matrix whose SVD is known. */
function withSpectrum(rows: number, cols: number, sigma: number[], seed: number): Matrix64 {
  return reconstruct(orthonormal(rows, sigma.length, seed), sigma, orthonormal(cols, sigma.length, seed + 1));
}

test('svdSmall: random matrices of every aspect ratio', () => {
  for (const [m, n] of [[1, 1], [6, 6], [30, 12], [12, 30], [1, 9], [9, 1], [2, 17], [40, 39]]) checkSvd(`${m}x${n}`, gaussian(m, n, m * 31 + n));
});

test('svdSmall: structured and rank-deficient matrices', () => {
  checkSvd('zero 4x3', matrix64(4, 3));
  checkSvd('zero 1x5', matrix64(1, 5));
  const diag = matrix64(4, 4, [0, 0, 0, 0, 0, -3, 0, 0, 0, 0, 3, 0, 0, 0, 0, 1e-3]);
  checkSvd('diagonal with a repeated |value| and a zero', diag);
  assert.ok(maxAbsDiff(svdSmall(diag).s, [3, 3, 1e-3, 0]) <= 1e-15);
  for (const [m, n] of [[20, 15], [15, 20], [25, 25]]) {
    const a = withSpectrum(m, n, [5, 2, 0.5], m + n); // rank 3
    checkSvd(`rank-3 ${m}x${n}`, a);
    const s = svdSmall(a).s;
    assert.ok(maxAbsDiff(s.slice(0, 3), [5, 2, 0.5]) <= 1e-13, `rank-3 ${m}x${n}: ${s.slice(0, 3)}`);
    for (let i = 3; i < s.length; i++) assert.ok(s[i] <= 1e-13, `rank-3 ${m}x${n}: s[${i}] = ${s[i]}`);
  }
  const dup = gaussian(10, 4, 5); // columns 0 and 2 equal, 3 = 2·col 1
  for (let i = 0; i < 10; i++) { dup.data[i * 4 + 2] = dup.data[i * 4]; dup.data[i * 4 + 3] = 2 * dup.data[i * 4 + 1]; }
  checkSvd('duplicated columns', dup);
  const hilbert = matrix64(8, 8, Array.from({ length: 64 }, (_, k) => 1 / (Math.floor(k / 8) + (k % 8) + 1)));
  checkSvd('Hilbert 8x8 (condition ~1e10)', hilbert);
  const decaying = withSpectrum(30, 20, Array.from({ length: 20 }, (_, i) => 0.5 ** i), 3);
  const s = svdSmall(decaying).s;
  for (let i = 0; i < 20; i++) assert.ok(Math.abs(s[i] - 0.5 ** i) <= 1e-14, `decaying: s[${i}] = ${s[i]}`);
});

test('svdSmall: NaN input throws NonFiniteError naming the function', () => {
  const a = gaussian(3, 3, 1);
  a.data[4] = NaN;
  assert.throws(() => svdSmall(a), (e: Error) => e instanceof q.NonFiniteError && /svdSmall/.test(e.message) && /\[1, 1\]/.test(e.message));
});

/** sin of the largest principal angle from span(b) to span(a) (a orthonormal): ||b − a·aᵀ·b||₂, no cancellation. */
function subspaceSin(a: Matrix64, b: Matrix64): number {
  const c = gram(a, b);
  const res = matrix64(b.rows, b.cols, b.data);
  for (let i = 0; i < b.rows; i++) {
    for (let j = 0; j < b.cols; j++) {
      let x = 0;
      for (let p = 0; p < a.cols; p++) x += a.data[i * a.cols + p] * c.data[p * c.cols + j];
      res.data[i * b.cols + j] -= x;
    }
  }
  return svdSmall(res).s[0];
}

function host(t: q.Tensor): Matrix64 {
  return matrix64(t.shape[0], t.shape[1], t.dataSync());
}

const SIGMA = Array.from({ length: 40 }, (_, i) => 10 * 0.75 ** i);
const KNOWN = withSpectrum(70, 40, SIGMA, 11);

for (const name of available) {
  test(`truncatedSvd on ${name}: decaying spectrum matches svdSmall`, () => {
    const be = q.backendByName(name);
    const a = q.tensor(Float32Array.from(KNOWN.data), [70, 40], 'f32', be);
    const exact = svdSmall(matrix64(70, 40, a.dataSync())); // the oracle sees the same f32 values
    const before = q.liveBuffers(be);
    const r = 6;
    const { u, s, v } = truncatedSvd(a, r, { seed: 1 });
    assert.deepEqual([u.shape, v.shape, s.length], [[70, r], [40, r], r]);
    assert.equal(u.backend, be);
    for (let i = 0; i < r; i++) assert.ok(Math.abs(s[i] - exact.s[i]) <= 2e-5 * exact.s[0], `s[${i}]: ${s[i]} vs ${exact.s[i]}`);
    const uh = host(u), vh = host(v);
    assert.ok(maxOrthError(uh) <= 1e-5 && maxOrthError(vh) <= 1e-5);
    const firstR = (x: Matrix64) => matrix64(x.rows, r, Array.from({ length: x.rows * r }, (_, k) => x.data[Math.floor(k / r) * x.cols + (k % r)]));
    assert.ok(subspaceSin(firstR(exact.u), uh) <= 2e-6, `u subspace angle ${subspaceSin(firstR(exact.u), uh)}`);
    assert.ok(subspaceSin(firstR(exact.v), vh) <= 2e-6, `v subspace angle ${subspaceSin(firstR(exact.v), vh)}`);
    u.dispose(); v.dispose();
    assert.equal(q.liveBuffers(be), before, 'truncatedSvd leaked tensors');
    a.dispose();
  });
}

// Spectra the engine's CholeskyQR must survive: 0.5^i spans 1e-7 within one panel (shifted passes),
// an exact rank below rank + oversample (numerically rank-deficient panels).
const STEEP = withSpectrum(120, 80, Array.from({ length: 80 }, (_, i) => 0.5 ** i), 21);
const RANK7 = withSpectrum(120, 80, [9, 7, 5, 3, 2, 1, 0.5], 23);

for (const name of available) {
  test(`truncatedSvd on ${name}: ill-conditioned and rank-deficient panels`, () => {
    const be = q.backendByName(name);
    const before = q.liveBuffers(be);
    for (const [label, m] of [['0.5^i spectrum', STEEP], ['rank 7', RANK7]] as const) {
      const a = q.tensor(Float32Array.from(m.data), [m.rows, m.cols], 'f32', be);
      const exact = svdSmall(matrix64(m.rows, m.cols, a.dataSync()));
      const r = 10;
      const { u, s, v } = truncatedSvd(a, r, { seed: 4 });
      for (let i = 0; i < r; i++) assert.ok(Math.abs(s[i] - exact.s[i]) <= 2e-5 * exact.s[0], `${label} s[${i}]: ${s[i]} vs ${exact.s[i]}`);
      const uh = host(u), vh = host(v);
      assert.ok(maxOrthError(uh) <= 1e-5 && maxOrthError(vh) <= 1e-5, `${label}: orthogonality ${maxOrthError(uh)} ${maxOrthError(vh)}`);
      const k = label === 'rank 7' ? 7 : 6; // directions well above the float32 floor
      const firstK = (x: Matrix64) => matrix64(x.rows, k, Array.from({ length: x.rows * k }, (_, i) => x.data[Math.floor(i / k) * x.cols + (i % k)]));
      assert.ok(subspaceSin(firstK(uh), firstK(exact.u)) <= 2e-6, `${label}: u subspace angle ${subspaceSin(firstK(uh), firstK(exact.u))}`);
      assert.ok(subspaceSin(firstK(vh), firstK(exact.v)) <= 2e-6, `${label}: v subspace angle ${subspaceSin(firstK(vh), firstK(exact.v))}`);
      for (const t of [a, u, v]) t.dispose();
    }
    assert.equal(q.liveBuffers(be), before, 'truncatedSvd leaked tensors');
  });
}

test('truncatedSvd: a warm start (start columns) reaches the same subspace with fewer power iterations', () => {
  const be = q.getBackend();
  const before = q.liveBuffers(be);
  const a = q.tensor(Float32Array.from(KNOWN.data), [70, 40], 'f32', be);
  const exact = svdSmall(matrix64(70, 40, a.dataSync()));
  const r = 6;
  const cold = truncatedSvd(a, r, { seed: 2 });
  const warm = truncatedSvd(a, r, { seed: 3, start: cold.v, powerIters: 1 });
  for (let i = 0; i < r; i++) assert.ok(Math.abs(warm.s[i] - exact.s[i]) <= 2e-5 * exact.s[0], `s[${i}]: ${warm.s[i]} vs ${exact.s[i]}`);
  const firstR = (x: Matrix64) => matrix64(x.rows, r, Array.from({ length: x.rows * r }, (_, k) => x.data[Math.floor(k / r) * x.cols + (k % r)]));
  assert.ok(subspaceSin(firstR(exact.v), host(warm.v)) <= 2e-6, `v subspace angle ${subspaceSin(firstR(exact.v), host(warm.v))}`);
  assert.throws(() => truncatedSvd(a, r, { start: cold.u }), q.ShapeError); // [70, r]: not [n, c]
  for (const t of [a, cold.u, cold.v, warm.u, warm.v]) t.dispose();
  assert.equal(q.liveBuffers(be), before);
});

test('truncatedSvd agrees across backends (values and signs)', () => {
  const results = available.map((name) => {
    const be = q.backendByName(name);
    const a = q.tensor(Float32Array.from(KNOWN.data), [70, 40], 'f32', be);
    const { u, s, v } = truncatedSvd(a, 5, { seed: 7, powerIters: 2 });
    const out = { name, s, u: u.dataSync().slice(), v: v.dataSync().slice() };
    u.dispose(); v.dispose(); a.dispose();
    return out;
  });
  const [ref, ...rest] = results;
  for (const r of rest) {
    assert.ok(maxAbsDiff(r.s, ref.s) <= 1e-5 * ref.s[0], `${r.name} vs ${ref.name}: s`);
    assert.ok(maxAbsDiff(r.u, ref.u) <= 1e-4, `${r.name} vs ${ref.name}: u`);
    assert.ok(maxAbsDiff(r.v, ref.v) <= 1e-4, `${r.name} vs ${ref.name}: v`);
  }
});

test('truncatedSvd: rank above min(m, n) is clamped, zero and rank-deficient matrices', () => {
  const be = q.getBackend();
  const before = q.liveBuffers(be);
  const wide = q.tensor(gaussianArray(4 * 9, 2), [4, 9], 'f32', be);
  const c = truncatedSvd(wide, 10);
  assert.deepEqual([c.u.shape, c.v.shape, c.s.length], [[4, 4], [9, 4], 4]);
  const exact = svdSmall(matrix64(4, 9, wide.dataSync()));
  assert.ok(maxAbsDiff(reconstruct(host(c.u), c.s, host(c.v)).data, wide.dataSync()) <= 1e-5);
  assert.ok(maxAbsDiff(c.s, exact.s) <= 1e-5);

  const zero = q.zeros([12, 7], 'f32', be);
  const z = truncatedSvd(zero, 3);
  assert.deepEqual(Array.from(z.s), [0, 0, 0]);
  assert.ok(maxOrthError(host(z.u)) <= 1e-6 && maxOrthError(host(z.v)) <= 1e-6);

  const lowRank = withSpectrum(30, 20, [4, 1, 0.25], 5);
  const low = q.tensor(Float32Array.from(lowRank.data), [30, 20], 'f32', be);
  const d = truncatedSvd(low, 5, { oversample: 0 });
  assert.ok(maxAbsDiff(d.s.slice(0, 3), [4, 1, 0.25]) <= 1e-5, `${d.s}`);
  assert.ok(d.s[3] <= 1e-5 && d.s[4] <= 1e-5, `${d.s}`);
  assert.ok(maxOrthError(host(d.u)) <= 1e-5 && maxOrthError(host(d.v)) <= 1e-5);
  assert.ok(maxAbsDiff(reconstruct(host(d.u), d.s, host(d.v)).data, low.dataSync()) <= 1e-5);

  const row = q.tensor(gaussianArray(9, 4), [1, 9], 'f32', be); // 1×n
  const r1 = truncatedSvd(row, 1);
  let norm = 0;
  for (const x of row.dataSync()) norm += x * x;
  assert.ok(Math.abs(r1.s[0] - Math.sqrt(norm)) <= 1e-5 * Math.sqrt(norm));

  for (const t of [wide, c.u, c.v, zero, z.u, z.v, low, d.u, d.v, row, r1.u, r1.v]) t.dispose();
  assert.equal(q.liveBuffers(be), before);
});

test('truncatedSvd: typed errors, and no leak when it throws', () => {
  const be = q.getBackend();
  const before = q.liveBuffers(be);
  const values = gaussianArray(6 * 5, 3);
  values[13] = NaN;
  const bad = q.tensor(values, [6, 5], 'f32', be);
  assert.throws(() => truncatedSvd(bad, 2), (e: Error) => e instanceof q.NonFiniteError && /truncatedSvd/.test(e.message) && /\[2, 3\]/.test(e.message));
  const ok = q.tensor(gaussianArray(30, 4), [6, 5], 'f32', be);
  assert.throws(() => truncatedSvd(ok, 0), q.ValueError);
  assert.throws(() => truncatedSvd(ok, 2, { powerIters: -1 }), q.ValueError);
  const cube = q.zeros([2, 3, 5], 'f32', be);
  assert.throws(() => truncatedSvd(cube, 1), q.ShapeError);
  for (const t of [bad, ok, cube]) t.dispose();
  assert.equal(q.liveBuffers(be), before);
});

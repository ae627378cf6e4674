// LWC: learnable weight clipping (OmniQuant, as ApiQ uses it). Each group of a frozen weight gets
// two trainable logits u, l; the clipping range is a sigmoid-scaled share of the group's range:
//
//   asymmetric: xmax = σ(u)·hi, xmin = σ(l)·lo   with hi = max(max w, 0), lo = min(min w, 0)
//               scale = max((xmax − xmin) / maxq, EPS), zero = clamp(round(−xmin / scale), 0, maxq)
//   symmetric:  xmax = σ(u)·max|w|                (l unused)
//               scale = max(xmax / half, EPS),    zero = half = 2^(bits−1) − 1
//   both:       q = clamp(round(w / scale) + zero, 0, maxq),  w_fq = f32((q − zero) · scale)
//
// hi/lo include 0 as the INT format does (formats.ts), so the zero point always fits in a u8 code
// and finalize() can store it; for groups that straddle 0 this is exactly OmniQuant's min/max.
// round() is round-half-away (roundHalfAway) with a straight-through gradient (1), in round(w/s)
// and in the zero point; clamp passes gradient only inside its range (bounds included, as
// torch.clamp); the EPS clamp on the scale (OmniQuant's CLIPMIN) likewise. w gets no gradient.
//
// The per-group grid (σ in f64, the scale rounded to float32 once, the zero point, where the
// clamps pass gradient) is computed on the host from one synchronous read of u and l: O(groups).
// The per-element work (codes and values; per-group sums of the backward) runs on the backend when
// it has the optional kernels lwcFakeQuant / lwcGrad (the GPU: w stays on the device, the grid is
// uploaded, dy is never read back), else on the host over typed arrays (the reference, one read of
// dy). Both give the same codes and values bit for bit; the per-group sums differ only in
// rounding (f64 on the host). The same f32 scale is used for the codes, the output and the stored
// scale, so finalize().dequantize() reproduces fakeQuant() bit for bit on every backend (their
// kernels compute f32((q − zero) · scale)).

import type { Backend, LwcDims } from '../backend.js';
import { record } from '../autograd.js';
import { FormatError, ShapeError, ValueError, describeShape } from '../errors.js';
import { add, mul } from '../ops/arithmetic.js';
import { reshape, slice } from '../ops/shape.js';
import { expectDType } from '../ops/util.js';
import { assertFinite, fromHandle, full, tensor, tidy, type Tensor, type TensorContainer } from '../tensor.js';
import { QuantizedTensor } from './api.js';
import { checkFormat, roundHalfAway, type QuantFormat } from './formats.js';
import { partLayout, type PartName } from './layout.js';
import { rowBytes, writeCode } from './packing.js';
import { groupsPerRow } from './reference.js';
import { readAll } from '../train/tensors.js';

/** Smallest scale (OmniQuant's CLIPMIN). */
export const LWC_EPS = 1e-5;
/** Initial logit of u and l (σ(4) ≈ 0.982: mild clipping), as OmniQuant/ApiQ. */
export const LWC_INIT = 4.0;

const f32 = Math.fround;
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/** Host copy of a frozen weight and its per-group ranges. */
interface Frozen {
  w: Float32Array;
  rows: number;
  cols: number;
  gpr: number;
  format: QuantFormat;
  /** asymmetric: max(max w, 0); symmetric: max |w|. */
  hi: Float64Array;
  /** asymmetric: min(min w, 0). */
  lo: Float64Array;
}

/** The per-group quantities of one forward pass (what backward and finalize need). */
interface Grid {
  scale: Float32Array;
  zero: Uint8Array;
  /** σ(u), σ(l) at the forward pass. */
  su: Float64Array;
  sl: Float64Array;
  /** The EPS clamp of the scale was not active (gradient passes). */
  scaleFree: Uint8Array;
  /** round(−xmin/scale) was inside [0, maxq] (gradient passes). */
  zeroFree: Uint8Array;
}

function readHost(t: Tensor, where: string): Float32Array {
  if (!t.backend.readSync) throw new ValueError(`${where}: backend '${t.backend.name}' has no synchronous reads, which LWC needs`);
  return t.dataSync() as Float32Array;
}

function checkIntFormat(where: string, format: QuantFormat): void {
  checkFormat(where, format);
  if (format.kind !== 'int') throw new FormatError(`${where}: LWC learns clipping for INT formats, got ${format.name}`);
}

function freeze(w: Tensor, format: QuantFormat, where: string): Frozen {
  checkIntFormat(where, format);
  expectDType(where, w, 'f32', 'weight');
  if (w.rank < 1 || w.size === 0) throw new ShapeError(`${where}: expected a non-empty weight, got ${describeShape(w.shape)}`);
  const cols = w.shape[w.rank - 1];
  const rows = w.size / cols;
  const data = readHost(w, where).slice(); // our own copy: the weight is frozen from here on
  assertFinite(data, w.shape, where);
  const gpr = groupsPerRow(cols, format);
  const hi = new Float64Array(rows * gpr);
  const lo = new Float64Array(rows * gpr);
  for (let r = 0; r < rows; r++) {
    for (let gi = 0; gi < gpr; gi++) {
      let mx = 0;
      let mn = 0;
      for (let c = gi * format.group, end = Math.min(c + format.group, cols); c < end; c++) {
        const v = data[r * cols + c];
        if (format.symmetric) mx = Math.max(mx, Math.abs(v));
        else { mx = Math.max(mx, v); mn = Math.min(mn, v); }
      }
      hi[r * gpr + gi] = mx;
      lo[r * gpr + gi] = mn;
    }
  }
  return { w: data, rows, cols, gpr, format, hi, lo };
}

/** The logits t checked and read to the host (or `read`, their values read already). */
function checkParam(where: string, name: string, t: Tensor, fz: Frozen, wBackend: Backend, read?: Float32Array): Float32Array {
  expectDType(where, t, 'f32', name);
  if (t.rank !== 2 || t.shape[0] !== fz.rows || t.shape[1] !== fz.gpr) {
    throw new ShapeError(`${where}: ${name} must be [${fz.rows}, ${fz.gpr}] (rows, groups per row), got ${describeShape(t.shape)}`);
  }
  if (t.backend !== wBackend) throw new ValueError(`${where}: ${name} lives on '${t.backend.name}', the weight on '${wBackend.name}'`);
  const v = read ?? readHost(t, where);
  assertFinite(v, t.shape, `${where} (${name})`);
  return v;
}

/** Logits read by withLogits for the fakeQuant() calls inside it. */
let prefetched: Map<Lwc, Float32Array[]> | undefined;

/**
 * Runs fn with the logits of every one of `lwcs` read from the backend together (a GPU waits once,
 * not once per logit tensor of every layer); their fakeQuant() inside fn uses those values. For a
 * training step's forward pass: the logits must not change inside fn.
 */
export function withLogits<T>(lwcs: readonly Lwc[], fn: () => T): T {
  if (!lwcs.length || prefetched) return fn();
  const ps = lwcs.flatMap((l) => l.params());
  const all = readAll(ps, 'withLogits');
  const map = new Map<Lwc, Float32Array[]>();
  let at = 0;
  for (const l of lwcs) {
    map.set(l, l.params().map((p) => all.subarray(at, (at += p.size))));
  }
  prefetched = map;
  try {
    return fn();
  } finally {
    prefetched = undefined;
  }
}

/** The grid (scale, zero) of every group for logits u, l. */
function gridOf(fz: Frozen, u: Float32Array, l: Float32Array | undefined): Grid {
  const { format } = fz;
  const n = fz.rows * fz.gpr;
  const maxq = (1 << format.bits) - 1;
  const half = (1 << (format.bits - 1)) - 1;
  const g: Grid = {
    scale: new Float32Array(n), zero: new Uint8Array(n), su: new Float64Array(n), sl: new Float64Array(n),
    scaleFree: new Uint8Array(n), zeroFree: new Uint8Array(n),
  };
  for (let i = 0; i < n; i++) {
    const su = sigmoid(u[i]);
    g.su[i] = su;
    if (format.symmetric) {
      const raw = (su * fz.hi[i]) / half;
      g.scaleFree[i] = raw >= LWC_EPS ? 1 : 0;
      g.scale[i] = f32(Math.max(raw, LWC_EPS));
      g.zero[i] = half;
      continue;
    }
    const sl = sigmoid(l![i]);
    g.sl[i] = sl;
    const xmin = sl * fz.lo[i];
    const raw = (su * fz.hi[i] - xmin) / maxq;
    g.scaleFree[i] = raw >= LWC_EPS ? 1 : 0;
    const s = f32(Math.max(raw, LWC_EPS));
    g.scale[i] = s;
    const z = roundHalfAway(-xmin / s);
    g.zeroFree[i] = z >= 0 && z <= maxq ? 1 : 0;
    g.zero[i] = Math.min(Math.max(z, 0), maxq);
  }
  return g;
}

/** Calls fn(element index, group index, code) for every weight; code = clamp(round(w/s) + z, 0, maxq). */
function forEachCode(fz: Frozen, g: Grid, fn: (i: number, gi: number, code: number, inside: boolean) => void): void {
  const maxq = (1 << fz.format.bits) - 1;
  for (let r = 0; r < fz.rows; r++) {
    for (let c = 0; c < fz.cols; c++) {
      const i = r * fz.cols + c;
      const gi = r * fz.gpr + Math.floor(c / fz.format.group);
      const v = roundHalfAway(fz.w[i] / g.scale[gi]) + g.zero[gi];
      fn(i, gi, Math.min(Math.max(v, 0), maxq), v >= 0 && v <= maxq);
    }
  }
}

/** The fake-quantized weight f32((q − zero)·scale), as the dequantize kernels compute it. */
function fakeQuantValues(fz: Frozen, g: Grid): Float32Array {
  const outv = new Float32Array(fz.w.length);
  forEachCode(fz, g, (i, gi, q) => { outv[i] = (q - g.zero[gi]) * g.scale[gi]; }); // the store rounds to f32
  return outv;
}

/** Per group: dS = Σ dy · ∂w_fq/∂scale at fixed zero, dZ = Σ dy · ∂w_fq/∂zero at fixed scale
 *  (the host version of Backend.lwcGrad). */
function groupSums(fz: Frozen, g: Grid, dy: Float32Array): { dS: ArrayLike<number>; dZ: ArrayLike<number> } {
  const n = fz.rows * fz.gpr;
  const dS = new Float64Array(n);
  const dZ = new Float64Array(n);
  forEachCode(fz, g, (i, gi, q, inside) => {
    const s = g.scale[gi];
    const qz = q - g.zero[gi];
    // w_fq = (clamp(round(w/s) + z) − z)·s: inside the clamp the z terms cancel and round' = 1
    dS[gi] += dy[i] * (inside ? qz - fz.w[i] / s : qz);
    if (!inside) dZ[gi] -= dy[i] * s;
  });
  return { dS, dZ };
}

/** The gradients of L with respect to u and l are linear in the per-group sums (STE through round,
 *  see top): du = dS·Au + dZ·Bu, dl = dS·Al + dZ·Bl. Returns [Au, Bu, Al, Bl] (each n long, one
 *  value per group) for the grid g. */
function logitCoefficients(fz: Frozen, g: Grid): Float64Array {
  const n = fz.rows * fz.gpr;
  const { symmetric, bits } = fz.format;
  const maxq = (1 << bits) - 1;
  const half = (1 << (bits - 1)) - 1;
  const k = new Float64Array(4 * n);
  for (let gi = 0; gi < n; gi++) {
    const su = g.su[gi];
    if (symmetric) {
      k[gi] = g.scaleFree[gi] ? (su * (1 - su) * fz.hi[gi]) / half : 0;
      continue;
    }
    const s = g.scale[gi];
    const sl = g.sl[gi];
    const xmin = sl * fz.lo[gi];
    // zero = round(−xmin/s): ∂/∂s = xmin/s², ∂/∂xmin = −1/s (STE, inside its clamp)
    const dzds = g.zeroFree[gi] ? xmin / (s * s) : 0;
    const dzdxmin = g.zeroFree[gi] ? -1 / s : 0;
    const dsdx = g.scaleFree[gi] ? 1 / maxq : 0; // scale = (xmax − xmin)/maxq
    // dL/ds = dS + dZ·dzds; dL/dxmax = dL/ds·dsdx; dL/dxmin = −dL/ds·dsdx + dZ·dzdxmin
    const gu = su * (1 - su) * fz.hi[gi];
    const gl = sl * (1 - sl) * fz.lo[gi];
    k[gi] = dsdx * gu;
    k[n + gi] = dzds * dsdx * gu;
    k[2 * n + gi] = -dsdx * gl;
    k[3 * n + gi] = (dzdxmin - dzds * dsdx) * gl;
  }
  return k;
}

/** du, dl from the per-group sums on the host (float64). */
function logitGrads(fz: Frozen, k: Float64Array, dS: ArrayLike<number>, dZ: ArrayLike<number>): { du: Float32Array; dl: Float32Array | undefined } {
  const n = fz.rows * fz.gpr;
  const du = new Float32Array(n);
  const dl = fz.format.symmetric ? undefined : new Float32Array(n);
  for (let gi = 0; gi < n; gi++) {
    du[gi] = dS[gi] * k[gi] + dZ[gi] * k[n + gi];
    if (dl) dl[gi] = dS[gi] * k[2 * n + gi] + dZ[gi] * k[3 * n + gi];
  }
  return { du, dl };
}

/** Whether the backend does LWC's per-element work itself (Backend.lwcFakeQuant / lwcGrad). */
const onDevice = (b: Backend) => !!b.lwcFakeQuant && !!b.lwcGrad;

/**
 * Fake quantization of a frozen w with logits (u, l), recorded for autograd (gradients to u, l).
 * wDev: w on the backend, when onDevice(backend): the per-element work runs there.
 */
function fakeQuantOp(fz: Frozen, shape: readonly number[], backend: Backend, u: Tensor, l: Tensor | undefined, where: string, wDev?: Tensor, read?: Float32Array[]): Tensor {
  const uh = checkParam(where, 'u', u, fz, backend, read?.[0]);
  let lh: Float32Array | undefined;
  if (!fz.format.symmetric) {
    if (!l) throw new ValueError(`${where}: the asymmetric format ${fz.format.name} needs the lower logits l`);
    lh = checkParam(where, 'l', l, fz, backend, read?.[1]);
  }
  const grid = gridOf(fz, uh, lh);
  const inputs = lh ? [u, l!] : [u];
  if (!wDev) {
    const y = tensor(fakeQuantValues(fz, grid), shape, 'f32', backend);
    return record('lwcFakeQuant', inputs, y, (dy, { needs }) => {
      const { dS, dZ } = groupSums(fz, grid, readHost(dy, 'lwcFakeQuant backward'));
      const { du, dl } = logitGrads(fz, logitCoefficients(fz, grid), dS, dZ);
      return [
        needs[0] ? tensor(du, u.shape, 'f32', backend) : null,
        dl && needs[1] ? tensor(dl, l!.shape, 'f32', backend) : null,
      ];
    });
  }
  // on the backend: the grid and the gradient coefficients go up as tensors the graph keeps (with
  // w) for the backward pass, which then runs there without reading anything back
  const n = fz.rows * fz.gpr;
  const d: LwcDims = { rows: fz.rows, cols: fz.cols, group: fz.format.group, bits: fz.format.bits };
  const scales = tensor(grid.scale, [n], 'f32', backend);
  const zeros = tensor(grid.zero, [n], 'u8', backend);
  const coef = tensor(Float32Array.from(logitCoefficients(fz, grid)), [4, n], 'f32', backend);
  try {
    const y = fromHandle(backend, backend.lwcFakeQuant!(wDev.handle, scales.handle, zeros.handle, d), shape, 'f32');
    return record('lwcFakeQuant', inputs, y, (dy, { needs, saved: [w, s, z, k] }) => tidy(() => {
      const sums = fromHandle(backend, backend.lwcGrad!(w.handle, s.handle, z.handle, dy.handle, d), [2, n], 'f32');
      const row = (t: Tensor, r: number) => slice(t, [r, 0], [1, n]);
      // du = dS·Au + dZ·Bu, dl = dS·Al + dZ·Bl (logitCoefficients)
      const lin = (a: number, p: Tensor) => reshape(add(mul(row(sums, 0), row(k, a)), mul(row(sums, 1), row(k, a + 1))), p.shape);
      return [needs[0] ? lin(0, u) : null, l && needs[1] ? lin(2, l) : null];
    }), [wDev, scales, zeros, coef]);
  } finally {
    scales.dispose();
    zeros.dispose();
    coef.dispose();
  }
}

/**
 * One-off LWC fake quantization: w_fq for the frozen weight w [..., in] and logits u (and l for
 * asymmetric formats) of shape [rows, groupsPerRow]. Differentiable with respect to u and l.
 * Reads w to the host on every call: for training, hold an `Lwc`, which reads it once.
 */
export function lwcFakeQuant(w: Tensor, params: { u: Tensor; l?: Tensor }, format: QuantFormat): Tensor {
  const fz = freeze(w, format, 'lwcFakeQuant');
  return fakeQuantOp(fz, w.shape, w.backend, params.u, params.l, 'lwcFakeQuant', onDevice(w.backend) ? w : undefined);
}

export interface LwcOptions {
  /** Initial value of every logit (default 4: σ ≈ 0.982). */
  init?: number;
}

/**
 * Learnable weight clipping of one frozen weight: holds its host copy and group ranges (and a copy
 * of w on the backend when that does the per-element work), and the trainable logits u (and l for
 * asymmetric formats), shape [rows, groupsPerRow], on w's backend.
 */
export class Lwc implements TensorContainer {
  readonly format: QuantFormat;
  readonly shape: readonly number[];
  readonly backend: Backend;
  readonly u: Tensor;
  /** Lower logits (asymmetric formats only). */
  readonly l: Tensor | undefined;
  private readonly frozen: Frozen;
  /** The frozen weight on the backend (onDevice backends only). */
  private readonly wDev: Tensor | undefined;

  constructor(w: Tensor, format: QuantFormat, opts: LwcOptions = {}) {
    this.frozen = freeze(w, format, 'Lwc');
    const init = opts.init ?? LWC_INIT;
    if (!Number.isFinite(init)) throw new ValueError(`Lwc: init must be finite, got ${init}`);
    this.format = format;
    this.shape = [...w.shape];
    this.backend = w.backend;
    const pshape = [this.frozen.rows, this.frozen.gpr];
    this.u = full(pshape, init, w.backend).requireGrad();
    this.l = format.symmetric ? undefined : full(pshape, init, w.backend).requireGrad();
    this.wDev = onDevice(w.backend) ? tensor(this.frozen.w, this.shape, 'f32', w.backend) : undefined;
  }

  /** The fake-quantized weight at the current logits (differentiable with respect to them). */
  fakeQuant(): Tensor {
    return fakeQuantOp(this.frozen, this.shape, this.backend, this.u, this.l, 'Lwc.fakeQuant', this.wDev, prefetched?.get(this));
  }

  /** The trainable tensors: [u] or [u, l]. */
  params(): Tensor[] {
    return this.l ? [this.u, this.l] : [this.u];
  }

  /** The real packed weight at the current logits; its dequantize() equals fakeQuant() bit for bit. */
  finalize(): QuantizedTensor {
    const fz = this.frozen;
    const where = 'Lwc.finalize';
    const grid = gridOf(fz, checkParam(where, 'u', this.u, fz, this.backend), this.l && checkParam(where, 'l', this.l, fz, this.backend));
    const rb = rowBytes(fz.cols, this.format.bits);
    const codes = new Uint8Array(fz.rows * rb);
    forEachCode(fz, grid, (i, _gi, q) => writeCode(codes, Math.floor(i / fz.cols) * rb, i % fz.cols, this.format.bits, q));
    const host: Partial<Record<PartName, Uint8Array | Float32Array>> = { codes, scales: grid.scale };
    if (!this.format.symmetric) host.zeros = grid.zero;
    const layout = partLayout(fz.rows, fz.cols, this.format);
    const parts: Partial<Record<PartName, Tensor>> = {};
    for (const [k, data] of Object.entries(host) as [PartName, Uint8Array | Float32Array][]) {
      const spec = layout[k]!;
      parts[k] = fromHandle(this.backend, this.backend.upload(data), spec.shape, spec.dtype);
    }
    return new QuantizedTensor(this.format, this.shape, parts as QuantizedTensor['parts']);
  }

  tensors(): Tensor[] {
    return this.wDev ? [...this.params(), this.wDev] : this.params();
  }

  dispose(): void {
    for (const t of this.tensors()) t.dispose();
  }
}

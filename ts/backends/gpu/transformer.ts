// WGSL kernels: transformer blocks (RMSNorm, rotary embeddings, softmax with the causal mask,
// fused cross-entropy), each with its backward. Semantics: ts/backends/js/transformer.ts.
//
// Row kernels run one workgroup per row (rows beyond 65535 use a 2-D grid of workgroups: row =
// wid.x + wid.y * nwg.x), with a shared-memory tree reduction (WG threads, a power of two <= 256,
// picked from the row length). Reductions are in a fixed order, so results are deterministic.
// Max follows the reference (`if (v > m) m = v`: NaN never wins) and sums use exp(x - max).
//
// crossEntropy must throw the reference's ValueError for a target outside [0, vocab) that is not
// the ignore index, so it reads the targets back (rows i32 words; a wait for the GPU) and checks
// them on the host; the count of non-ignored rows comes from the same read. crossEntropyBackward
// reuses that check for the same targets handle (targets are never updated in place). Targets made
// from host data skip the read: ops/loss.ts passes the count when their known range proves them valid.
//
// rope takes cos/sin from a table computed on the host in f64 exactly as the reference does
// (theta^(-2i/dim) and the angle pos·freq in double, then rounded to f32), so the rotation does not
// depend on the precision of the GPU's pow/sin/cos or on an f32 angle for large positions. Tables
// cover positions [0, P) for P a power of two and are cached per (dim, theta) like pipelines
// (outside the live-buffer count); offsets beyond 65536 (or negative, or fractional) get a
// per-call table instead.

import { ATTENTION_MAX_DIM, type RopeParams } from '../../backend.js';
import { ValueError } from '../../errors.js';
import { f32Bits, GRID_INDEX, type Device, type GpuHandle } from './device.js';
import type { KernelGroup } from './index.js';

/** Shared WGSL: parameters, the row index, and the workgroup reductions (sum, max, sum of two). */
const ROW_COMMON = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
override WG: u32 = 256u;
fn negInf() -> f32 { return bitcast<f32>(0xff800000u); }
var<workgroup> red: array<vec2<f32>, 256>;

fn sumAll(v: f32, lid: u32) -> f32 {
  red[lid].x = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid].x = red[lid].x + red[lid + s].x; }
    workgroupBarrier();
  }
  let r = red[0].x;
  workgroupBarrier();
  return r;
}

fn sum2All(v: vec2<f32>, lid: u32) -> vec2<f32> {
  red[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

// 1/sqrt(a) with one Newton step: GPU sqrt and division are only a few ulp accurate, and the
// error of a row's scale adds up in rmsnormBackward's dw (a sum over rows)
fn rsqrt(a: f32) -> f32 {
  let r = inverseSqrt(a);
  return r + r * (0.5 - 0.5 * (a * r) * r);
}

// local maxima never hold NaN (they only change on v > m), so neither does the tree
fn maxAll(v: f32, lid: u32) -> f32 {
  red[lid].x = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s && red[lid + s].x > red[lid].x) { red[lid].x = red[lid + s].x; }
    workgroupBarrier();
  }
  let r = red[0].x;
  workgroupBarrier();
  return r;
}
`;

const ROW_ARGS = '@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32';

// With subgroup operations (dev.subgroups), the row reductions reduce each subgroup in hardware
// (subgroupAdd / subgroupMax), then add (or max) the per-subgroup results in subgroup order: one
// barrier pair instead of log2(WG). Deterministic on a given adapter; the order of the sum differs
// from the tree's, within the parity tolerances. The kernels' text is rewritten to call these.
const ROW_ARGS_SG = `${ROW_ARGS}, @builtin(subgroup_invocation_id) sgi: u32, @builtin(subgroup_id) sid: u32, @builtin(num_subgroups) nsg: u32`;
const SG_COMMON = /* wgsl */ `
fn sumAllSg(v: f32, sgi: u32, sid: u32, nsg: u32) -> f32 {
  let s = subgroupAdd(v);
  if (sgi == 0u) { red[sid].x = s; }
  workgroupBarrier();
  var r = red[0].x;
  for (var i = 1u; i < nsg; i++) { r = r + red[i].x; }
  workgroupBarrier();
  return r;
}
fn sum2AllSg(v: vec2<f32>, sgi: u32, sid: u32, nsg: u32) -> vec2<f32> {
  let s = vec2<f32>(subgroupAdd(v.x), subgroupAdd(v.y));
  if (sgi == 0u) { red[sid] = s; }
  workgroupBarrier();
  var r = red[0];
  for (var i = 1u; i < nsg; i++) { r = r + red[i]; }
  workgroupBarrier();
  return r;
}
// the values reduced are never NaN (see maxAll), so subgroupMax's NaN rules do not matter
fn maxAllSg(v: f32, sgi: u32, sid: u32, nsg: u32) -> f32 {
  let s = subgroupMax(v);
  if (sgi == 0u) { red[sid].x = s; }
  workgroupBarrier();
  var r = red[0].x;
  for (var i = 1u; i < nsg; i++) { if (red[i].x > r) { r = red[i].x; } }
  workgroupBarrier();
  return r;
}
`;

/** A row kernel's text using the subgroup reductions. */
function withSubgroups(src: string): string {
  return src
    .replace(ROW_COMMON, ROW_COMMON + SG_COMMON)
    .split(ROW_ARGS).join(ROW_ARGS_SG)
    .replace(/\b(sumAll|sum2All|maxAll)\(([^,()]+), lid\)/g, '$1Sg($2, sgi, sid, nsg)');
}
const ROW = 'wid.x + wid.y * nwg.x';

// P: [rows, dim, eps]; y[r, j] = x[r, j] · inv_r · w[j], inv_r = 1 / sqrt(mean_j x² + eps). With
// `residual`, x is the sum s = x + r (as binary add computes it), also written out: the residual
// add and the norm after it in one pass, the same bits as the pair.
const rmsnormSource = (residual: boolean) => {
  const v = residual ? '(x[o + j] + r[o + j])' : 'x[o + j]';
  const b = residual ? ['x', 'r', 'w', 's', 'y'] : ['x', 'w', 'y'];
  return /* wgsl */ `${ROW_COMMON}
${b.map((n, i) => `@group(0) @binding(${i + 1}) var<storage, ${n === 's' || n === 'y' ? 'read_write' : 'read'}> ${n}: array<f32>;`).join('\n')}
@compute @workgroup_size(WG) fn main(${ROW_ARGS}) {
  let row = ${ROW};
  let dim = P[1];
  if (row >= P[0]) { return; }
  let o = row * dim;
  var ss = 0.0;
  for (var j = lid; j < dim; j += WG) { let v = ${v};${residual ? ' s[o + j] = v;' : ''} ss += v * v; }
  ss = sumAll(ss, lid);
  let inv = rsqrt(ss / f32(dim) + bitcast<f32>(P[2]));
  for (var j = lid; j < dim; j += WG) { y[o + j] = ${v} * inv * w[j]; }
}`;
};
const RMSNORM = rmsnormSource(false);
const ADD_RMSNORM = rmsnormSource(true);

// P: [rows, dim, eps]; dx = inv·(dy·w − x̂·mean_j(dy·w·x̂)), x̂ = x·inv; inv_r saved for dw
const RMSNORM_BWD = /* wgsl */ `${ROW_COMMON}
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> invs: array<f32>;
@compute @workgroup_size(WG) fn main(${ROW_ARGS}) {
  let row = ${ROW};
  let dim = P[1];
  if (row >= P[0]) { return; }
  let o = row * dim;
  var acc = vec2<f32>(0.0, 0.0);
  for (var j = lid; j < dim; j += WG) {
    let v = x[o + j];
    acc += vec2<f32>(v * v, dy[o + j] * w[j] * v);
  }
  acc = sum2All(acc, lid);
  let inv = rsqrt(acc.x / f32(dim) + bitcast<f32>(P[2]));
  let mean = acc.y * inv / f32(dim);
  for (var j = lid; j < dim; j += WG) {
    let xhat = x[o + j] * inv;
    dx[o + j] = inv * (dy[o + j] * w[j] - xhat * mean);
  }
  if (lid == 0u) { invs[row] = inv; }
}`;

// P: [rows, dim, chunk]; part[c, j] = Σ_{r in chunk c} dy[r, j]·x[r, j]·inv_r (thread per column)
const RMSNORM_DW_PART = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> invs: array<f32>;
@group(0) @binding(4) var<storage, read_write> part: array<f32>;
override WG: u32 = 64u;
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let dim = P[1];
  let j = gid.x;
  if (j >= dim) { return; }
  let r0 = gid.y * P[2];
  let r1 = min(P[0], r0 + P[2]);
  var s = 0.0;
  for (var r = r0; r < r1; r++) { s += dy[r * dim + j] * (x[r * dim + j] * invs[r]); }
  part[gid.y * dim + j] = s;
}`;

// P: [rows, dim, chunk]; out[c, j] = Σ_{r in chunk c} a[r, j]: one level of a tree sum over rows
// (compensated sums would not survive compilers that simplify (t − s) − v)
const COLSUM = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
override WG: u32 = 64u;
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let dim = P[1];
  let j = gid.x;
  if (j >= dim) { return; }
  let r0 = gid.y * P[2];
  let r1 = min(P[0], r0 + P[2]);
  var s = 0.0;
  for (var r = r0; r < r1; r++) { s += a[r * dim + j]; }
  out[gid.y * dim + j] = s;
}`;

// the rotation of the pair (x1, x2) by the angle whose (cos, sin) is (c, s): shared by rope and
// ropeAppend, so that both give the same values
const ROTATE = /* wgsl */ `
fn rotate(x1: f32, x2: f32, c: f32, s: f32) -> vec2<f32> { return vec2<f32>(x1 * c - x2 * s, x1 * s + x2 * c); }`;

// P: [pairs (= outer·seq·dim/2), seq, half, offset − tableBase, inverse, interleaved];
// tab[p·half + i] = (cos, sin) of position p + tableBase, frequency i
const ROPE = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> tab: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
override WG: u32 = 256u;
${ROTATE}
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = ${GRID_INDEX};
  if (idx >= P[0]) { return; }
  let half = P[2];
  let i = idx % half;
  let rowi = idx / half;
  let t = rowi % P[1];
  let cs = tab[(t + P[3]) * half + i];
  let s = select(cs.y, -cs.y, P[4] != 0u);
  let base = rowi * 2u * half;
  var i1 = base + i;
  var i2 = base + i + half;
  if (P[5] != 0u) { i1 = base + 2u * i; i2 = i1 + 1u; }
  let r = rotate(x[i1], x[i2], cs.x, s);
  y[i1] = r.x;
  y[i2] = r.y;
}`;

// P: [rows, cols]. One workgroup per row: each thread keeps the best (value, index) of its strided
// columns, then a tree; the order (larger value, then smaller index) is total over non-NaN values,
// so any reduction order picks the first of equal maxima; NaNs never win (index cols: none).
const ARGMAX = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<i32>;
var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<u32, 256>;
fn better(v: f32, i: u32, w: f32, j: u32) -> bool { return v > w || (v == w && i < j); }
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= P[0]) { return; }
  let cols = P[1];
  let base = row * cols;
  var v = bitcast<f32>(0xff800000u);
  var i = cols;
  for (var c = lid; c < cols; c += 256u) {
    let a = x[base + c];
    if (better(a, c, v, i)) { v = a; i = c; }
  }
  bv[lid] = v;
  bi[lid] = i;
  workgroupBarrier();
  for (var h = 128u; h > 0u; h >>= 1u) {
    if (lid < h && better(bv[lid + h], bi[lid + h], bv[lid], bi[lid])) { bv[lid] = bv[lid + h]; bi[lid] = bi[lid + h]; }
    workgroupBarrier();
  }
  if (lid == 0u) { y[row] = i32(select(bi[0], 0u, bi[0] >= cols)); }
}`;

// P: [pairs, t, qHeads, kvHeads, half, capacity, at, table position of row 0, interleaved]. One
// thread per pair of features (i, i + half; interleaved: 2i, 2i + 1) of each (batch, position,
// head) of q, then of k, then of v: q's rotated into y [batch, qHeads, t, dim], k's rotated and
// v's copied into the storages [batch, kvHeads, capacity, dim] at position at + row.
const ROPE_APPEND = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> tab: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read_write> ck: array<f32>;
@group(0) @binding(7) var<storage, read_write> cv: array<f32>;
override WG: u32 = 256u;
${ROTATE}
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = ${GRID_INDEX};
  if (idx >= P[0]) { return; }
  let T = P[1]; let hq = P[2]; let hk = P[3]; let half = P[4]; let cap = P[5];
  let dim = 2u * half;
  let per = half * (hq + 2u * hk); // pairs per (batch, position)
  let bt = idx / per;
  let b = bt / T;
  let t = bt % T;
  let hh = (idx % per) / half;
  let i = idx % half;
  var i1 = i;
  var i2 = i + half;
  if (P[8] != 0u) { i1 = 2u * i; i2 = i1 + 1u; }
  let cs = tab[(t + P[7]) * half + i];
  if (hh < hq) {
    let src = (bt * hq + hh) * dim;
    let dst = ((b * hq + hh) * T + t) * dim;
    let r = rotate(q[src + i1], q[src + i2], cs.x, cs.y);
    y[dst + i1] = r.x;
    y[dst + i2] = r.y;
  } else {
    // k's heads, then v's: the same places in their inputs and storages
    let h = (hh - hq) % hk;
    let src = (bt * hk + h) * dim;
    let dst = ((b * hk + h) * cap + P[6] + t) * dim;
    if (hh < hq + hk) {
      let r = rotate(k[src + i1], k[src + i2], cs.x, cs.y);
      ck[dst + i1] = r.x;
      ck[dst + i2] = r.y;
    } else {
      cv[dst + i1] = v[src + i1];
      cv[dst + i2] = v[src + i2];
    }
  }
}`;

// P: [rows, cols, causalQueries]; row q = row % queries sees keys k < q + (cols − queries) + 1
const SOFTMAX = /* wgsl */ `${ROW_COMMON}
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(WG) fn main(${ROW_ARGS}) {
  let row = ${ROW};
  let cols = P[1];
  let cq = P[2];
  if (row >= P[0]) { return; }
  var n = cols;
  if (cq > 0u) { n = u32(clamp(i32(row % cq) + i32(cols) - i32(cq) + 1, 0, i32(cols))); }
  let o = row * cols;
  var m = negInf();
  for (var j = lid; j < n; j += WG) { let v = x[o + j]; if (v > m) { m = v; } }
  m = maxAll(m, lid);
  var s = 0.0;
  for (var j = lid; j < n; j += WG) { s += exp(x[o + j] - m); }
  s = sumAll(s, lid);
  for (var j = lid; j < cols; j += WG) {
    var v = 0.0;
    if (j < n) { v = exp(x[o + j] - m) / s; }
    y[o + j] = v;
  }
}`;

// P: [blocks·rows, rows, t, keys, dim, past, scale bits]; one workgroup (WG 64) per query row r
// of block b: the keys j <= past + (r % rows) % t in chunks of WG, one key per thread (its score
// f32(q·scale)·k_j summed in order over dim), the softmax kept online (the running max m and sum l;
// the accumulated output rescaled by exp(m_old − m_new) when a chunk raises the max), and the
// output's dim features spread over the threads (ATT_ACC per thread: dim <= ATTENTION_MAX_DIM).
// Then y = acc / l.
const ATT_WG = 64;
const ATT_ACC = ATTENTION_MAX_DIM / ATT_WG;
const ATTENTION = /* wgsl */ `${ROW_COMMON}
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
var<workgroup> qs: array<f32, ${ATT_WG * ATT_ACC}>;
var<workgroup> ps: array<f32, ${ATT_WG}>;
@compute @workgroup_size(WG) fn main(${ROW_ARGS}) {
  let row = ${ROW};
  if (row >= P[0]) { return; }
  let rows = P[1]; let t = P[2]; let keys = P[3]; let dim = P[4];
  let n = P[5] + (row % rows) % t + 1u;
  let scale = bitcast<f32>(P[6]);
  let qo = row * dim;
  let kb = (row / rows) * keys * dim;
  for (var d = lid; d < dim; d += WG) { qs[d] = q[qo + d] * scale; }
  workgroupBarrier();
  var m = 0.0;
  var l = 0.0;
  var acc = array<f32, ${ATT_ACC}>();
  for (var c0 = 0u; c0 < n; c0 += WG) {
    let j = c0 + lid;
    var s = negInf();
    if (j < n) {
      let ko = kb + j * dim;
      var dot = 0.0;
      for (var d = 0u; d < dim; d++) { dot = fma(qs[d], k[ko + d], dot); }
      s = dot;
    }
    let cm = maxAll(s, lid);
    let mNew = select(max(m, cm), cm, c0 == 0u);
    let alpha = select(exp(m - mNew), 0.0, c0 == 0u);
    var p = 0.0;
    if (j < n) { p = exp(s - mNew); }
    ps[lid] = p;
    l = l * alpha + sumAll(p, lid); // its barriers also publish ps
    m = mNew;
    let cn = min(WG, n - c0);
    for (var i = 0u; i < ${ATT_ACC}u; i++) {
      let d = lid + i * WG;
      if (d < dim) {
        var a = acc[i] * alpha;
        for (var jj = 0u; jj < cn; jj++) { a = fma(ps[jj], v[kb + (c0 + jj) * dim + d], a); }
        acc[i] = a;
      }
    }
    workgroupBarrier(); // the next chunk rewrites ps
  }
  for (var i = 0u; i < ${ATT_ACC}u; i++) {
    let d = lid + i * WG;
    if (d < dim) { y[qo + d] = acc[i] / l; }
  }
}`;

// P: [rows, cols]; dx = y·(dy − Σ dy·y)
const SOFTMAX_BWD = /* wgsl */ `${ROW_COMMON}
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@compute @workgroup_size(WG) fn main(${ROW_ARGS}) {
  let row = ${ROW};
  let cols = P[1];
  if (row >= P[0]) { return; }
  let o = row * cols;
  var d = 0.0;
  for (var j = lid; j < cols; j += WG) { d += dy[o + j] * y[o + j]; }
  d = sumAll(d, lid);
  for (var j = lid; j < cols; j += WG) { dx[o + j] = y[o + j] * (dy[o + j] - d); }
}`;

// P: [rows, vocab, ignoreIndex]; loss[r] = logsumexp(logits[r]) − logits[r, t_r], 0 when ignored
// (targets were checked on the host)
const XENT_ROWS = /* wgsl */ `${ROW_COMMON}
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@compute @workgroup_size(WG) fn main(${ROW_ARGS}) {
  let row = ${ROW};
  let vocab = P[1];
  if (row >= P[0]) { return; }
  let t = targets[row];
  if (t == bitcast<i32>(P[2]) || t < 0 || u32(t) >= vocab) {
    if (lid == 0u) { loss[row] = 0.0; }
    return;
  }
  let o = row * vocab;
  var m = negInf();
  for (var j = lid; j < vocab; j += WG) { let v = logits[o + j]; if (v > m) { m = v; } }
  m = maxAll(m, lid);
  var s = 0.0;
  for (var j = lid; j < vocab; j += WG) { s += exp(logits[o + j] - m); }
  s = sumAll(s, lid);
  if (lid == 0u) { loss[row] = (m - logits[o + u32(t)]) + log(s); }
}`;

// P: [rows, count]; out[0] = Σ loss / count (0 when count is 0); one workgroup
const XENT_MEAN = /* wgsl */ `${ROW_COMMON}
@group(0) @binding(1) var<storage, read> loss: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(WG) fn main(${ROW_ARGS}) {
  var s = 0.0;
  for (var r = lid; r < P[0]; r += WG) { s += loss[r]; }
  s = sumAll(s, lid);
  if (lid == 0u) { out[0] = select(0.0, s / f32(P[1]), P[1] > 0u); }
}`;

// P: [rows, vocab, ignoreIndex, count]; dlogits[r] = (softmax(logits[r]) − onehot(t_r))·dLoss/count,
// 0 for ignored rows
const XENT_BWD = /* wgsl */ `${ROW_COMMON}
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<i32>;
@group(0) @binding(3) var<storage, read> dloss: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@compute @workgroup_size(WG) fn main(${ROW_ARGS}) {
  let row = ${ROW};
  let vocab = P[1];
  if (row >= P[0]) { return; }
  let o = row * vocab;
  let t = targets[row];
  if (t == bitcast<i32>(P[2]) || t < 0 || u32(t) >= vocab) {
    for (var j = lid; j < vocab; j += WG) { dx[o + j] = 0.0; }
    return;
  }
  let scale = dloss[0] / f32(P[3]);
  var m = negInf();
  for (var j = lid; j < vocab; j += WG) { let v = logits[o + j]; if (v > m) { m = v; } }
  m = maxAll(m, lid);
  var s = 0.0;
  for (var j = lid; j < vocab; j += WG) { s += exp(logits[o + j] - m); }
  s = sumAll(s, lid);
  let tu = u32(t);
  for (var j = lid; j < vocab; j += WG) {
    var g = exp(logits[o + j] - m) / s * scale;
    if (j == tu) { g -= scale; }
    dx[o + j] = g;
  }
}`;

/** Workgroup size of a row kernel for rows of length n. */
const rowWg = (n: number) => (n >= 2048 ? 256 : n >= 512 ? 128 : 64);

/** Rows summed per thread at each level of rmsnormBackward's tree sum for dw. */
const DW_FAN = 8;

interface RopeTable {
  id: number;
  positions: number;
}
const ROPE_TABLES_MAX = 8;
const ROPE_CACHED_POSITIONS = 65536;

/** (cos, sin) of pos·theta^(-2i/dim) for pos in [from, from + count), i < dim/2, as f32 pairs. */
function ropeTable(from: number, count: number, dim: number, theta: number): Float32Array {
  const half = dim / 2;
  const tab = new Float32Array(count * half * 2);
  const freq = Array.from({ length: half }, (_, i) => Math.pow(theta, (-2 * i) / dim));
  for (let p = 0; p < count; p++) {
    const pos = from + p;
    for (let i = 0; i < half; i++) {
      const angle = pos * freq[i];
      tab[2 * (p * half + i)] = Math.cos(angle);
      tab[2 * (p * half + i) + 1] = Math.sin(angle);
    }
  }
  return tab;
}

export const transformerKernels: KernelGroup = (dev) => {
  const pipe = (name: string, src: string, wg: number) =>
    dev.subgroups ? dev.pipeline(`transformer.${name}.sg`, () => withSubgroups(src), 'main', { WG: wg }) : dev.pipeline(`transformer.${name}`, src, 'main', { WG: wg });
  const rowGrid = (rows: number) => dev.grid(rows, 1);
  const ropeTables = new Map<string, RopeTable>();
  /** Targets handles already checked: the count of non-ignored rows per (rows, vocab, ignore). */
  const checked = new WeakMap<GpuHandle, { key: string; count: number }>();

  /** Checks targets like the reference (first bad row throws); returns the non-ignored count. */
  function checkTargets(targets: GpuHandle, rows: number, vocab: number, ignoreIndex: number, reuse: boolean, given?: number): number {
    if (given !== undefined) return given; // the caller knows them valid and counted (ops/loss.ts)
    const key = `${rows}|${vocab}|${ignoreIndex}`;
    const known = checked.get(targets);
    if (reuse && known && known.key === key) return known.count;
    if (rows === 0) return 0;
    const b = dev.readBytes(targets, 0, rows * 4);
    const t = new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + rows * 4));
    let count = 0;
    for (let r = 0; r < rows; r++) {
      if (t[r] === ignoreIndex) continue;
      if (t[r] < 0 || t[r] >= vocab) {
        throw new ValueError(`crossEntropy: target ${t[r]} of row ${r} is outside [0, ${vocab}) and is not the ignore index`);
      }
      count++;
    }
    checked.set(targets, { key, count });
    return count;
  }

  /** A GPU table for positions [base, base + ...) covering [offset, offset + seq); temp when per-call. */
  function ropeTableFor(p: RopeParams): { h: GpuHandle; base: number; temp: boolean } {
    const need = p.offset + p.seq;
    if (!Number.isInteger(p.offset) || p.offset < 0 || need > ROPE_CACHED_POSITIONS) {
      return { h: dev.upload(ropeTable(p.offset, p.seq, p.dim, p.theta)), base: p.offset, temp: true };
    }
    const key = `${p.dim}|${p.theta}`;
    let e = ropeTables.get(key);
    if (!e || e.positions < need) {
      if (e) dev.addon.gpuFree(e.id);
      const positions = Math.max(64, 2 ** Math.ceil(Math.log2(need)));
      const tab = ropeTable(0, positions, p.dim, p.theta);
      e = { id: dev.addon.gpuUpload(new Uint8Array(tab.buffer)), positions };
    }
    ropeTables.delete(key); // most recently used last
    ropeTables.set(key, e);
    if (ropeTables.size > ROPE_TABLES_MAX) {
      const [oldKey, old] = ropeTables.entries().next().value as [string, RopeTable];
      dev.addon.gpuFree(old.id);
      ropeTables.delete(oldKey);
    }
    return { h: { id: e.id, bytes: e.positions * p.dim * 4 }, base: 0, temp: false };
  }

  return {
    addRmsnorm(dev, x, r, w, rows, dim, eps) {
      const sum = dev.alloc(rows * dim * 4);
      const y = dev.alloc(rows * dim * 4);
      if (rows * dim === 0) return [sum, y];
      dev.run(pipe('addRmsnorm', ADD_RMSNORM, rowWg(dim)), [rows, dim, f32Bits(eps)], [x as GpuHandle, r as GpuHandle, w as GpuHandle, sum, y], rowGrid(rows));
      return [sum, y];
    },

    rmsnorm(dev, x, w, rows, dim, eps) {
      const y = dev.alloc(rows * dim * 4);
      if (rows * dim === 0) return y;
      dev.run(pipe('rmsnorm', RMSNORM, rowWg(dim)), [rows, dim, f32Bits(eps)], [x as GpuHandle, w as GpuHandle, y], rowGrid(rows));
      return y;
    },

    rmsnormBackward(dev, x, w, dy, rows, dim, eps) {
      const dx = dev.alloc(rows * dim * 4);
      if (rows === 0 || dim === 0) return [dx, dev.alloc(dim * 4, true)];
      const dw = dev.alloc(dim * 4);
      const invs = dev.alloc(rows * 4);
      dev.run(pipe('rmsnormBwd', RMSNORM_BWD, rowWg(dim)), [rows, dim, f32Bits(eps)], [x as GpuHandle, w as GpuHandle, dy as GpuHandle, dx, invs], rowGrid(rows));
      // dw: partial sums over chunks of rows, then tree levels of DW_FAN until one row is left
      const colGroups = Math.ceil(dim / 64);
      let chunk = Math.max(DW_FAN, Math.ceil(rows / 65535));
      let n = Math.ceil(rows / chunk);
      let part = n === 1 ? dw : dev.alloc(n * dim * 4);
      dev.run(pipe('rmsnormDwPart', RMSNORM_DW_PART, 64), [rows, dim, chunk], [x as GpuHandle, dy as GpuHandle, invs, part], [colGroups, n, 1]);
      while (part !== dw) {
        chunk = Math.max(DW_FAN, Math.ceil(n / 65535));
        const m = Math.ceil(n / chunk);
        const next = m === 1 ? dw : dev.alloc(m * dim * 4);
        dev.run(pipe('colsum', COLSUM, 64), [n, dim, chunk], [part, next], [colGroups, m, 1]);
        dev.free(part);
        part = next;
        n = m;
      }
      dev.free(invs);
      return [dx, dw];
    },

    argmaxRows(dev, x, rows, cols) {
      const y = dev.alloc(rows * 4);
      if (rows === 0) return y;
      dev.run(dev.pipeline('transformer.argmax', ARGMAX), [rows, cols], [x as GpuHandle, y], rowGrid(rows));
      return y;
    },

    ropeAppend(dev, q, k, v, keys, values, d) {
      const half = d.dim / 2;
      const y = dev.alloc(d.batch * d.qHeads * d.t * d.dim * 4);
      const pairs = d.batch * d.t * half * (d.qHeads + 2 * d.kvHeads);
      if (pairs === 0) return y;
      const tab = ropeTableFor({ outer: 1, seq: d.t, dim: d.dim, theta: d.theta, offset: d.offset, style: d.style, inverse: false });
      const P = [pairs, d.t, d.qHeads, d.kvHeads, half, d.capacity, d.at, d.offset - tab.base, d.style === 'interleaved' ? 1 : 0];
      dev.run(pipe('ropeAppend', ROPE_APPEND, 256), P, [q as GpuHandle, k as GpuHandle, v as GpuHandle, tab.h, y, keys as GpuHandle, values as GpuHandle], dev.grid(pairs, 256));
      if (tab.temp) dev.free(tab.h);
      return y;
    },

    rope(dev, x, p) {
      const n = p.outer * p.seq * p.dim;
      const y = dev.alloc(n * 4);
      if (n === 0) return y;
      const tab = ropeTableFor(p);
      const pairs = n / 2;
      dev.run(pipe('rope', ROPE, 256), [pairs, p.seq, p.dim / 2, p.offset - tab.base, p.inverse ? 1 : 0, p.style === 'interleaved' ? 1 : 0], [x as GpuHandle, tab.h, y], dev.grid(pairs, 256));
      if (tab.temp) dev.free(tab.h);
      return y;
    },

    softmax(dev, x, rows, cols, causalQueries) {
      const y = dev.alloc(rows * cols * 4);
      if (rows * cols === 0) return y;
      dev.run(pipe('softmax', SOFTMAX, rowWg(cols)), [rows, cols, Math.max(0, causalQueries)], [x as GpuHandle, y], rowGrid(rows));
      return y;
    },

    attention(dev, q, k, v, d) {
      const n = d.blocks * d.rows;
      const y = dev.alloc(n * d.dim * 4);
      if (n * d.dim === 0) return y;
      if (d.dim > ATTENTION_MAX_DIM) throw new ValueError(`attention: head size ${d.dim} is over ${ATTENTION_MAX_DIM}`);
      dev.run(pipe('attention', ATTENTION, ATT_WG), [n, d.rows, d.t, d.keys, d.dim, d.past, f32Bits(d.scale)], [q as GpuHandle, k as GpuHandle, v as GpuHandle, y], rowGrid(n));
      return y;
    },

    softmaxBackward(dev, y, dy, rows, cols) {
      const dx = dev.alloc(rows * cols * 4);
      if (rows * cols === 0) return dx;
      dev.run(pipe('softmaxBwd', SOFTMAX_BWD, rowWg(cols)), [rows, cols], [y as GpuHandle, dy as GpuHandle, dx], rowGrid(rows));
      return dx;
    },

    crossEntropy(dev, logits, targets, rows, vocab, ignoreIndex, checked) {
      const count = checkTargets(targets as GpuHandle, rows, vocab, ignoreIndex, false, checked);
      if (count === 0) return dev.alloc(4, true);
      const out = dev.alloc(4);
      const loss = dev.alloc(rows * 4);
      dev.run(pipe('xentRows', XENT_ROWS, rowWg(vocab)), [rows, vocab, ignoreIndex | 0], [logits as GpuHandle, targets as GpuHandle, loss], rowGrid(rows));
      dev.run(pipe('xentMean', XENT_MEAN, 256), [rows, count], [loss, out], [1, 1, 1]);
      dev.free(loss);
      return out;
    },

    crossEntropyBackward(dev, logits, targets, dLoss, rows, vocab, ignoreIndex, checked) {
      const count = checkTargets(targets as GpuHandle, rows, vocab, ignoreIndex, true, checked);
      if (count === 0 || rows * vocab === 0) return dev.alloc(rows * vocab * 4, true);
      const dx = dev.alloc(rows * vocab * 4);
      dev.run(pipe('xentBwd', XENT_BWD, rowWg(vocab)), [rows, vocab, ignoreIndex | 0, count], [logits as GpuHandle, targets as GpuHandle, dLoss as GpuHandle, dx], rowGrid(rows));
      return dx;
    },
  };
};

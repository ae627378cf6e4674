// WGSL kernels: quantize (every NF / INT format, with NF double quantization) and ICQ's entropy
// search, bit-identical with the JS reference (ts/quant/reference.ts, doublequant.ts, icq.ts) and
// the Rust kernels (crates/kernels/src/quant/quantize.rs, icq.rs).
//
// Exactness. The reference mixes float32 and float64 steps; shader division is not correctly
// rounded on every driver (Vulkan allows 2.5 ulp in f32), so every quotient that decides a bit is
// taken from an f64 division and then checked against its neighbours with exact f64 products:
//   div32(x, y)  = f32(x / y) correctly rounded (f32(1 / m), f32(x / p)): the neighbour with the
//                  smallest |x - q·y| (q·y has 48 bits, the difference is exact by Sterbenz);
//   rha(x, s)    = roundHalfAway(x / s): the integer r with (2r-1)·s <= 2|x| < (2r+1)·s;
//   int_scale    = f32TowardZero(range / maxq): the largest f32 s with s·maxq <= range.
// (f64(x / s) never lands on the wrong side of a half-integer unless x / s is one exactly, and the
// f64 quotient D / maxq never rounds up onto an f32 value: see formats.ts and the comments below.)
// An f64 product that is then added (ICQ's τ0 + f·A0) goes through workgroup memory and a barrier
// so no driver can fuse it into an fma. So these kernels need f64 in shaders (dev.info.f64); on an
// adapter without it, quantize and icqSearch run on the host.
// Known limit: a driver that flushes f32 subnormals gives different codes for groups whose absmax
// is subnormal (below 1.2e-38); real weights never are.
//
// quantize: four small kernels in one batch, then one synchronous read (the NonFiniteError must be
// thrown by quantize itself):
//   stats   one workgroup of 64 per group: absmax (nf) or lo/hi (int) through workgroup memory;
//           writes scale[g] (nf absmax / int step) and aux[g] (nf: bits of f32(1/absmax), 0 for an
//           all-zero group, 0xffffffff when 1/absmax overflows (divide instead); int: the zero
//           point), and atomicMin(flag, index) of any NaN / Inf element.
//   codes   one thread per u32 word of the packed codes: each byte's elements (MSB-first bit
//           stream per row, formats.ts PACKING) coded from w and the group's scale / aux.
//   dq      (double quantization) one workgroup of 256 per block of 256 group absmax values:
//           centered = f32(absmax - offset), block absmax, bnb's dynamic 8-bit code, 64 u32 words.
//           offset = f32(sum(absmax) in f64 / groups) is summed on the host, in the reference's
//           order, from the absmax read back with the error flag (one read; no extra wait).
//   pack    u32 per group -> u8 (asymmetric INT zero points).
// icqSearch: one workgroup of 128 per group: the group's values sorted (bitonic, as order keys in
// workgroup memory, or in a global scratch buffer for groups longer than SORT_CAP), then 128
// candidates at a time, one per thread: the histogram by binary search for each code boundary in
// the sorted group (codes are monotone in w), S = Σ c·ln c from the host's table (lnInt, f64),
// then thread 0 takes the candidates in order with the reference's tie rule. Candidate values
// (NF factors λ·σ·(j-n)/n in f64, INT clip ratios in f32), the table and ICQ_TIE·n come from the
// host, computed by the reference's own expressions.

import type { IcqSearchParams, QuantHandles } from '../../backend.js';
import { NonFiniteError } from '../../errors.js';
import { nfTable } from '../../quant/codebooks.js';
import { dynamicMap } from '../../quant/doublequant.js';
import { DOUBLE_QUANT_BLOCK, type QuantFormat } from '../../quant/formats.js';
import { clipCandidate, ICQ_TIE, lnInt } from '../../quant/icq.js';
import { rowBytes } from '../../quant/packing.js';
import { f32Bits, GRID_INDEX, type Device, type GpuHandle } from './device.js';
import type { KernelGroup } from './index.js';

const NO_BAD = 0xffffffff;
const f32 = Math.fround;

const u32Bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length), (x) => `0x${x.toString(16)}u`).join(', ');

/** WGSL: the span of group g for kernels whose P starts [rows, cols, group, groupsPerRow]. */
const GROUP_SPAN = /* wgsl */ `
// group g: its first element and length (a row's last group may be short)
fn group_span(g: u32) -> vec2<u32> {
  let c0 = (g % P[3]) * P[2];
  return vec2<u32>((g / P[3]) * P[1] + c0, min(P[2], P[1] - c0));
}`;

/** Exact helpers (f64 needed): see the top of this file. */
const EXACT = /* wgsl */ `
fn fabs(x: f32) -> f32 { return bitcast<f32>(bitcast<u32>(x) & 0x7fffffffu); }
fn f_inf() -> f32 { return bitcast<f32>(0x7f800000u + (P[0] & 0u)); }
fn is_bad(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u; }
// f32(x / y), correctly rounded, for finite x and finite y > 0 (+-Inf when it overflows).
fn div32(x: f32, y: f32) -> f32 {
  let ax = fabs(x);
  if (ax == 0.0) { return x; }
  let xd = f64(ax);
  let yd = f64(y);
  let d = xd / yd;
  var r: f32;
  if (d >= 3.4028235677973366e38lf) {
    r = f_inf(); // at or past the midpoint between FLT_MAX and 2^128 (1/m never sits on it)
  } else {
    let q = f32(d);
    let qb = bitcast<u32>(q);
    r = q;
    var e = abs(xd - f64(q) * yd);
    let up = bitcast<f32>(qb + 1u);
    let eu = abs(xd - f64(up) * yd);
    if (eu < e) { r = up; e = eu; }
    if (qb > 0u) {
      let dn = bitcast<f32>(qb - 1u);
      if (abs(xd - f64(dn) * yd) < e) { r = dn; }
    }
  }
  return select(r, -r, x < 0.0);
}
// roundHalfAway(x / s) for s > 0 finite (x may be +-Inf), clamped to +-2^20 (callers clamp codes
// to at most 15 anyway).
fn rha(x: f32, s: f32) -> i32 {
  let ax = fabs(x);
  var r = min(floor(ax / s + 0.5), 1048576.0);
  let a2 = 2.0lf * f64(ax);
  let sd = f64(s);
  for (var i = 0; i < 2; i++) {
    if (r > 0.0 && a2 < f64(2.0 * r - 1.0) * sd) { r -= 1.0; }
    else if (r < 1048576.0 && a2 >= f64(2.0 * r + 1.0) * sd) { r += 1.0; }
  }
  let ri = i32(r);
  return select(ri, -ri, x < 0.0);
}
`;

/** INT scale and zero point (need formatConsts). */
const INT_FNS = /* wgsl */ `
// The INT step of a group with range [lo, hi] (lo <= 0 <= hi): f32TowardZero(D / DIV) with
// D = hi - lo (f64; asymmetric, DIV = maxq) or max(hi, -lo) (symmetric, DIV = 2^(bits-1) - 1);
// 1 for an all-zero group. f64(D / DIV) is within half an f64 ulp of an f32 only if equal to it
// (DIV odd, <= 15), so the exact quotient decides as the reference's rounded one does.
fn int_scale(lo: f32, hi: f32) -> f32 {
  var d: f64;
  if (SYM) { d = max(f64(hi), -f64(lo)); } else { d = f64(hi) - f64(lo); }
  let div = f64(DIV);
  if (!(d > 0.0lf)) { return 1.0; }
  var s = f32(d / div);
  for (var i = 0; i < 2; i++) {
    if (f64(s) * div > d) { s = bitcast<f32>(bitcast<u32>(s) - 1u); }
    else if (f64(bitcast<f32>(bitcast<u32>(s) + 1u)) * div <= d) { s = bitcast<f32>(bitcast<u32>(s) + 1u); }
  }
  if (s == 0.0) { return 1.0; }
  return s;
}
// The asymmetric zero point: clamp(roundHalfAway(-lo / s), 0, maxq); symmetric: 2^(bits-1) - 1.
fn int_zero(lo: f32, s: f32) -> i32 {
  if (SYM) { return HALF; }
  return clamp(rha(-lo, s), 0, MAXQ);
}
`;

/** Format constants for a module: bits, NF thresholds or INT grid. */
function formatConsts(f: QuantFormat): string {
  const maxq = (1 << f.bits) - 1;
  const half = (1 << (f.bits - 1)) - 1;
  const t = nfTable(f.bits);
  return /* wgsl */ `
const BITS: u32 = ${f.bits}u;
const MAXQ: i32 = ${maxq};
const HALF: i32 = ${half};
const SYM: bool = ${f.symmetric};
const DIV: f32 = ${f.symmetric ? half : maxq}.0;
const TOP: i32 = ${f.symmetric ? 2 * half : maxq};
const NTH: u32 = ${t.thresholds.length}u;
const ZERO_CODE: u32 = ${t.zeroCode}u;
var<private> TH: array<u32, ${t.thresholds.length}> = array<u32, ${t.thresholds.length}>(${u32Bits(t.thresholds)});
fn th(k: u32) -> f32 { return bitcast<f32>(TH[k]); }
// NF code of a value already scaled to [-1, 1]: the number of thresholds it exceeds.
fn nf_code(n: f32) -> u32 {
  var c = 0u;
  for (var k = 0u; k < NTH; k++) { c += select(0u, 1u, n > th(k)); }
  return c;
}`;
}

const fmtKey = (f: QuantFormat) => `${f.kind}${f.bits}${f.symmetric ? 's' : ''}`;

// ---- quantize ----

const STATS_WG = 64;

// P: [rows, cols, group, gpr, groups]; one workgroup per group (2-D grid of workgroups).
const statsSource = (f: QuantFormat) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> scale: array<f32>;
@group(0) @binding(3) var<storage, read_write> aux: array<u32>;
@group(0) @binding(4) var<storage, read_write> flag: array<atomic<u32>>;
${formatConsts(f)}
${EXACT}
${INT_FNS}
${GROUP_SPAN}
var<workgroup> ra: array<f32, ${STATS_WG}>;
var<workgroup> rb: array<f32, ${STATS_WG}>;
@compute @workgroup_size(${STATS_WG}) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P[4]) { return; }
  let span = group_span(g);
  let base = span.x;
  let n = span.y;
  var a = 0.0; // nf: absmax; int: lo
  var b = 0.0; // int: hi
  for (var i = lid; i < n; i += ${STATS_WG}u) {
    let x = w[base + i];
    if (is_bad(x)) { atomicMin(&flag[0], base + i); }
    ${f.kind === 'nf' ? 'a = max(a, fabs(x));' : 'a = min(a, x); b = max(b, x);'}
  }
  ra[lid] = a;
  rb[lid] = b;
  workgroupBarrier();
  for (var s = ${STATS_WG / 2}u; s > 0u; s >>= 1u) {
    if (lid < s) {
      ${f.kind === 'nf' ? 'ra[lid] = max(ra[lid], ra[lid + s]);' : 'ra[lid] = min(ra[lid], ra[lid + s]); rb[lid] = max(rb[lid], rb[lid + s]);'}
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    ${f.kind === 'nf' ? `
    let m = ra[0];
    scale[g] = m;
    var inv = 0u;
    if (m > 0.0) {
      let r = div32(1.0, m);
      inv = select(bitcast<u32>(r), 0xffffffffu, is_bad(r));
    }
    aux[g] = inv;` : `
    let s = int_scale(ra[0], rb[0]);
    scale[g] = s;
    aux[g] = u32(int_zero(ra[0], s));`}
  }
}`;

// P: [cols, group, gpr, rowBytes, totalBytes, words]; one thread per u32 word of codes.
const codesSource = (f: QuantFormat) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read> aux: array<u32>;
@group(0) @binding(4) var<storage, read_write> codes: array<u32>;
override WG: u32 = 256u;
${formatConsts(f)}
${EXACT}
${INT_FNS}
fn code(row: u32, e: u32) -> u32 {
  let x = w[row * P[0] + e];
  let g = row * P[2] + e / P[1];
  ${f.kind === 'nf' ? `
  let inv = aux[g];
  if (inv == 0u) { return ZERO_CODE; }
  if (inv == 0xffffffffu) { return nf_code(div32(x, scale[g])); }
  return nf_code(x * bitcast<f32>(inv));` : `
  return u32(clamp(rha(x, scale[g]) + i32(aux[g]), 0, MAXQ));`}
}
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let wi = ${GRID_INDEX};
  if (wi >= P[5]) { return; }
  let cols = P[0];
  let rb = P[3];
  var word = 0u;
  for (var k = 0u; k < 4u; k++) {
    let b = wi * 4u + k;
    if (b >= P[4]) { break; }
    let row = b / rb;
    let bit0 = (b % rb) * 8u;
    let e1 = min((bit0 + 7u) / BITS, cols - 1u);
    var byte = 0u;
    for (var e = bit0 / BITS; e <= e1; e++) {
      let c = code(row, e);
      let pos = i32(bit0 + 8u) - i32((e + 1u) * BITS); // where the code's lowest bit lands
      byte |= select(c >> u32(-pos), c << u32(pos), pos >= 0);
    }
    word |= (byte & 0xffu) << (8u * k);
  }
  codes[wi] = word;
}`;

// P: [groups, offset bits]; one workgroup of 256 per block of 256 absmax values.
const dqSource = () => /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> absmax: array<f32>;
@group(0) @binding(2) var<storage, read_write> scaleCodes: array<u32>;
@group(0) @binding(3) var<storage, read_write> scale2: array<f32>;
${EXACT}
var<private> DM: array<u32, 256> = array<u32, 256>(${u32Bits(dynamicMap())});
fn dm(i: u32) -> f32 { return bitcast<f32>(DM[i]); }
// bitsandbytes' dQuantize<0> (doublequant.ts dynamicCode)
fn dyn_code(x: f32) -> u32 {
  var pivot = 127u;
  var upperPivot = 255u;
  var lowerPivot = 0u;
  var lower = -1.0;
  var upper = 1.0;
  var val = dm(pivot);
  for (var step = 64u; step > 0u; step >>= 1u) {
    if (x > val) { lowerPivot = pivot; lower = val; pivot += step; }
    else { upperPivot = pivot; upper = val; pivot -= step; }
    val = dm(pivot);
  }
  if (upperPivot == 255u) { upper = dm(255u); }
  if (lowerPivot == 0u) { lower = dm(0u); }
  if (x > val) { return select(pivot, upperPivot, x > (upper + val) * 0.5); }
  return select(pivot, lowerPivot, x < (lower + val) * 0.5);
}
var<workgroup> red: array<f32, 256>;
var<workgroup> cs: array<u32, 256>;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let blk = wid.x + wid.y * nwg.x;
  let groups = P[0];
  if (blk * 256u >= groups) { return; }
  let i = blk * 256u + lid;
  var c = 0.0;
  if (i < groups) { c = absmax[i] - bitcast<f32>(P[1]); }
  red[lid] = fabs(c);
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  let m = red[0];
  var code = 0u;
  if (i < groups) {
    if (m == 0.0) { code = 127u; }
    else {
      let inv = div32(1.0, m);
      if (is_bad(inv)) { code = dyn_code(div32(c, m)); } else { code = dyn_code(c * inv); }
    }
  }
  cs[lid] = code;
  workgroupBarrier();
  if (lid < 64u) {
    let wi = blk * 64u + lid;
    if (wi * 4u < groups) {
      scaleCodes[wi] = cs[4u * lid] | (cs[4u * lid + 1u] << 8u) | (cs[4u * lid + 2u] << 16u) | (cs[4u * lid + 3u] << 24u);
    }
  }
  if (lid == 0u) { scale2[blk] = m; }
}`;

// P: [count, words]: u32 values (< 256) -> bytes.
const PACK = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
override WG: u32 = 256u;
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let wi = ${GRID_INDEX};
  if (wi >= P[1]) { return; }
  var word = 0u;
  for (var k = 0u; k < 4u; k++) {
    let i = wi * 4u + k;
    if (i < P[0]) { word |= (src[i] & 0xffu) << (8u * k); }
  }
  dst[wi] = word;
}`;

/** Workgroup grid for `count` workgroups (2-D past 65535). */
const wgGrid = (dev: Device, count: number) => dev.grid(count, 1);

function firstBad(dev: Device, flag: GpuHandle): number {
  const b = dev.readBytes(flag, 0, 4);
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
}

function nonFinite(dev: Device, where: string, w: GpuHandle, bad: number, rows: number, cols: number): NonFiniteError {
  const b = dev.readBytes(w, bad * 4, 4);
  const v = new DataView(b.buffer, b.byteOffset, 4).getFloat32(0, true);
  return new NonFiniteError(`${where}: expected finite weights, got ${v} at row ${Math.floor(bad / cols)}, col ${bad % cols} of [${rows}, ${cols}]`);
}

function quantize(dev: Device, w: GpuHandle, rows: number, cols: number, f: QuantFormat): QuantHandles {
  const gpr = Math.ceil(cols / f.group);
  const groups = rows * gpr;
  const rb = rowBytes(cols, f.bits);
  const codeBytes = rows * rb;
  const key = fmtKey(f);
  const codes = dev.alloc(codeBytes);
  const scale = dev.alloc(groups * 4);
  const aux = dev.alloc(groups * 4);
  const flag = dev.upload(Uint32Array.of(NO_BAD));
  const temps = [aux, flag];
  const out: GpuHandle[] = [codes];
  try {
    dev.run(dev.pipeline(`quant-encode-stats-${key}`, () => statsSource(f)), [rows, cols, f.group, gpr, groups], [w, scale, aux, flag], wgGrid(dev, groups));
    const words = Math.ceil(codeBytes / 4);
    dev.run(dev.pipeline(`quant-encode-codes-${key}`, () => codesSource(f)), [cols, f.group, gpr, rb, codeBytes, words], [w, scale, aux, codes], dev.grid(words, 256));
    const parts: QuantHandles = { codes };
    if (f.doubleQuant) {
      temps.push(scale);
      // one wait: the error flag and the absmax values for the offset (the reference's f64 sum)
      const bad = firstBad(dev, flag);
      if (bad !== NO_BAD) throw nonFinite(dev, 'quantize', w, bad, rows, cols);
      const a = dev.readBytes(scale, 0, groups * 4);
      const absmax = new Float32Array(a.buffer.slice(a.byteOffset, a.byteOffset + groups * 4));
      let sum = 0;
      for (let g = 0; g < groups; g++) sum += absmax[g];
      const offset = f32(sum / groups);
      const blocks = Math.ceil(groups / DOUBLE_QUANT_BLOCK);
      const scaleCodes = dev.alloc(groups);
      const scale2 = dev.alloc(blocks * 4);
      out.push(scaleCodes, scale2);
      dev.run(dev.pipeline('quant-encode-dq', () => dqSource()), [groups, f32Bits(offset)], [scale, scaleCodes, scale2], wgGrid(dev, blocks));
      const scaleOffset = dev.upload(Float32Array.of(offset));
      out.push(scaleOffset);
      Object.assign(parts, { scaleCodes, scale2, scaleOffset });
    } else {
      out.push(scale);
      parts.scales = scale;
    }
    if (f.kind === 'int' && !f.symmetric) {
      const zeros = dev.alloc(groups);
      out.push(zeros);
      const zw = Math.ceil(groups / 4);
      dev.run(dev.pipeline('quant-encode-pack', PACK), [groups, zw], [aux, zeros], dev.grid(zw, 256));
      parts.zeros = zeros;
    }
    if (!f.doubleQuant) {
      const bad = firstBad(dev, flag);
      if (bad !== NO_BAD) throw nonFinite(dev, 'quantize', w, bad, rows, cols);
    }
    out.length = 0; // handed to the caller
    return parts;
  } finally {
    for (const h of out) dev.free(h);
    for (const h of temps) dev.free(h);
  }
}

// ---- icqSearch ----

const ICQ_WG = 128;
/** Groups up to this many values are sorted in workgroup memory; longer ones in a scratch buffer. */
const SORT_CAP = 2048;
/** Scratch bytes per dispatch for the long-group variant (groups are dispatched in chunks). */
const SCRATCH_BYTES = 64 << 20;

// P: [rows, cols, group, gpr, groups, candidates, tableLen, firstGroup, npMax, nFull]
// table: c·ln c for c = 0..tableLen-1, then ICQ_TIE·nFull, ICQ_TIE·nLast (f64).
// cand: nf: the factors λ·σ·(j-n)/n (f64); int: the clip ratios (f32).
const icqSource = (f: QuantFormat, global: boolean) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> best_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> flag: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read> table: array<f64>;
@group(0) @binding(5) var<storage, read> cand: array<${f.kind === 'nf' ? 'f64' : 'f32'}>;
${global ? '@group(0) @binding(6) var<storage, read_write> scratch: array<u32>;' : `var<workgroup> keys: array<u32, ${SORT_CAP}>;`}
${formatConsts(f)}
${EXACT}
${INT_FNS}
${GROUP_SPAN}
const LEN: u32 = ${1 << f.bits}u;
var<workgroup> sc: array<f64, ${ICQ_WG}>;
var<workgroup> cv: array<f32, ${ICQ_WG}>;
var<workgroup> prod: array<f64, ${ICQ_WG}>;
var<private> kbase: u32;
${global ? `
fn kget(i: u32) -> u32 { return scratch[kbase + i]; }
fn kset(i: u32, v: u32) { scratch[kbase + i] = v; }
fn sync() { storageBarrier(); workgroupBarrier(); }` : `
fn kget(i: u32) -> u32 { return keys[i]; }
fn kset(i: u32, v: u32) { keys[i] = v; }
fn sync() { workgroupBarrier(); }`}
// order keys: u32 order = float order with -0 before +0
fn to_key(x: f32) -> u32 { let b = bitcast<u32>(x); return b ^ select(0x80000000u, 0xffffffffu, (b >> 31u) == 1u); }
fn kval(i: u32) -> f32 { let k = kget(i); return bitcast<f32>(select(~k, k ^ 0x80000000u, (k >> 31u) == 1u)); }
var<private> n: u32;
${f.kind === 'nf' ? `
var<private> tau: f32;
var<private> m: f32;
var<private> inv: f32;
fn le(x: f32, k: u32) -> bool {
  let d = x - tau;
  if (is_bad(inv)) { return div32(d, m) <= th(k); }
  return d * inv <= th(k);
}` : `
var<private> pr: f32;
var<private> s: f32;
var<private> z: i32;
fn le(x: f32, k: u32) -> bool { return clamp(rha(div32(x, pr), s) + z, 0, TOP) <= i32(k); }`}
// S = Σ c·ln c over the histogram, in code order; the first index where le(., k) fails, by bisection
fn score() -> f64 {
  var sum = 0.0lf;
  var prev = 0u;
  for (var k = 0u; k + 1u < LEN; k++) {
    var lo = prev;
    var hi = n;
    while (lo < hi) {
      let mid = (lo + hi) >> 1u;
      if (le(kval(mid), k)) { lo = mid + 1u; } else { hi = mid; }
    }
    sum += table[lo - prev];
    prev = lo;
  }
  return sum + table[n - prev];
}
@compute @workgroup_size(${ICQ_WG}) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let g = P[7] + wid.x + wid.y * nwg.x;
  if (g >= P[4]) { return; }
  let span = group_span(g);
  let base = span.x;
  let nn = span.y;
  n = nn;
  kbase = (g - P[7]) * P[8];
  var np = 1u;
  while (np < nn) { np <<= 1u; }
  for (var i = lid; i < np; i += ${ICQ_WG}u) {
    var k = 0xffffffffu;
    if (i < nn) {
      let x = w[base + i];
      if (is_bad(x)) { atomicMin(&flag[0], base + i); }
      k = to_key(x);
    }
    kset(i, k);
  }
  sync();
  for (var kk = 2u; kk <= np; kk <<= 1u) {
    for (var j = kk >> 1u; j > 0u; j >>= 1u) {
      for (var i = lid; i < np; i += ${ICQ_WG}u) {
        let l = i ^ j;
        if (l > i) {
          let a = kget(i);
          let b = kget(l);
          if ((a > b) == ((i & kk) == 0u)) { kset(i, b); kset(l, a); }
        }
      }
      sync();
    }
  }
  let first = kval(0u);
  let last = kval(n - 1u);
  let tie = table[P[6] + select(1u, 0u, n == P[9])];
  ${f.kind === 'nf' ? `
  let tau0 = kval((n - 1u) >> 1u);
  let a0 = max(abs(f64(first) - f64(tau0)), abs(f64(last) - f64(tau0)));
  var best = tau0;` : `
  let lo = min(first, 0.0);
  s = int_scale(lo, max(last, 0.0));
  z = int_zero(lo, s);
  var best = 1.0;`}
  var bestS = 0.0lf;
  var have = false;
  let count = P[5];
  for (var cb = 0u; cb < count; cb += ${ICQ_WG}u) {
    let c = cb + lid;
    ${f.kind === 'nf' ? `
    if (c < count) { prod[lid] = cand[c] * a0; }
    workgroupBarrier(); // the product reaches the sum through memory: never fused into an fma
    if (c < count) {
      tau = f32(f64(tau0) + prod[lid]);
      m = max(fabs(first - tau), fabs(last - tau));
      if (m == 0.0) {
        sc[lid] = table[n];
      } else {
        inv = div32(1.0, m);
        sc[lid] = score();
      }
      cv[lid] = tau;
    }` : `
    if (c < count) {
      pr = cand[c];
      sc[lid] = score();
      cv[lid] = pr;
    }`}
    workgroupBarrier();
    if (lid == 0u) {
      for (var k = 0u; k < min(${ICQ_WG}u, count - cb); k++) {
        let v = sc[k];
        if (!have || v < bestS - tie) { have = true; bestS = v; best = cv[k]; }
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u) { best_out[g] = best; }
}`;

function icqSearch(dev: Device, w: GpuHandle, rows: number, cols: number, f: QuantFormat, p: IcqSearchParams): GpuHandle {
  const gpr = Math.ceil(cols / f.group);
  const groups = rows * gpr;
  const nFull = Math.min(f.group, cols);
  const nLast = cols - (gpr - 1) * f.group;
  const table = new Float64Array(nFull + 3);
  for (let c = 0; c <= nFull; c++) table[c] = c * lnInt(c);
  table[nFull + 1] = ICQ_TIE * nFull;
  table[nFull + 2] = ICQ_TIE * nLast;
  let cand: Float64Array | Float32Array;
  if (f.kind === 'nf') {
    cand = new Float64Array(2 * p.n + 1);
    for (let j = 0; j <= 2 * p.n; j++) cand[j] = p.n === 0 ? 0 : p.lambda * p.sigma * ((j - p.n) / p.n); // icq.ts nfCandidate
  } else {
    cand = new Float32Array(p.clipPoints + 1);
    for (let i = 0; i <= p.clipPoints; i++) cand[i] = clipCandidate(i, p);
  }
  let npMax = 1;
  while (npMax < nFull) npMax *= 2;
  const global = npMax > SORT_CAP;
  const out = dev.alloc(groups * 4);
  const flag = dev.upload(Uint32Array.of(NO_BAD));
  const tb = dev.upload(table);
  const cb = dev.upload(cand);
  const chunk = global ? Math.max(1, Math.min(groups, Math.floor(SCRATCH_BYTES / (npMax * 4)))) : groups;
  const scratch = global ? dev.alloc(chunk * npMax * 4) : undefined;
  try {
    const pipe = dev.pipeline(`quant-encode-icq-${fmtKey(f)}${global ? '-global' : ''}`, () => icqSource(f, global));
    for (let first = 0; first < groups; first += chunk) {
      const params = [rows, cols, f.group, gpr, groups, cand.length, nFull + 1, first, npMax, nFull];
      const bufs = scratch ? [w, out, flag, tb, cb, scratch] : [w, out, flag, tb, cb];
      dev.run(pipe, params, bufs, wgGrid(dev, Math.min(chunk, groups - first)));
    }
    const bad = firstBad(dev, flag);
    if (bad !== NO_BAD) {
      dev.free(out);
      throw nonFinite(dev, 'icqSearch', w, bad, rows, cols);
    }
    return out;
  } finally {
    for (const h of [flag, tb, cb]) dev.free(h);
    if (scratch) dev.free(scratch);
  }
}

/** quantize and icqSearch need f64 in shaders (exact quotients, ICQ's f64 scores); without it
 *  both run on the host. */
export const quantEncodeKernels: KernelGroup = (dev) =>
  dev.info.f64
    ? {
      quantize: (d, w, rows, cols, f) => quantize(d, w as GpuHandle, rows, cols, f),
      icqSearch: (d, w, rows, cols, f, p) => icqSearch(d, w as GpuHandle, rows, cols, f, p),
    }
    : {};

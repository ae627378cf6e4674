// WGSL kernels: unary, affine, pow, broadcasting binary ops, casts and reductions, with the JS
// reference's semantics (ts/backends/js/elementwise.ts): NaN handling by bit tests (so a driver
// assuming finite math cannot change it), casts as typed-array stores (ToInt32 / ToUint8 of the
// truncated value, i32 -> f32 rounded to nearest even by hand).
//
// Elementwise kernels run one thread per element (per output u32 word for u8 outputs) on a 1-D
// grid that becomes 2-D past 65535 workgroups (GRID_INDEX). Shapes are simplified on the host
// first (size-1 dimensions dropped, contiguous neighbours merged) so the per-element index
// arithmetic is as short as possible.
//
// Reductions: the input's dimensions are split into kept ones (the output, row-major) and reduced
// ones, each list collapsed. When the innermost memory dimension is reduced ("rows", longer than
// 32), 256 threads (32 for rows under 1024) reduce one output element (or one chunk of it) through
// workgroup memory; otherwise ("columns", or short rows) one thread per output element (and chunk)
// sums sequentially, which keeps neighbouring threads on neighbouring addresses. Chunked passes write partial results that the
// same planner reduces again, so every order is fixed (no atomics): results are deterministic.

import type { BinaryOp, ReduceOp, UnaryOp } from '../../backend.js';
import { BYTES_PER_ELEMENT, type DType } from '../../dtype.js';
import { f32Bits, GRID_INDEX, type Device, type GpuHandle } from './device.js';
import type { KernelGroup } from './index.js';

const WG = 256;
const MAIN = '@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>)';

/** Float helpers by bit tests: NaN, strictly positive / negative (NaN is neither), constants. */
const FLOAT_FNS = /* wgsl */ `
fn is_nan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn gt0(x: f32) -> bool { let b = bitcast<i32>(x); return b > 0 && b <= 0x7f800000; }
fn lt0(x: f32) -> bool { let b = bitcast<u32>(x); return b > 0x80000000u && b <= 0xff800000u; }
fn sign_bit(x: f32) -> bool { return (bitcast<u32>(x) >> 31u) == 1u; }
fn f_nan() -> f32 { return bitcast<f32>(0x7fc00000u + (P[0] & 0u)); }
fn f_inf() -> f32 { return bitcast<f32>(0x7f800000u + (P[0] & 0u)); }
`;

// ---- unary ----

// Results are built from bits where a select between float-looking constants could be rewritten
// as ±b2f(c) (Mesa's NIR does: select(0, -1, c) gives -0 when c is false).
export const UNARY_EXPR: Record<UnaryOp, string> = {
  neg: '-x',
  exp: 'exp(x)',
  log: 'select(select(log(x), -f_inf(), x == 0.0), f_nan(), is_nan(x) || lt0(x))',
  sqrt: 'select(sqrt(x), f_nan(), lt0(x))',
  rsqrt: 'select(1.0 / sqrt(x), f_nan(), lt0(x))',
  abs: 'bitcast<f32>(bitcast<u32>(x) & 0x7fffffffu)',
  // ±1 with x's sign bit, masked to +0 for ±0 and NaN
  sign: 'bitcast<f32>(((bitcast<u32>(x) & 0x80000000u) | 0x3f800000u) & select(0u, 0xffffffffu, gt0(x) || lt0(x)))',
  square: 'x * x',
  sigmoid: 'sigmoid(x)',
  silu: 'x * sigmoid(x)',
  siluGrad: 'silu_grad(x)',
  relu: 'bitcast<f32>(select(0u, bitcast<u32>(x), gt0(x)))',
  step: 'bitcast<f32>(select(0u, 0x3f800000u, gt0(x)))',
};

export const SIGMOID = 'fn sigmoid(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }';

const unarySource = (op: UnaryOp) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>; // [size]
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
override WG: u32 = 256u;
${FLOAT_FNS}
${SIGMOID}
fn silu_grad(x: f32) -> f32 { let s = sigmoid(x); return s * (1.0 + x * (1.0 - s)); }
${MAIN} {
  let i = ${GRID_INDEX};
  if (i >= P[0]) { return; }
  let x = a[i];
  y[i] = ${UNARY_EXPR[op]};
}`;

// silu(a)·b in one pass (Backend.siluMul): silu by the unary kernel's expression, so the same bits
// as silu then mul
const SILU_MUL = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>; // [size]
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
override WG: u32 = 256u;
${SIGMOID}
${MAIN} {
  let i = ${GRID_INDEX};
  if (i >= P[0]) { return; }
  let x = a[i];
  let s = ${UNARY_EXPR.silu};
  y[i] = s * b[i];
}`;

// ---- affine, pow ----

const AFFINE = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>; // [size, mul bits, add bits]
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
override WG: u32 = 256u;
${MAIN} {
  let i = ${GRID_INDEX};
  if (i >= P[0]) { return; }
  y[i] = fma(a[i], bitcast<f32>(P[1]), bitcast<f32>(P[2]));
}`;

// Math.pow: mode 0 generic (exp2(p·log2|x|) with JS's signs and special cases), 1: x, 2: x·x,
// 3: 1/x, 4: sqrt(x) (p = 0.5). flags: 1 p is an integer, 2 p is odd, 4 p is ±inf.
const POW = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>; // [size, p bits, mode, flags]
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
override WG: u32 = 256u;
${FLOAT_FNS}
fn pow_js(x: f32, p: f32, flags: u32) -> f32 {
  if (is_nan(x)) { return x; }
  let ax = abs(x);
  var r: f32;
  if (ax == 0.0) { r = select(f_inf(), 0.0, p > 0.0); }
  else if (ax == f_inf()) { r = select(0.0, f_inf(), p > 0.0); }
  else { r = exp2(p * log2(ax)); }
  if (sign_bit(x) && (flags & 4u) == 0u) {
    if ((flags & 1u) == 0u) { return select(f_nan(), r, ax == 0.0 || ax == f_inf()); }
    if ((flags & 2u) != 0u) { return -r; }
  }
  return r;
}
${MAIN} {
  let i = ${GRID_INDEX};
  if (i >= P[0]) { return; }
  let x = a[i];
  switch (P[2]) {
    case 1u: { y[i] = x; }
    case 2u: { y[i] = x * x; }
    case 3u: { y[i] = 1.0 / x; }
    case 4u: { y[i] = select(select(sqrt(x), f_nan(), lt0(x)), f_inf(), x == -f_inf()); }
    default: { y[i] = pow_js(x, bitcast<f32>(P[1]), P[3]); }
  }
}`;

// ---- binary ----

const BINARY_EXPR: Record<BinaryOp, string> = {
  add: 'x + y',
  sub: 'x - y',
  mul: 'x * y',
  div: 'x / y',
  max: 'select(y, x, x >= y && !is_nan(x) && !is_nan(y))',
  min: 'select(y, x, x <= y && !is_nan(x) && !is_nan(y))',
  eq: 'bitcast<f32>(select(0u, 0x3f800000u, x == y && !is_nan(x)))',
  gt: 'bitcast<f32>(select(0u, 0x3f800000u, x > y && !is_nan(x) && !is_nan(y)))',
};

// Entry "same": a and b have the output's shape. Entry "bcast": P = [size, rank, shape[rank],
// aStrides[rank], bStrides[rank]] (collapsed; stride 0 broadcasts).
const binarySource = (op: BinaryOp) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
override WG: u32 = 256u;
${FLOAT_FNS}
fn f(x: f32, y: f32) -> f32 { return ${BINARY_EXPR[op]}; }
@compute @workgroup_size(WG) fn same(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = ${GRID_INDEX};
  if (i >= P[0]) { return; }
  out[i] = f(a[i], b[i]);
}
@compute @workgroup_size(WG) fn bcast(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = ${GRID_INDEX};
  if (i >= P[0]) { return; }
  let rank = P[1];
  var rem = i;
  var ai = 0u;
  var bi = 0u;
  for (var d = rank; d > 0u; d--) {
    let n = P[1u + d];
    let k = rem % n;
    rem = rem / n;
    ai += k * P[1u + rank + d];
    bi += k * P[1u + 2u * rank + d];
  }
  out[i] = f(a[ai], b[bi]);
}`;

/** Drops size-1 dimensions and merges neighbours that are contiguous in every stride list. */
export function collapse(shape: number[], strideLists: number[][]): { shape: number[]; strides: number[][] } {
  const outShape: number[] = [];
  const outStrides: number[][] = strideLists.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = outShape.length - 1;
    if (last >= 0 && strideLists.every((s, j) => outStrides[j][last] === s[d] * shape[d])) {
      outShape[last] *= shape[d];
      strideLists.forEach((s, j) => { outStrides[j][last] = s[d]; });
    } else {
      outShape.push(shape[d]);
      strideLists.forEach((s, j) => outStrides[j].push(s[d]));
    }
  }
  return { shape: outShape, strides: outStrides };
}

function rowMajor(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) { s[d] = acc; acc *= shape[d]; }
  return s;
}

function broadcastStrides(shape: number[], outShape: number[]): number[] {
  const s = rowMajor(shape);
  return s.map((v, d) => (shape[d] === 1 && outShape[d] !== 1 ? 0 : v));
}

// ---- cast ----

// Entries: f2i (f32 -> i32), f2u (f32 -> u8), i2f, i2u, u2f, u2i. u8 outputs: one thread per
// output word; u8 inputs are read as words.
const CAST = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>; // [size (elements)]
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;
override WG: u32 = 256u;
// ToInt32(Math.trunc(x)) as bits: NaN, ±inf -> 0, else the integer modulo 2^32.
fn f2i_bits(b: u32) -> u32 {
  let e = i32((b >> 23u) & 0xffu) - 127;
  if (e < 24) { return bitcast<u32>(i32(bitcast<f32>(b))); }
  if (e == 128) { return 0u; }
  let k = u32(e - 23);
  var r = select(0u, ((b & 0x7fffffu) | 0x800000u) << (k & 31u), k < 32u);
  if ((b >> 31u) == 1u) { r = 0u - r; }
  return r;
}
// i32 -> f32 rounded to nearest, ties to even, whatever the driver's conversion does.
fn i32_to_f32(v: i32) -> f32 {
  let neg = v < 0;
  let u = select(u32(v), 0u - u32(v), neg);
  var r: f32;
  if (u < 0x1000000u) {
    r = f32(u);
  } else {
    let sh = firstLeadingBit(u) - 23u;
    var m = u >> sh;
    let rem = u & ((1u << sh) - 1u);
    let half = 1u << (sh - 1u);
    if (rem > half || (rem == half && (m & 1u) == 1u)) { m += 1u; }
    r = ldexp(f32(m), i32(sh));
  }
  return select(r, -r, neg);
}
fn byte_at(i: u32) -> u32 { return (a[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu; }

@compute @workgroup_size(WG) fn f2i(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = ${GRID_INDEX};
  if (i >= P[0]) { return; }
  y[i] = f2i_bits(a[i]);
}
@compute @workgroup_size(WG) fn i2f(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = ${GRID_INDEX};
  if (i >= P[0]) { return; }
  y[i] = bitcast<u32>(i32_to_f32(bitcast<i32>(a[i])));
}
@compute @workgroup_size(WG) fn u2f(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = ${GRID_INDEX};
  if (i >= P[0]) { return; }
  y[i] = bitcast<u32>(f32(byte_at(i)));
}
@compute @workgroup_size(WG) fn u2i(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = ${GRID_INDEX};
  if (i >= P[0]) { return; }
  y[i] = byte_at(i);
}
@compute @workgroup_size(WG) fn f2u(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = ${GRID_INDEX};
  let n = P[0];
  if (w * 4u >= n) { return; }
  var word = 0u;
  for (var j = 0u; j < 4u; j++) {
    let i = w * 4u + j;
    if (i < n) { word |= (f2i_bits(a[i]) & 0xffu) << (j * 8u); }
  }
  y[w] = word;
}
@compute @workgroup_size(WG) fn i2u(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = ${GRID_INDEX};
  let n = P[0];
  if (w * 4u >= n) { return; }
  var word = 0u;
  for (var j = 0u; j < 4u; j++) {
    let i = w * 4u + j;
    if (i < n) { word |= (a[i] & 0xffu) << (j * 8u); }
  }
  y[w] = word;
}`;

// ---- reduce ----

/** Accumulator of a reduction: sums in f64 where the adapter has it (the JS reference adds in
 *  f64 and rounds once, so short sums such as broadcast gradients come out bit-identical), else
 *  in float-float pairs (hi, lo) built from two-sums; max in f32 (exact). Partial results between
 *  passes keep the accumulator type. */
type Acc = 'f64' | 'ff' | 'f32';

const ACC_FNS: Record<Acc, string> = {
  f64: /* wgsl */ `
alias A = f64;
fn a_zero() -> A { return f64(0.0); }
fn a_from(v: f32) -> A { return f64(v); }
fn a_add(x: A, y: A) -> A { return x + y; }
fn a_out(x: A) -> f32 { return f32(x); }`,
  // opq hides each step from algebraic rewrites ((a + b) - a -> b and friends, which compilers
  // apply to plain float ops): P[5] is a zero the compiler cannot see.
  ff: /* wgsl */ `
alias A = vec2<f32>;
fn opq(x: f32) -> f32 { return bitcast<f32>(bitcast<u32>(x) ^ P[5]); }
fn a_zero() -> A { return vec2<f32>(0.0, 0.0); }
fn a_from(v: f32) -> A { return vec2<f32>(v, 0.0); }
fn a_add(x: A, y: A) -> A {
  let s = opq(x.x + y.x);
  let bb = opq(s - x.x);
  let e = opq(opq(x.x - opq(s - bb)) + opq(y.x - bb)) + opq(x.y + y.y);
  let h = opq(s + e);
  return vec2<f32>(h, opq(e - opq(h - s)));
}
fn a_out(x: A) -> f32 { return x.x + x.y; }`,
  // max: NaN is sticky (v > m || isNaN(v) replaces m)
  f32: /* wgsl */ `
alias A = f32;
fn a_zero() -> A { return -f_inf(); }
fn a_from(v: f32) -> A { return v; }
fn a_add(x: A, y: A) -> A { return select(x, y, y > x || is_nan(y)); }
fn a_out(x: A) -> f32 { return x; }`,
};

// P = [outSize, splits, chunk, krank, rrank, 0 (a zero), tpr, kShape[krank], kStrides[krank],
// rShape[rrank], rStrides[rrank]]. The input holds f32 values (first pass) or accumulators
// (partials); the output gets f32 values (last pass) or accumulators. Entries: rows (tpr = 32 or
// 256 threads per output element and chunk, 256 / tpr of them per workgroup, a tree in workgroup
// memory; writes y[o * splits + s]), cols (one thread per output element and chunk, sequential
// over the chunk; writes y[s * outSize + o]).
function reduceSource(acc: Acc, inAcc: boolean, outAcc: boolean): string {
  const inT = inAcc ? 'A' : 'f32';
  const outT = outAcc ? 'A' : 'f32';
  const load = inAcc ? 'a[i]' : 'a_from(a[i])';
  const store = outAcc ? 'v' : 'a_out(v)';
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
const WG = 256u;
${FLOAT_FNS}
${ACC_FNS[acc]}
@group(0) @binding(1) var<storage, read> a: array<${inT}>;
@group(0) @binding(2) var<storage, read_write> y: array<${outT}>;
var<workgroup> sh: array<A, 256>;
fn load(i: u32) -> A { return ${load}; }
fn store(i: u32, v: A) { y[i] = ${store}; }
fn kept_offset(o: u32) -> u32 {
  let krank = P[3];
  var rem = o;
  var off = 0u;
  for (var d = krank; d > 0u; d--) {
    let n = P[6u + d];
    off += (rem % n) * P[6u + krank + d];
    rem = rem / n;
  }
  return off;
}
fn red_offset(r: u32) -> u32 {
  let krank = P[3];
  let rrank = P[4];
  let base = 6u + 2u * krank;
  if (rrank == 1u) { return r * P[base + 2u]; }
  var rem = r;
  var off = 0u;
  for (var d = rrank; d > 0u; d--) {
    let n = P[base + d];
    off += (rem % n) * P[base + rrank + d];
    rem = rem / n;
  }
  return off;
}
fn red_size() -> u32 {
  let base = 6u + 2u * P[3];
  var n = 1u;
  for (var d = 0u; d < P[4]; d++) { n *= P[base + 1u + d]; }
  return n;
}
@compute @workgroup_size(256) fn rows(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let outSize = P[0]; let splits = P[1]; let chunk = P[2]; let tpr = P[6];
  let t = lid.x;
  let lane = t % tpr;
  let g = (wid.x + wid.y * nwg.x) * (WG / tpr) + t / tpr;
  let valid = g < outSize * splits;
  var acc = a_zero();
  if (valid) {
    let o = g / splits;
    let s = g % splits;
    let base = kept_offset(o);
    let r0 = s * chunk;
    let r1 = min(red_size(), r0 + chunk);
    for (var r = r0 + lane; r < r1; r += tpr) { acc = a_add(acc, load(base + red_offset(r))); }
  }
  sh[t] = acc;
  workgroupBarrier();
  for (var w = tpr / 2u; w > 0u; w = w / 2u) {
    if (lane < w) { sh[t] = a_add(sh[t], sh[t + w]); }
    workgroupBarrier();
  }
  if (valid && lane == 0u) { store(g, sh[t]); }
}
@compute @workgroup_size(256) fn cols(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let outSize = P[0]; let splits = P[1]; let chunk = P[2];
  let g = gid.x + gid.y * nwg.x * WG;
  if (g >= outSize * splits) { return; }
  let s = g / outSize;
  let o = g % outSize;
  let base = kept_offset(o);
  let r0 = s * chunk;
  let r1 = min(red_size(), r0 + chunk);
  var acc = a_zero();
  for (var r = r0; r < r1; r++) { acc = a_add(acc, load(base + red_offset(r))); }
  store(g, acc);
}
`;
}

const FILL = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>; // [size, value bits]
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
override WG: u32 = 256u;
${MAIN} {
  let i = ${GRID_INDEX};
  if (i < P[0]) { y[i] = P[1]; }
}`;

const prod = (xs: number[]) => xs.reduce((p, x) => p * x, 1);

function fill(dev: Device, size: number, value: number): GpuHandle {
  const out = dev.alloc(size * 4);
  if (size > 0) dev.run(dev.pipeline('elementwise-fill', FILL), [size, f32Bits(value)], [out], dev.grid(size, WG));
  return out;
}

/** Reduces a over the collapsed reduced dims (rShape, rStrides) for every output element (kept
 *  dims kShape, kStrides: row-major output order). inAcc: a holds accumulators (a partial pass). */
function reducePlan(dev: Device, acc: Acc, a: GpuHandle, inAcc: boolean, kShape: number[], kStrides: number[], rShape: number[], rStrides: number[]): GpuHandle {
  const outSize = prod(kShape);
  const R = prod(rShape);
  const accBytes = acc === 'f32' ? 4 : 8;
  const pass = (entry: string, splits: number, chunk: number, tpr: number, groups: [number, number, number]) => {
    const last = splits === 1;
    const out = dev.alloc(outSize * splits * (last ? 4 : accBytes));
    const pipe = dev.pipeline(`elementwise-reduce-${acc}-${inAcc ? 'a' : 'f'}${last ? 'f' : 'a'}`, () => reduceSource(acc, inAcc, !last), entry);
    dev.run(pipe, [outSize, splits, chunk, kShape.length, rShape.length, 0, tpr, ...kShape, ...kStrides, ...rShape, ...rStrides], [a, out], groups);
    return out;
  };
  if (rStrides[rStrides.length - 1] === 1 && R > 32) {
    // 256 threads (32 for short rows) per [outSize, splits] element; at least 4096 elements per chunk
    const splits = Math.max(1, Math.min(Math.ceil(R / 4096), Math.ceil(2048 / outSize)));
    const tpr = R >= 1024 ? 256 : 32;
    const out = pass('rows', splits, Math.ceil(R / splits), tpr, dev.grid(outSize * splits * tpr, WG));
    if (splits === 1) return out;
    const y = reducePlan(dev, acc, out, true, [outSize], [splits], [splits], [1]);
    dev.free(out);
    return y;
  }
  // one thread per [splits, outSize] element, chunks of 64..256
  const chunk = R <= 64 ? R : Math.min(256, Math.max(64, Math.ceil((R * outSize) / 65536)));
  const splits = Math.ceil(R / chunk);
  const out = pass('cols', splits, chunk, 1, dev.grid(outSize * splits, WG));
  if (splits === 1) return out;
  const y = reducePlan(dev, acc, out, true, [outSize], [1], [splits], [outSize]);
  dev.free(out);
  return y;
}

/** Test hook: forces the sum accumulator ('ff' on an adapter with f64). */
let sumAcc: Acc | undefined;
export function setSumAccumulator(acc: 'f64' | 'ff' | undefined): void {
  sumAcc = acc;
}

export const elementwiseKernels: KernelGroup = () => ({
  unary: (dev, op, a, size) => {
    const y = dev.alloc(size * 4);
    if (size > 0) dev.run(dev.pipeline(`elementwise-unary-${op}`, () => unarySource(op)), [size], [a as GpuHandle, y], dev.grid(size, WG));
    return y;
  },

  siluMul: (dev, a, b, size) => {
    const y = dev.alloc(size * 4);
    if (size > 0) dev.run(dev.pipeline('elementwise-silu-mul', SILU_MUL), [size], [a as GpuHandle, b as GpuHandle, y], dev.grid(size, WG));
    return y;
  },

  affine: (dev, a, size, mul, add) => {
    const y = dev.alloc(size * 4);
    if (size > 0) dev.run(dev.pipeline('elementwise-affine', AFFINE), [size, f32Bits(mul), f32Bits(add)], [a as GpuHandle, y], dev.grid(size, WG));
    return y;
  },

  pow: (dev, a, size, p) => {
    if (p === 0) return fill(dev, size, 1);
    if (Number.isNaN(p)) return fill(dev, size, NaN);
    const y = dev.alloc(size * 4);
    if (size === 0) return y;
    const mode = p === 1 ? 1 : p === 2 ? 2 : p === -1 ? 3 : p === 0.5 ? 4 : 0;
    const isInt = Number.isInteger(p);
    const flags = (isInt ? 1 : 0) | (isInt && Math.abs(p) % 2 === 1 ? 2 : 0) | (!Number.isFinite(p) ? 4 : 0);
    dev.run(dev.pipeline('elementwise-pow', POW), [size, f32Bits(p), mode, flags], [a as GpuHandle, y], dev.grid(size, WG));
    return y;
  },

  binary: (dev, op, a, aShape, b, bShape, outShape) => {
    const size = prod(outShape);
    const y = dev.alloc(size * 4);
    if (size === 0) return y;
    const pipe = (entry: string) => dev.pipeline(`elementwise-binary-${op}`, () => binarySource(op), entry);
    const bufs = [a as GpuHandle, b as GpuHandle, y];
    if (prod(aShape) === size && prod(bShape) === size) {
      dev.run(pipe('same'), [size], bufs, dev.grid(size, WG));
      return y;
    }
    const c = collapse(outShape, [broadcastStrides(aShape, outShape), broadcastStrides(bShape, outShape)]);
    dev.run(pipe('bcast'), [size, c.shape.length, ...c.shape, ...c.strides[0], ...c.strides[1]], bufs, dev.grid(size, WG));
    return y;
  },

  cast: (dev, a, from, to, size) => {
    const bytes = size * BYTES_PER_ELEMENT[to];
    const y = dev.alloc(bytes);
    if (size === 0) return y;
    const src = a as GpuHandle;
    if (from === to) {
      dev.copy(src, 0, y, 0, Math.ceil(bytes / 4) * 4);
      return y;
    }
    const entry = { f32: 'f', i32: 'i', u8: 'u' }[from] + '2' + { f32: 'f', i32: 'i', u8: 'u' }[to];
    const threads = to === 'u8' ? Math.ceil(size / 4) : size;
    dev.run(dev.pipeline('elementwise-cast', CAST, entry), [size], [src, y], dev.grid(threads, WG));
    return y;
  },

  reduce: (dev, op, a, shape, axes) => {
    const strides = rowMajor(shape);
    const keep = shape.map((_, d) => !axes.includes(d));
    const k = collapse(shape.filter((_, d) => keep[d]), [strides.filter((_, d) => keep[d])]);
    const r = collapse(shape.filter((_, d) => !keep[d]), [strides.filter((_, d) => !keep[d])]);
    const outSize = prod(k.shape);
    if (prod(shape) === 0) return outSize === 0 ? dev.alloc(0) : fill(dev, outSize, op === 'sum' ? 0 : -Infinity);
    if (r.shape.length === 0) {
      // nothing to reduce (every reduced axis has size 1): a copy
      const y = dev.alloc(outSize * 4);
      dev.copy(a as GpuHandle, 0, y, 0, outSize * 4);
      return y;
    }
    const acc: Acc = op === 'max' ? 'f32' : sumAcc ?? (dev.info.f64 ? 'f64' : 'ff');
    return reducePlan(dev, acc, a as GpuHandle, false, k.shape, k.strides[0], r.shape, r.strides[0]);
  },
});

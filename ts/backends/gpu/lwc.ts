// WGSL kernels: LWC's per-element work (Backend.lwcFakeQuant, lwcGrad; ts/quant/lwc.ts keeps the
// per-group grid on the host and uploads each group's f32 scale and u8 zero point).
//
// Exactness. The host path rounds (roundHalfAway) the f64 quotient w / scale, which decides as the
// exact quotient does: w and scale are f32, so a quotient that is not a half-integer lies at least
// 2^-30 (relatively, for |quotient| <= 16) away from one, far beyond f64 rounding. Shader f32
// division is not correctly rounded (Vulkan allows 2.5 ulp), so the kernels take the f32 quotient
// only as a first guess r and move it until (2r − 1)·scale <= 2|w| < (2r + 1)·scale holds, each
// comparison made exactly on the integer significands (u32; no f64, so every adapter runs these
// kernels). r is capped at maxq + 1: a larger |round| gives the same clamped code and clamp
// decision. The value f32(q − zero)·scale is one correctly rounded f32 product of the exact one, as
// the host's f64 product rounded to f32 is.
//
// Threads: one per segment of at most SEG elements of one group (groups up to SEG long: one thread
// per group), elements in order. grad: each segment's dS, dZ summed in f32 in element order; for
// groups longer than SEG a second pass adds a group's segments in order (deterministic).
// Out: [2, groups], dS of every group then dZ.

import type { Handle, LwcDims } from '../../backend.js';
import { GRID_INDEX, type Device, type GpuHandle } from './device.js';
import type { KernelGroup } from './index.js';

/** Elements per thread: each thread takes a segment of at most SEG elements of one group. */
const SEG = 64;
const WG = 64;

// P: [rows, cols, group, gpr, maxq, segments, segments per group]
const COMMON = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> scales: array<f32>;
@group(0) @binding(3) var<storage, read> zeros: array<u32>;
override WG: u32 = ${WG}u;
fn zero_of(g: u32) -> i32 { return i32((zeros[g >> 2u] >> ((g & 3u) * 8u)) & 0xffu); }
// x = mant(b)·2^expo(b) exactly for the bits b of a finite x >= 0 (subnormals included)
fn mant(b: u32) -> u32 { let m = b & 0x7fffffu; return select(m, m | 0x800000u, (b >> 23u) != 0u); }
fn expo(b: u32) -> i32 { return max(i32(b >> 23u), 1) - 150; }
// 2·a >= k·s exactly: ab the bits of a >= 0, s > 0 finite, k·mant(s) < 2^32
fn twice_ge(ab: u32, k: u32, s: f32) -> bool {
  let sb = bitcast<u32>(s);
  let r = k * mant(sb);
  if (r == 0u) { return true; }
  let l = mant(ab);
  if (l == 0u) { return false; }
  let d = expo(ab) + 1 - expo(sb); // compare l·2^d with r
  if (d >= 32) { return true; }
  if (d >= 0) { return l > ((r - 1u) >> u32(d)); }
  if (d <= -32) { return false; }
  return (l >> u32(-d)) >= r;
}
// roundHalfAway(x / s) of the exact quotient, clamped to [-cap, cap]
fn round_div(x: f32, s: f32, cap: i32) -> i32 {
  let ab = bitcast<u32>(x) & 0x7fffffffu;
  var r = i32(min(floor(bitcast<f32>(ab) / s + 0.5), f32(cap)));
  loop {
    if (r > 0 && !twice_ge(ab, u32(2 * r - 1), s)) { r -= 1; continue; }
    if (r < cap && twice_ge(ab, u32(2 * r + 1), s)) { r += 1; continue; }
    break;
  }
  return select(r, -r, x < 0.0);
}
// (code, 1 when round(x / s) + z was inside [0, maxq])
fn code_of(x: f32, s: f32, z: i32, maxq: i32) -> vec2<i32> {
  let v = round_div(x, s, maxq + 1) + z;
  return vec2<i32>(clamp(v, 0, maxq), select(0, 1, v >= 0 && v <= maxq));
}
// segment t: its group g, first element and length (0 past the end of a short last group)
struct Seg { g: u32, base: u32, n: u32 }
fn segment(t: u32) -> Seg {
  let g = t / P[6];
  let off = (t % P[6]) * ${SEG}u;
  let c0 = (g % P[3]) * P[2];
  let n = min(P[2], P[1] - c0);
  return Seg(g, (g / P[3]) * P[1] + c0 + off, select(0u, min(${SEG}u, n - off), off < n));
}
`;

/** The entry point's opening: thread t's segment sg, its group's scale s, zero point z, and maxq. */
const SEGMENT_MAIN = /* wgsl */ `@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = ${GRID_INDEX};
  if (t >= P[5]) { return; }
  let sg = segment(t);
  let s = scales[sg.g];
  let z = zero_of(sg.g);
  let maxq = i32(P[4]);`;

const FAKE_QUANT = /* wgsl */ `
${COMMON}
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
${SEGMENT_MAIN}
  for (var i = sg.base; i < sg.base + sg.n; i++) {
    y[i] = f32(code_of(w[i], s, z, maxq).x - z) * s;
  }
}`;

// part [2, segments]: the segment's dS, then its dZ
const GRAD = /* wgsl */ `
${COMMON}
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> part: array<f32>;
${SEGMENT_MAIN}
  var ds = 0.0;
  var dz = 0.0;
  for (var i = sg.base; i < sg.base + sg.n; i++) {
    let x = w[i];
    let d = dy[i];
    let q = code_of(x, s, z, maxq);
    let qz = f32(q.x - z);
    if (q.y == 1) { ds += d * (qz - x / s); } else { ds += d * qz; dz -= d * s; }
  }
  part[t] = ds;
  part[P[5] + t] = dz;
}`;

// P: [groups, segments per group]; sums [2, groups] of part [2, groups · segments per group], in order
const SUM = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> sums: array<f32>;
override WG: u32 = ${WG}u;
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = ${GRID_INDEX};
  if (i >= 2u * P[0]) { return; }
  var acc = 0.0;
  for (var k = 0u; k < P[1]; k++) { acc += part[i * P[1] + k]; }
  sums[i] = acc;
}`;

function layout(d: LwcDims) {
  const gpr = Math.ceil(d.cols / d.group);
  const groups = d.rows * gpr;
  const spg = Math.ceil(Math.min(d.group, d.cols) / SEG);
  return { gpr, groups, spg, segments: groups * spg };
}

function params(d: LwcDims): number[] {
  const { gpr, segments, spg } = layout(d);
  return [d.rows, d.cols, d.group, gpr, (1 << d.bits) - 1, segments, spg];
}

function fakeQuant(dev: Device, w: GpuHandle, scales: GpuHandle, zeros: GpuHandle, d: LwcDims): GpuHandle {
  const y = dev.alloc(d.rows * d.cols * 4);
  const { segments } = layout(d);
  if (segments > 0) dev.run(dev.pipeline('lwc-fake-quant', FAKE_QUANT), params(d), [w, scales, zeros, y], dev.grid(segments, WG));
  return y;
}

function grad(dev: Device, w: GpuHandle, scales: GpuHandle, zeros: GpuHandle, dy: GpuHandle, d: LwcDims): GpuHandle {
  const { groups, segments, spg } = layout(d);
  const part = dev.alloc(2 * segments * 4);
  if (segments === 0) return part;
  dev.run(dev.pipeline('lwc-grad', GRAD), params(d), [w, scales, zeros, dy, part], dev.grid(segments, WG));
  if (spg === 1) return part; // one segment per group: the partial sums are the sums
  const sums = dev.alloc(2 * groups * 4);
  dev.run(dev.pipeline('lwc-grad-sum', SUM), [groups, spg], [part, sums], dev.grid(2 * groups, WG));
  dev.free(part);
  return sums;
}

const gpu = (h: Handle) => h as GpuHandle;

/** Exact on every adapter (integer comparisons, no f64): always provided. */
export const lwcKernels: KernelGroup = () => ({
  lwcFakeQuant: (dev, w, scales, zeros, d) => fakeQuant(dev, gpu(w), gpu(scales), gpu(zeros), d),
  lwcGrad: (dev, w, scales, zeros, dy, d) => grad(dev, gpu(w), gpu(scales), gpu(zeros), gpu(dy), d),
});

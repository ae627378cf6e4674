// WGSL kernel: the fused Adam/AdamW update (Backend.adamStep), in place on p, m and v; one thread
// per element, the same element-wise sequence as ts/train/optim.ts's op path (f32 constants).
// Parameters: size, flags (1: coupled weight decay, 2: decoupled), then as f32 bits: b1, 1−b1,
// b2, 1−b2, 1/bc2sqrt, eps, wd, 1−lr·wd, −lr/bc1.

import type { AdamHyper } from '../../backend.js';
import { f32Bits, GRID_INDEX, type Device, type GpuHandle } from './device.js';
import type { KernelGroup } from './index.js';

const ADAM = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read_write> p: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
override WG: u32 = 256u;
fn f(i: u32) -> f32 { return bitcast<f32>(P[i]); }
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = ${GRID_INDEX};
  if (i >= P[0]) { return; }
  let flags = P[1];
  let pi = p[i];
  var gi = g[i];
  if ((flags & 1u) != 0u) { gi = gi + pi * f(8u); }
  let mi = m[i] * f(2u) + gi * f(3u);
  let vi = v[i] * f(4u) + (gi * gi) * f(5u);
  let den = sqrt(vi) * f(6u) + f(7u);
  var pd = pi;
  if ((flags & 2u) != 0u) { pd = pi * f(9u); }
  p[i] = pd + (mi / den) * f(10u);
  m[i] = mi;
  v[i] = vi;
}`;

function adamStepOn(dev: Device, p: GpuHandle, g: GpuHandle, m: GpuHandle, v: GpuHandle, size: number, h: AdamHyper): void {
  if (size === 0) return;
  const wd = h.weightDecay;
  const flags = (!h.decoupled && wd !== 0 ? 1 : 0) | (h.decoupled && wd !== 0 ? 2 : 0);
  const consts = [h.beta1, 1 - h.beta1, h.beta2, 1 - h.beta2, 1 / h.bc2sqrt, h.eps, wd, 1 - h.lr * wd, -h.lr / h.bc1].map(f32Bits);
  dev.run(dev.pipeline('optim-adam', ADAM), [size, flags, ...consts], [p, g, m, v], dev.grid(size, 256));
}

export const optimKernels: KernelGroup = () => ({
  adamStep: (dev, p, g, m, v, size, h) => adamStepOn(dev, p as GpuHandle, g as GpuHandle, m as GpuHandle, v as GpuHandle, size, h),
});

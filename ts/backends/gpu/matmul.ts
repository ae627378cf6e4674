// WGSL kernel: batched f32 matmul with either operand transposed and per-operand batch strides
// (ts/backend.ts MatmulDims). Register-blocked tiling: a workgroup of 16x16 threads computes a
// (16·TM)x(16·TN) tile of c; each thread owns TM x TN outputs at rows ty + 16·i and columns
// tx + 16·j (so loads from the shared tiles and stores to c are contiguous across tx). The k
// dimension goes in steps of BK: both operand tiles are staged in workgroup memory, A's
// transposed to [BK][BM] so the inner loop reads one A value per row and one B value per column.
// Every output element is a plain k-ordered sum (no split-k), so results do not depend on the
// tiling. The tile shape is picked from m and n (128x128 for big problems, 64x64, 32x32 for thin
// ones); it is baked into the WGSL text (function-scope arrays need constant sizes).
//
// Parameters: m, k, n, transA, transB, aBatchStride, bBatchStride, first batch. Grid: x over column tiles,
// y over row tiles, z over the batch.

import type { MatmulDims } from '../../backend.js';
import type { Device, GpuHandle } from './device.js';
import type { KernelGroup } from './index.js';


/** WGSL of one k step of the register block, fully unrolled (constant indices keep acc, av and
 *  bv in registers; a loop over them made NVIDIA's compiler spill them to local memory). */
function stepText(tm: number, tn: number, kk: string): string {
  const lines: string[] = [];
  for (let i = 0; i < tm; i++) lines.push(`        let a${i} = As[(${kk}) * BM + lid.y + ${16 * i}u];`);
  for (let j = 0; j < tn; j++) lines.push(`        let b${j} = Bs[(${kk}) * BN + lid.x + ${16 * j}u];`);
  for (let i = 0; i < tm; i++) for (let j = 0; j < tn; j++) lines.push(`        acc[${i * tn + j}] = fma(a${i}, b${j}, acc[${i * tn + j}]);`);
  return lines.join('\n');
}

function source(tm: number, tn: number): string {
  const bm = 16 * tm;
  const bn = 16 * tn;
  // k step: 16 for the big 128x128 block (twice the work per barrier), 8 otherwise
  const BK = tm === 8 && tn === 8 ? 16 : 8;
  const step = (kk: string) => stepText(tm, tn, kk);
  const store = Array.from({ length: tm }, (_, i) => [
    `  if (row0 + lid.y + ${16 * i}u < m) {`,
    `    let r${i} = cBase + (row0 + lid.y + ${16 * i}u) * n;`,
    ...Array.from({ length: tn }, (_, j) => `    if (col0 + lid.x + ${16 * j}u < n) { c[r${i} + col0 + lid.x + ${16 * j}u] = acc[${i * tn + j}]; }`),
    '  }',
  ].join('\n')).join('\n');
  const full = Array.from({ length: BK }, (_, kk) => `      {\n${step(`${kk}u`)}\n      }`).join('\n');
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TM = ${tm}u;
const TN = ${tn}u;
const BM = ${bm}u;
const BN = ${bn}u;
const BK = ${BK}u;
var<workgroup> As: array<f32, ${BK * bm}>;
var<workgroup> Bs: array<f32, ${BK * bn}>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let m = P[0]; let k = P[1]; let n = P[2];
  let transA = P[3] != 0u; let transB = P[4] != 0u;
  let z = wid.z + P[7];
  let aBase = z * P[5];
  let bBase = z * P[6];
  let cBase = z * m * n;
  let row0 = wid.y * BM;
  let col0 = wid.x * BN;
  var acc: array<f32, ${tm * tn}>;
  // (zero-initialized by WGSL)
  for (var k0 = 0u; k0 < k; k0 += BK) {
    // stage A[row0.., k0..] as As[kk * BM + r]
    for (var e = t; e < BM * BK; e += 256u) {
      var r: u32; var kk: u32;
      if (transA) { r = e % BM; kk = e / BM; } else { kk = e % BK; r = e / BK; }
      let gr = row0 + r; let gk = k0 + kk;
      var v = 0.0;
      if (gr < m && gk < k) {
        if (transA) { v = a[aBase + gk * m + gr]; } else { v = a[aBase + gr * k + gk]; }
      }
      As[kk * BM + r] = v;
    }
    // stage B[k0.., col0..] as Bs[kk * BN + cc]
    for (var e = t; e < BN * BK; e += 256u) {
      var cc: u32; var kk: u32;
      if (transB) { kk = e % BK; cc = e / BK; } else { cc = e % BN; kk = e / BN; }
      let gc = col0 + cc; let gk = k0 + kk;
      var v = 0.0;
      if (gc < n && gk < k) {
        if (transB) { v = b[bBase + gc * k + gk]; } else { v = b[bBase + gk * n + gc]; }
      }
      Bs[kk * BN + cc] = v;
    }
    workgroupBarrier();
    if (k0 + BK <= k) {
${full}
    } else {
      for (var kk = 0u; kk < k - k0; kk++) {
${step('kk')}
      }
    }
    workgroupBarrier();
  }
${store}
}`;
}

/** Per-thread block for an m x n output: big tiles only when both sides fill them. */
function tileFor(m: number, n: number): [number, number] {
  const pick = (d: number) => (d >= 128 ? 8 : d >= 48 ? 4 : 2);
  const tm = pick(m);
  const tn = pick(n);
  return [tm, tn];
}

export function matmulOn(dev: Device, a: GpuHandle, b: GpuHandle, d: MatmulDims): GpuHandle {
  const out = dev.alloc(d.batch * d.m * d.n * 4);
  if (d.batch * d.m * d.n === 0) return out;
  if (d.k === 0) {
    dev.free(out);
    return dev.alloc(d.batch * d.m * d.n * 4, true);
  }
  const [tm, tn] = tileFor(d.m, d.n);
  const pipe = dev.pipeline(`matmul_${tm}x${tn}`, () => source(tm, tn));
  const gx = Math.ceil(d.n / (16 * tn));
  const gy = Math.ceil(d.m / (16 * tm));
  for (let z0 = 0; z0 < d.batch; z0 += 65535) {
    const params = [d.m, d.k, d.n, d.transA ? 1 : 0, d.transB ? 1 : 0, d.aBatchStride, d.bBatchStride, z0];
    dev.run(pipe, params, [a, b, out], [gx, gy, Math.min(65535, d.batch - z0)]);
  }
  return out;
}

export const matmulKernels: KernelGroup = () => ({
  matmul: (dev, a, b, d) => matmulOn(dev, a as GpuHandle, b as GpuHandle, d),
});

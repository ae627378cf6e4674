// WGSL kernel: batched f32 matmul with either operand transposed and per-operand batch strides
// (ts/backend.ts MatmulDims). Register-blocked tiling: a workgroup of 16x16 threads computes a
// (16·TM)x(16·TN) tile of c; each thread owns TM x TN outputs at rows ty + 16·i and columns
// tx + 16·j (so loads from the shared tiles and stores to c are contiguous across tx). The k
// dimension goes in steps of BK: both operand tiles are staged in workgroup memory, A's
// transposed to [BK][BM] so the inner loop reads one A value per row and one B value per column.
// Within a k range every output element is a plain k-ordered sum, so results do not depend on the
// tile. The tile shape is picked from m and n (128x128 for big problems, 64x64, 32x32 for thin
// ones) and shrunk, or k split, where the launch would have too few workgroups (matmulPlan); it is
// baked into the WGSL text (function-scope arrays need constant sizes).
//
// Parameters: m, k, n, transA, transB, aBatchStride, bBatchStride, first z, splits S, k per split.
// Grid: x over column tiles, y over row tiles, z over batch x splits.
// Up to GEMV_ROWS rows of a against a transposed b take a GEMV kernel instead (gemvSource), whose
// sums are split along k across a workgroup's threads: the same values up to rounding, not bit for
// bit the tiled kernel's.

import type { MatmulDims } from '../../backend.js';
import { GRID_INDEX, type Device, type GpuHandle } from './device.js';
import { redWords, sgArgs, sumAcross } from './gemv.js';
import type { KernelGroup } from './index.js';


/** Both kernels' bindings: P, the operands, the output. */
const BINDINGS = /* wgsl */ `@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;`;

/** Both kernels' entry point up to their tiles: the dims, the operands' batch bases and the k range
 *  [kb, ke) of this workgroup's split (z runs over batch x splits; each split writes its own
 *  slice of c). */
const ENTRY = /* wgsl */ `@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let m = P[0]; let k = P[1]; let n = P[2];
  let transA = P[3] != 0u; let transB = P[4] != 0u;
  // z over batch x splits: split sp sums k in [kb, ke) into its own slice of c
  let zz = wid.z + P[7];
  let z = zz / P[8];
  let kb = (zz % P[8]) * P[9];
  let ke = min(k, kb + P[9]);
  let aBase = z * P[5];
  let bBase = z * P[6];
  let cBase = zz * m * n;`;

/** WGSL of one k step of the register block, fully unrolled (constant indices keep acc, av and
 *  bv in registers; a loop over them made NVIDIA's compiler spill them to local memory). */
function stepText(tm: number, tn: number, kk: string): string {
  const lines: string[] = [];
  for (let i = 0; i < tm; i++) lines.push(`        let a${i} = As[(${kk}) * AS + lid.y + ${16 * i}u];`);
  for (let j = 0; j < tn; j++) lines.push(`        let b${j} = Bs[(${kk}) * BS + lid.x + ${16 * j}u];`);
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
${BINDINGS}

const TM = ${tm}u;
const TN = ${tn}u;
const BM = ${bm}u;
const AS = ${bm + 1}u; // padded row stride of As (the transposing stores would hit one bank)
const BN = ${bn}u;
const BS = ${bn + 1}u; // padded row stride of Bs
const BK = ${BK}u;
var<workgroup> As: array<f32, ${BK * (bm + 1)}>;
var<workgroup> Bs: array<f32, ${BK * (bn + 1)}>;

${ENTRY}
  let row0 = wid.y * BM;
  let col0 = wid.x * BN;
  var acc: array<f32, ${tm * tn}>;
  // (zero-initialized by WGSL)
  for (var k0 = kb; k0 < ke; k0 += BK) {
    // stage A[row0.., k0..] as As[kk * BM + r]
    for (var e = t; e < BM * BK; e += 256u) {
      var r: u32; var kk: u32;
      if (transA) { r = e % BM; kk = e / BM; } else { kk = e % BK; r = e / BK; }
      let gr = row0 + r; let gk = k0 + kk;
      var v = 0.0;
      if (gr < m && gk < ke) {
        if (transA) { v = a[aBase + gk * m + gr]; } else { v = a[aBase + gr * k + gk]; }
      }
      As[kk * AS + r] = v;
    }
    // stage B[k0.., col0..] as Bs[kk * BN + cc]
    for (var e = t; e < BN * BK; e += 256u) {
      var cc: u32; var kk: u32;
      if (transB) { kk = e % BK; cc = e / BK; } else { cc = e % BN; kk = e / BN; }
      let gc = col0 + cc; let gk = k0 + kk;
      var v = 0.0;
      if (gc < n && gk < ke) {
        if (transB) { v = b[bBase + gc * k + gk]; } else { v = b[bBase + gk * n + gc]; }
      }
      Bs[kk * BS + cc] = v;
    }
    workgroupBarrier();
    if (k0 + BK <= ke) {
${full}
    } else {
      for (var kk = 0u; kk < ke - k0; kk++) {
${step('kk')}
      }
    }
    workgroupBarrier();
  }
${store}
}`;
}

/**
 * The 128x128 block with vec4 traffic through workgroup memory: thread (tx, ty) owns rows
 * 4·ty..4·ty+3 and 64+4·ty.. of the tile and columns 4·tx.. and 64+4·tx.., so each k step reads
 * two vec4 of A and two of B from workgroup memory for 64 fmas (the scalar version read 16
 * scalars). Tiles are staged four rows (A) or columns (B) per vec4; row strides are padded to 33
 * vec4 against bank conflicts of the transposing stores. Same k-ordered sums as the scalar kernel.
 */
function source8(): string {
  const BK = 16;
  const lane = ['x', 'y', 'z', 'w'];
  const aOf = (i: number) => (i < 4 ? `a0.${lane[i]}` : `a1.${lane[i - 4]}`);
  const step = (kk: string) => [
    `        let a0 = As[(${kk}) * 33u + lid.y]; let a1 = As[(${kk}) * 33u + 16u + lid.y];`,
    `        let b0 = Bs[(${kk}) * 33u + lid.x]; let b1 = Bs[(${kk}) * 33u + 16u + lid.x];`,
    ...Array.from({ length: 8 }, (_, i) => `        acc[${2 * i}] = fma(vec4<f32>(${aOf(i)}), b0, acc[${2 * i}]); acc[${2 * i + 1}] = fma(vec4<f32>(${aOf(i)}), b1, acc[${2 * i + 1}]);`),
  ].join('\n');
  const full = Array.from({ length: BK }, (_, kk) => `      {\n${step(`${kk}u`)}\n      }`).join('\n');
  const store = Array.from({ length: 8 }, (_, i) => {
    const row = i < 4 ? `4u * lid.y + ${i}u` : `64u + 4u * lid.y + ${i - 4}u`;
    return [
      `  if (row0 + ${row} < m) {`,
      `    let r = cBase + (row0 + ${row}) * n;`,
      ...[0, 1].flatMap((h) => [0, 1, 2, 3].map((j) => `    if (col0 + ${h * 64}u + 4u * lid.x + ${j}u < n) { c[r + col0 + ${h * 64}u + 4u * lid.x + ${j}u] = acc[${2 * i + h}].${lane[j]}; }`)),
      '  }',
    ].join('\n');
  }).join('\n');
  return /* wgsl */ `
${BINDINGS}

const BK = ${BK}u;
var<workgroup> As: array<vec4<f32>, ${BK * 33}>;
var<workgroup> Bs: array<vec4<f32>, ${BK * 33}>;

fn ldA(aBase: u32, r: u32, kk: u32, m: u32, k: u32, ke: u32, transA: bool) -> f32 {
  if (r >= m || kk >= ke) { return 0.0; }
  if (transA) { return a[aBase + kk * m + r]; }
  return a[aBase + r * k + kk];
}
fn ldB(bBase: u32, cc: u32, kk: u32, n: u32, k: u32, ke: u32, transB: bool) -> f32 {
  if (cc >= n || kk >= ke) { return 0.0; }
  if (transB) { return b[bBase + cc * k + kk]; }
  return b[bBase + kk * n + cc];
}

${ENTRY}
  let row0 = wid.y * 128u;
  let col0 = wid.x * 128u;
  var acc: array<vec4<f32>, 16>;
  for (var k0 = kb; k0 < ke; k0 += BK) {
    for (var e = t; e < 32u * BK; e += 256u) {
      var r4: u32; var kk: u32;
      if (transA) { r4 = e % 32u; kk = e / 32u; } else { kk = e % BK; r4 = e / BK; }
      let r = row0 + 4u * r4; let gk = k0 + kk;
      As[kk * 33u + r4] = vec4<f32>(ldA(aBase, r, gk, m, k, ke, transA), ldA(aBase, r + 1u, gk, m, k, ke, transA), ldA(aBase, r + 2u, gk, m, k, ke, transA), ldA(aBase, r + 3u, gk, m, k, ke, transA));
      var c4: u32; var kb: u32;
      if (transB) { kb = e % BK; c4 = e / BK; } else { c4 = e % 32u; kb = e / 32u; }
      let cc = col0 + 4u * c4; let gb = k0 + kb;
      Bs[kb * 33u + c4] = vec4<f32>(ldB(bBase, cc, gb, n, k, ke, transB), ldB(bBase, cc + 1u, gb, n, k, ke, transB), ldB(bBase, cc + 2u, gb, n, k, ke, transB), ldB(bBase, cc + 3u, gb, n, k, ke, transB));
    }
    workgroupBarrier();
    if (k0 + BK <= ke) {
${full}
    } else {
      for (var kk = 0u; kk < ke - k0; kk++) {
${step('kk')}
      }
    }
    workgroupBarrier();
  }
${store}
}`;
}

// Work sizing. A launch of few workgroups leaves most of a big GPU idle (m = 512, n = 576 in 128x128
// tiles is 20 workgroups): the tile shrinks (down to 64x64) until there are WG_TARGET workgroups,
// and where that is not enough and k is long, k is split: each of S workgroup slices sums one k
// range (a multiple of 16 long, at least K_CHUNK) into its own output slice, and a second kernel adds
// the S slices in order. Every output is then a fixed-order sum for a given shape (deterministic),
// though not the single k-ordered sum of the unsplit kernel.
const WG_TARGET = 256;
const K_CHUNK = 128;

export interface MatmulPlan { tm: number; tn: number; splits: number; chunk: number }
/** Work sizing on, and the GEMV kernel for few rows (benchmarks turn them off to compare with the
 *  plain tile choice in one run). */
export const matmulSizing = { on: true, gemv: true };

/** Tile (per-thread block tm x tn of 16x16 threads) and k split for a matmul of these dims. */
export function matmulPlan(d: Pick<MatmulDims, 'm' | 'n' | 'k' | 'batch'>): MatmulPlan {
  const pick = (v: number) => (v >= 128 ? 8 : v >= 48 ? 4 : 2);
  let tm = pick(d.m);
  let tn = pick(d.n);
  if (!matmulSizing.on) return { tm, tn, splits: 1, chunk: d.k };
  const wgs = () => Math.ceil(d.n / (16 * tn)) * Math.ceil(d.m / (16 * tm)) * d.batch;
  while (wgs() < WG_TARGET && (tm > 4 || tn > 4)) {
    if (tm >= tn) tm /= 2;
    else tn /= 2;
  }
  let splits = Math.max(1, Math.min(Math.ceil(WG_TARGET / wgs()), Math.floor(d.k / K_CHUNK)));
  const chunk = Math.ceil(Math.ceil(d.k / splits) / 16) * 16;
  splits = Math.ceil(d.k / chunk);
  return { tm, tn, splits, chunk };
}

// out[b, i] = sum over s of part[b·S + s, i], s in order. P: [batch·mn, mn, S]
const ADD_SPLITS = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
override WG: u32 = 256u;
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = ${GRID_INDEX};
  if (i >= P[0]) { return; }
  let mn = P[1]; let S = P[2];
  let base = (i / mn) * S * mn + i % mn;
  var acc = part[base];
  for (var s = 1u; s < S; s++) { acc += part[base + s * mn]; }
  c[i] = acc;
}`;

/** Rows of a up to which a·bᵀ (b stored [n, k], as a Linear's weight) takes the GEMV kernel. */
export const GEMV_ROWS = 8;
/** The GEMV kernel's rows of b per workgroup and threads per workgroup. */
const GR = 4;
const GWG = 128;

/**
 * c = a·bᵀ for m <= GEMV_ROWS rows of a, b stored [n, k] (decoding's logits against the tied
 * embedding, a LoRA-less Linear at one token): the tiled kernel would compute 16·tm rows of which
 * m are real and stage b through workgroup memory. Here a workgroup owns GR rows of b; its threads
 * stride along k together (each warp's loads of a b row are contiguous), each summing its slice
 * for the m rows of a, and the sums are reduced across the workgroup (sumAcross). Grid: x over the
 * row blocks of b, y over the batch.
 */
function gemvSource(m: number, subgroups: boolean): string {
  const rows = Array.from({ length: GR }, (_, r) => r);
  const ms = Array.from({ length: m }, (_, i) => i);
  const accs = ms.flatMap((i) => rows.map((r) => `s${i}_${r}`));
  return /* wgsl */ `
${BINDINGS}
var<workgroup> red: array<f32, ${redWords(m * GR, GWG, subgroups)}>;
@compute @workgroup_size(${GWG}) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32${sgArgs(subgroups)}) {
  let k = P[1]; let n = P[2];
  let aBase = wid.y * P[5];
  let cBase = wid.y * ${m}u * n;
  let j0 = wid.x * ${GR}u;
  // rows of b past n read the last one (their sums are not stored)
  ${rows.map((r) => `let b${r} = wid.y * P[6] + min(j0 + ${r}u, n - 1u) * k;`).join(' ')}
  ${accs.map((a) => `var ${a} = 0.0;`).join(' ')}
  for (var kk = t; kk < k; kk += ${GWG}u) {
    ${ms.map((i) => `let x${i} = a[aBase + ${i}u * k + kk];`).join(' ')}
    ${rows.map((r) => `let w${r} = b[b${r} + kk];`).join(' ')}
    ${ms.flatMap((i) => rows.map((r) => `s${i}_${r} = fma(x${i}, w${r}, s${i}_${r});`)).join(' ')}
  }
  ${sumAcross(accs, GWG, subgroups, (e, v) => `{ let j = j0 + ${e} % ${GR}u; if (j < n) { c[cBase + (${e} / ${GR}u) * n + j] = ${v}; } }`)}
}`;
}

/** Whether matmulOn takes the GEMV kernel for d. */
export const gemvFits = (d: MatmulDims) => matmulSizing.gemv && d.m <= GEMV_ROWS && !d.transA && d.transB && d.batch <= 65535 && Math.ceil(d.n / GR) <= 65535;

export function matmulOn(dev: Device, a: GpuHandle, b: GpuHandle, d: MatmulDims, plan: MatmulPlan = matmulPlan(d)): GpuHandle {
  const size = d.batch * d.m * d.n;
  // an empty contraction gives zeros
  const out = dev.alloc(size * 4, d.k === 0);
  if (size === 0 || d.k === 0) return out;
  if (gemvFits(d)) {
    const pipe = dev.pipeline(`matmul_gemv_${d.m}${dev.subgroups ? 's' : ''}`, () => gemvSource(d.m, dev.subgroups));
    dev.run(pipe, [d.m, d.k, d.n, 0, 1, d.aBatchStride, d.bBatchStride], [a, b, out], [Math.ceil(d.n / GR), d.batch, 1]);
    return out;
  }
  const { tm, tn, splits, chunk } = plan;
  const pipe = tm === 8 && tn === 8 ? dev.pipeline('matmul_8x8v', source8) : dev.pipeline(`matmul_${tm}x${tn}`, () => source(tm, tn));
  const gx = Math.ceil(d.n / (16 * tn));
  const gy = Math.ceil(d.m / (16 * tm));
  const c = splits > 1 ? dev.alloc(size * splits * 4) : out;
  const zs = d.batch * splits;
  for (let z0 = 0; z0 < zs; z0 += 65535) {
    const params = [d.m, d.k, d.n, d.transA ? 1 : 0, d.transB ? 1 : 0, d.aBatchStride, d.bBatchStride, z0, splits, splits > 1 ? chunk : d.k];
    dev.run(pipe, params, [a, b, c], [gx, gy, Math.min(65535, zs - z0)]);
  }
  if (splits > 1) {
    dev.run(dev.pipeline('matmul_add_splits', ADD_SPLITS), [size, d.m * d.n, splits], [c, out], dev.grid(size, 256));
    dev.free(c);
  }
  return out;
}

export const matmulKernels: KernelGroup = () => ({
  matmul: (dev, a, b, d) => matmulOn(dev, a as GpuHandle, b as GpuHandle, d),
});

// WGSL kernels: the decode side of quantized weights (formats.ts): dequantize, dequantizeMatmul
// (x · Wᵀ) and dequantizeMatmulT (dy · W), for every format (NF 2/3/4 with or without double
// quantization, INT 2/3/4 symmetric or asymmetric, any group size). NF-ICQ's τ never reaches these
// kernels: ts/quant/api.ts composes it from ops.
//
// Every kernel is generated for one format (kind, bits, group, doubleQuant, symmetric are baked
// into the WGSL text, so branches on them fold away; inner loops are unrolled in the text) and one
// decoder, picked from the weight's columns and the group:
//   wide     (GEMV only) both multiples of 32: a row's 32-column unit is one vector load;
//   fast     both multiples of 8: 8 codes at a time (2-4 bytes read as one or two u32 words by
//            load8; rows need not start on a word), one group scale per 8;
//   generic  anything else: one code at a time through the MSB-first bit stream, a scale each.
// The products decode through a pair table in workgroup memory (2 codes -> 2 values per lookup);
// the wide GEMV can instead use a bank-replicated per-code table (NF) or none (INT): gemvShape.lut.
// dequantizeMatmul: GEMV for up to 8 x rows, else a register-tiled kernel; dequantizeMatmulT:
// the tiled kernel (weight tile decoded with its scales into workgroup memory).
// Bindings (after P): codes (u8 as u32 words), then scaleCodes, scale2, scaleOffset (double-quant)
// or scales, then zeros (int asymmetric), then the kernel's f32 input and its output.
// P's words: [0..8) per kernel (below), 15 = f32 1.0, [16..272) bitsandbytes' dynamic map,
// [272..288) the NF codebook (all as f32 bits).
//
// Exactness (dequantize is bit-exact): the NF value f32(c[code] · absmax) and the INT value
// f32((code - zero) · scale) are one rounding each. The double-quantized absmax f32(f32(map · s2) +
// offset) would turn into one fma if the compiler contracted it; it is computed as p · one + offset
// with one = 1.0 read from P, so a contraction gives fma(p, 1, offset) = f32(p + offset) anyway.

import { gcd, type LowRank, type QuantHandles } from '../../backend.js';
import { nfTable } from '../../quant/codebooks.js';
import { dynamicMap } from '../../quant/doublequant.js';
import type { QuantFormat } from '../../quant/formats.js';
import { rowBytes } from '../../quant/packing.js';
import type { Device, GpuHandle } from './device.js';
import { f32Bits, GRID_INDEX } from './device.js';
import { matmulOn } from './matmul.js';
import { fullShape, i8Fits, LOW_RANK_INLINE_MAX, type LowRankMode, pairBytes, redBytes, setSlots, setWord, stagedBytes, usesPairs, wordsFits, wordsSource, x8Source, type WordsShape } from './gemv.js';
import type { KernelGroup } from './index.js';

export const ONE = 15;
export const MAP = 16;
const CB = MAP + 256;
/** Words of P: the head (up to ONE), the tables; kernels with more parameters add theirs after. */
export const P_WORDS = CB + 16;

/** x rows up to which dequantizeMatmul takes the GEMV kernel. */
export const GEMV_MAX_ROWS = 8;

// ---- the constant tail of P (tables), built once per bit width ----

const tails = new Map<number, Uint32Array>();
function paramTail(f: QuantFormat): Uint32Array {
  const key = f.kind === 'nf' ? f.bits : 0;
  let t = tails.get(key);
  if (!t) {
    t = new Uint32Array(P_WORDS);
    t[ONE] = f32Bits(1);
    t.set(new Uint32Array(dynamicMap().buffer), MAP);
    if (f.kind === 'nf') t.set(new Uint32Array(Float32Array.from(nfTable(f.bits).values).buffer), CB);
    tails.set(key, t);
  }
  return t;
}

/** P for format f: `head` (up to ONE words), then the tables. One array per table set, reused by
 *  every call: dev.run copies it before it returns. */
function params(f: QuantFormat, head: number[]): Uint32Array {
  const p = paramTail(f);
  p.fill(0, head.length, ONE);
  p.set(head, 0);
  return p;
}

// ---- WGSL: bindings and decoding for one format ----

const fmtKey = (f: QuantFormat) => `${f.kind}${f.bits}g${f.group}${f.doubleQuant ? 'dq' : ''}${f.symmetric ? 's' : ''}`;
export const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** The quantized parts as bindings 1.., in the order partsOf() passes them (codes typed as
 *  `codesType`); returns the next free binding. */
export function partBindings(f: QuantFormat, codesType = 'u32', sfx = '', first = 1): { decl: string; next: number } {
  const b: string[] = [`var<storage, read> codes${sfx}: array<${codesType}>;`];
  if (f.doubleQuant) {
    b.push(`var<storage, read> scode${sfx}: array<u32>;`, `var<storage, read> scale2${sfx}: array<f32>;`, `var<storage, read> soff${sfx}: array<f32>;`);
  } else {
    b.push(`var<storage, read> scales${sfx}: array<f32>;`);
  }
  if (f.kind === 'int' && !f.symmetric) b.push(`var<storage, read> zeros${sfx}: array<u32>;`);
  return { decl: b.map((d, i) => `@group(0) @binding(${i + first}) ${d}`).join('\n'), next: b.length + first };
}

function partsOf(q: QuantHandles, f: QuantFormat): GpuHandle[] {
  const h: unknown[] = [q.codes];
  if (f.doubleQuant) h.push(q.scaleCodes, q.scale2, q.scaleOffset);
  else h.push(q.scales);
  if (f.kind === 'int' && !f.symmetric) h.push(q.zeros);
  return h as GpuHandle[];
}

/** WGSL helpers for format f: groupScale(g), groupZero(g), value(code) (the NF codebook value from
 *  P, or the integer code as f32) and, unless codes are vectors, codeAt(rowStart, c) (one code of
 *  the MSB-first bit stream) and load8(rowStart, c0) (the stream bytes of elements c0..c0+7,
 *  c0 % 8 == 0, in the low bytes of a word, first byte lowest). */
export function decodeLib(f: QuantFormat, scalarCodes = true): string {
  const bits = f.bits;
  const half = (1 << (bits - 1)) - 1;
  const scale = f.doubleQuant
    ? `let code = (scode[g >> 2u] >> ((g & 3u) * 8u)) & 0xffu;
  let p = bitcast<f32>(P[${MAP}u + code]) * scale2[g / 256u];
  return p * bitcast<f32>(P[${ONE}u]) + soff[0];`
    : 'return scales[g];';
  const zero = f.kind === 'nf' ? 'return 0.0;' : f.symmetric ? `return ${half}.0;` : 'return f32((zeros[g >> 2u] >> ((g & 3u) * 8u)) & 0xffu);';
  const value = f.kind === 'nf' ? `return bitcast<f32>(P[${CB}u + code]);` : 'return f32(code);';
  const stream = /* wgsl */ `
fn codeByte(i: u32) -> u32 { return (codes[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu; }
fn codeAt(rowStart: u32, c: u32) -> u32 {
  let bit = c * BITS;
  let b = rowStart + (bit >> 3u);
  let shift = 16u - BITS - (bit & 7u);
  var win = codeByte(b) << 8u;
  if (shift < 8u) { win |= codeByte(b + 1u); }
  return (win >> shift) & ${(1 << bits) - 1}u;
}
fn load8(rowStart: u32, c0: u32) -> u32 {
  let b = rowStart + (c0 >> 3u) * BITS;
  let i = b >> 2u;
  let sh = (b & 3u) * 8u;
  var s = codes[i] >> sh;
  if (sh + BITS * 8u > 32u) { s |= codes[i + 1u] << (32u - sh); }
  return s;
}`;
  return /* wgsl */ `
const BITS = ${bits}u;
const GROUP = ${f.group}u;
fn groupScale(g: u32) -> f32 {
  ${scale}
}
fn groupZero(g: u32) -> f32 {
  ${zero}
}
fn value(code: u32) -> f32 {
  ${value}
}${scalarCodes ? stream : ''}`;
}

const byteOf = (w: string, i: number) => (i === 0 ? `(${w} & 0xffu)` : i === 3 ? `(${w} >> 24u)` : `((${w} >> ${8 * i}u) & 0xffu)`);

/** The 8 codes of a piece (8 elements = `bits` bytes; byte(i) a WGSL expression for its byte i) as 4
 *  pair indices into the pair table (2·bits bits each: first element high). `pre` defines v24. */
function pairsOf(bits: number, byte: (i: number) => string, name: string): { pre: string; pairs: string[] } {
  if (bits === 4) return { pre: '', pairs: range(4).map(byte) };
  if (bits === 2) return { pre: '', pairs: [`(${byte(0)} >> 4u)`, `(${byte(0)} & 15u)`, `(${byte(1)} >> 4u)`, `(${byte(1)} & 15u)`] };
  const v = `v24_${name}`;
  return {
    pre: `let ${v} = (${byte(0)} << 16u) | (${byte(1)} << 8u) | ${byte(2)};`,
    pairs: [`(${v} >> 18u)`, `((${v} >> 12u) & 63u)`, `((${v} >> 6u) & 63u)`, `(${v} & 63u)`],
  };
}

/** The 8 codes of a piece as single codes (for dequantize, which reads values from P). */
function codesOf(bits: number, byte: (i: number) => string, name: string): { pre: string; codes: string[] } {
  if (bits === 4) return { pre: '', codes: range(8).map((j) => (j & 1 ? `(${byte(j >> 1)} & 15u)` : `(${byte(j >> 1)} >> 4u)`)) };
  if (bits === 2) return { pre: '', codes: range(8).map((j) => `((${byte(j >> 2)} >> ${6 - 2 * (j & 3)}u) & 3u)`) };
  const v = `v24_${name}`;
  return { pre: `let ${v} = (${byte(0)} << 16u) | (${byte(1)} << 8u) | ${byte(2)};`, codes: range(8).map((j) => `((${v} >> ${21 - 3 * j}u) & 7u)`) };
}

// The pair table: lut2[i] = (value(i >> bits), value(i & mask)) for the 2^(2·bits) code pairs,
// in workgroup memory (NF: codebook values; INT: the codes as f32).
const PAIRS = (f: QuantFormat) => 1 << (2 * f.bits);
const LUT_DECL = (f: QuantFormat) => `var<workgroup> lut2: array<vec2<f32>, ${PAIRS(f)}>;`;
const LUT_INIT = (f: QuantFormat, wg: number) => `for (var e = t; e < ${PAIRS(f)}u; e += ${wg}u) { lut2[e] = vec2<f32>(value(e >> BITS), value(e & ${(1 << f.bits) - 1}u)); }
  workgroupBarrier();`;

/** WGSL statements defining vec4s `${n}a`, `${n}b`: the 8 weights of a piece without the scale
 *  (NF: codebook values; INT: code - zero, zero in `z`). */
function pieceWeights(f: QuantFormat, byte: (i: number) => string, n: string): string {
  const { pre, pairs } = pairsOf(f.bits, byte, n);
  const sub = f.kind === 'int' ? ` - ${'z'}` : '';
  return `${pre}
      let ${n}a = vec4<f32>(lut2[${pairs[0]}], lut2[${pairs[1]}])${sub};
      let ${n}b = vec4<f32>(lut2[${pairs[2]}], lut2[${pairs[3]}])${sub};`;
}

// ---- dequantize ----
// P: rows, cols, rowBytes, groupsPerRow. Fast (cols and group multiples of 8): one thread per 8
// outputs (two vec4 stores); generic: one thread per element. Each value is value(code) · scale
// (NF) or (code - zero) · scale (INT): one rounding, as the reference.

function dequantizeSource(f: QuantFormat, fast: boolean): string {
  const { decl, next } = partBindings(f);
  const c8 = codesOf(f.bits, (i) => byteOf('s', i), 's');
  const vals = c8.codes.map((c) => (f.kind === 'nf' ? `value(${c}) * sc` : `(value(${c}) - z) * sc`));
  const body = fast
    ? `let subs = cols / 8u;
  if (i >= rows * subs) { return; }
  let r = i / subs;
  let c0 = (i - r * subs) * 8u;
  let s = load8(r * rb, c0);
  ${c8.pre}
  let g = r * gpr + c0 / GROUP;
  let sc = groupScale(g);
  let z = groupZero(g);
  let o = (r * cols + c0) / 4u;
  y[o] = vec4<f32>(${vals.slice(0, 4).join(', ')});
  y[o + 1u] = vec4<f32>(${vals.slice(4).join(', ')});`
    : `if (i >= rows * cols) { return; }
  let r = i / cols;
  let c = i - r * cols;
  let g = r * gpr + c / GROUP;
  y[i] = ${f.kind === 'nf' ? 'value(codeAt(r * rb, c)) * groupScale(g)' : '(value(codeAt(r * rb, c)) - groupZero(g)) * groupScale(g)'};`;
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
${decl}
@group(0) @binding(${next}) var<storage, read_write> y: array<${fast ? 'vec4<f32>' : 'f32'}>;
override WG: u32 = 256u;
${decodeLib(f)}
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let rows = P[0]; let cols = P[1]; let rb = P[2]; let gpr = P[3];
  let i = ${GRID_INDEX};
  ${body}
}`;
}

// ---- dequantizeMatmul, GEMV (x rows <= 8) ----
// y [T, rows] = x [T, cols] · Wᵀ. A workgroup is NW teams of 32 threads (a warp on NVIDIA); each
// team owns R weight rows, its threads striding along the columns in units of U columns (each x
// value loaded once per unit and used for all R rows; the teams of a workgroup read the same x
// slices at about the same time, so x comes from L1), then the 32 partial sums of each of the
// team's R·T outputs are added by one thread from workgroup memory.
//   U = 32 (cols and group multiples of 32): each row's unit is one vector load (4 bits: vec4<u32>,
//          2 bits: vec2<u32>, 3 bits: 3 words), one group scale per unit that multiplies the unit's
//          partial dot; decoded 2 codes at a time through the pair table.
//   U = 8  (multiples of 8): the same with 8-column units read by load8 (rows need not be aligned).
//   U = 1  (anything else): one element at a time.
// P: rows, cols, rowBytes, groupsPerRow. Grid: ceil(rows / R) workgroups (2-D when > 65535).

function gemvSource(f: QuantFormat, U: 1 | 8 | 32, T: number, R: number, NW: number, lut: GemvLut = 'pair'): string {
  const WG = 32 * NW;
  const banked = U === 32 && lut === 'banked';
  const vecCodes = U === 32 && f.bits !== 3;
  const { decl, next } = partBindings(f, vecCodes ? (f.bits === 4 ? 'vec4<u32>' : 'vec2<u32>') : 'u32');
  const RT = R * T;
  const rr = range(R);
  const tt = range(T);
  const acc = (r: number, t: number) => `a${r}_${t}`;
  let loop: string;
  if (banked) {
    loop = bankedLoop(f, T, R);
  } else if (U === 1) {
    loop = `for (var c = lane; c < cols; c += 32u) {
    ${tt.map((k) => `let x${k} = x[${k}u * cols + c];`).join(' ')}
    ${rr.map((r) => `{
      let g = rc${r} * gpr + c / GROUP;
      let w = (value(codeAt(rc${r} * rb, c)) - groupZero(g)) * groupScale(g);
      ${tt.map((k) => `${acc(r, k)} += x${k} * w;`).join(' ')}
    }`).join('\n    ')}
  }`;
  } else {
    const pieces = U / 8;
    // word expression holding byte i of piece p of row r
    const byte = (r: number, p: number) => (i: number): string => {
      if (U === 8) return byteOf(`s${r}`, i);
      if (f.bits === 4) return byteOf(`q${r}.${'xyzw'[p]}`, i);
      if (f.bits === 2) return byteOf(`q${r}.${'xy'[p >> 1]}`, 2 * (p & 1) + i);
      const b = 3 * p + i; // 3 bits: bytes 3p..3p+2 of the 12
      return byteOf(`q${r}_${b >> 2}`, b & 3);
    };
    const loads = rr.map((r) => {
      if (U === 8) return `let s${r} = load8(rc${r} * rb, c0);`;
      if (vecCodes) return `let q${r} = codes[rc${r} * units + k];`;
      return range(3).map((w) => `let q${r}_${w} = codes[(rc${r} * units + k) * 3u + ${w}u];`).join(' ');
    }).join('\n    ');
    const scales = rr.map((r) => `let g${r} = rc${r} * gpr + gi; let sc${r} = groupScale(g${r});${f.kind === 'int' ? ` let z${r} = groupZero(g${r});` : ''}`).join('\n    ');
    const body = range(pieces).map((p) => `{
      ${tt.map((k) => `let xa${k} = x[${k}u * c4 + k * ${2 * pieces}u + ${2 * p}u]; let xb${k} = x[${k}u * c4 + k * ${2 * pieces}u + ${2 * p + 1}u];`).join('\n      ')}
      ${rr.map((r) => `{
      ${f.kind === 'int' ? `let z = z${r};` : ''}
      ${pieceWeights(f, byte(r, p), 'w')}
      ${tt.map((k) => `p${r}_${k} += dot(xa${k}, wa) + dot(xb${k}, wb);`).join(' ')}
      }`).join('\n      ')}
    }`).join('\n    ');
    loop = `let units = cols / ${U}u;
  let c4 = cols / 4u;
  for (var k = lane; k < units; k += 32u) {
    let c0 = k * ${U}u;
    let gi = c0 / GROUP;
    ${loads}
    ${scales}
    ${rr.map((r) => tt.map((k) => `var p${r}_${k} = 0.0;`).join(' ')).join(' ')}
    ${body}
    ${rr.map((r) => tt.map((k) => `${acc(r, k)} += p${r}_${k} * sc${r};`).join(' ')).join('\n    ')}
  }`;
  }
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
${decl}
@group(0) @binding(${next}) var<storage, read> x: array<${U === 1 ? 'f32' : 'vec4<f32>'}>;
@group(0) @binding(${next + 1}) var<storage, read_write> y: array<f32>;
${banked ? BANKED_DECL(f) : U === 1 ? '' : LUT_DECL(f)}
var<workgroup> red: array<f32, ${NW * RT * 33}>;
${decodeLib(f, !vecCodes)}
@compute @workgroup_size(${WG}) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let rows = P[0]; let cols = P[1]; let rb = P[2]; let gpr = P[3];
  ${banked ? BANKED_INIT(f, WG) : U === 1 ? '' : LUT_INIT(f, WG)}
  let lane = t % 32u;
  let block = (wid.x + wid.y * nwg.x) * ${NW}u;
  let row0 = (block + t / 32u) * ${R}u;
  // rows past the end decode the last row (their sums are not written)
  ${rr.map((r) => `let rc${r} = min(row0 + ${r}u, rows - 1u);`).join(' ')}
  ${rr.map((r) => tt.map((k) => `var ${acc(r, k)} = 0.0;`).join(' ')).join(' ')}
  ${loop}
  // red[(team · R·T + e) · 33 + lane] (rows padded to 33: conflict-free sums below)
  ${rr.map((r) => tt.map((k) => `red[((t / 32u) * ${RT}u + ${r * T + k}u) * 33u + lane] = ${acc(r, k)};`).join(' ')).join('\n  ')}
  workgroupBarrier();
  for (var e = t; e < ${NW * RT}u; e += ${WG}u) {
    var s = 0.0;
    for (var i = 0u; i < 32u; i++) { s += red[e * 33u + i]; }
    let v = e % ${RT}u;
    let r = (block + e / ${RT}u) * ${R}u + v / ${T}u;
    if (r < rows) { y[(v % ${T}u) * rows + r] = s; }
  }
}`;
}

// ---- the group scale of a GEMV row, per step (the banked wide loop and the words kernel) ----

/** The loads of row r's scale parts for group index expression g: [name, expression]. */
export function scaleLoads(f: QuantFormat, r: number, g: string, sfx = ''): [string, string][] {
  const l: [string, string][] = f.doubleQuant ? [[`sw${r}`, `scode${sfx}[${g} >> 2u]`], [`s2${r}`, `scale2${sfx}[${g} / 256u]`]] : [[`sr${r}`, `scales${sfx}[${g}]`]];
  if (f.kind === 'int' && !f.symmetric) l.push([`zw${r}`, `zeros${sfx}[${g} >> 2u]`]);
  return l;
}

/** WGSL defining sc{r} (and, asymmetric INT, zb{r} = 2^23 + zero) from scaleLoads' values, the
 *  group index in `g`; double quantization reads smap, one and off{sfx} (DQ_DECL, dqInit, dqConsts). */
export function scaleOf(f: QuantFormat, r: number, g: string, sfx = ''): string {
  const s = [f.doubleQuant ? `let sc${r} = (smap[(sw${r} >> ((${g} & 3u) * 8u)) & 0xffu] * s2${r}) * one + off${sfx};` : `let sc${r} = sr${r};`];
  if (f.kind === 'int' && !f.symmetric) s.push(`let zb${r} = bitcast<f32>(((zw${r} >> ((${g} & 3u) * 8u)) & 0xffu) | 0x4b000000u);`);
  return s.join(' ');
}

/** What a vec4 of decoded weights of row r subtracts: nothing (NF values), or 2^23 + zero from the
 *  INT codes made floats by bits (code | 0x4b000000 is 2^23 + code). */
export function zeroSub(f: QuantFormat, r: number): string {
  if (f.kind === 'nf') return '';
  return f.kind === 'int' && !f.symmetric ? ` - zb${r}` : ` - ${8388608 + (1 << (f.bits - 1)) - 1}.0`;
}

/** bitsandbytes' map in workgroup memory for double-quantized scales: declaration, fill (wg
 *  threads, then a barrier by the caller) and the constants scaleOf reads. */
export const DQ_DECL = 'var<workgroup> smap: array<f32, 256>;';
export const dqFill = (wg: number) => `for (var e = t; e < 256u; e += ${wg}u) { smap[e] = bitcast<f32>(P[${MAP}u + e]); }`;
export const DQ_CONSTS = `let one = bitcast<f32>(P[${ONE}u]); let off = soff[0];`;
/** DQ_CONSTS' second-level offset of the weight whose bindings carry suffix sfx (dequantizeMatmulMany). */
export const dqOff = (sfx: string) => `let off${sfx} = soff${sfx}[0];`;

// The 'banked' decoder of the wide GEMV (gemvShape.lut): no pair table. NF codes index a per-code
// table replicated once per bank, lutb[code · 32 + lane] (2^bits · 32 f32, 2 KB for 4 bits): every
// lane reads its own bank, so the 32 lanes' lookups never conflict. INT codes need no table: the
// code as f32 plus 2^23 is the bit pattern 0x4b000000 | code, so code - zero is that minus
// (2^23 + zero) (both exact). Double-quantized scales read bitsandbytes' map from workgroup memory
// (smap) and soff once. Each lane loads the next unit's codes and scale inputs before it decodes
// the current one (software pipelining: the loads of two units in flight). The products are
// the pair table's exactly (same values, same dot order).
const BANKED_DECL = (f: QuantFormat) =>
  [f.kind === 'nf' ? `var<workgroup> lutb: array<f32, ${32 << f.bits}>;` : '', f.doubleQuant ? DQ_DECL : ''].join('\n');
function BANKED_INIT(f: QuantFormat, wg: number): string {
  const s: string[] = [];
  if (f.kind === 'nf') s.push(`for (var e = t; e < ${32 << f.bits}u; e += ${wg}u) { lutb[e] = value(e >> 5u); }`);
  if (f.doubleQuant) s.push(dqFill(wg));
  if (s.length) s.push('workgroupBarrier();');
  return s.join('\n  ');
}

/** The banked wide loop (U = 32) for T x rows and R weight rows per team. */
function bankedLoop(f: QuantFormat, T: number, R: number): string {
  const bits = f.bits;
  const mask = (1 << bits) - 1;
  const rr = range(R);
  const tt = range(T);
  const ug = f.group / 32; // units per group
  // the per-unit loads of row r at unit u (group gv): [name, expression]
  const loads = (r: number, u: string, gv: string): [string, string][] => [
    ...(bits === 3
      ? range(3).map((w): [string, string] => [`q${r}_${w}`, `codes[(rc${r} * units + ${u}) * 3u + ${w}u]`])
      : [[`q${r}`, `codes[rc${r} * units + ${u}]`] as [string, string]]),
    ...scaleLoads(f, r, gv),
  ];
  // code j (0..7) of piece p (8 codes) of row r: [word expression, shift of the code in it]
  const code = (r: number, p: number, j: number): [string, number] => {
    if (bits === 4) return [`q${r}.${'xyzw'[p]}`, 8 * (j >> 1) + (j & 1 ? 0 : 4)];
    if (bits === 2) return [`q${r}.${'xy'[p >> 1]}`, 8 * (2 * (p & 1) + (j >> 2)) + 6 - 2 * (j & 3)];
    return [`v24_${r}`, 21 - 3 * j];
  };
  const pre3 = (r: number, p: number) => {
    if (bits !== 3) return '';
    const byte = (i: number) => byteOf(`q${r}_${(3 * p + i) >> 2}`, (3 * p + i) & 3);
    return `let v24_${r} = (${byte(0)} << 16u) | (${byte(1)} << 8u) | ${byte(2)};`;
  };
  const weight = (r: number, p: number, j: number): string => {
    const [w, sh] = code(r, p, j);
    if (f.kind === 'int') return `bitcast<f32>((${sh ? `(${w} >> ${sh}u)` : w} & ${mask}u) | 0x4b000000u)`;
    const moved = sh > 5 ? `(${w} >> ${sh - 5}u)` : sh < 5 ? `(${w} << ${5 - sh}u)` : w;
    return `lutb[(${moved} & ${mask << 5}u) | lane]`;
  };
  const scale = (r: number) => `let g${r} = rc${r} * gpr + k / ${ug}u; ${scaleOf(f, r, `g${r}`)}`;
  const body = range(4).map((p) => `{
      ${tt.map((k) => `let xa${k} = x[${k}u * c4 + k * 8u + ${2 * p}u]; let xb${k} = x[${k}u * c4 + k * 8u + ${2 * p + 1}u];`).join('\n      ')}
      ${rr.map((r) => `{
        ${pre3(r, p)}
        let wa = vec4<f32>(${range(4).map((j) => weight(r, p, j)).join(', ')})${zeroSub(f, r)};
        let wb = vec4<f32>(${range(4).map((j) => weight(r, p, j + 4)).join(', ')})${zeroSub(f, r)};
        ${tt.map((k) => `p${r}_${k} += dot(xa${k}, wa) + dot(xb${k}, wb);`).join(' ')}
      }`).join('\n      ')}
    }`).join('\n    ');
  return `let units = cols / 32u;
  let last = units - 1u;
  let c4 = cols / 4u;
  ${f.doubleQuant ? DQ_CONSTS : ''}
  let k0 = min(lane, last);
  ${rr.map((r) => `let gp${r} = rc${r} * gpr + k0 / ${ug}u; ${loads(r, 'k0', `gp${r}`).map(([n, e]) => `var n${n} = ${e};`).join(' ')}`).join('\n  ')}
  for (var k = lane; k < units; k += 32u) {
    // this unit's loads (fetched the iteration before), then the next unit's
    let kn = min(k + 32u, last);
    ${rr.map((r) => `let gn${r} = rc${r} * gpr + kn / ${ug}u; ${loads(r, 'kn', `gn${r}`).map(([n, e]) => `let ${n} = n${n}; n${n} = ${e};`).join(' ')}`).join('\n    ')}
    ${rr.map(scale).join('\n    ')}
    ${rr.map((r) => tt.map((k) => `var p${r}_${k} = 0.0;`).join(' ')).join(' ')}
    ${body}
    ${rr.map((r) => tt.map((k) => `a${r}_${k} += p${r}_${k} * sc${r};`).join(' ')).join('\n    ')}
  }`;
}

// ---- tiled kernels (dequantizeMatmul with many x rows, dequantizeMatmulT) ----
// A workgroup of 16x16 threads computes a BM x BN output tile, each thread TM x TN outputs at rows
// ly + 16i and columns lx + 16j. The contraction goes in steps of BK: the float operand's tile is
// staged transposed as xs[kk][m] (rows padded by one: conflict-free stores), the weight tile
// decoded (scales applied: exactly the reference's weights) as ws[kk][n].
//   'nt' (dequantizeMatmul): out [M = xRows, N = rows] = x [M, K = cols] · Wᵀ; the weight tile is
//        BN weight rows x BK columns.
//   'nn' (dequantizeMatmulT): out [M = n, N = cols] = dy [M, K = rows] · W; the weight tile is
//        BK weight rows x BN columns.
// P: M, N, K, rowBytes, groupsPerRow. Grid: x over column tiles, y over row tiles.

function tiledSource(f: QuantFormat, fast: boolean, mode: 'nt' | 'nn', tm: number, tn: number, bk: number): string {
  const { decl, next } = partBindings(f);
  const BM = 16 * tm;
  const BN = 16 * tn;
  const BMP = BM + 1;
  const BNP = mode === 'nt' ? BN + 1 : BN;
  // element j of the sub-chunk (weight row wr, columns c0..c0+7) goes to ws[wIndex(j)]
  const wIndex = mode === 'nt' ? (j: string) => `(kc * 8u + ${j}) * ${BNP}u + n` : (j: string) => `kk * ${BNP}u + cc * 8u + ${j}`;
  const { pre, pairs } = pairsOf(f.bits, (i) => byteOf('s', i), 's');
  const z = f.kind === 'int' ? ' - z' : '';
  const subDecode = fast
    ? `if (wr < WR && c0 < WC) {
        let s = load8(wr * rb, c0);
        ${pre}
        let g = wr * gpr + c0 / GROUP;
        let sc = groupScale(g);
        let z = groupZero(g);
        ${pairs.map((p, m) => `let v${m} = lut2[${p}];
        ws[${wIndex(`${2 * m}u`)}] = (v${m}.x${z}) * sc;
        ws[${wIndex(`${2 * m + 1}u`)}] = (v${m}.y${z}) * sc;`).join('\n        ')}
      } else {
        for (var j = 0u; j < 8u; j++) { ws[${wIndex('j')}] = 0.0; }
      }`
    : `for (var j = 0u; j < 8u; j++) {
        let c = c0 + j;
        var v = 0.0;
        if (wr < WR && c < WC) {
          let g = wr * gpr + c / GROUP;
          v = (value(codeAt(wr * rb, c)) - groupZero(g)) * groupScale(g);
        }
        ws[${wIndex('j')}] = v;
      }`;
  const wStage = mode === 'nt'
    ? `for (var s8 = t; s8 < ${(BN * bk) / 8}u; s8 += 256u) {
      let kc = s8 % ${bk / 8}u;
      let n = s8 / ${bk / 8}u;
      let wr = n0 + n;
      let c0 = k0 + kc * 8u;
      ${subDecode}
    }`
    : `for (var s8 = t; s8 < ${(BN * bk) / 8}u; s8 += 256u) {
      let cc = s8 % ${BN / 8}u;
      let kk = s8 / ${BN / 8}u;
      let wr = k0 + kk;
      let c0 = n0 + cc * 8u;
      ${subDecode}
    }`;
  const ii = range(tm);
  const jj = range(tn);
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
${decl}
@group(0) @binding(${next}) var<storage, read> a: array<f32>;
@group(0) @binding(${next + 1}) var<storage, read_write> y: array<f32>;
const BM = ${BM}u;
const BN = ${BN}u;
const BK = ${bk}u;
${fast ? LUT_DECL(f) : ''}
var<workgroup> xs: array<f32, ${bk * BMP}>;
var<workgroup> ws: array<f32, ${bk * BNP}>;
${decodeLib(f)}
@compute @workgroup_size(16, 16) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let M = P[0]; let N = P[1]; let K = P[2]; let rb = P[3]; let gpr = P[4];
  // the weight's shape: WR rows of WC columns
  let WR = ${mode === 'nt' ? 'N' : 'K'};
  let WC = ${mode === 'nt' ? 'K' : 'N'};
  ${fast ? LUT_INIT(f, 256) : ''}
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  ${ii.map((i) => jj.map((j) => `var c${i}_${j} = 0.0;`).join(' ')).join('\n  ')}
  for (var k0 = 0u; k0 < K; k0 += BK) {
    for (var e = t; e < BM * BK; e += 256u) {
      let kk = e % BK;
      let m = e / BK;
      var v = 0.0;
      if (m0 + m < M && k0 + kk < K) { v = a[(m0 + m) * K + k0 + kk]; }
      xs[kk * ${BMP}u + m] = v;
    }
    ${wStage}
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      ${ii.map((i) => `let a${i} = xs[kk * ${BMP}u + lid.y + ${16 * i}u];`).join(' ')}
      ${jj.map((j) => `let b${j} = ws[kk * ${BNP}u + lid.x + ${16 * j}u];`).join(' ')}
      ${ii.map((i) => jj.map((j) => `c${i}_${j} += a${i} * b${j};`).join(' ')).join('\n      ')}
    }
    workgroupBarrier();
  }
  ${ii.map((i) => `{
    let r = m0 + lid.y + ${16 * i}u;
    if (r < M) {
      ${jj.map((j) => `if (n0 + lid.x + ${16 * j}u < N) { y[r * N + n0 + lid.x + ${16 * j}u] = c${i}_${j}; }`).join('\n      ')}
    }
  }`).join('\n  ')}
}`;
}

// ---- host side ----

export type GemvLut = 'pair' | 'banked';
/** GEMV shape for T x rows: teams of 32 threads per workgroup, weight rows per team, and the wide
 *  path's decoder (lut: 'pair' table or 'banked' per-code table; exported for benchmarks to tune). */
// Measured on an H200 (bench/gpu.ts --sweep, 16384², one token): banked 523-946 GB/s, the pair
// table 397-794 GB/s; banked with 2 teams of 8 rows was the fastest setting.
export const gemvShape = {
  teams: 2, rows: (T: number) => (T <= 4 ? 8 : 4), lut: 'banked' as GemvLut,
  /** The words kernel (gemv.ts) for 2- and 4-bit codes where it fits; its shape for T x rows. On
   *  the H200 (bench/gpu.ts --sweep, one x row) R 8, 4 teams, 2 words, prefetch, INT codes by the
   *  x sums (xs): nf4-dq 44% / 36% of copy at 16384² / 8192², int4 54% / 45%, against 43% / 36%
   *  and 47% / 41% for the earlier R 8, 2 teams without xs, in the same runs (sixth session). R
   *  shrinks with T to keep R·T accumulators per thread. */
  words: true,
  wordsShape: (T: number): WordsShape => ({ R: T <= 2 ? 8 : T <= 4 ? 4 : 2, NW: T <= 2 ? 4 : 2, W: 2, pf: true, xs: true }),
};

function unitOf(cols: number, f: QuantFormat): 1 | 8 | 32 {
  if (cols % 32 === 0 && f.group % 32 === 0) return 32;
  return cols % 8 === 0 && f.group % 8 === 0 ? 8 : 1;
}

function dequantize(dev: Device, q: QuantHandles, rows: number, cols: number, f: QuantFormat): GpuHandle {
  const y = dev.alloc(rows * cols * 4);
  if (rows * cols === 0) return y;
  const fast = unitOf(cols, f) > 1;
  const pipe = dev.pipeline(`quant_deq_${fmtKey(f)}${fast ? 'F' : 'G'}`, () => dequantizeSource(f, fast));
  const threads = fast ? (rows * cols) / 8 : rows * cols;
  dev.run(pipe, params(f, [rows, cols, rowBytes(cols, f.bits), Math.ceil(cols / f.group)]), [...partsOf(q, f), y], dev.grid(threads, 256));
  return y;
}

function dequantizeMatmul(dev: Device, x: GpuHandle, xRows: number, q: QuantHandles, rows: number, cols: number, f: QuantFormat): GpuHandle {
  if (xRows * rows === 0) return dev.alloc(xRows * rows * 4);
  if (cols === 0) return dev.alloc(xRows * rows * 4, true);
  const y = dev.alloc(xRows * rows * 4);
  const rb = rowBytes(cols, f.bits);
  const gpr = Math.ceil(cols / f.group);
  if (wordsServes(f, xRows, cols)) {
    gemvWords(dev, x, xRows, q, f, rows, cols, rb, gpr, y);
    return y;
  }
  if (xRows <= GEMV_MAX_ROWS) {
    const U = unitOf(cols, f);
    const R = gemvShape.rows(xRows);
    const nw = gemvShape.teams;
    const lut = U === 32 ? gemvShape.lut : 'pair';
    const pipe = dev.pipeline(`quant_gemv_${fmtKey(f)}_u${U}t${xRows}r${R}w${nw}${lut === 'banked' ? 'B' : ''}`, () => gemvSource(f, U, xRows, R, nw, lut));
    const groups = Math.ceil(rows / (R * nw));
    const grid: [number, number, number] = groups <= 65535 ? [groups, 1, 1] : [65535, Math.ceil(groups / 65535), 1];
    dev.run(pipe, params(f, [rows, cols, rb, gpr]), [...partsOf(q, f), x, y], grid);
    return y;
  }
  tiled(dev, 'nt', x, q, f, xRows, rows, cols, rb, gpr, y);
  return y;
}

/** Whether the words GEMV serves xRows x rows of format f over `cols` columns (else the other GEMV
 *  or the tiled kernel). */
const wordsServes = (f: QuantFormat, xRows: number, cols: number) => xRows <= GEMV_MAX_ROWS && gemvShape.words && wordsFits(f, cols, gemvShape.wordsShape(xRows).W);

/** Storage buffers the words GEMV binds for format f: P, the parts, x or int8 x with its scales, y,
 *  and with a low-rank term A or u, B, and IEC's βA and βB (counted whether or not the term has
 *  them). */
const wordsBindings = (f: QuantFormat, x8: boolean, lowRank: boolean) => partsCount(f) + (x8 ? 4 : 3) + (lowRank ? 4 : 0);
const partsCount = (f: QuantFormat) => (f.doubleQuant ? 4 : 2) + (f.kind === 'int' && !f.symmetric ? 1 : 0);

/** x · Wᵀ + scale · (x · aᵀ) · bᵀ by the words GEMV, whose epilogue adds scale · u · bᵀ (gemvWords
 *  makes u = x · aᵀ), where that kernel serves the format and size and the adapter binds enough
 *  buffers; null otherwise (nothing recorded). */
function dequantizeMatmulLowRank(dev: Device, x: GpuHandle, xRows: number, q: QuantHandles, rows: number, cols: number, f: QuantFormat, lr: LowRank): GpuHandle | null {
  if (!(xRows >= 1 && rows >= 1 && cols >= 1 && wordsServes(f, xRows, cols))) return null;
  if (wordsBindings(f, true, true) > dev.info.maxStorageBuffers) return null;
  const y = dev.alloc(xRows * rows * 4);
  if (gemvWords(dev, x, xRows, q, f, rows, cols, rowBytes(cols, f.bits), Math.ceil(cols / f.group), y, lr)) return y;
  dev.free(y);
  return null;
}

/** Bytes of A that the words GEMV's workgroups may read between them to make u themselves (each
 *  reads all of A from L2) rather than take it from a matmul first: about what a dispatch costs in
 *  L2 reads on a large GPU. */
const LOW_RANK_INLINE_BYTES = 8 * 2 ** 20;
/** The same bound for dequantizeMatmulMany, which saves a dispatch per weight beyond the first
 *  (SmolLM2-135M's q/k/v at rank 16: 192 workgroups reading 110 KB each, 21 MB), and at most this
 *  many bytes of A per workgroup (read in its prologue). */
const LOW_RANK_MANY_BYTES = 32 * 2 ** 20;
const LOW_RANK_MANY_WG_BYTES = 256 * 2 ** 10;

/** The words GEMV's shape for T x rows of format f over `cols` columns (gpr groups per row) on
 *  this device: gemvShape.wordsShape(T), then what the compute dtype (Device.gemv), the format and
 *  the workgroup memory allow (`extra`: the caller's own workgroup bytes); R (several weights'
 *  slots) replaces the shape's rows and turns off staged scales and persistent workgroups. Also
 *  the workgroup bytes it takes and the room left. */
function wordsShapeFor(dev: Device, f: QuantFormat, T: number, gpr: number, cols: number, R = 0, extra = 0) {
  const s = fullShape(gemvShape.wordsShape(T));
  if (R) Object.assign(s, { R, ss: false, pw: 0 });
  const sg = dev.subgroups;
  const limit = dev.info.maxWorkgroupStorageBytes - 1088; // the codebook and bitsandbytes' map
  // the compute dtype (Device.gemv) or the shape's own i8/h: int8 x, f16 products
  s.i8 = (!!s.i8 || dev.gemv === 'int8') && i8Fits(f, s.W);
  // int8 x: NF through the int8 pair table (8 copies unless given), INT with no table
  if (s.i8) {
    s.pt = f.kind === 'nf' ? s.pt || 8 : 0;
    s.h = s.xs = s.sx = false;
  }
  s.h = !s.i8 && (!!s.h || dev.gemv === 'f16') && dev.info.f16 && f.bits === 4; // int8 takes precedence over f16
  if (s.h && !s.pt) s.pt = 32;
  if (!usesPairs(f, s)) s.pt = 0;
  if (f.kind !== 'int') s.xs = false;
  if (s.ss && stagedBytes(f, s, gpr) > limit / 2) s.ss = false;
  s.pw = s.ss || !(s.pw! >= 1) ? 0 : Math.min(Math.floor(s.pw!), 65535);
  const shared = () => redBytes(s, T, sg) + stagedBytes(f, s, gpr) + pairBytes(f, s) + extra;
  while (s.pt && shared() > limit) s.pt = s.pt > 1 ? s.pt / 2 : 0;
  if (s.h && !s.pt) s.h = false; // no room for the f16 pair table: f32
  if (s.i8 && f.kind === 'nf' && !s.pt) s.i8 = false; // nor for the int8 one
  while (!sg && s.NW > 1 && shared() > limit) s.NW /= 2;
  s.px = !!s.px && s.pf;
  s.pd = s.pf ? Math.max(1, Math.floor(s.pd ?? 1)) : 1;
  if (s.pd > 1) s.px = false; // px keeps one step of x ahead only
  s.hl = !!s.hl && f.kind === 'int' && f.bits === 4 && !s.i8 && !s.h && !s.pt;
  if (s.hl) s.xs = false;
  s.ip = !!s.ip && f.kind === 'int' && f.bits === 4 && !s.i8 && !s.h && !s.pt && !s.hl;
  if (s.ip) s.xs = false;
  s.fc = !!s.fc && !s.hl && !s.ip;
  // INT with int8 x: x quantized in the GEMV itself unless the shape says xf: false (eighth session,
  // H200, streamed weights: 59% of copy at 8192² against 54% with x8Source's pass; 84% both at 16384²)
  s.xf = (s.xf ?? true) && !!s.i8 && f.kind === 'int';
  if (s.i8 && !s.xf) s.px = false; // int8 x from x8Source: nothing to prefetch but its words
  s.sx = !!s.sx && shared() + T * cols * 4 <= limit; // x staged only where it fits beside the rest
  return { s: s as typeof s & { pd: number }, shared, limit };
}

/** Records the words GEMV into y; false, with nothing recorded, where a low-rank term with IEC
 *  asks for what the kernel cannot make itself (its u: see the inline conditions below). */
function gemvWords(dev: Device, x: GpuHandle, T: number, q: QuantHandles, f: QuantFormat, rows: number, cols: number, rb: number, gpr: number, y: GpuHandle, lr?: LowRank): boolean {
  const { s, shared, limit } = wordsShapeFor(dev, f, T, gpr, cols);
  const sg = dev.subgroups;
  const blocks = s.pw ? Math.min(s.pw, Math.ceil(rows / s.R)) : Math.ceil(rows / s.R);
  // the low-rank term's u made by the GEMV itself
  const inline = !!lr && sg && !(s.i8 && !s.xf) && lr.rank <= LOW_RANK_INLINE_MAX && blocks * lr.rank * cols * 4 <= LOW_RANK_INLINE_BYTES && shared() + 4 * LOW_RANK_INLINE_MAX * T <= limit;
  // IEC: the x groups of the βA term in whole vec4s, and u made here (where else it would take the
  // composed ops the caller falls back to)
  const g1 = lr ? gcd(cols, lr.rank) : 1;
  const g2 = lr ? gcd(lr.rank, rows) : 1;
  if (lr?.iec && !(inline && (cols / g1) % 4 === 0)) return false;
  const mode: LowRankMode = !lr ? false : inline ? (lr.iec ? 'ai' : 'a') : 'u';
  const pipe = dev.pipeline(wordsKey(f, T, s, sg, gpr, cols, mode ? `A${mode}` : ''), () => wordsSource(f, T, s, sg, gpr, cols, mode));
  const head = !lr ? [rows, cols, rb, gpr] : [rows, cols, rb, gpr, lr.rank, f32Bits(lr.scale), ...(lr.iec ? [lr.rank / g1, cols / g1 / 4, rows / g2, lr.rank / g2] : [])];
  // 'u': u = x · aᵀ by the f32 matmul first
  const u = mode === 'u' ? matmulOn(dev, x, lr!.a as GpuHandle, { batch: 1, m: T, k: cols, n: lr!.rank, transA: false, transB: true, aBatchStride: 0, bBatchStride: 0 }) : undefined;
  const low = lr ? [u ?? (lr.a as GpuHandle), lr.b as GpuHandle, ...(lr.iec ? [lr.iec.betaA as GpuHandle, lr.iec.betaB as GpuHandle] : [])] : [];
  wordsRun(dev, pipe, f, s, x, T, cols, params(f, head), partsOf(q, f), [y, ...low], blocks);
  if (u) dev.free(u);
  return true;
}

/** The words GEMV's pipeline key for shape s (`tail`: the caller's variant). */
const wordsKey = (f: QuantFormat, T: number, s: WordsShape, sg: boolean, gpr: number, cols: number, tail: string) =>
  `quant_gemvw_${fmtKey(f)}_t${T}r${s.R}w${s.NW}x${s.W}${s.pf ? 'p' : ''}${sg ? 's' : ''}${s.ss ? `S${gpr}` : ''}${s.pt ? `P${s.pt}` : ''}${s.xs ? 'X' : ''}${s.h ? 'H' : ''}${s.pw ? 'W' : ''}${s.px ? 'F' : ''}${s.sx ? `C${cols}` : ''}${s.i8 ? 'I' : ''}${(s.pd ?? 1) > 1 ? `D${s.pd}` : ''}${s.hl ? 'L' : ''}${s.fc ? 'M' : ''}${s.xf ? 'Q' : ''}${s.ip ? 'N' : ''}${tail}`;

/** Records the words GEMV `pipe` over `blocks` workgroups: P, the first weight's parts, x (or, for
 *  int8 x made by a pass first, gemv.ts x8Source, its int8 words and scales), then `after`. */
function wordsRun(dev: Device, pipe: number, f: QuantFormat, s: WordsShape, x: GpuHandle, T: number, cols: number, p: Uint32Array, parts: GpuHandle[], after: GpuHandle[], blocks: number): void {
  const grid: [number, number, number] = blocks <= 65535 ? [blocks, 1, 1] : [65535, Math.ceil(blocks / 65535), 1];
  if (!s.i8 || s.xf) {
    dev.run(pipe, p, [...parts, x, ...after], grid);
    return;
  }
  // int8 x: quantized per step slice first
  const cpl = (s.W * 32) / f.bits;
  const slices = (T * cols) / cpl;
  const xq = dev.alloc(T * cols);
  const xsc = dev.alloc(slices * 8);
  const per = f.kind === 'nf' ? 1 : 8 / f.bits; // x's order: as the pair table's weights, or as the code fields
  dev.run(dev.pipeline(`quant_gemv_x8_${cpl}_${per}`, () => x8Source(cpl, per)), [slices], [x, xq, xsc], dev.grid(slices, 64));
  dev.run(pipe, p, [...parts, xq, xsc, ...after], grid);
  dev.free(xq);
  dev.free(xsc);
}

/** x · Wᵢᵀ (+ scaleᵢ · (x · aᵢᵀ) · bᵢᵀ with low-rank terms, one per weight or none) for several
 *  weights of format f over the same `cols` columns in one words-GEMV dispatch (gemv.ts WordsSets),
 *  one y [xRows, rows[i]] each; glu (two weights of equal rows): one y = silu(first) · second.
 *  null, with nothing recorded, where that kernel does not serve them: the words GEMV not serving
 *  the format, size or x rows, row counts that are not multiples of the smallest or need more
 *  slots than the shape's rows, more bindings or workgroup memory than the adapter has, or
 *  low-rank terms whose u the kernel cannot make itself (IEC; no subgroups; int8 x from a pass;
 *  a rank over LOW_RANK_INLINE_MAX; more A reads than LOW_RANK_MANY_BYTES or, per workgroup,
 *  LOW_RANK_MANY_WG_BYTES). */
function dequantizeMatmulMany(dev: Device, x: GpuHandle, xRows: number, qs: QuantHandles[], rows: number[], cols: number, f: QuantFormat, glu: boolean, lrs?: LowRank[]): GpuHandle[] | null {
  const n = qs.length;
  if (!(n >= 2 && n === rows.length && (!lrs || lrs.length === n) && xRows >= 1 && cols >= 1)) return null;
  const plan = manyPlan(dev, xRows, rows, cols, f, glu, lrs);
  if (!plan) return null;
  const { p, s, pipe, blocks } = plan;
  // the parameters that vary per call: the low-rank terms' ranks and scales
  if (lrs) {
    p[4] = lrs[0].rank;
    p[5] = f32Bits(lrs[0].scale);
    for (let i = 1; i < n; i++) {
      p[setWord(i, 1)] = lrs[i].rank;
      p[setWord(i, 2)] = f32Bits(lrs[i].scale);
    }
  }
  const ys: GpuHandle[] = [];
  for (let i = 0; i < (glu ? 1 : n); i++) ys.push(dev.alloc(xRows * rows[i] * 4));
  // after x: weight 0's y (and A, B), then each further weight's parts, y (not with glu), A, B
  const after: GpuHandle[] = [ys[0]];
  if (lrs) after.push(lrs[0].a as GpuHandle, lrs[0].b as GpuHandle);
  for (let i = 1; i < n; i++) {
    after.push(...partsOf(qs[i], f));
    if (!glu) after.push(ys[i]);
    if (lrs) after.push(lrs[i].a as GpuHandle, lrs[i].b as GpuHandle);
  }
  wordsRun(dev, pipe, f, s, x, xRows, cols, p, partsOf(qs[0], f), after, blocks);
  return ys;
}

interface ManyPlan { pipe: number; s: WordsShape; blocks: number; p: Uint32Array }
/** dequantizeMatmulMany's plans per device, by what decides them (null: not served): the slots,
 *  the shape, the pipeline and P (the host's recording is the limit of decoding: working these out
 *  per call cost ~15 µs). Each made under a gemvShape, and made again under another. */
const manyPlans = new WeakMap<Device, Map<string, { plan: ManyPlan | null; shape: typeof gemvShape.wordsShape; words: boolean }>>();

function manyPlan(dev: Device, T: number, rows: number[], cols: number, f: QuantFormat, glu: boolean, lrs?: LowRank[]): ManyPlan | null {
  let plans = manyPlans.get(dev);
  if (!plans) manyPlans.set(dev, (plans = new Map()));
  const key = `${f.name}|${T}|${rows.join(',')}|${cols}|${glu ? 'g' : ''}|${lrs ? lrs.map((l) => (l.iec ? -1 : l.rank)).join(',') : ''}|${dev.gemv}|${dev.checks ? 'c' : ''}`;
  const hit = plans.get(key);
  if (hit && hit.shape === gemvShape.wordsShape && hit.words === gemvShape.words) return hit.plan;
  const plan = makeManyPlan(dev, T, rows, cols, f, glu, lrs);
  plans.set(key, { plan, shape: gemvShape.wordsShape, words: gemvShape.words });
  return plan;
}

function makeManyPlan(dev: Device, T: number, rows: number[], cols: number, f: QuantFormat, glu: boolean, lrs?: LowRank[]): ManyPlan | null {
  const n = rows.length;
  if (!wordsServes(f, T, cols)) return null;
  if (glu && !(n === 2 && rows[0] === rows[1])) return null;
  const slots = setSlots(rows, gemvShape.wordsShape(T).R);
  if (!slots) return null;
  const gpr = Math.ceil(cols / f.group);
  const low = lrs ? 4 * LOW_RANK_INLINE_MAX * T * n : 0;
  const { s, shared, limit } = wordsShapeFor(dev, f, T, gpr, cols, slots.length, (glu ? 4 * slots.length * T : 0) + low);
  const x8 = s.i8 && !s.xf;
  const blocks = Math.ceil(rows[0] / slots[0].m); // every weight's slots cover rows / m row blocks
  if (shared() > limit || 1 + n * (partsCount(f) + (lrs ? 2 : 0)) + (x8 ? 2 : 1) + (glu ? 1 : n) > dev.info.maxStorageBuffers) return null;
  const aBytes = lrs ? cols * 4 * lrs.reduce((a, l) => a + l.rank, 0) : 0; // every A, read by each workgroup
  if (lrs && !(dev.subgroups && !x8 && lrs.every((l) => !l.iec && l.rank >= 1 && l.rank <= LOW_RANK_INLINE_MAX) && aBytes <= LOW_RANK_MANY_WG_BYTES && blocks * aBytes <= LOW_RANK_MANY_BYTES)) return null;
  const sg = dev.subgroups;
  const mode: LowRankMode = lrs ? 'a' : false;
  const tail = `M${glu ? 'g' : ''}${slots.map((l) => l.set).join('')}${mode ? 'A' : ''}`;
  const pipe = dev.pipeline(wordsKey(f, T, s, sg, gpr, cols, tail), () => wordsSource(f, T, s, sg, gpr, cols, mode, { slots, count: n, glu }));
  const p = new Uint32Array(setWord(n, 0));
  p.set(params(f, [rows[0], cols, rowBytes(cols, f.bits), gpr]));
  for (let i = 1; i < n; i++) p[setWord(i, 0)] = rows[i];
  return { pipe, s, blocks, p };
}

function dequantizeMatmulT(dev: Device, dy: GpuHandle, n: number, q: QuantHandles, rows: number, cols: number, f: QuantFormat): GpuHandle {
  if (n * cols === 0) return dev.alloc(n * cols * 4);
  if (rows === 0) return dev.alloc(n * cols * 4, true);
  const y = dev.alloc(n * cols * 4);
  tiled(dev, 'nn', dy, q, f, n, cols, rows, rowBytes(cols, f.bits), Math.ceil(cols / f.group), y);
  return y;
}

/** Tile shape for an M x N output: TM from M; TN, then TM, as large as keeps >= 256 workgroups (a
 *  launch of few workgroups leaves most of a big GPU idle; smaller tiles decode the weight more
 *  often, which is cheap next to the products). */
function tileFor(M: number, N: number): [number, number] {
  let tm = M >= 128 ? 8 : M >= 48 ? 4 : M > 16 ? 2 : 1;
  let tn = 8;
  const wgs = () => Math.ceil(N / (16 * tn)) * Math.ceil(M / (16 * tm));
  while (tn > 2 && wgs() < 256) tn /= 2;
  while (tm > 2 && wgs() < 256) tm /= 2;
  return [tm, tn];
}

function tiled(dev: Device, mode: 'nt' | 'nn', a: GpuHandle, q: QuantHandles, f: QuantFormat, M: number, N: number, K: number, rb: number, gpr: number, y: GpuHandle): void {
  // the weight's columns: K for 'nt', N for 'nn'
  const fast = unitOf(mode === 'nt' ? K : N, f) > 1;
  const [tm, tn] = tileFor(M, N);
  const shared = (bk: number) => 4 * (bk * (16 * tm + 1) + bk * (16 * tn + 1)) + 8 * PAIRS(f);
  const bk = shared(32) <= dev.info.maxWorkgroupStorageBytes ? 32 : 16;
  const pipe = dev.pipeline(`quant_${mode}_${fmtKey(f)}${fast ? 'F' : 'G'}_${tm}x${tn}k${bk}`, () => tiledSource(f, fast, mode, tm, tn, bk));
  const gx = Math.ceil(N / (16 * tn));
  const gy = Math.ceil(M / (16 * tm));
  dev.run(pipe, params(f, [M, N, K, rb, gpr]), [...partsOf(q, f), a, y], [gx, gy, 1]);
}

export const quantKernels: KernelGroup = () => ({
  dequantize: (dev, q, rows, cols, f) => dequantize(dev, q, rows, cols, f),
  dequantizeMatmul: (dev, x, xRows, q, rows, cols, f) => dequantizeMatmul(dev, x as GpuHandle, xRows, q, rows, cols, f),
  dequantizeMatmulLowRank: (dev, x, xRows, q, rows, cols, f, lr) => dequantizeMatmulLowRank(dev, x as GpuHandle, xRows, q, rows, cols, f, lr),
  dequantizeMatmulMany: (dev, x, xRows, qs, rows, cols, f, glu, lrs) => dequantizeMatmulMany(dev, x as GpuHandle, xRows, qs, rows, cols, f, glu, lrs),
  dequantizeMatmulT: (dev, dy, n, q, rows, cols, f) => dequantizeMatmulT(dev, dy as GpuHandle, n, q, rows, cols, f),
});

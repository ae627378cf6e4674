// The 'words' GEMV (dequantizeMatmul with up to GEMV_MAX_ROWS x rows) for 2- and 4-bit codes:
// y [T, rows] = x [T, cols] · Wᵀ. Built for memory bandwidth on GPUs whose load/store unit is the
// scarce resource (the NF decode is a table lookup per code, 2 per code byte):
//   - a workgroup owns R weight rows; all its NW·32 threads stride along the columns together, each
//     thread taking W consecutive u32 words of codes per row (32·W/bits columns, inside one group),
//     so a warp's code loads are contiguous (W·128 bytes per row) and its x loads touch few lines;
//   - the thread's x slice (vec4 loads) serves all R rows; the group scale (double-quantized: the
//     8-bit code, bitsandbytes' map in workgroup memory, the second-level scale) is decoded once per
//     thread, row and step, and multiplies the slice's partial dot, as the other GEMV does;
//   - NF codes decode through the 2^bits codebook in workgroup memory (16 words: the 16 banks are
//     distinct, so any lookup pattern is conflict-free); INT codes need no table (code + 2^23 as
//     bits, minus 2^23 + zero: exact);
//   - optionally (pf) the next step's code and scale loads are issued before the current step is
//     decoded;
//   - optionally (ss) the R rows' group scales (and INT zero points) are decoded once into
//     workgroup memory at the start, so a step reads one value per row there instead of the scale
//     parts (for double quantization: the 8-bit code, the second-level scale and the map; for
//     asymmetric INT, the scale and 2^23 + zero as one vec2);
//   - optionally (pt, 4-bit) the codes decode a byte at a time through a pair table, replicated
//     pt times so that lanes read distinct banks: lutp[byte · pt + lane % pt] = (value(high
//     nibble), value(low nibble)), 2 KB per copy; one 8-byte lookup per 2 weights (NF: instead of
//     a 4-byte lookup per weight, the exact same values; INT: the codes as floats, the zero point
//     applied through the x sums as below);
//   - optionally (xs, INT) the codes become floats as 1 + code / 2^bits (the code in the top mantissa
//     bits of 1.0), and the zero point is applied once per step through the sum X of the step's x
//     slice: s · Σ x (code − z) = s · (2^bits · Σ x (1 + code / 2^bits) − (2^bits + z) · X), so no
//     subtraction per weight (X serves all R rows); the difference can lose a few low bits;
//   - optionally (h, 4-bit, opt-in: Device.gemv 'f16') the products are f16: weight pairs from a pair
//     table of f16 pairs, x rounded to f16 pairs, summed in f16 over the step, then scaled and
//     added in f32 (a compute dtype of f16: ~1e-4 relative error);
//   - optionally (pw) at most pw workgroups loop over the row blocks (the tables built once each);
//   - optionally (px, with pf) the next step's x slice is loaded with its codes; optionally (sx) x
//     is staged in workgroup memory once per workgroup (with pw: once per pw row blocks, instead of
//     one read of x from L2 per R rows);
//   - optionally (i8, 4-bit NF and 2/4-bit INT, opt-in: Device.gemv 'int8') x arrives quantized to
//     int8 (x8Source: per step slice of cpl columns, a scale m/127 and the sum of its int8 values),
//     and the products are summed as integers by dot4I8Packed (4 per instruction). INT: x's bytes
//     ordered as the code word's fields (high nibbles, then low; 2-bit: the 4 fields of each byte),
//     so a code word is a shift and mask and a dot product per field, and a row's step adds
//     (Σ q·code − zero · Σ q) · scale · x scale. NF: the values become int8 (round(127 · value)) through a pair table of int8 pairs (lut8,
//     replicated pt times as lutp), two lookups per 4 weights. A compute dtype of int8: ~0.5%
//     relative RMS error for INT (x's rounding), ~0.75% for NF (the values' too);
//   - the R·T sums are reduced per subgroup (subgroupAdd) then across subgroups in order, or by a
//     workgroup tree where the adapter has no subgroups.
// P: rows, cols, rowBytes, groupsPerRow (as the other GEMV). Grid: ceil(rows / R) workgroups (at
// most pw with pw).

import type { QuantFormat } from '../../quant/formats.js';
import { GRID_INDEX } from './device.js';
import { SIGMOID, UNARY_EXPR } from './elementwise.js';
import { decodeLib, DQ_CONSTS, DQ_DECL, dqFill, dqOff, P_WORDS, partBindings, range, scaleLoads, scaleOf, zeroSub } from './quant.js';

export interface WordsShape {
  /** Weight rows per workgroup. */
  R: number;
  /** 32-thread teams per workgroup (all on the same rows, splitting the columns). */
  NW: number;
  /** u32 words of codes per thread, row and step (1, 2 or 4). */
  W: 1 | 2 | 4;
  /** Issue the next step's loads before decoding the current one. */
  pf: boolean;
  /** Stage the rows' group scales in workgroup memory (needs groupsPerRow baked into the kernel). */
  ss?: boolean;
  /** 4-bit: decode through a pair table replicated this many times (a power of 2 up to 32); INT
   *  codes then apply the zero point through the x sums, as xs does. */
  pt?: number;
  /** INT: weights as 1 + code / 2^bits, the zero point applied once per step via the x sums. */
  xs?: boolean;
  /** 4-bit, adapters with shader-f16: multiply in f16 pairs (see the header), through the pair
   *  table of f16 pairs (needs pt). */
  h?: boolean;
  /** Persistent workgroups: launch at most this many, each looping over row blocks, so the tables
   *  are built once per workgroup rather than once per R rows (not with ss). */
  pw?: number;
  /** With pf: prefetch the next step's x slice too (x comes from L2 when the code stream has
   *  evicted it from L1, so an unprefetched load stalls each step); f32 decoders and xf (whose
   *  step starts by quantizing its x slice, so that every step waits on its x loads). */
  px?: boolean;
  /** Stage x in workgroup memory once per workgroup (needs the columns baked in and T·cols·4
   *  bytes of room; pays off with pw, where a workgroup serves many row blocks). */
  sx?: boolean;
  /** Where i8Fits (opt-in: Device.gemv 'int8'): x quantized to int8 per step slice (a scale and the
   *  sum of its int8 values, x8Source), the products summed as integers by dot4I8Packed (4
   *  products per instruction where the adapter has integer dot products); NF needs pt. */
  i8?: boolean;
  /** With pf: how many steps ahead the code and scale loads are issued (default 1). Each step
   *  holds R·(W + scale parts) more registers; deeper keeps more bytes in flight per thread, which
   *  matters where a thread has few steps (8192 columns: 4 steps at 4 teams of W 2). */
  pd?: number;
  /** 4-bit INT (f32): the two codes of a byte from one shift, the high one in the top mantissa
   *  bits (1 + code/16), the low one below it (1 + code/256), each class summed in its own fma
   *  chain; the zero point through the x sums as xs. 1.5 integer ops per code instead of 2. */
  hl?: boolean;
  /** f32 decoders (not h, i8, hl): the step's products summed in one fma chain per row and x row
   *  instead of vec4 dot products added together (one op per weight). */
  fc?: boolean;
  /** With i8, INT codes: x quantized to int8 in the kernel itself (each thread its step's slice,
   *  the same values as x8Source's), instead of by x8Source in a pass before it: no second pass
   *  and no int8 copy of x, for ~70 instructions per thread, step and x row (R·16 weights). The
   *  host (gemvWords) turns it on unless the shape sets it false. */
  xf?: boolean;
  /** 4-bit INT (f32): the codes decoded where they lie in the word, with no shift: nibble p (p ≤ 4)
   *  of the word, and of the word shifted right by 12 (the top three), masked into the mantissa of
   *  32768 gives 32768 + code·2^(4p−8), minus 32768 exactly code·2^(4p−8); x is scaled by 2^(8−4p)
   *  per column once per step (shared by the R rows; exact, short of |x| > 1e36 or below 2^−118), the
   *  zero point through the x sum. 1.125 integer ops per code instead of 2 (xs) or 1.5 (hl). */
  ip?: boolean;
}

/** A copy of s with every field present, so that resolving it per call only sets fields. (Adding
 *  fields one by one to a spread copy cost ~25 µs per GEMV call in Node 20's V8, more than the
 *  recording: the object leaves V8's fast path.) The return type makes a field left out an error. */
export const fullShape = (s: WordsShape): { [K in keyof Required<WordsShape>]: WordsShape[K] } => ({
  R: s.R, NW: s.NW, W: s.W, pf: s.pf, ss: s.ss, pt: s.pt, xs: s.xs, h: s.h, pw: s.pw, px: s.px, sx: s.sx, i8: s.i8, pd: s.pd, hl: s.hl, fc: s.fc, xf: s.xf, ip: s.ip,
});

/** Whether the int8 decoder (i8) serves format f at W words per thread and step: 4-bit NF, 2- or
 *  4-bit INT, steps of 16 columns or more (x8Source's slices are whole vec4s of int8). */
export const i8Fits = (f: QuantFormat, W: number) => (f.kind === 'int' || (f.kind === 'nf' && f.bits === 4)) && (f.bits === 2 || f.bits === 4) && (W * 32) / f.bits >= 16;

/** Whether shape s's pair table applies to format f (4 bits). */
export const usesPairs = (f: QuantFormat, s: WordsShape) => !!s.pt && f.bits === 4;
/** Workgroup memory bytes of the replicated pair table. */
export const pairBytes = (f: QuantFormat, s: WordsShape) => (usesPairs(f, s) ? (s.h || s.i8 ? 1024 : 2048) * s.pt! : 0);

/** Whether the words GEMV can run format f over `cols` columns with W words per thread. */
export function wordsFits(f: QuantFormat, cols: number, W: number): boolean {
  if (f.bits !== 2 && f.bits !== 4) return false;
  const cpl = (W * 32) / f.bits;
  return cols % cpl === 0 && f.group % cpl === 0;
}

/** Workgroup memory bytes of the sums' reduction: R·T per subgroup (at least 4 invocations each)
 *  with subgroups, R·T per thread for the workgroup tree. */
export const redBytes = (s: WordsShape, T: number, subgroups: boolean) => 4 * redWords(s.R * T, s.NW * 32, subgroups);
/** f32 words of `red` for sumAcross: n sums over WG threads (per subgroup of at least 4 invocations,
 *  or per thread for the workgroup tree). */
export const redWords = (n: number, WG: number, subgroups: boolean) => n * (subgroups ? WG / 4 : WG);
/** The entry point's subgroup builtins that sumAcross uses. */
export const sgArgs = (subgroups: boolean) => (subgroups ? ', @builtin(subgroup_invocation_id) sgi: u32, @builtin(subgroup_id) sid: u32, @builtin(num_subgroups) nsg: u32' : '');

/** WGSL summing each of `accs` (per-thread values, thread index t) over a workgroup of WG threads:
 *  per subgroup (subgroupAdd), then across subgroups in order, or by a workgroup tree where the
 *  adapter has no subgroups; `out(e, val)` stores sum e (e: a u32 expression). Needs `red`
 *  (redWords f32s) and, with subgroups, the sgArgs builtins. */
export function sumAcross(accs: string[], WG: number, subgroups: boolean, out: (e: string, val: string) => string): string {
  const n = accs.length;
  return subgroups
    ? `${accs.map((a, e) => `{ let s = subgroupAdd(${a}); if (sgi == 0u) { red[sid * ${n}u + ${e}u] = s; } }`).join('\n  ')}
  workgroupBarrier();
  if (t < ${n}u) {
    var s = red[t];
    for (var i = 1u; i < nsg; i++) { s += red[i * ${n}u + t]; }
    ${out('t', 's')}
  }`
    : `${accs.map((a, e) => `red[${e}u * ${WG}u + t] = ${a};`).join(' ')}
  workgroupBarrier();
  for (var h = ${WG / 2}u; h > 0u; h >>= 1u) {
    if (t < h) { for (var e = 0u; e < ${n}u; e++) { red[e * ${WG}u + t] += red[e * ${WG}u + t + h]; } }
    workgroupBarrier();
  }
  for (var e = t; e < ${n}u; e += ${WG}u) ${out('e', `red[e * ${WG}u]`)}`;
}
/** Workgroup memory bytes of the staged scales (and zero points) for `gpr` groups per row. */
export const stagedBytes = (f: QuantFormat, s: WordsShape, gpr: number) => (s.ss ? s.R * gpr * 4 * (f.kind === 'int' && !f.symmetric ? 2 : 1) : 0);

/** How the words GEMV adds a low-rank term scale · u · lbᵀ (a LoRA branch: u = x · Aᵀ [T, rank],
 *  lb = B [rows, rank]; P[4] = rank, P[5] = the scale's f32 bits; bound after y): 'u' reads u,
 *  computed before; 'a' reads A [rank, cols] and computes u itself, each workgroup in its
 *  prologue while its first code loads are in flight (subgroup j-slices of the dot products over
 *  x; needs subgroups, x as f32 and rank <= LOW_RANK_INLINE_MAX). 'ai': as 'a', with IR-QLoRA's
 *  IEC terms (nn/lora.ts groupMean): u_j += βA · the mean of x over j's group of columns, and each
 *  output adds βB · the mean of u over its group of ranks; P[6..9] = ranks per x group, vec4s per
 *  x group, rows per u group, ranks per u group; βA and βB bound after lb. */
export type LowRankMode = false | 'u' | 'a' | 'ai';
/** The largest rank whose u the words GEMV computes itself (workgroup memory: this many f32 per x row). */
export const LOW_RANK_INLINE_MAX = 64;
/** Ranks per subgroup and pass when the words GEMV computes u itself. */
const LOW_RANK_SLOTS = 4;

/** Several weights of one format and column count on the same x in one dispatch
 *  (dequantizeMatmulMany): a workgroup's slot r (R = slots.length) computes row blk·m + o of
 *  weight `set` (blk: the workgroup's index); each weight's slots are consecutive, with m their
 *  count and o = 0.. in order. Weight 0's bindings have the usual names (with a low-rank term, its
 *  A and B after y), weight s's the suffix s (after weight 0's: its parts, its y, its A and B);
 *  weight s's row count, rank and scale are P[setWord(s, 0..2)]. glu (two weights of equal rows):
 *  y = silu(x · W0ᵀ + its low-rank term) · (x · W1ᵀ + its), weight 1 has no y. */
export interface WordsSets { slots: { set: number; m: number; o: number }[]; count: number; glu: boolean }
/** P's word k (0: rows, 1: the low-rank term's rank, 2: its scale's f32 bits) of weight set s >= 1:
 *  after P's tables. */
export const setWord = (s: number, k: number) => P_WORDS + 3 * (s - 1) + k;
/** The slots of `rows.length` weights whose row counts are multiples of the smallest: each weight
 *  gets rows / smallest slots per base row, the base rows per workgroup as many as keep the slots
 *  at or below `most` (at least 1); null where the counts are not multiples or the slots would
 *  pass `most`. */
export function setSlots(rows: number[], most: number): WordsSets['slots'] | null {
  const min = Math.min(...rows);
  if (!(min >= 1) || rows.some((r) => r % min !== 0)) return null;
  const per = rows.map((r) => r / min);
  const total = per.reduce((a, b) => a + b, 0);
  if (total > most) return null;
  const base = Math.max(1, Math.floor(most / total));
  return per.flatMap((p, set) => range(p * base).map((o) => ({ set, m: p * base, o })));
}

/** WGSL of the words GEMV; `gpr` (groups per row) is baked in when the scales are staged;
 *  `lowRank`: see LowRankMode; `sets`: see WordsSets. */
export function wordsSource(f: QuantFormat, T: number, s: WordsShape, subgroups: boolean, gpr = 0, cols = 0, lowRank: LowRankMode = false, sets?: WordsSets): string {
  const { NW, W, pf } = s;
  const R = sets ? sets.slots.length : s.R;
  if (sets && (s.ss || s.pw || (lowRank && lowRank !== 'a'))) throw new Error('wordsSource: several weights go without staged scales and persistent workgroups, and with a low-rank term only where the kernel makes u itself (no IEC)');
  if (sets?.glu && !(sets.count === 2 && sets.slots.filter((l) => l.set === 0).length * 2 === R)) throw new Error('wordsSource: glu needs two weights of equal rows');
  // weight set of slot r: its bindings' suffix, row count, and row of the workgroup
  const setSfx = (set: number) => (set ? String(set) : '');
  const sfx = (r: number) => setSfx(sets ? sets.slots[r].set : 0);
  const rowsOf = (r: number) => `rows${sfx(r)}`;
  const rowAt = (r: number) => (sets ? `blk * ${sets.slots[r].m}u + ${sets.slots[r].o}u` : `row0 + ${r}u`);
  // a weight set's low-rank rank and scale (set 0: P[4], P[5]; set s: after P's tables, setWord)
  const lowRankOf = (set: number) => (set ? [`P[${setWord(set, 1)}u]`, `bitcast<f32>(P[${setWord(set, 2)}u])`] : ['P[4]', 'bitcast<f32>(P[5])']);
  const ss = !!s.ss;
  if (ss && !(gpr > 0)) throw new Error('wordsSource: staged scales need groupsPerRow');
  const sx = !!s.sx;
  if (sx && !(cols > 0 && cols % 4 === 0)) throw new Error('wordsSource: staged x needs the column count (a multiple of 4)');
  const i8 = !!s.i8;
  if (i8 && !(i8Fits(f, W) && (f.kind === 'nf') === !!s.pt && !s.h && !s.xs && !s.sx && (!s.px || !!s.xf))) {
    throw new Error('wordsSource: int8 x needs 4-bit NF or 2/4-bit INT codes, 16 columns per step or more, the int8 pair table (pt) for NF and none for INT, none of h, xs, sx, and px only with xf');
  }
  const px = !!s.px && pf;
  const xf = !!s.xf;
  if (xf && !(i8 && f.kind === 'int')) throw new Error('wordsSource: xf (x quantized in the kernel) needs i8 and INT codes');
  const D = pf ? Math.max(1, Math.floor(s.pd ?? 1)) : 0; // prefetch depth
  if (D > 1 && px) throw new Error('wordsSource: a prefetch depth above 1 does not go with px');
  const hl = !!s.hl;
  if (hl && !(f.kind === 'int' && f.bits === 4 && !s.pt && !s.h && !i8)) throw new Error('wordsSource: hl needs 4-bit INT codes and none of pt, h, i8');
  const ip = !!s.ip;
  if (ip && !(f.kind === 'int' && f.bits === 4 && !s.pt && !s.h && !i8 && !hl)) throw new Error('wordsSource: ip needs 4-bit INT codes and none of pt, h, i8, hl');
  const fc = !!s.fc && !hl && !ip;
  const persistent = !!s.pw && !ss;
  const WG = 32 * NW;
  const bits = f.bits;
  const cpw = 32 / bits; // codes per word
  const cpl = W * cpw; // columns per thread and step
  const nv = cpl / 4; // x vec4 per thread, step and x row
  const RT = R * T;
  const rr = range(R);
  const tt = range(T);
  const asym = f.kind === 'int' && !f.symmetric;
  const pt = usesPairs(f, s) ? s.pt! : 0;
  if (pt && (pt & (pt - 1)) !== 0) throw new Error(`wordsSource: pair table copies ${pt} is not a power of 2`);
  // INT by x sums: weights decode to K·code/2^bits + off (xs: 1 + code/2^bits, K = 2^bits, off =
  // 2^bits; pt: the code, K = 1, off = 0), and a row's step adds (K·Σ x w − (off + zero)·X) · scale
  const h = !!s.h && bits === 4;
  if (h && !pt) throw new Error('wordsSource: f16 decoding needs the pair table (pt)');
  const xsum = f.kind === 'int' && !hl && !ip && (!!s.xs || !!pt);
  const K = pt ? 1 : 1 << bits;
  const off = pt ? 0 : 1 << bits;
  const vecT = W === 1 ? 'u32' : `vec${W}<u32>`;
  const { decl, next } = partBindings(f, vecT);
  const word = (r: number, i: number) => (W === 1 ? `q${r}` : `q${r}.${'xyzw'[i]}`);
  // code j of word i (first element in the high bits of each byte)
  const shift = (j: number) => (bits === 4 ? 8 * (j >> 1) + (j & 1 ? 0 : 4) : 8 * (j >> 2) + 6 - 2 * (j & 3));
  // bits [from, from + width) of e moved to [to, to + width), the rest cleared (no mask needed
  // when the field is the top of the word and lands at bit 0)
  const move = (e: string, from: number, to: number, width: number) => {
    if (to === 0 && from + width === 32) return `(${e} >> ${from}u)`;
    const m = `0x${(((1 << width) - 1) * 2 ** to).toString(16)}u`;
    return from === to ? `(${e} & ${m})` : from > to ? `((${e} >> ${from - to}u) & ${m})` : `((${e} << ${to - from}u) & ${m})`;
  };
  const code = (r: number, i: number, j: number) => move(word(r, i), shift(j), 0, bits);
  const weight = (r: number, i: number, j: number) =>
    f.kind === 'nf'
      ? `lut[${code(r, i, j)}]`
      : xsum
        ? `bitcast<f32>(${move(word(r, i), shift(j), 23 - bits, bits)} | 0x3f800000u)`
        : `bitcast<f32>(${code(r, i, j)} | 0x4b000000u)`;
  // the 4 weights of columns 4v..4v+3 of word i (from code j0)
  const log2pt = Math.log2(pt || 1);
  // a pair table entry's value: NF from the codebook staged in workgroup memory first (one
  // storage load per code per workgroup, not two per entry), INT the code itself
  const pv = (c: string) => (f.kind === 'nf' ? `lut[${c}]` : `value(${c})`);
  // the pair table: its 256 entries into copy 0 (slot byte · pt), then (pt > 1) every other copy
  // from copy 0, so each entry is computed once per workgroup, and a warp's replica reads touch
  // 32 / pt addresses (broadcasts) and its writes consecutive words
  const tbl = i8 ? 'lut8' : 'lutp';
  const entry = i8
    ? `(bitcast<u32>(i32(round(127.0 * ${pv('b >> 4u')}))) & 0xffu) | ((bitcast<u32>(i32(round(127.0 * ${pv('b & 15u')}))) & 0xffu) << 8u)`
    : `vec2<${h ? 'f16' : 'f32'}>(vec2<f32>(${pv('b >> 4u')}, ${pv('b & 15u')}))`;
  const pairFill = `for (var b = t; b < 256u; b += ${WG}u) { ${tbl}[b << ${log2pt}u] = ${entry}; }${pt > 1 ? `
  workgroupBarrier();
  for (var e = t; e < ${256 * pt}u; e += ${WG}u) { if ((e & ${pt - 1}u) != 0u) { ${tbl}[e] = ${tbl}[e & ${~(pt - 1) >>> 0}u]; } }` : ''}
  let lc = t & ${pt - 1}u;`;
  const pair = (r: number, i: number, k: number) => `${tbl}[${move(word(r, i), 8 * k, log2pt, 8)} | lc]`;
  const quad = (r: number, i: number, j0: number) =>
    pt ? `vec4<f32>(${pair(r, i, j0 >> 1)}, ${pair(r, i, (j0 >> 1) + 1)})` : `vec4<f32>(${range(4).map((d) => weight(r, i, j0 + d)).join(', ')})${xsum ? '' : zeroSub(f, r)}`;
  // the per-step loads of row r at step k: [name, expression]
  const loads = (r: number, k: string): [string, string][] => {
    const l: [string, string][] = [[`q${r}`, `codes${sfx(r)}[rc${r} * units + ${k}]`]];
    return ss ? l : [...l, ...scaleLoads(f, r, `(rc${r} * gpr + (${k} * ${cpl}u) / GROUP)`, sfx(r))];
  };
  // xs/pt: zk = off + zero, from zb = 2^23 + zero (exact)
  const zk = (r: number) => (!xsum ? '' : asym ? ` let zk${r} = zb${r} - ${8388608 - off}.0;` : ` let zk${r} = ${off + (1 << (bits - 1)) - 1}.0;`);
  const scale = (r: number) => {
    if (ss) {
      const at = `${r * gpr}u + (k * ${cpl}u) / GROUP`;
      return asym ? `let sz${r} = szl[${at}]; let sc${r} = sz${r}.x; let zb${r} = sz${r}.y;${zk(r)}` : `let sc${r} = scl[${at}];${zk(r)}`;
    }
    return `${f.doubleQuant || asym ? `let g${r} = rc${r} * gpr + (k * ${cpl}u) / GROUP; ` : ''}${scaleOf(f, r, `g${r}`, sfx(r))}${zk(r)}`;
  };
  // h: x as f16 pairs in the order of the weight pairs (byte k of word i holds the codes of columns
  // 2k and 2k+1 of the word: x.xy, x.zw of its vec4s)
  const hpairs = (t: number) => range(nv).flatMap((v) => [`let xh${t}_${2 * v} = vec2<f16>(x${t}_${v}.xy);`, `let xh${t}_${2 * v + 1} = vec2<f16>(x${t}_${v}.zw);`]);
  const xAt = (t: number, v: number, k: string) => `${sx ? 'xl' : 'x'}[${t}u * c4 + ${k} * ${nv}u + ${v}u]`;
  // x row t's vec4 v of this step as `${name}${t}_${v}`: with px from the prefetched nx (then the
  // next step's loaded into it), else loaded here
  const xLoad = (name: string, t: number, v: number) => (px ? `let ${name}${t}_${v} = nx${t}_${v}; nx${t}_${v} = ${xAt(t, v, 'kn')};` : `let ${name}${t}_${v} = ${xAt(t, v, 'k')};`);
  // ip: column c of a word lies in nibble q = shift(c) / 4; nibbles 0-4 are read from the word
  // (ipLow), 5-7 from the word shifted right by 12, at q − 3; its x is scaled by 2^(8 − 4·(that nibble))
  const ipLow = (c: number) => shift(c) / 4 <= 4;
  const ipNib = (c: number) => shift(c) / 4 - (ipLow(c) ? 0 : 3);
  const ipScale = (v: number) => range(4).map((d) => `${2 ** (8 - 4 * ipNib((4 * v + d) % cpw))}`.replace(/^(\d+)$/, '$1.0'));
  // element c of the vec4s `${name}_0`, `${name}_1`, ...
  const el = (name: string, c: number) => `${name}_${c >> 2}.${'xyzw'[c & 3]}`;
  // Σ a·b over the [a, b] pairs as one fma chain (first product plain)
  const fmaChain = (ab: [string, string][]) => ab.reduce((acc, [a, b]) => (acc ? `fma(${a}, ${b}, ${acc})` : `${a} * ${b}`), '');
  // INT code word fields per byte (also x8Source's order of x: see there)
  const per = 8 / bits;
  // xf: the step's x slice quantized here as x8Source does (m = max |x| by the bits, which makes it
  // NaN where x has one; values rounded half to even by adding 1.5·2^23, whose low byte is then
  // the int8), then the int8 words in x8Source's order (word u: chunk u / per of 4·per columns, its
  // columns per·b + u % per, b = 0..3) and the sum of the int8 values
  const xword = (t: number, u: number) => `pack4xI8(vec4<i32>(${range(4).map((b) => el(`r${t}`, Math.floor(u / per) * 4 * per + per * b + (u % per))).join(', ')}))`;
  const xfuse = (t: number) => `${range(nv).map((v) => xLoad('xa', t, v)).join(' ')}
    let mb${t} = ${range(nv).map((v) => `(bitcast<vec4<u32>>(xa${t}_${v}) & vec4<u32>(0x7fffffffu))`).reduce((a, b) => `max(${a}, ${b})`)};
    let m${t} = bitcast<f32>(max(max(mb${t}.x, mb${t}.y), max(mb${t}.z, mb${t}.w)));
    let inv${t} = select(0.0, 127.0 / m${t}, m${t} > 0.0);
    ${range(nv).map((v) => `let r${t}_${v} = bitcast<vec4<i32>>(fma(xa${t}_${v}, vec4<f32>(inv${t}), vec4<f32>(12582912.0)));`).join(' ')}
    ${range(cpl / 16).map((g) => `let xq${t}_${g} = vec4<u32>(${range(4).map((e) => xword(t, 4 * g + e)).join(', ')});`).join(' ')}
    let xv${t} = vec2<f32>(m${t} / 127.0, f32(${range(cpl / 16).map((g) => `dot4I8Packed(xq${t}_${g}.x, 0x01010101u) + dot4I8Packed(xq${t}_${g}.y, 0x01010101u) + dot4I8Packed(xq${t}_${g}.z, 0x01010101u) + dot4I8Packed(xq${t}_${g}.w, 0x01010101u)`).join(' + ')}));`;
  const xs = xf ? tt.map(xfuse).join('\n    ') : i8 ? tt.map((t) => `${range(cpl / 16).map((v) => `let xq${t}_${v} = xq[${t}u * c16 + k * ${cpl / 16}u + ${v}u];`).join(' ')} let xv${t} = xsc[${t}u * units + k];${f.kind === 'nf' ? ` let xn${t} = xv${t}.x * ${1 / 127};` : ''}`).join('\n    ') : tt.map((t) => range(nv).map((v) => xLoad('x', t, v)).join(' ') +
    (xsum || ip ? ` let X${t} = dot(${range(nv).map((v) => `x${t}_${v}`).join(' + ')}, vec4<f32>(1.0));` : '') +
    (hl ? ` let S${t} = ${range(nv).map((v) => `x${t}_${v}`).join(' + ')}; let Xh${t} = S${t}.x + S${t}.z; let Xl${t} = S${t}.y + S${t}.w; let X${t} = Xh${t} + Xl${t}; let Xc${t} = fma(16.0, Xh${t}, 256.0 * Xl${t});` : '') +
    (ip ? ` ${range(nv).map((v) => `let xp${t}_${v} = x${t}_${v} * vec4<f32>(${ipScale(v).join(', ')});`).join(' ')}` : '') +
    (h ? ` ${hpairs(t).join(' ')}` : '')).join('\n    ');
  // h: the f16 weight pairs of row r, in hpairs' order
  const wpairs = (r: number) => range(4 * W).map((p) => pair(r, p >> 2, p & 3));
  // i8: x word c of the step (word i's are i·cpw/4 + j, j < cpw/4: x8Source's order), and row r's
  // zero point; an INT code word's fields j of each byte (code per·k + j at bit 8k + 8 − bits·(j+1))
  const xw = (t: number, c: number) => el(`xq${t}`, c);
  const field = (r: number, i: number, j: number) => {
    const sh = 8 - bits * (j + 1);
    return `(${sh ? `(${word(r, i)} >> ${sh}u)` : word(r, i)} & 0x${(((1 << bits) - 1) * 0x01010101).toString(16).padStart(8, '0')}u)`;
  };
  const z8 = (r: number) => (asym ? `(zb${r} - 8388608.0)` : `${(1 << (bits - 1)) - 1}.0`);
  const dots = rr.map((r) => {
    if (i8 && f.kind === 'nf') {
      // word i's columns 0-3 and 4-7 as int8 (127 · value) from two pair lookups each
      const packed = (i: number, h2: number) => `(${pair(r, i, 2 * h2)} | (${pair(r, i, 2 * h2 + 1)} << 16u))`;
      return `{
      ${range(W).map((i) => `let p${i}_0 = ${packed(i, 0)}; let p${i}_1 = ${packed(i, 1)};`).join('\n      ')}
      ${tt.map((t) => `{ let d = ${range(W).map((i) => `dot4I8Packed(p${i}_0, ${xw(t, 2 * i)}) + dot4I8Packed(p${i}_1, ${xw(t, 2 * i + 1)})`).join(' + ')}; a${r}_${t} += f32(d) * (sc${r} * xn${t}); }`).join('\n      ')}
    }`;
    }
    if (i8) {
      return `{
      ${tt.map((t) => `{ let d = ${range(W).flatMap((i) => range(per).map((j) => `dot4I8Packed(${field(r, i, j)}, ${xw(t, i * per + j)})`)).join(' + ')}; a${r}_${t} += (f32(d) - ${z8(r)} * xv${t}.y) * (sc${r} * xv${t}.x); }`).join('\n      ')}
    }`;
    }
    if (hl) {
      // byte k of word i (codes 2k: high nibble, 2k + 1: low) moved to bits 15..22
      const moved = (i: number, k: number) => (k < 2 ? `(${word(r, i)} << ${15 - 8 * k}u)` : `(${word(r, i)} >> ${8 * k - 15}u)`);
      const chain = (t: number, lo: number) => fmaChain(range(4 * W).map((p) => [el(`x${t}`, 8 * (p >> 2) + 2 * (p & 3) + lo), `${lo ? 'l' : 'h'}${p}`]));
      return `{
      ${range(4 * W).map((p) => `let m${p} = ${moved(p >> 2, p & 3)}; let h${p} = bitcast<f32>((m${p} & 0x00780000u) | 0x3f800000u); let l${p} = bitcast<f32>((m${p} & 0x00078000u) | 0x3f800000u);`).join('\n      ')}
      ${tt.map((t) => `a${r}_${t} += (fma(16.0, ${chain(t, 0)}, 256.0 * (${chain(t, 1)})) - Xc${t} - ${z8(r)} * X${t}) * sc${r};`).join('\n      ')}
    }`;
    }
    if (ip) {
      // the 4 weights of columns 4v..4v+3 (word i = v / 2), each code·2^(4q−8) (q: ipNib)
      const wv = (v: number) => {
        const i = Math.floor((4 * v) / cpw);
        const lane = (d: number) => {
          const c = (4 * v + d) % cpw;
          return `bitcast<f32>((${ipLow(c) ? word(r, i) : `s${i}`} & 0x${(15 * 16 ** ipNib(c)).toString(16)}u) | 0x47000000u)`;
        };
        return `vec4<f32>(${range(4).map(lane).join(', ')}) - vec4<f32>(32768.0)`;
      };
      return `{
      ${range(W).map((i) => `let s${i} = ${word(r, i)} >> 12u;`).join(' ')}
      ${range(nv).map((v) => `let w${v} = ${wv(v)};`).join('\n      ')}
      ${tt.map((t) => `a${r}_${t} += (${range(nv).map((v) => `dot(xp${t}_${v}, w${v})`).join(' + ')} - ${z8(r)} * X${t}) * sc${r};`).join('\n      ')}
    }`;
    }
    if (h) {
      const w = wpairs(r);
      return `{
      ${w.map((e, p) => `let w${p} = ${e};`).join('\n      ')}
      ${tt.map((t) => `{ let hs = ${w.map((_, p) => `xh${t}_${p} * w${p}`).join(' + ')}; a${r}_${t} += (f32(hs.x) + f32(hs.y)${xsum ? ` - zk${r} * X${t}` : ''}) * sc${r}; }`).join('\n      ')}
    }`;
    }
    const terms = range(nv).map((v) => {
      const i = Math.floor((4 * v) / cpw);
      const j0 = (4 * v) % cpw;
      return { v, w: quad(r, i, j0) };
    });
    const dot = (t: number) =>
      fc
        ? fmaChain(terms.flatMap(({ v }) => range(4).map((c): [string, string] => [el(`x${t}`, 4 * v + c), `w${v}.${'xyzw'[c]}`])))
        : terms.map(({ v }) => `dot(x${t}_${v}, w${v})`).join(' + ');
    return `{
      ${terms.map(({ v, w }) => `let w${v} = ${w};`).join('\n      ')}
      ${tt.map((t) => (xsum ? `a${r}_${t} += (${K === 1 ? '' : `${K}.0 * `}(${dot(t)}) - zk${r} * X${t}) * sc${r};` : `a${r}_${t} += (${dot(t)}) * sc${r};`)).join('\n      ')}
    }`;
  }).join('\n    ');
  // pf: the loads of the next D steps are in flight (p{d}: step k + (d + 1)·WG); `preload` issues
  // the first D (before the tables are filled, where the row block is known up front)
  const preload = `${rr.map((r) => `let rc${r} = min(${rowAt(r)}, ${rowsOf(r)} - 1u);`).join(' ')}${pf ? `
  let last = units - 1u;
  ${range(D).map((d) => `let k${d}p = min(t + ${d * WG}u, last); ${rr.map((r) => loads(r, `k${d}p`).map(([n, e]) => `var p${d}${n} = ${e};`).join(' ')).join(' ')}`).join('\n  ')}` : ''}`;
  // px: the first step's x slice (after the fill: sx reads x from workgroup memory)
  const xpre = px ? tt.map((t) => range(nv).map((v) => `var nx${t}_${v} = ${xAt(t, v, 'k0p')};`).join(' ')).join('\n  ') : '';
  const step = (k: string) => rr.map((r) => loads(r, k).map(([n, e]) => (pf ? `let ${n} = p0${n}; ${range(D).map((d) => `p${d}${n} = ${d + 1 < D ? `p${d + 1}${n}` : e};`).join(' ')}` : `let ${n} = ${e};`)).join(' ')).join('\n    ');
  const loop = `for (var k = t; k < units; k += ${WG}u) {
    ${pf ? `let kn = min(k + ${D * WG}u, last);` : ''}
    ${step(pf ? 'kn' : 'k')}
    ${rr.map(scale).join('\n    ')}
    ${xs}
    ${dots}
  }`;
  // lowRank 'a': u[xr, j] = Σ_c x[xr, c] · A[j, c] into ul. Each pass gives subgroup sid the
  // LOW_RANK_SLOTS ranks j0 + sid·LOW_RANK_SLOTS + s; its lanes split the columns, and each column
  // step loads x once and the slots' A values together (independent loads in flight, rather than
  // one rank after another). The sums are read in the epilogue, after the reduction's barrier.
  const inlineMode = lowRank === 'a' || lowRank === 'ai';
  if (inlineMode && !(subgroups && !(i8 && !xf))) throw new Error('wordsSource: the inline low-rank term needs subgroups and x as f32');
  const iec = lowRank === 'ai';
  const slots = range(LOW_RANK_SLOTS);
  // weight set `set`'s (sets: each its own A, u and rank)
  const inlineU = (set: number) => {
    const sx = setSfx(set);
    const rank = lowRankOf(set)[0];
    return `for (var j0 = 0u; j0 < ${rank}; j0 += nsg * ${LOW_RANK_SLOTS}u) {
    let jb = j0 + sid * ${LOW_RANK_SLOTS}u;
    ${slots.flatMap((k) => tt.map((t) => `var lp${k}_${t} = 0.0;`)).join(' ')}
    if (jb < ${rank}) {
      ${slots.map((k) => `let js${k} = min(jb + ${k}u, ${rank} - 1u);`).join(' ')}${iec ? `
      ${slots.map((k) => `let h${k} = (js${k} / P[6]) * P[7];`).join(' ')}` : ''}
      for (var c = sgi; c < c4; c += sgs) {
        ${slots.map((k) => `let av${k} = la${sx}[js${k} * c4 + c];`).join(' ')}
        ${tt.map((t) => `{ let xv = x[${t}u * c4 + c]; ${slots.map((k) => `lp${k}_${t} = lp${k}_${t} + dot(xv, av${k});`).join(' ')} }`).join('\n        ')}
      }${iec ? `
      // βA · the mean of x over each slot's group of columns (P[7] vec4s from h)
      ${tt.map((t) => slots.map((k) => `{ var xg = 0.0; for (var c = h${k} + sgi; c < h${k} + P[7]; c += sgs) { xg = xg + dot(x[${t}u * c4 + c], vec4<f32>(1.0)); } lp${k}_${t} = lp${k}_${t} + iecA[0] * (xg / f32(4u * P[7])); }`).join('\n      ')).join('\n      ')}` : ''}
    }
    ${slots.flatMap((k) => tt.map((t) => `{ let ls = subgroupAdd(lp${k}_${t}); if (sgi == 0u && jb + ${k}u < ${rank}) { ul${sx}[${t * LOW_RANK_INLINE_MAX}u + jb + ${k}u] = ls; } }`)).join('\n    ')}
  }`;
  };
  const accs = rr.flatMap((r) => tt.map((t) => `a${r}_${t}`));
  const out = (e: string, val: string) => `{
    let r = row0 + ${e} / ${T}u;
    if (r < rows) {${lowRank ? `
      let lt = ${e} % ${T}u; let rank = P[4];
      var l = 0.0;
      for (var j = 0u; j < rank; j++) { l = fma(${lowRank !== 'u' ? `ul[lt * ${LOW_RANK_INLINE_MAX}u + j]` : 'u[lt * rank + j]'}, lb[r * rank + j], l); }${lowRank === 'ai' ? `
      let gb = (r / P[8]) * P[9];
      var um = 0.0;
      for (var j = gb; j < gb + P[9]; j++) { um = um + ul[lt * ${LOW_RANK_INLINE_MAX}u + j]; }
      l = l + iecB[0] * (um / f32(P[9]));` : ''}` : ''}
      y[(${e} % ${T}u) * rows + r] = ${lowRank ? `fma(bitcast<f32>(P[5]), l, ${val})` : val};
    }
  }`;
  // several weights: sum e (slot e / T, x row e % T) to its weight's y, or (glu) into gl for the
  // pairs' product after the reduction
  const setRange = (set: number) => {
    const lo = sets!.slots.findIndex((l) => l.set === set);
    return [lo, lo + sets!.slots[lo].m] as const;
  };
  // (with a low-rank term, its scale · u · bᵀ added to each sum: with glu, before silu·mul; a row
  // past the end reads B's last row, its sum not written)
  const lowRankAdd = (set: number, r: string, v: string) => {
    const sx2 = setSfx(set);
    const [rank, scale] = lowRankOf(set);
    return `var l = 0.0;
      for (var j = 0u; j < ${rank}; j++) { l = fma(ul${sx2}[lt * ${LOW_RANK_INLINE_MAX}u + j], lb${sx2}[${r} * ${rank} + j], l); }
      ${v} = fma(${scale}, l, ${v});`;
  };
  const outSets = (e: string, val: string) => `{
    let slot = ${e} / ${T}u; let lt = ${e} % ${T}u;
    var v = ${val};
    ${range(sets!.count).map((set) => {
      const [lo, hi] = setRange(set);
      const sx2 = setSfx(set);
      const row = `blk * ${hi - lo}u + slot - ${lo}u`;
      return sets!.glu
        ? (lowRank ? `if (slot >= ${lo}u && slot < ${hi}u) { let r = min(${row}, rows${sx2} - 1u); ${lowRankAdd(set, 'r', 'v')} }` : '')
        : `if (slot >= ${lo}u && slot < ${hi}u) { let r = ${row}; if (r < rows${sx2}) { ${lowRank ? lowRankAdd(set, 'r', 'v') : ''} y${sx2}[lt * rows${sx2} + r] = v; } }`;
    }).join('\n    ')}${sets!.glu ? `
    gl[${e}] = v;` : ''}
  }`;
  const H = R / 2;
  const glu = sets?.glu
    ? `workgroupBarrier();
  for (var e = t; e < ${H * T}u; e += ${WG}u) {
    let r = blk * ${H}u + e / ${T}u;
    if (r < rows) { let g = gl[e]; y[(e % ${T}u) * rows + r] = (${UNARY_EXPR.silu.replace(/\bx\b/g, 'g')}) * gl[e + ${H * T}u]; }
  }`
    : '';
  const reduce = sumAcross(accs, WG, subgroups, sets ? outSets : out);
  // weights 1.. (sets): their parts, y (not with glu) and low-rank A, B after weight 0's bindings
  let free = next + (i8 && !xf ? 3 : 2) + (lowRank ? 2 : 0) + (lowRank === 'ai' ? 2 : 0);
  const setDecl = range(sets?.count ?? 1).slice(1).map((set) => {
    const b = partBindings(f, vecT, String(set), free);
    free = b.next;
    const y = sets!.glu ? '' : `\n@group(0) @binding(${free++}) var<storage, read_write> y${set}: array<f32>;`;
    const low = lowRank ? `\n@group(0) @binding(${free++}) var<storage, read> la${set}: array<vec4<f32>>;\n@group(0) @binding(${free++}) var<storage, read> lb${set}: array<f32>;\nvar<workgroup> ul${set}: array<f32, ${LOW_RANK_INLINE_MAX * T}>;` : '';
    return b.decl + y + low;
  }).join('\n');
  return /* wgsl */ `${h ? 'enable f16;' : ''}
@group(0) @binding(0) var<storage, read> P: array<u32>;
${decl}
${i8 && !xf ? `@group(0) @binding(${next}) var<storage, read> xq: array<vec4<u32>>;
@group(0) @binding(${next + 1}) var<storage, read> xsc: array<vec2<f32>>;` : `@group(0) @binding(${next}) var<storage, read> x: array<vec4<f32>>;`}
@group(0) @binding(${next + (i8 && !xf ? 2 : 1)}) var<storage, read_write> y: array<f32>;
${lowRank ? `@group(0) @binding(${next + (i8 && !xf ? 3 : 2)}) var<storage, read> ${lowRank !== 'u' ? 'la: array<vec4<f32>>' : 'u: array<f32>'};
@group(0) @binding(${next + (i8 && !xf ? 4 : 3)}) var<storage, read> lb: array<f32>;` : ''}
${lowRank === 'ai' ? `@group(0) @binding(${next + 4}) var<storage, read> iecA: array<f32>;
@group(0) @binding(${next + 5}) var<storage, read> iecB: array<f32>;` : ''}
${setDecl}${sets?.glu ? `
var<workgroup> gl: array<f32, ${R * T}>;
${SIGMOID}` : ''}
${pt && i8 ? `var<workgroup> lut8: array<u32, ${256 * pt}>;` : pt ? `var<workgroup> lutp: array<vec2<${h ? 'f16' : 'f32'}>, ${256 * pt}>;` : ''}
${f.kind === 'nf' ? `var<workgroup> lut: array<f32, ${1 << bits}>;` : ''}
${f.doubleQuant && !ss ? DQ_DECL : ''}
${sx ? `var<workgroup> xl: array<vec4<f32>, ${(T * cols) / 4}>;
` : ''}${ss ? `var<workgroup> ${asym ? `szl: array<vec2<f32>, ${R * gpr}>` : `scl: array<f32, ${R * gpr}>`};` : ''}
var<workgroup> red: array<f32, ${redBytes({ ...s, R }, T, subgroups) / 4}>;
${lowRank === 'a' || lowRank === 'ai' ? `var<workgroup> ul: array<f32, ${LOW_RANK_INLINE_MAX * T}>;` : ''}
${decodeLib(f, false)}
@compute @workgroup_size(${WG}) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32${sgArgs(subgroups)}${lowRank === 'a' || lowRank === 'ai' ? ', @builtin(subgroup_size) sgs: u32' : ''}) {
  let rows = P[0]; let cols = P[1]; let gpr = P[3];${range(sets?.count ?? 1).slice(1).map((set) => ` let rows${set} = P[${setWord(set, 0)}u];`).join('')}
  let units = cols / ${cpl}u;
  ${i8 && !xf ? 'let c16 = cols / 16u;' : 'let c4 = cols / 4u;'}
  ${persistent ? '' : `let blk = wid.x + wid.y * nwg.x; let row0 = blk * ${R}u;
  // rows past the end decode the last row (their sums are not written)
  ${preload}`}
  ${f.kind === 'nf' ? `if (t < ${1 << bits}u) { lut[t] = value(t); }` : ''}
  ${pt && f.kind === 'nf' ? 'workgroupBarrier(); // the pair tables read the codebook' : ''}
  ${pt ? pairFill : ''}
  ${f.doubleQuant && !ss ? dqFill(WG) : ''}
  ${ss ? `for (var e = t; e < ${R * gpr}u; e += ${WG}u) {
    let g = min(row0 + e / ${gpr}u, rows - 1u) * ${gpr}u + e % ${gpr}u;
    ${asym ? 'szl[e] = vec2<f32>(groupScale(g), bitcast<f32>(((zeros[g >> 2u] >> ((g & 3u) * 8u)) & 0xffu) | 0x4b000000u));' : 'scl[e] = groupScale(g);'}
  }` : ''}
  ${sx ? `for (var e = t; e < ${(T * cols) / 4}u; e += ${WG}u) { xl[e] = x[e]; }` : ''}
  ${f.kind === 'nf' || pt || f.doubleQuant || ss || sx ? 'workgroupBarrier();' : ''}
  ${f.doubleQuant && !ss ? [DQ_CONSTS, ...range(sets?.count ?? 1).slice(1).map((set) => dqOff(String(set)))].join(' ') : ''}
  ${persistent ? `for (var blk = wid.x + wid.y * nwg.x; blk < (rows + ${R - 1}u) / ${R}u; blk += nwg.x * nwg.y) {
  let row0 = blk * ${R}u;
  ${preload}` : ''}
  ${accs.map((a) => `var ${a} = 0.0;`).join(' ')}
  ${xpre}
  ${inlineMode ? range(sets?.count ?? 1).map(inlineU).join('\n  ') : ''}
  ${loop}
  ${reduce}
  ${glu}
  ${persistent ? `workgroupBarrier(); // red is written again by the next block
  }` : ''}
}`;
}

/** WGSL quantizing x [T, cols] to int8 for the words GEMV's i8 decoder, one thread per slice of
 *  `cpl` columns (P: [slices]): the slice's values q = round(x · 127 / m), m = max |x| (0 for an
 *  all-zero slice), packed 4 per u32; in each chunk of 4·per columns, u32 j (j < per) holds columns
 *  per·k + j (k = 0..3): per 1 is plain order (NF, whose pair table yields weights in order), per
 *  2 and 4 the order of a 4- and 2-bit INT code word's fields (x0 x2 x4 x6 | x1 x3 x5 x7: the
 *  high nibbles, then the low ones). xsc[slice] = (m / 127, Σ q). A NaN in the slice makes its
 *  scale NaN (so the sums come out NaN, as f32 would). */
export function x8Source(cpl: number, per: number): string {
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> xq: array<u32>;
@group(0) @binding(3) var<storage, read_write> xsc: array<vec2<f32>>;
override WG: u32 = 64u;
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let b = ${GRID_INDEX};
  if (b >= P[0]) { return; }
  let base = b * ${cpl}u;
  var m = 0.0;
  var nan = false;
  for (var i = 0u; i < ${cpl}u; i++) { let v = x[base + i]; m = max(m, abs(v)); nan = nan || (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
  let inv = select(0.0, 127.0 / m, m > 0.0);
  var sum = 0i;
  for (var u = 0u; u < ${cpl / 4}u; u++) {
    let c0 = base + (u / ${per}u) * ${4 * per}u + u % ${per}u; // column of byte 0
    var packed = 0u;
    for (var k = 0u; k < 4u; k++) {
      // round half to even of x·inv (|x·inv| <= 127) by adding 1.5·2^23 in one fma: as xf does
      let q = bitcast<i32>(fma(x[c0 + ${per}u * k], inv, 12582912.0)) - 0x4b400000i;
      sum += q;
      packed |= (bitcast<u32>(q) & 0xffu) << (8u * k);
    }
    xq[b * ${cpl / 4}u + u] = packed;
  }
  xsc[b] = vec2<f32>(select(m / 127.0, bitcast<f32>(0x7fc00000u), nan), f32(sum));
}`;
}

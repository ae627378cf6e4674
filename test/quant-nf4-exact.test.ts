// NF4 + double quantization, code for code, on fixed vectors. Expected values come from a small
// independent re-derivation below (brute-force nearest values with an explicit tie rule, float32
// steps spelled out), from hand-worked vectors, and from a fixture computed by real torch.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { codebook, NF2, NF3, NF4, nfTable } from '../ts/quant/codebooks.js';
import { dequantizeBlockwise8, dynamicCode, dynamicMap, quantizeBlockwise8 } from '../ts/quant/doublequant.js';
import { formats } from '../ts/quant/formats.js';
import { packCodes } from '../ts/quant/packing.js';
import { dequantizeRows, groupScales, quantizeRows } from '../ts/quant/reference.js';

const f32 = Math.fround;

// bitsandbytes' NF4 table and the 15 constants of its dQuantizeNF4 decision tree (csrc/kernels.cu),
// as written there (float literals: nvcc rounds each correctly to float32).
const BNB_NF4 = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
  -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
  0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
  0.7229568362236023, 1.0,
];
const BNB_TREE = [
  '-0.8480964004993439', '-0.6106329262256622', '-0.4599952697753906', '-0.33967943489551544',
  '-0.23460740596055984', '-0.13791173323988914', '-0.045525018125772476', '0.03979014977812767',
  '0.1202552504837513', '0.2035212516784668', '0.2920137718319893', '0.3893125355243683',
  '0.5016634166240692', '0.6427869200706482', '0.8614784181118011',
];

// A decimal literal correctly rounded to float32, as a C compiler reads `0.123f` (Math.fround of
// the double rounds twice, which differs when the double lands exactly between two floats).
type Rational = [bigint, bigint];
function exactDouble(d: number): Rational {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, d);
  const bits = view.getBigUint64(0);
  const sign = bits >> 63n ? -1n : 1n;
  const e = Number((bits >> 52n) & 0x7ffn);
  const m = (bits & ((1n << 52n) - 1n)) | (e ? 1n << 52n : 0n);
  const exp = (e || 1) - 1075;
  return exp >= 0 ? [sign * m << BigInt(exp), 1n] : [sign * m, 1n << BigInt(-exp)];
}
function exactDecimal(s: string): Rational {
  const [, sign, int, frac] = /^(-?)(\d+)\.(\d+)$/.exec(s)!;
  return [(sign ? -1n : 1n) * BigInt(int + frac), 10n ** BigInt(frac.length)];
}
function literalToF32(s: string): number {
  const x = Number(s);
  const y = f32(x);
  if (y === x) return y;
  const box = new Float32Array([y]);
  new Int32Array(box.buffer)[0] += (y < x) === (y > 0) ? 1 : -1; // the float on x's other side
  const [lo, hi] = y < x ? [y, box[0]] : [box[0], y];
  if (x !== (lo + hi) / 2) return y; // not a tie: one rounding is enough
  const [a, b] = exactDecimal(s);
  const [c, d] = exactDouble(x);
  return a * d < c * b ? lo : a * d > c * b ? hi : y;
}
const BNB_THRESHOLDS = BNB_TREE.map(literalToF32);

const TORCH_MAP: number[] = JSON.parse(readFileSync(new URL('./fixtures/dynamic-map-torch.json', import.meta.url), 'utf8')).values;

/** Nearest NF4 code by brute force: smallest exact distance; n exactly on bnb's threshold -> lower. */
function bruteNf4(n: number): number {
  let best = 0;
  for (let i = 1; i < BNB_NF4.length; i++) {
    if (n === BNB_THRESHOLDS[i - 1]) return i - 1;
    if (Math.abs(n - BNB_NF4[i]) < Math.abs(n - BNB_NF4[best])) best = i;
  }
  return best;
}

/** Acceptable 8-bit codes for x: the nearest map entries; both neighbours within 2 ulps of a midpoint. */
function bruteDynamic(x: number): number[] {
  let best = 0;
  for (let i = 1; i < TORCH_MAP.length; i++) if (Math.abs(x - TORCH_MAP[i]) < Math.abs(x - TORCH_MAP[best])) best = i;
  const ok = [best];
  for (const j of [best - 1, best + 1]) {
    if (j < 0 || j > 255) continue;
    const mid = (TORCH_MAP[best] + TORCH_MAP[j]) / 2;
    if (Math.abs(x - mid) <= 2 * 2 ** -23 * Math.max(Math.abs(mid), 2 ** -126)) ok.push(j);
  }
  return ok;
}

/** The 4-bit code of element i from packed bytes, high nibble first (independent of unpackCodes). */
function nibble(bytes: Uint8Array, i: number): number {
  return (bytes[i >> 1] >> (i % 2 === 0 ? 4 : 0)) & 15;
}

/** Independent NF4 quantization of one row in groups of `group`: codes and absmax per group. */
function expectNf4(w: number[], group: number): { codes: number[]; absmax: number[] } {
  const codes: number[] = [];
  const absmax: number[] = [];
  for (let begin = 0; begin < w.length; begin += group) {
    const block = w.slice(begin, begin + group).map(f32);
    const a = Math.max(...block.map(Math.abs));
    absmax.push(a);
    const inv = f32(1 / a);
    for (const x of block) codes.push(a === 0 ? 7 : bruteNf4(f32(x * inv)));
  }
  return { codes, absmax };
}

function quantizeNf4(w: number[], rows: number, cols: number, opts: { group?: number; doubleQuant?: boolean } = {}) {
  const f = formats.nf(4, opts);
  const parts = quantizeRows(Float32Array.from(w), rows, cols, f);
  const codes = Array.from({ length: rows * cols }, (_, i) => nibble(parts.codes.subarray(Math.floor(i / cols) * Math.ceil(cols / 2)), i % cols));
  return { f, parts, codes, deq: dequantizeRows(parts, rows, cols, f) };
}

/** A reproducible pseudo-random vector (a fixed LCG, so expected values never drift). */
function fixedVector(n: number, seed: number, scale = 1): number[] {
  let s = seed >>> 0;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(f32(((s / 2 ** 32) * 2 - 1) * scale));
  }
  return out;
}

test('NF4 is bitsandbytes\' table; its thresholds are bnb\'s decision-tree constants read as float32', () => {
  assert.deepEqual(Array.from(NF4), BNB_NF4.map(f32));
  assert.deepEqual(Array.from(codebook(4)), BNB_NF4.map(f32));
  assert.deepEqual(Array.from(nfTable(4).thresholds), BNB_THRESHOLDS);
  // The literals are the printed double midpoints; 4 of them sit on a float32 tie.
  const ties: number[] = [];
  BNB_TREE.forEach((literal, i) => {
    const mid = (BNB_NF4[i] + BNB_NF4[i + 1]) / 2;
    assert.equal(String(mid), literal);
    if (BNB_THRESHOLDS[i] !== f32(mid)) ties.push(i);
  });
  assert.deepEqual(ties, [0, 8, 12, 14]);
  for (const [cb, zero] of [[NF4, 7], [NF3, 3], [NF2, 1]] as const) {
    for (let i = 1; i < cb.length; i++) assert.ok(cb[i] > cb[i - 1], 'sorted ascending');
    assert.equal(cb[0], -1);
    assert.equal(cb[cb.length - 1], 1);
    assert.equal(nfTable(Math.log2(cb.length)).zeroCode, zero);
  }
  for (const bits of [2, 3]) {
    const { values, thresholds } = nfTable(bits);
    thresholds.forEach((t, i) => assert.equal(t, f32((values[i] + values[i + 1]) / 2)));
  }
});

// Standard normal quantile: Simpson integration of the density, inverted by bisection.
function normalCdf(x: number): number {
  const n = 2000;
  const h = x / n;
  let s = 0;
  for (let i = 0; i <= n; i++) s += (i === 0 || i === n ? 1 : i % 2 ? 4 : 2) * Math.exp(-((i * h) ** 2) / 2);
  return 0.5 + (s * h) / 3 / Math.sqrt(2 * Math.PI);
}
function normalQuantile(p: number): number {
  let lo = -6;
  let hi = 6;
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2;
    if (normalCdf(mid) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}
const linspace = (a: number, b: number, n: number) => Array.from({ length: n }, (_, i) => a + ((b - a) * i) / (n - 1));

test('NF4, NF3 and NF2 follow from the normal-quantile construction (offset 0.9677083)', () => {
  const offset = 0.9677083;
  const build = (pos: number, neg: number, zero: boolean) => {
    const v = [
      ...linspace(offset, 0.5, pos + 1).slice(0, -1).map(normalQuantile),
      ...(zero ? [0] : []),
      ...linspace(offset, 0.5, neg + 1).slice(0, -1).map((p) => -normalQuantile(p)),
    ].sort((a, b) => a - b);
    const max = v[v.length - 1];
    return v.map((x) => x / max);
  };
  const close = (got: Float32Array, want: number[]) => want.forEach((w, i) => assert.ok(Math.abs(got[i] - w) < 1e-6, `${got[i]} vs ${w}`));
  close(NF4, build(8, 7, true));
  close(NF3, build(4, 3, true));
  close(NF2, build(2, 2, false));
});

test('values exactly on an NF4 threshold take the lower code; one ulp above, the upper', () => {
  const up = (x: number) => {
    const b = new Float32Array([x]);
    new Uint32Array(b.buffer)[0] += x > 0 ? 1 : -1; // one ulp toward +inf for x != 0
    return b[0];
  };
  // absmax 1 (the last element), so inv = 1 and n = w exactly.
  const mids = BNB_NF4.slice(1).map((c, i) => f32((BNB_NF4[i] + c) / 2)); // Math.fround of the midpoints
  const w = [...BNB_THRESHOLDS, ...BNB_THRESHOLDS.map(up), ...mids, 1];
  const { codes } = quantizeNf4(w, 1, w.length, { group: w.length, doubleQuant: false });
  const ties = new Set([0, 8, 12, 14]); // there f32(midpoint) is one ulp beside bnb's threshold
  const expected = [
    ...BNB_THRESHOLDS.map((_, i) => i),
    ...BNB_THRESHOLDS.map((_, i) => i + 1),
    ...mids.map((m, i) => (ties.has(i) && m > BNB_THRESHOLDS[i] ? i + 1 : i)),
    15,
  ];
  assert.deepEqual(codes, expected);
  assert.deepEqual(codes, w.map((x) => bruteNf4(f32(x))));
  assert.deepEqual([0, 8, 12, 14].map((i) => codes[30 + i]), [1, 8, 13, 15], 'as real bitsandbytes codes them');
});

test('codes follow bnb\'s float32 arithmetic: n = f32(w * f32(1/absmax)), not w / absmax', () => {
  // Found by search: with absmax 3, these n land exactly on (or just past) an f32 midpoint, so the
  // multiply-by-inverse code differs from the one exact or f32 division gives.
  const w = [3, -1.83189857006073, 0.11937045305967331, 1.1679376363754272, -1.019038200378418];
  const { codes, parts } = quantizeNf4(w, 1, 5, { group: 8, doubleQuant: false });
  assert.equal(f32(w[1] * f32(1 / 3)), nfTable(4).thresholds[1]); // a tie: lower code
  assert.deepEqual(codes, [15, 1, 8, 12, 3]);
  assert.notEqual(bruteNf4(f32(w[2] / 3)), 8, 'division would give another code');
  assert.deepEqual(codes, expectNf4(w, 8).codes);
  assert.deepEqual(Array.from(parts.scales!), [3]);
});

test('±absmax, zeros, and an all-zero group (scale 0, code of 0.0: our documented deviation)', () => {
  const w = [-2.5, 2.5, 0, -0, 1.25, 0, 0, 0, 0];
  const { codes, parts, deq } = quantizeNf4(w, 1, 9, { group: 5, doubleQuant: false });
  assert.deepEqual(codes, [0, 15, 7, 7, bruteNf4(0.5), 7, 7, 7, 7]);
  assert.deepEqual(Array.from(parts.scales!), [2.5, 0]);
  assert.deepEqual(Array.from(deq), [-2.5, 2.5, 0, 0, f32(BNB_NF4[bruteNf4(0.5)] * 2.5), 0, 0, 0, 0]);
});

test('a block of 64 with a known absmax, and a partial last group', () => {
  const w = fixedVector(100, 7, 0.8);
  w[17] = -1.5; // absmax of group 0
  w[90] = 0.9; // absmax of the partial group [64, 100)
  const { codes, parts, deq } = quantizeNf4(w, 1, 100, { doubleQuant: false });
  const want = expectNf4(w, 64);
  assert.deepEqual(Array.from(parts.scales!), [1.5, f32(0.9)]);
  assert.deepEqual(want.absmax, [1.5, f32(0.9)]);
  assert.deepEqual(codes, want.codes);
  assert.equal(codes[17], 0);
  assert.equal(codes[90], 15);
  assert.deepEqual(Array.from(deq), want.codes.map((c, i) => f32(BNB_NF4[c] * want.absmax[Math.floor(i / 64)])));
  assert.equal(parts.codes.length, 50);
  assert.equal(parts.codes[49] & 0x0f, codes[99]); // 100 codes fill 50 bytes exactly
});

/** Independent double quantization of absmax values (blocks of 256, fixture map, brute-force codes). */
function expectDoubleQuant(absmax: number[]) {
  const offset = f32(absmax.reduce((a, b) => a + b, 0) / absmax.length);
  const a = absmax.map((x) => f32(x - offset));
  const codes: number[][] = [];
  const scale2: number[] = [];
  for (let begin = 0; begin < a.length; begin += 256) {
    const block = a.slice(begin, begin + 256);
    const m = Math.max(...block.map(Math.abs));
    scale2.push(m);
    for (const x of block) codes.push(m === 0 ? [127] : bruteDynamic(f32(x * f32(1 / m))));
  }
  return { offset, codes, scale2 };
}

test('double quantization over 300 groups: two blocks of 256, code for code', () => {
  const rows = 3;
  const cols = 64 * 100;
  const w = fixedVector(rows * cols, 11);
  for (let g = 0; g < 300; g++) w[g * 64 + (g % 64)] = f32(1 + (g % 17) * 0.37 + (g % 5) * 0.011); // absmax ~1..7
  const { parts, codes, deq } = quantizeNf4(w, rows, cols);
  const plain = expectNf4(w, 64);
  assert.deepEqual(codes, plain.codes, '4-bit codes come from the original absmax');
  assert.equal(parts.scales, undefined);
  const want = expectDoubleQuant(plain.absmax);
  assert.deepEqual(Array.from(parts.scaleOffset!), [want.offset]);
  assert.deepEqual(Array.from(parts.scale2!), want.scale2);
  assert.equal(parts.scale2!.length, 2);
  let ambiguous = 0;
  parts.scaleCodes!.forEach((c, g) => {
    assert.ok(want.codes[g].includes(c), `group ${g}: code ${c}, expected one of ${want.codes[g]}`);
    if (want.codes[g].length > 1) ambiguous++;
  });
  assert.ok(ambiguous < 3, 'the fixed vector exercises the search, not the midpoint rule');
  const decoded = Array.from(parts.scaleCodes!, (c, g) => f32(f32(TORCH_MAP[c] * want.scale2[g >> 8]) + want.offset));
  assert.deepEqual(Array.from(groupScales(parts, rows, cols, formats.nf(4))), decoded);
  assert.deepEqual(Array.from(deq), plain.codes.map((c, i) => f32(BNB_NF4[c] * decoded[Math.floor(i / 64)])));
});

test('double quantization keeps the codes of the original absmax even where the decoded one differs', () => {
  const w = fixedVector(64 * 40, 5, 3);
  const dq = quantizeNf4(w, 40, 64);
  const plain = quantizeNf4(w, 40, 64, { doubleQuant: false });
  assert.deepEqual(dq.codes, plain.codes);
  const decoded = groupScales(dq.parts, 40, 64, dq.f);
  assert.ok(decoded.some((a, g) => a !== plain.parts.scales![g]), 'some decoded absmax differs');
});

test('one group: its centered absmax is 0, so absmax2 = 0, scale code = index of 0.0, decoded exactly', () => {
  const w = fixedVector(20, 3, 2);
  const { parts, codes } = quantizeNf4(w, 1, 20);
  const { absmax } = expectNf4(w, 64);
  assert.deepEqual(Array.from(parts.scaleCodes!), [127]);
  assert.deepEqual(Array.from(parts.scale2!), [0]);
  assert.deepEqual(Array.from(parts.scaleOffset!), absmax);
  assert.deepEqual(Array.from(groupScales(parts, 1, 20, formats.nf(4))), absmax);
  assert.deepEqual(codes, expectNf4(w, 64).codes);
});

test('the dynamic map equals what torch computes, value for value, and hand-derived spot values', () => {
  const map = dynamicMap();
  assert.equal(map.length, 256);
  assert.deepEqual(Array.from(map), TORCH_MAP);
  for (let i = 1; i < 256; i++) assert.ok(map[i] > map[i - 1]);
  for (let i = 0; i < 127; i++) assert.equal(map[i], -map[254 - i], 'negatives mirror the positives below 1.0');
  assert.equal(map[127], 0);
  assert.equal(map[255], 1);
  // Smallest positive: 1e-6 * mean of linspace(0.1, 1, 2) = f32(1e-6) * f32((f32(0.1) + 1) / 2).
  assert.equal(map[128], f32(f32(1e-6) * f32((f32(0.1) + 1) / 2)));
  // Most negative: -(mean of the last two points of linspace(0.1, 1, 65)) = -(1 - step / 2).
  const step = f32((1 - f32(0.1)) / 64);
  assert.equal(map[0], -f32(f32(f32(1 - step) + 1) / 2));
  // An entry where rounding linspace's product step*j separately (not fused) would be one ulp off.
  assert.equal(map[20], -0.7117187976837158);
});

test('dynamicCode (bnb dQuantize binary search) picks a nearest map value for any x in [-1, 1]', () => {
  const xs: number[] = [-1, 1, 0, ...TORCH_MAP, ...fixedVector(20000, 99)];
  for (let i = 0; i + 1 < 256; i++) xs.push(f32((TORCH_MAP[i] + TORCH_MAP[i + 1]) / 2));
  for (const x of fixedVector(2000, 5)) xs.push(f32(x * 1e-4), f32(x * 1e-2)); // the dense region near 0
  for (const x of xs) {
    const code = dynamicCode(x);
    assert.ok(bruteDynamic(x).includes(code), `x=${x}: code ${code} (${TORCH_MAP[code]}), nearest ${bruteDynamic(x)}`);
  }
  TORCH_MAP.forEach((v, i) => assert.equal(dynamicCode(v), i));
});

test('8-bit blockwise round trip: each value within half a map gap of its block absmax', () => {
  const x = Float32Array.from(fixedVector(600, 21, 4));
  const { codes, absmax } = quantizeBlockwise8(x, 256);
  assert.equal(absmax.length, 3);
  const y = dequantizeBlockwise8(codes, absmax, 256);
  x.forEach((v, i) => assert.ok(Math.abs(v - y[i]) <= 0.0071 * absmax[Math.floor(i / 256)], `${v} vs ${y[i]}`));
});

test('packed bytes: 4-bit high nibble first, 2-bit from bit 7, 3-bit big-endian, zero padding', () => {
  const bytes = (codes: number[], rows: number, cols: number, bits: number) => Array.from(packCodes(Uint8Array.from(codes), rows, cols, bits));
  assert.deepEqual(bytes([15, 0, 7, 8], 1, 4, 4), [0xf0, 0x78]);
  assert.deepEqual(bytes([1, 2, 3], 1, 3, 4), [0x12, 0x30]);
  assert.deepEqual(bytes([1, 2, 3, 4, 5, 6], 2, 3, 4), [0x12, 0x30, 0x45, 0x60]); // rows start on a byte
  assert.deepEqual(bytes([3, 0, 1, 2, 1], 1, 5, 2), [0xc6, 0x40]);
  assert.deepEqual(bytes([7, 0, 5, 2, 1, 3, 4, 6], 1, 8, 3), [0xe2, 0xa2, 0xe6]);
  assert.deepEqual(bytes([5], 1, 1, 3), [0xa0]);
  assert.deepEqual(bytes([5, 5, 5], 1, 3, 3), [0xb6, 0x80]); // 101 101 101 + 7 zero bits
  const { parts } = quantizeNf4([2, -2, 0, 1], 1, 4, { doubleQuant: false });
  assert.deepEqual(Array.from(parts.codes), [(15 << 4) | 0, (7 << 4) | bruteNf4(0.5)]);
});

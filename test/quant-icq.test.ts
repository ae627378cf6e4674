// ICQ: the reference search against an oracle written from the spec, entropy and error on
// Gaussian weights, τ in dequantize / dequantizeMatmul (and its gradient), the INT definition,
// typed errors. Cross-backend bit-exactness is in test/parity.test.ts.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as q from '../ts/index.js';
import { gaussianArray } from '../ts/tensor.js';
import { codeEntropy, DEFAULT_ICQ, icqParams, icqSearchRows, quantizeIcq, quantizeIntIcqRows, type IcqParams } from '../ts/quant/icq.js';
import { dynamicMap } from '../ts/quant/doublequant.js';
import { dequantizeRows, quantizeRows, storageBytes } from '../ts/quant/reference.js';
import { unpackCodes } from '../ts/quant/packing.js';
import { gradCheck } from './gradcheck.js';

const f32 = Math.fround;
const js = q.backendByName('js');

/** Entropy in nats of a histogram of codes. */
function entropy(codes: ArrayLike<number>): number {
  const counts = new Map<number, number>();
  for (let i = 0; i < codes.length; i++) counts.set(codes[i], (counts.get(codes[i]) ?? 0) + 1);
  let h = 0;
  for (const c of counts.values()) h -= (c / codes.length) * Math.log(c / codes.length);
  return h;
}

/** The spec, line by line, on one group: every candidate quantized by the production quantizer. */
function oracleGroup(block: Float32Array, f: q.QuantFormat, p: IcqParams): number {
  const n = block.length;
  const one = { ...f, group: n } as q.QuantFormat; // the whole block as one group of one row
  let best = NaN;
  let bestH = -Infinity;
  const consider = (value: number, codes: ArrayLike<number>) => {
    const h = entropy(codes);
    if (h > bestH + 1e-9) { bestH = h; best = value; }
  };
  if (f.kind === 'nf') {
    const sorted = Array.from(block).sort((a, b) => a - b);
    const tau0 = sorted[Math.floor((n - 1) / 2)]; // the lower middle for an even count
    let a0 = 0;
    for (const x of block) a0 = Math.max(a0, Math.abs(x - tau0));
    for (let j = 0; j <= 2 * p.n; j++) {
      const fr = p.n === 0 ? 0 : p.lambda * p.sigma * ((j - p.n) / p.n); // increasing in j
      const tau = f32(tau0 + fr * a0);
      const shifted = block.map((x) => x - tau); // Float32Array: f32(w - τ)
      const parts = quantizeRows(shifted, 1, n, { ...one, doubleQuant: false });
      consider(tau, unpackCodes(parts.codes, 1, n, f.bits));
    }
  } else {
    const plain = quantizeRows(block, 1, n, one);
    const s = plain.scales![0];
    const z = f.symmetric ? (1 << (f.bits - 1)) - 1 : plain.zeros![0];
    const top = f.symmetric ? 2 * z : (1 << f.bits) - 1; // a symmetric grid ends at 2·zero
    const ratios = [1];
    for (let k = 0; k < p.clipPoints; k++) ratios.push(p.clipPoints === 1 ? f32(p.clipLow) : f32(p.clipLow + ((p.clipHigh - p.clipLow) * k) / (p.clipPoints - 1)));
    for (const r of ratios) {
      const codes = Array.from(block, (x) => {
        const v = f32(x / r);
        const a = Math.abs(v / s);
        const rounded = Math.sign(v) * (a - Math.floor(a) >= 0.5 ? Math.floor(a) + 1 : Math.floor(a));
        return Math.min(Math.max(rounded + z, 0), top);
      });
      consider(r, codes);
    }
  }
  return best;
}

function oracle(w: Float32Array, rows: number, cols: number, f: q.QuantFormat, p: IcqParams): Float32Array {
  const gpr = Math.ceil(cols / f.group);
  const out = new Float32Array(rows * gpr);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < gpr; g++) out[r * gpr + g] = oracleGroup(w.slice(r * cols + g * f.group, r * cols + Math.min((g + 1) * f.group, cols)), f, p);
  }
  return out;
}

/** Awkward weights: Gaussian rows, an all-equal row, a row with many zeros, duplicates. */
function awkward(rows: number, cols: number, seed: number): Float32Array {
  const w = gaussianArray(rows * cols, seed, 0.05);
  for (let c = 0; c < cols; c++) {
    if (rows > 1) w[cols + c] = 0.125;
    if (rows > 2 && c % 3 !== 1) w[2 * cols + c] = 0;
    if (rows > 3) w[3 * cols + c] = [-0.5, 0, 0.25][c % 3];
  }
  return w;
}

const allFormats = (group: number): q.QuantFormat[] => [2, 3, 4].flatMap((bits) => [
  q.formats.nf(bits as 2 | 3 | 4, { group }),
  q.formats.int(bits as 2 | 3 | 4, { group, symmetric: false }),
  q.formats.int(bits as 2 | 3 | 4, { group, symmetric: true }),
]);

test('the reference search equals the spec oracle, τ and p bit for bit', () => {
  const p = icqParams({ n: 15, clipPoints: 17 });
  let seed = 1;
  for (const group of [1, 2, 3, 8, 64]) {
    for (const f of allFormats(group)) {
      for (const [rows, cols] of [[1, 1], [5, 7], [4, 70], [2, 129]]) {
        const w = awkward(rows, cols, seed++);
        assert.deepEqual(icqSearchRows(w, rows, cols, f, p), oracle(w, rows, cols, f, p), `${f.name} [${rows}, ${cols}]`);
      }
    }
  }
  // the default grid on real-sized groups
  const w = gaussianArray(8 * 64, 5, 0.02);
  for (const f of [q.formats.nf(4), q.formats.int(4)]) assert.deepEqual(icqSearchRows(w, 8, 64, f, DEFAULT_ICQ), oracle(w, 8, 64, f, DEFAULT_ICQ), f.name);
});

test('an all-equal group keeps its value as τ and reconstructs exactly', () => {
  const w = q.tensor(new Float32Array(64).fill(0.3), [1, 64], 'f32', js);
  const qt = quantizeIcq(w, q.formats.nf(4, { doubleQuant: false }));
  assert.deepEqual(icqSearchRows(w.dataSync() as Float32Array, 1, 64, qt.format, DEFAULT_ICQ), Float32Array.of(f32(0.3)));
  // τ itself goes through the 8-bit map: 0.3 is exact up to its code's rounding
  const d = q.dequantize(qt).dataSync();
  for (const v of d) assert.ok(Math.abs(v - 0.3) < 0.3 * 0.01, `${v}`);
});

test('on Gaussian weights ICQ raises the code entropy; the error stays within 15% of plain', () => {
  const rows = 128;
  const cols = 256;
  const w = q.tensor(gaussianArray(rows * cols, 11, 0.02), [rows, cols], 'f32', js);
  const wv = w.dataSync();
  const mse = (t: q.QuantizedTensor) => { const d = q.dequantize(t).dataSync(); let s = 0; for (let i = 0; i < d.length; i++) s += (d[i] - wv[i]) ** 2; return s / d.length; };
  for (const f of [q.formats.nf(4), q.formats.nf(3), q.formats.nf(2), q.formats.int(4), q.formats.int(3), q.formats.int(2, { symmetric: true })]) {
    const plain = q.quantize(w, f);
    const icq = quantizeIcq(w, f);
    const [h0, h1] = [codeEntropy(plain), codeEntropy(icq)];
    assert.ok(h1.mean > h0.mean, `${f.name}: entropy ${h1.mean} <= plain ${h0.mean}`);
    if (f.kind === 'int') {
      // p = 1 is tried first and gives the plain codes, so no group can lose entropy
      h1.perGroup.forEach((h, g) => assert.ok(h >= h0.perGroup[g] - 1e-12, `${f.name} group ${g}: ${h} < ${h0.perGroup[g]}`));
    }
    const [e0, e1] = [mse(plain), mse(icq)];
    assert.ok(e1 <= 1.15 * e0, `${f.name}: mse ${e1} vs plain ${e0}`);
  }
});

test('NF-ICQ parts, bytes, dequantize and dequantizeMatmul against a dense reference', () => {
  for (const name of q.backends().filter((s) => s.available).map((s) => s.name)) {
    const b = q.backendByName(name);
    for (const [rows, cols, group] of [[3, 70, 16], [300, 33, 7], [5, 64, 64], [2, 10, 64]]) {
      for (const dq of [true, false]) {
        q.tidy(() => {
          const f = q.formats.nf(4, { group, doubleQuant: dq });
          const w = q.tensor(gaussianArray(rows * cols, rows + cols, 0.03), [rows, cols], 'f32', b);
          const qt = quantizeIcq(w, f);
          const groups = rows * Math.ceil(cols / group);
          assert.deepEqual(qt.parts.offsetCodes!.shape, [groups]);
          assert.deepEqual(qt.parts.offset2!.shape, [Math.ceil(groups / 256)]);
          const bytes = qt.tensors().reduce((s, t) => s + t.size * (t.dtype === 'u8' ? 1 : 4), 0);
          assert.equal(qt.bytes, bytes);
          assert.equal(qt.bytes, storageBytes(rows, cols, f, true));
          // dense: codes · absmax (the plain decode of the base parts) + decoded τ, in float32
          const host = Object.fromEntries(Object.entries(qt.parts).map(([k, t]) => [k, t!.dataSync()]));
          const base = dequantizeRows(host as never, rows, cols, f);
          const map = dynamicMap();
          const dense = new Float32Array(rows * cols);
          const gpr = Math.ceil(cols / group);
          for (let r = 0; r < rows; r++) {
            for (let c = 0; c < cols; c++) {
              const g = r * gpr + Math.floor(c / group);
              dense[r * cols + c] = base[r * cols + c] + f32(map[host.offsetCodes[g]] * host.offset2[Math.floor(g / 256)]);
            }
          }
          assert.deepEqual(q.dequantize(qt).dataSync(), dense, `${name} ${f.name} [${rows}, ${cols}] dequantize`);
          const x = q.tensor(gaussianArray(4 * cols, 9), [2, 2, cols], 'f32', b);
          const y = q.dequantizeMatmul(x, qt).dataSync();
          const xv = x.dataSync();
          for (let i = 0; i < 4; i++) {
            for (let r = 0; r < rows; r++) {
              let s = 0;
              for (let c = 0; c < cols; c++) s += xv[i * cols + c] * dense[r * cols + c];
              assert.ok(Math.abs(y[i * rows + r] - s) <= 1e-4 * Math.max(1, Math.abs(s)), `${name} ${f.name}: y[${i}, ${r}] ${y[i * rows + r]} vs ${s}`);
            }
          }
        });
      }
    }
  }
});

test('dequantizeMatmul with τ: gradient in x by finite differences', () => {
  for (const [cols, group] of [[40, 16], [24, 8]]) {
    const qt = quantizeIcq(q.tensor(gaussianArray(6 * cols, 70), [6, cols]), q.formats.nf(4, { group }));
    gradCheck(`dequantizeMatmul icq g${group}`, (x) => q.dequantizeMatmul(x, qt), [{ shape: [2, 3, cols] }], { eps: 1e-2, tol: 1e-2 });
    qt.dispose();
  }
});

test('INT: "standard quantizer on w / p, scale · p" is a no-op; our range scaling equals clamping for p <= 1', () => {
  const rows = 64;
  const group = 32;
  for (const f of [q.formats.int(3, { group }), q.formats.int(4, { group, symmetric: true }), q.formats.int(2, { group })]) {
    const w = gaussianArray(rows * group, 21, 0.05);
    const plain = quantizeRows(w, rows, group, f);
    // the literal identity: codes of w / p are the plain codes (up to rare float ties)
    const div = quantizeRows(w.map((x) => x / 0.9), rows, group, f);
    const same = plain.codes.reduce((n, c, i) => n + (c === div.codes[i] ? 1 : 0), 0);
    assert.ok(same >= 0.99 * plain.codes.length, `${f.name}: ${same} of ${plain.codes.length} bytes equal`);
    // our definition with p <= 1 equals the standard quantizer on clamp(f32(w / p), lo, hi), bit for bit
    const clip = Float32Array.from({ length: rows }, (_, g) => f32(0.9 + (0.1 * g) / (rows - 1)));
    const ours = quantizeIntIcqRows(w, rows, group, f, clip);
    const clamped = new Float32Array(w.length);
    for (let g = 0; g < rows; g++) {
      let lo = 0;
      let hi = 0;
      for (let c = 0; c < group; c++) { lo = Math.min(lo, w[g * group + c]); hi = Math.max(hi, w[g * group + c]); }
      if (f.symmetric) [lo, hi] = [-Math.max(hi, -lo), Math.max(hi, -lo)]; // the symmetric range
      for (let c = 0; c < group; c++) clamped[g * group + c] = Math.min(Math.max(f32(w[g * group + c] / clip[g]), lo), hi);
    }
    const std = quantizeRows(clamped, rows, group, f);
    assert.deepEqual(ours.codes, std.codes, f.name);
    assert.deepEqual(ours.zeros, std.zeros, f.name);
    assert.deepEqual(ours.scales, std.scales!.map((s, g) => s * clip[g]), f.name);
    assert.notDeepEqual(ours.codes, plain.codes, `${f.name}: clipping changed nothing`);
  }
});

test('NaN or Inf weights throw NonFiniteError on every backend; bad options throw ValueError', () => {
  for (const name of q.backends().filter((s) => s.available).map((s) => s.name)) {
    const b = q.backendByName(name);
    const before = b.liveBuffers();
    q.tidy(() => {
      for (const f of [q.formats.nf(4), q.formats.int(4)]) {
        const w = q.tensor([0.1, 0.2, 0.3, NaN, 0.5, -Infinity], [2, 3], 'f32', b);
        assert.throws(() => quantizeIcq(w, f), (e: Error) => e instanceof q.NonFiniteError && /NaN at row 1, col 0/.test(e.message), `${name} ${f.name}`);
      }
    });
    assert.equal(b.liveBuffers(), before, `${name}: leaked buffers on error`);
  }
  const w = q.tensor([1, 2, 3], [1, 3], 'f32', js);
  assert.throws(() => quantizeIcq(w, q.formats.nf(4), { n: -1 }), q.ValueError);
  assert.throws(() => quantizeIcq(w, q.formats.nf(4), { clipLow: 0 }), q.ValueError);
  assert.throws(() => quantizeIcq(w, q.formats.nf(4), { lamda: 1 } as never), q.ValueError);
});

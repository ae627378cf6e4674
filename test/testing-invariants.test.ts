// quantlora/testing: every invariant check catches a quantizer broken in its way, a correct foreign
// quantizer passes them all, and the arbitraries generate what they promise.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formats } from '../ts/quant/formats.js';
import {
  assertQuantizer, checkBytes, checkCodesInRange, checkErrorBound, checkIdempotence, checkPackRoundTrip,
  checkQuantizer, checkRejectsNonFinite, generateWeights, hugeMatrix, InvariantError, mixedMatrix,
  quantizerProperty, referenceQuantizer, tinyMatrix, weightMatrix, WEIGHT_KINDS, zeroGroupsMatrix,
  type QuantizerUnderTest,
} from '../ts/testing/index.js';

/**
 * A quantizer that is not quantlora's: 8-bit absmax per row, round to nearest, codes offset by 127,
 * async methods, no packing of its own. Options break it in one way each.
 */
interface Int8 { codes: Uint8Array; scales: Float32Array; rows: number; cols: number }
function int8Quantizer(opts: { scaleFrom?: 'absmax' | 'mean'; validate?: boolean } = {}): QuantizerUnderTest<Int8> {
  return {
    name: 'test int8 absmax',
    bits: 8,
    async quantize(w, rows, cols) {
      if (opts.validate !== false && !w.every(Number.isFinite)) throw new RangeError('non-finite weight');
      const codes = new Uint8Array(rows * cols);
      const scales = new Float32Array(rows);
      for (let r = 0; r < rows; r++) {
        let stat = 0;
        for (let c = 0; c < cols; c++) stat = opts.scaleFrom === 'mean' ? stat + Math.abs(w[r * cols + c]) / cols : Math.max(stat, Math.abs(w[r * cols + c]));
        scales[r] = stat / 127 || 1;
        for (let c = 0; c < cols; c++) codes[r * cols + c] = Math.min(254, Math.max(0, Math.round(w[r * cols + c] / scales[r]) + 127));
      }
      return { codes, scales, rows, cols };
    },
    codes: async (q) => q.codes,
    dequantize: async (q) => Float32Array.from(q.codes, (code, i) => (code - 127) * q.scales[Math.floor(i / q.cols)]),
    errorBound: (w, _rows, cols, q) => Float64Array.from(w, (x, i) => q.scales[Math.floor(i / cols)] * (0.5 + 1e-6) + 1e-7 * Math.abs(x)),
    bytes: (q) => q.codes.length + 4 * q.scales.length,
    expectedBytes: (rows, cols) => rows * cols + 4 * rows,
  };
}

const W = generateWeights('heavyTailed', 3, 50, 7);
const nf4 = referenceQuantizer(formats.nf(4, { group: 16 }));
const int4 = referenceQuantizer(formats.int(4, { group: 16 }));

const checksOf = (violations: { check: string }[]) => new Set(violations.map((v) => v.check));

test('a correct foreign quantizer (async, 8-bit, unpacked) and quantlora\'s reference pass every check', async () => {
  assert.deepEqual(await checkQuantizer(int8Quantizer(), W, 3, 50), []);
  assert.deepEqual(await checkQuantizer(nf4, W, 3, 50), []);
  await fc.assert(quantizerProperty(int8Quantizer(), weightMatrix({ maxCols: 30 })), { numRuns: 30 });
});

test('codes-in-range catches codes that overflow their bits, and codes of the wrong length', async () => {
  const overflow: QuantizerUnderTest<Int8> = { ...int8Quantizer(), bits: 7 }; // codes reach 254 > 127
  const v = await checkCodesInRange(overflow, await overflow.quantize(W, 3, 50), 3, 50);
  assert.ok(v.length > 0 && v[0].check === 'codes-in-range' && /outside \[0, 128\)/.test(v[0].message), JSON.stringify(v));
  const ternary = { ...int4, levels: 3 };
  assert.ok((await checkCodesInRange(ternary, await int4.quantize(W, 3, 50), 3, 50)).length > 0);
  const short = { ...int4, codes: async (q: Parameters<typeof int4.codes>[0]) => (await int4.codes(q)).subarray(1) };
  assert.match((await checkCodesInRange(short, await int4.quantize(W, 3, 50), 3, 50))[0].message, /expected codes of 150 values, got 149/);
});

test('pack-round-trip catches a packer with the wrong nibble order or a lossy unpacker', async () => {
  const q = await int4.quantize(W, 3, 50);
  const swapped = { ...int4, packed: (p: typeof q) => p.parts.codes.map((b) => ((b & 15) << 4) | (b >> 4)) };
  assert.ok(checksOf(await checkPackRoundTrip(swapped, q, 3, 50)).has('pack-round-trip'));
  const lossy = { ...int4, unpack: (packed: Uint8Array) => new Uint8Array(150).fill(packed[0] >> 4) };
  assert.ok((await checkPackRoundTrip(lossy, q, 3, 50)).length > 0);
  const truncated = { ...int4, packed: (p: typeof q) => p.parts.codes.subarray(1) };
  assert.match((await checkPackRoundTrip(truncated, q, 3, 50))[0].message, /threw ShapeError/);
  assert.deepEqual(await checkPackRoundTrip(int4, q, 3, 50), []);
});

test('error-bound catches too large an error, a bound claimed too tight, and NaN', async () => {
  const q = await nf4.quantize(W, 3, 50);
  const noisy = { ...nf4, dequantize: (p: typeof q) => { const d = nf4.dequantize(p) as Float32Array; d[60] += 0.5; return d; } };
  const v = await checkErrorBound(noisy, W, 3, 50, q);
  assert.equal(v.length, 1);
  assert.deepEqual([v[0].row, v[0].col], [1, 10]);
  const tight = { ...nf4, errorBound: () => 1e-3 };
  assert.ok((await checkErrorBound(tight, W, 3, 50, q)).length > 0);
  const nan = { ...nf4, dequantize: (p: typeof q) => { const d = nf4.dequantize(p) as Float32Array; d[0] = NaN; return d; } };
  assert.ok((await checkErrorBound(nan, W, 3, 50, q)).length > 0);
  assert.deepEqual(await checkErrorBound(nf4, W, 3, 50, q), []);
});

test('idempotence catches a quantizer whose scale moves on re-quantization; double quant needs its allowance', async () => {
  const mean = int8Quantizer({ scaleFrom: 'mean' });
  const v = await checkIdempotence(mean, await mean.quantize(W, 3, 50), 3, 50);
  assert.ok(v.some((x) => x.message.includes('became')), JSON.stringify(v));
  // Without the double-quant allowance, the re-quantized offset and block absmax move the scales.
  const w = generateWeights('gaussian', 40, 64, 1);
  const dq = referenceQuantizer(formats.nf(4));
  const q = await dq.quantize(w, 40, 64);
  assert.deepEqual(await checkIdempotence(dq, q, 40, 64), []);
  assert.ok((await checkIdempotence({ ...dq, idempotence: undefined }, q, 40, 64)).length > 0);
  // An allowance lifts exactly what it allows: codes, then values.
  const qm = await mean.quantize(W, 3, 50);
  const codesOnly = { ...mean, idempotence: () => ({ slack: 0, codesMayChange: new Uint8Array(150).fill(1) }) };
  const rest = await checkIdempotence(codesOnly, qm, 3, 50);
  assert.ok(rest.some((x) => x.message.includes('dequantized value')) && !rest.some((x) => /code \d+ became/.test(x.message)));
  const everything = { ...codesOnly, idempotence: () => ({ slack: Infinity, codesMayChange: new Uint8Array(150).fill(1) }) };
  assert.deepEqual(await checkIdempotence(everything, qm, 3, 50), []);
});

test('bytes catches a storage size that disagrees with the formula', async () => {
  const q = await int4.quantize(W, 3, 50);
  const off = { ...int4, expectedBytes: (rows: number, cols: number) => int4.expectedBytes!(rows, cols) + 1 };
  assert.match((await checkBytes(off, q, 3, 50))[0].message, /expected \d+ bytes for \[3, 50\], got \d+/);
  assert.deepEqual(await checkBytes(int4, q, 3, 50), []);
});

test('a quantizer that throws, a shape mismatch, and silently accepted NaN are violations', async () => {
  const throwing = { ...int4, quantize: () => { throw new Error('boom'); } };
  assert.deepEqual(await checkQuantizer(throwing, W, 3, 50), [{ check: 'quantize', message: 'quantize threw Error: boom' }]);
  assert.equal((await checkQuantizer(int4, W, 3, 49))[0].check, 'shape');
  const withNaN = Float32Array.from(W);
  withNaN[5] = NaN;
  assert.equal((await checkRejectsNonFinite(int8Quantizer({ validate: false }), withNaN, 3, 50))[0].check, 'rejects-non-finite');
  assert.deepEqual(await checkRejectsNonFinite(int8Quantizer(), withNaN, 3, 50), []);
  assert.deepEqual(await checkRejectsNonFinite(int4, withNaN, 3, 50), []);
});

test('assertQuantizer and quantizerProperty fail with the violations listed, a few in full', async () => {
  const broken = { ...int4, errorBound: () => 0 };
  await assert.rejects(assertQuantizer(broken, W, 3, 50), (err: unknown) => {
    assert.ok(err instanceof InvariantError);
    assert.equal(err.violations.length, 6); // 5 in full, then a count
    assert.match(err.violations[5].message, /^\.\.\. and \d+ more$/);
    assert.match(err.message, /'reference int4-g16-asym' violates its invariants on a \[3, 50\] weight/);
    return true;
  });
  await assert.rejects(fc.assert(quantizerProperty(broken), { numRuns: 5, includeErrorInReport: true }), /error-bound/);
});

test('weightMatrix: finite by default, sizes within the options, reproducible from kind and seed', () => {
  fc.assert(fc.property(weightMatrix({ minRows: 2, maxRows: 3, minCols: 5, maxCols: 9 }), (m) => {
    assert.ok(m.rows >= 2 && m.rows <= 3 && m.cols >= 5 && m.cols <= 9);
    assert.equal(m.data.length, m.rows * m.cols);
    assert.ok(m.data.every(Number.isFinite));
    assert.ok(m.data.every((x) => Math.abs(x) <= 1e30));
    assert.deepEqual(m.data, generateWeights(m.kind, m.rows, m.cols, m.seed));
  }), { numRuns: 200 });
  fc.assert(fc.property(weightMatrix({ nonFinite: true }), (m) => !m.data.every(Number.isFinite)), { numRuns: 100 });
});

test('weight kinds: tiny, huge, grid, zero groups and mixed magnitudes', () => {
  const sample = <T>(arb: fc.Arbitrary<T>) => fc.sample(arb, { numRuns: 200, seed: 42 });
  const maxAbs = (d: Float32Array) => d.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
  for (const m of sample(tinyMatrix())) assert.ok(maxAbs(m.data) > 1e-35 && maxAbs(m.data) < 1e-25, `${maxAbs(m.data)}`);
  for (const m of sample(hugeMatrix())) assert.ok(maxAbs(m.data) > 1e24 && maxAbs(m.data) <= 1e30, `${maxAbs(m.data)}`);
  for (const m of sample(weightMatrix({ kinds: ['grid'] }))) assert.ok(m.data.every((x) => Number.isInteger(x * 4)));
  const group = 8;
  const hasZeroGroup = (m: { data: Float32Array; rows: number; cols: number }) => {
    for (let r = 0; r < m.rows; r++) {
      for (let begin = 0; begin < m.cols; begin += group) {
        if (m.data.subarray(r * m.cols + begin, r * m.cols + Math.min(begin + group, m.cols)).every((x) => x === 0)) return true;
      }
    }
    return false;
  };
  assert.ok(sample(zeroGroupsMatrix({ group })).filter(hasZeroGroup).length > 100, 'most zeroGroups matrices hold an all-zero group');
  const spread = (d: Float32Array) => {
    const nz = Array.from(d, Math.abs).filter((x) => x > 0);
    return Math.max(...nz) / Math.min(...nz);
  };
  assert.ok(sample(mixedMatrix({ minRows: 4 })).some((m) => spread(m.data) > 1e50), 'mixed puts tiny and huge rows together');
  assert.deepEqual(new Set(sample(weightMatrix()).map((m) => m.kind)), new Set(WEIGHT_KINDS));
});

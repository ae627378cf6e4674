// Every format and bit width through the testing invariants (property tests), packing round trips
// for every shape, the fused dequantize-matmul, the storage formula, and bad input.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FormatError, NonFiniteError, ShapeError, ValueError } from '../ts/errors.js';
import { formats, type QuantFormat } from '../ts/quant/formats.js';
import { packCodes, rowBytes, unpackCodes } from '../ts/quant/packing.js';
import { dequantizeMatmulRows, dequantizeRow, dequantizeRows, quantizeRows, storageBytes } from '../ts/quant/reference.js';
import { checkRejectsNonFinite, quantizerProperty, referenceQuantizer, weightMatrix } from '../ts/testing/index.js';

const GROUPS = [1, 7, 64, 128];
const ALL_FORMATS: QuantFormat[] = [];
for (const bits of [2, 3, 4]) {
  for (const group of GROUPS) {
    ALL_FORMATS.push(formats.nf(bits, { group }), formats.nf(bits, { group, doubleQuant: false }));
    ALL_FORMATS.push(formats.int(bits, { group }), formats.int(bits, { group, symmetric: true }));
  }
}

test('every format passes every invariant (property, all weight kinds, cols not multiples of the group)', async () => {
  for (const f of ALL_FORMATS) {
    const arb = weightMatrix({ group: f.group, maxRows: 4, maxCols: 150 });
    await fc.assert(quantizerProperty(referenceQuantizer(f), arb), { numRuns: 40, includeErrorInReport: true });
  }
});

test('double-quantized formats pass the invariants across several blocks of 256 groups', async () => {
  for (const bits of [2, 3, 4]) {
    const f = formats.nf(bits, { group: 1 });
    const arb = weightMatrix({ group: 1, minRows: 2, maxRows: 3, minCols: 130, maxCols: 300 }); // 260..900 groups
    await fc.assert(quantizerProperty(referenceQuantizer(f), arb), { numRuns: 15, includeErrorInReport: true });
  }
});

test('formats reject weights holding NaN or ±Infinity', async () => {
  const arb = weightMatrix({ nonFinite: true, maxRows: 3, maxCols: 40 });
  for (const f of [formats.nf(4), formats.int(3), formats.int(2, { symmetric: true })]) {
    await fc.assert(fc.asyncProperty(arb, async (m) => {
      assert.deepEqual(await checkRejectsNonFinite(referenceQuantizer(f), m.data, m.rows, m.cols), []);
    }), { numRuns: 20 });
  }
});

test('pack/unpack round-trips codes of 1..8 bits for every shape; padding bits are zero', () => {
  const arb = fc.record({ bits: fc.integer({ min: 1, max: 8 }), rows: fc.integer({ min: 0, max: 5 }), cols: fc.integer({ min: 0, max: 41 }) })
    .chain(({ bits, rows, cols }) => fc.tuple(fc.constant({ bits, rows, cols }), fc.uint8Array({ minLength: rows * cols, maxLength: rows * cols, max: 2 ** bits - 1 })));
  fc.assert(fc.property(arb, ([{ bits, rows, cols }, codes]) => {
    const packed = packCodes(codes, rows, cols, bits);
    const rb = rowBytes(cols, bits);
    assert.equal(rb, Math.ceil((cols * bits) / 8));
    assert.equal(packed.length, rows * rb);
    assert.deepEqual(unpackCodes(packed, rows, cols, bits), codes);
    const pad = rb * 8 - cols * bits;
    for (let r = 0; r < rows && pad > 0; r++) assert.equal(packed[(r + 1) * rb - 1] & ((1 << pad) - 1), 0);
  }), { numRuns: 300 });
});

test('dequantizeMatmulRows equals x · dequantizeRows(W)ᵀ; dequantizeRow equals a row of it', () => {
  const arb = fc.record({
    m: weightMatrix({ kinds: ['gaussian', 'heavyTailed', 'zeroGroups', 'grid'], maxRows: 5, maxCols: 70 }),
    xRows: fc.integer({ min: 1, max: 3 }),
    f: fc.constantFrom(formats.nf(4), formats.nf(3, { group: 7 }), formats.nf(2, { doubleQuant: false }), formats.int(4, { group: 5 }), formats.int(3, { symmetric: true }), formats.int(2, { group: 1 })),
  });
  fc.assert(fc.property(arb, ({ m, xRows, f }) => {
    const { rows, cols } = m;
    const p = quantizeRows(m.data, rows, cols, f);
    const w = dequantizeRows(p, rows, cols, f);
    const x = Float32Array.from({ length: xRows * cols }, (_, i) => Math.sin(i * 1.3) * 2);
    const y = dequantizeMatmulRows(x, xRows, p, rows, cols, f);
    assert.equal(y.length, xRows * rows);
    for (let i = 0; i < xRows; i++) {
      for (let r = 0; r < rows; r++) {
        let dot = 0;
        let mag = 0;
        for (let c = 0; c < cols; c++) {
          dot += x[i * cols + c] * w[r * cols + c];
          mag += Math.abs(x[i * cols + c] * w[r * cols + c]);
        }
        assert.ok(Math.abs(y[i * rows + r] - dot) <= 1e-6 * mag + 1e-30, `y[${i}, ${r}] = ${y[i * rows + r]}, expected ${dot}`);
      }
    }
    const row = new Float32Array(cols);
    for (let r = 0; r < rows; r++) {
      dequantizeRow(p, r, cols, f, row);
      assert.deepEqual(row, w.subarray(r * cols, (r + 1) * cols));
    }
  }), { numRuns: 60 });
});

test('storageBytes: worked examples of the formula', () => {
  // nf4-g64-dq [4096, 4096]: 4096 rows * 2048 bytes + 262144 scale codes + 1024 blocks * 4 + offset 4
  assert.equal(storageBytes(4096, 4096, formats.nf(4)), 4096 * 2048 + 262144 + 4096 + 4);
  // int3-g128-asym [3, 200]: rows of ceil(600 / 8) = 75 bytes; 6 groups of 4-byte scale + 1-byte zero
  assert.equal(storageBytes(3, 200, formats.int(3, { group: 128 })), 225 + 24 + 6);
  // nf2-g7 [5, 10]: rows of 3 bytes, 10 groups of 4-byte absmax
  assert.equal(storageBytes(5, 10, formats.nf(2, { group: 7, doubleQuant: false })), 15 + 40);
  // int4-g64-sym [1, 1]: one byte of codes, one scale, no zero point
  assert.equal(storageBytes(1, 1, formats.int(4, { symmetric: true })), 5);
  // nf3-g1-dq [1, 257]: 97 bytes of codes, 257 scale codes, 2 blocks, offset
  assert.equal(storageBytes(1, 257, formats.nf(3, { group: 1 })), 97 + 257 + 8 + 4);
});

test('formats: defaults, names, frozen', () => {
  const nf4 = formats.nf(4);
  assert.deepEqual({ ...nf4 }, { kind: 'nf', bits: 4, group: 64, doubleQuant: true, symmetric: false, name: 'nf4-g64-dq' });
  assert.deepEqual({ ...formats.int(3, { group: 128 }) }, { kind: 'int', bits: 3, group: 128, doubleQuant: false, symmetric: false, name: 'int3-g128-asym' });
  assert.equal(formats.int(2, { symmetric: true }).name, 'int2-g64-sym');
  assert.equal(formats.nf(3, { doubleQuant: false, group: 7 }).name, 'nf3-g7');
  assert.ok(Object.isFrozen(nf4) && Object.isFrozen(formats));
  assert.throws(() => { (nf4 as { bits: number }).bits = 2; }, TypeError);
});

/** Asserts fn throws an instance of type whose message contains every part. */
function throwsWith(fn: () => unknown, type: new (...args: never[]) => Error, ...parts: string[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof type, `expected ${type.name}, got ${String(err)}`);
    for (const part of parts) assert.ok(err.message.includes(part), `'${err.message}' should mention '${part}'`);
    return true;
  });
}

test('bad input: unsupported bits, groups and options get a FormatError saying expected and given', () => {
  throwsWith(() => formats.nf(5), FormatError, 'expected bits 2, 3 or 4', 'got 5');
  throwsWith(() => formats.int(8), FormatError, 'expected bits 2, 3 or 4', 'got 8');
  throwsWith(() => formats.int(4, { group: 0 }), FormatError, 'integer in [1, 65536]', 'got 0');
  throwsWith(() => formats.nf(4, { group: 3.5 }), FormatError, 'got 3.5');
  throwsWith(() => formats.nf(4, { group: 65537 }), FormatError, 'got 65537');
  throwsWith(() => formats.nf(4, { symmetric: true } as never), FormatError, "got 'symmetric'");
  throwsWith(() => formats.int(4, { symmetric: 'yes' } as never), FormatError, 'boolean', 'got yes');
  throwsWith(() => quantizeRows(new Float32Array(4), 2, 2, { kind: 'fp', bits: 4, group: 2 } as never), FormatError, 'expected a format');
});

test('bad input: non-finite weights name the row and col; shape mismatches get a ShapeError', () => {
  for (const [bad, text] of [[NaN, 'NaN'], [Infinity, 'Infinity'], [-Infinity, '-Infinity']] as const) {
    const w = new Float32Array(3 * 7).fill(0.5);
    w[1 * 7 + 3] = bad;
    for (const f of [formats.nf(4), formats.int(2)]) throwsWith(() => quantizeRows(w, 3, 7, f), NonFiniteError, 'expected finite', `got ${text} at row 1, col 3`);
  }
  throwsWith(() => quantizeRows(new Float32Array(10), 3, 4, formats.nf(4)), ShapeError, 'expected 12 weights', 'got 10');
  throwsWith(() => quantizeRows(new Float32Array(0), -1, 0, formats.nf(4)), ShapeError, 'rows=-1');
  const f = formats.int(4, { group: 2 });
  const p = quantizeRows(new Float32Array(12).fill(1), 3, 4, f);
  throwsWith(() => dequantizeRows({ codes: p.codes, scales: p.scales }, 3, 4, f), FormatError, "expected part 'zeros'", 'got none');
  throwsWith(() => dequantizeRows({ ...p, scales: p.scales!.subarray(1) }, 3, 4, f), ShapeError, "part 'scales' of length 6", 'got 5');
  throwsWith(() => dequantizeRows(p, 4, 4, f), ShapeError, "part 'codes' of length 8", 'got 6');
  throwsWith(() => dequantizeMatmulRows(new Float32Array(7), 2, p, 3, 4, f), ShapeError, '8 values', 'got 7');
  throwsWith(() => dequantizeRow(p, 3, 4, f, new Float32Array(4)), ShapeError, 'row index in [0, 3)', 'got 3');
  throwsWith(() => packCodes(Uint8Array.of(1, 4), 1, 2, 2), ValueError, 'codes in [0, 3]', 'got 4 at row 0, col 1');
  throwsWith(() => packCodes(Uint8Array.of(1), 1, 2, 2), ShapeError, 'expected 2 codes', 'got 1');
  throwsWith(() => unpackCodes(new Uint8Array(3), 2, 5, 3), ShapeError, 'expected 4 bytes', 'got 3');
  throwsWith(() => packCodes(new Uint8Array(0), 0, 0, 9), ValueError, 'integer in [1, 8]', 'got 9');
});

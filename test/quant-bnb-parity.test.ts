// NF4 + double quantization against real bitsandbytes output (CUDA kernels, recorded by
// scripts/bnb_fixture.py into test/fixtures/bnb-nf4-dq.json): every packed byte, every absmax
// code, the second-level absmax, the offset and the dequantized values must match.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { dynamicMap } from '../ts/quant/doublequant.js';
import { NF4 } from '../ts/quant/codebooks.js';
import { formats } from '../ts/quant/formats.js';
import { dequantizeRows, quantizeRows } from '../ts/quant/reference.js';

interface Case { name: string; input: number[]; packed: number[]; absmaxCodes: number[]; offset: number; absmax2: number[]; dequantized: number[] }
const fixture = JSON.parse(readFileSync(new URL('./fixtures/bnb-nf4-dq.json', import.meta.url), 'utf8')) as {
  bitsandbytes: string; dynamicMap: number[]; nf4: number[]; cases: Case[];
};

function firstDiff(a: ArrayLike<number>, b: ArrayLike<number>): string {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return `first difference at ${i}: ours ${a[i]}, bitsandbytes ${b[i]}`;
  return 'equal';
}

test(`codebooks equal bitsandbytes ${fixture.bitsandbytes}'s`, () => {
  assert.deepEqual(Array.from(dynamicMap()), fixture.dynamicMap, firstDiff(dynamicMap(), fixture.dynamicMap));
  assert.deepEqual(Array.from(NF4), fixture.nf4);
});

for (const c of fixture.cases) {
  test(`bitsandbytes NF4 + double quant, code for code: ${c.name}`, () => {
    const f = formats.nf(4, { group: 64, doubleQuant: true });
    const w = Float32Array.from(c.input);
    const p = quantizeRows(w, 1, w.length, f);
    assert.equal(p.scaleOffset![0], c.offset, 'mean offset of the absmax values');
    assert.deepEqual(Array.from(p.scale2!), c.absmax2, 'second-level absmax per 256 groups');
    assert.deepEqual(Array.from(p.scaleCodes!), c.absmaxCodes, firstDiff(p.scaleCodes!, c.absmaxCodes));
    assert.deepEqual(Array.from(p.codes), c.packed, firstDiff(p.codes, c.packed));
    const deq = dequantizeRows(p, 1, w.length, f);
    assert.deepEqual(Array.from(deq), c.dequantized, firstDiff(deq, c.dequantized));
  });
}

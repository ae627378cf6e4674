// Every row of the results table runs end to end (tiny preset on the tiny fixture model): the
// pipeline composes each quantizer × initialization × compensation; the table and plot list them.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as q from '../ts/index.js';
import { loadModel } from '../ts/io/load-model.js';
import { calibrationWindows } from '../ts/methods/calibration.js';
import { experimentRows, markdownTable, PRESETS, rowCheckpoints, svgPlot, type RowResult } from '../ts/methods/experiment.js';
import { methodName, runMethod } from '../ts/methods/pipeline.js';
import { quantLayers } from '../ts/methods/quantize-model.js';
import { Args } from '../ts/cli/args.js';
import { specFromArgs } from '../ts/cli/quantize.js';

function stream(n: number, seed: number): Int32Array {
  const next = q.rng(seed);
  return Int32Array.from({ length: n }, (_, i) => (next() < 0.8 ? 3 + ((i * 7) % 23) : 3 + Math.floor(next() * 50)));
}

test('experiment (tiny preset): every row runs through runMethod and evaluates to a finite perplexity', async () => {
  const p = PRESETS.tiny;
  const { model: fp } = loadModel('test/fixtures/tiny-llama/llama-tied');
  const evalIds = stream(p.evalSeqlen * 2, 9);
  const data = calibrationWindows(stream(3000, 8), { count: p.calib.count, seqlen: p.calib.seqlen, validation: p.calib.validation, seed: 1 });
  const rows = experimentRows(p);
  assert.ok(rows.length > 20);
  assert.equal(new Set(rows.map((r) => r.key)).size, rows.length, 'row keys are unique');
  const results: RowResult[] = [];
  const live = q.liveBuffers();
  for (const row of rows) {
    let model = fp;
    let dispose = false;
    if (row.spec) {
      const r = runMethod(fp, row.spec, data);
      model = r.model;
      dispose = true;
      assert.equal(quantLayers(model).length, 14, `${row.key}: every projection quantized`);
      const adapters = quantLayers(model).every(({ layer }) => !!layer.lora);
      assert.equal(adapters, row.spec.init !== 'none', `${row.key}: adapters exactly when the method has an initialization`);
      assert.ok(methodName(row.spec).length > 0);
    }
    const ppl = await q.perplexity(model, evalIds, { seqlen: p.evalSeqlen });
    assert.ok(Number.isFinite(ppl.perplexity) && ppl.perplexity > 1, `${row.key}: perplexity ${ppl.perplexity}`);
    results.push({ ...row, perplexity: ppl.perplexity, evalWindows: ppl.windows, seconds: 0 });
    if (dispose) model.dispose();
  }
  assert.equal(q.liveBuffers(), live, 'every method frees what it made');
  const md = markdownTable(results, p);
  for (const label of ['NF RTN', 'ApiQ-block (INT, LWC)', 'RILQ on ApiQ-block', '| LoftQ | ', '| r2 |', 'finetune, IEC on', 'NF + ICQ']) assert.ok(md.includes(label), `table has ${label}`);
  const svg = svgPlot(results, p);
  assert.ok(svg.startsWith('<svg') && svg.includes('polyline') && svg.trim().endsWith('</svg>'));
  fp.dispose();
});

test('quantize flags: parsed into a method, bad values are typed errors', () => {
  const s = specFromArgs(new Args(['--format', 'int', '--bits', '2', '--group', '32', '--symmetric', '--init', 'apiq-block', '--rank', '8', '--rilq-steps', '10', '--icq']));
  assert.equal(s.format.name, 'int2-g32-sym');
  assert.equal(s.init, 'apiq-block');
  assert.equal(s.rank, 8);
  assert.equal(s.rilq?.steps, 10);
  assert.ok(s.icq);
  assert.equal(methodName(s), 'int2 icq + apiq-block + rilq');
  assert.throws(() => specFromArgs(new Args(['--format', 'fp8'])), q.ValueError);
  assert.throws(() => specFromArgs(new Args(['--bits', '5'])), q.ValueError);
  assert.throws(() => specFromArgs(new Args(['--init', 'magic'])), q.ValueError);
  assert.throws(() => specFromArgs(new Args(['--rilq-loss', 'kl', '--rilq-steps', '2'])), q.ValueError);
});

test('rowCheckpoints: long rows checkpoint and a second run resumes inside the row', () => {
  const p = PRESETS.tiny;
  const rows = experimentRows(p);
  const dir = mkdtempSync(join(tmpdir(), 'quantlora-exp-ck-'));
  try {
    assert.deepEqual(rowCheckpoints(rows.find((r) => r.key === 'fp')!, dir).files, []);
    assert.deepEqual(rowCheckpoints(rows.find((r) => r.key === 'nf2-rtn')!, dir).files, []);
    const row = rows.find((r) => r.key === 'int2-apiq-block-rilq')!;
    const ck = rowCheckpoints(row, dir, 1);
    assert.deepEqual(ck.files, [join(dir, 'int2-apiq-block-rilq.apiq.safetensors'), join(dir, 'int2-apiq-block-rilq.rilq.safetensors')]);
    assert.equal(row.spec!.rilq!.checkpoint, undefined, 'the preset row itself is not changed');
    const { model: fp } = loadModel('test/fixtures/tiny-llama/llama-tied');
    const data = calibrationWindows(stream(3000, 8), { count: p.calib.count, seqlen: p.calib.seqlen, validation: p.calib.validation, seed: 1 });
    const first = runMethod(fp, ck.spec!, data);
    assert.equal(first.report.apiq!.resumedFrom, undefined);
    assert.ok(ck.files.every((f) => existsSync(f)), 'both checkpoints written');
    const again = runMethod(fp, ck.spec!, data);
    assert.equal(again.report.apiq!.resumedFrom, fp.blocks.length, 'ApiQ resumes after its last block');
    assert.equal(again.report.rilq!.resumedFrom, p.rilqSteps - 1, 'RILQ resumes at its last checkpoint');
    first.model.dispose();
    again.model.dispose();
    fp.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// The methods on a tiny Llama: model conversion, ApiQ (layer and block, with LWC), RILQ with
// validation/early stopping and checkpoint resume, finetuning. Small sizes: these check behaviour
// (losses fall, the right tensors change, resume is exact), not paper numbers.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import * as q from '../ts/index.js';
import { loadModel } from '../ts/io/load-model.js';
import { QuantLinear } from '../ts/nn/quant-linear.js';
import type { LlamaModel } from '../ts/nn/llama.js';
import { apiq } from '../ts/methods/apiq.js';
import { calibrationWindows } from '../ts/methods/calibration.js';
import { adapterParameters, quantLayers, quantizeModel, rtnLayers } from '../ts/methods/quantize-model.js';
import { finetune, rilq } from '../ts/methods/rilq.js';
import { readCheckpoint } from '../ts/train/checkpoint.js';
import { testModelPath } from './model-file.js';

const FIXTURE = 'test/fixtures/tiny-llama/llama-tied';
const fpModel = (): LlamaModel => loadModel(FIXTURE).model;

/** A token stream with structure (a repeated pattern plus noise), so there is something to learn. */
function stream(n: number, seed: number): Int32Array {
  const next = q.rng(seed);
  return Int32Array.from({ length: n }, (_, i) => (next() < 0.8 ? 3 + ((i * 7) % 23) : 3 + Math.floor(next() * 50)));
}

function hiddenMse(a: LlamaModel, b: LlamaModel, windows: Int32Array[]): number {
  return q.noGrad(() => windows.reduce((s, w) => s + q.tidy(() => {
    const ids = q.tensor(w, [1, w.length], 'i32');
    return q.mean(q.square(q.sub(a.hidden(ids), b.hidden(ids)))).dataSync()[0];
  }), 0) / windows.length);
}

test('quantizeModel: projections become QuantLinear with zero-initialized adapters; the fp model is untouched', () => {
  const fp = fpModel();
  const ids = q.tensor(stream(16, 1), [1, 16], 'i32');
  const before = fp.logits(ids).dataSync().slice();
  const plain = quantizeModel(fp, rtnLayers({ format: q.formats.nf(4, { group: 16 }) }));
  const adapted = quantizeModel(fp, rtnLayers({ format: q.formats.nf(4, { group: 16 }), lora: { rank: 4, iec: true } }));
  assert.equal(quantLayers(adapted).length, 2 * 7);
  assert.equal(adapterParameters(adapted).length, 2 * 7 * 4);
  const lp = plain.logits(ids).dataSync();
  const la = adapted.logits(ids).dataSync();
  assert.deepEqual(la, lp, 'B = 0: the adapted model computes exactly the plain quantized model');
  assert.ok(lp.some((v, i) => Math.abs(v - before[i]) > 1e-4), 'quantization changes the logits');
  assert.deepEqual(fp.logits(ids).dataSync(), before, 'fp model unchanged');
  assert.throws(() => quantizeModel(adapted, rtnLayers({ format: q.formats.nf(4) })), q.ValueError);
  for (const m of [fp, plain, adapted]) m.dispose();
  ids.dispose();
});

for (const mode of ['layer', 'block'] as const) {
  test(`apiq('${mode}') with LWC at 2 bits: every part's loss falls, weights end packed, the model moves toward fp`, () => {
    const fp = fpModel();
    const format = q.formats.int(2, { group: 16 });
    const qm = quantizeModel(fp, rtnLayers({ format, lora: { rank: 4 } }));
    const rtn = quantizeModel(fp, rtnLayers({ format }));
    const data = calibrationWindows(stream(4000, 2), { count: 6, seqlen: 24, validation: 3, seed: 1 });
    const report = apiq(fp, qm, { mode, windows: data.train, epochs: 3, lrLora: 5e-3 });
    assert.equal(report.parts.length, mode === 'layer' ? 14 : 2);
    const fell = report.parts.filter((p) => p.after < p.before).length;
    assert.ok(fell >= report.parts.length - 1, `losses fell in ${fell} of ${report.parts.length} parts: ${JSON.stringify(report.parts)}`);
    for (const { layer } of quantLayers(qm)) assert.ok(layer instanceof QuantLinear && layer.weight.format.name === format.name);
    const eApiq = hiddenMse(qm, fp, data.validation);
    const eRtn = hiddenMse(rtn, fp, data.validation);
    assert.ok(eApiq < eRtn, `held-out hidden-state error: apiq ${eApiq} vs rtn ${eRtn}`);
    for (const m of [fp, qm, rtn]) m.dispose();
  });
}

test('rilq: validation loss falls, the best adapters are restored, a resumed run equals a straight one', () => {
  const fp = fpModel();
  const format = q.formats.nf(2, { group: 16 });
  const data = calibrationWindows(stream(4000, 3), { count: 8, seqlen: 24, validation: 2, seed: 2 });
  const make = () => quantizeModel(fp, rtnLayers({ format, lora: { rank: 4, seed: 5, dropout: 0.1 } }));
  const opts = { data, steps: 12, lr: 3e-3, evalEvery: 4, accumulate: 2 };
  const a = make();
  const r = rilq(fp, a, opts);
  assert.equal(r.steps, 12);
  assert.ok(r.bestLoss < r.validation[0].loss, `validation ${JSON.stringify(r.validation)}`);
  const dir = mkdtempSync(join(tmpdir(), 'ql-rilq-'));
  try {
    const ck = join(dir, 'ck.safetensors');
    const b = make();
    // interrupted run: the first 8 steps write a checkpoint at step 4 and 8, then it "stops"
    rilq(fp, b, { ...opts, steps: 8, checkpoint: ck, checkpointEvery: 4 });
    b.dispose();
    // the best-so-far adapters travel as tensors, not as JSON numbers in the header
    const saved = readCheckpoint(ck);
    assert.equal(saved.arrays.get('best/0')?.length, adapterParameters(a)[0].size);
    assert.ok(JSON.stringify(saved.meta).length < 2000, `checkpoint meta is ${JSON.stringify(saved.meta).length} chars`);
    const c = make();
    const r2 = rilq(fp, c, { ...opts, checkpoint: ck, checkpointEvery: 4 });
    assert.equal(r2.resumedFrom, 4, 'the last checkpoint written before step 8 ended the run');
    const pa = adapterParameters(a).map((p) => p.dataSync());
    const pc = adapterParameters(c).map((p) => p.dataSync());
    pa.forEach((v, i) => assert.deepEqual(pc[i], v, `parameter ${i} after resume`));
    c.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  fp.dispose();
  a.dispose();
});

test('finetune: the causal-LM loss falls on the training windows; IEC scalars train', () => {
  const fp = fpModel();
  const qm = quantizeModel(fp, rtnLayers({ format: q.formats.nf(4, { group: 16 }), lora: { rank: 4, iec: true } }));
  const data = calibrationWindows(stream(4000, 4), { count: 4, seqlen: 24, validation: 2, seed: 3 });
  const r = finetune(qm, { data, steps: 16, lr: 1e-2, evalEvery: 8, schedule: 'cosine' });
  const first = r.trainLoss.slice(0, 4).reduce((s, v) => s + v, 0) / 4;
  const last = r.trainLoss.slice(-4).reduce((s, v) => s + v, 0) / 4;
  assert.ok(last < first, `train loss ${first} -> ${last}`);
  const betas = quantLayers(qm).map(({ layer }) => layer.lora!.iec!.betaA.dataSync()[0]);
  assert.ok(betas.some((b) => b !== 0), 'βA moved');
  assert.throws(() => finetune(quantizeModel(fp, rtnLayers({ format: q.formats.nf(4, { group: 16 }) })), { data, steps: 1 }), q.ValueError);
  fp.dispose();
  qm.dispose();
});

test('instruction data: JSON Lines parsed (Alpaca or prompt/response), prompt masked, finetuning learns the responses', async () => {
  const { parseInstructions, encodeExample, IGNORE_LABEL } = await import('../ts/methods/instructions.js');
  const ex = parseInstructions('{"instruction":"Add","input":"2 and 2","output":"4"}\n\n{"prompt":"Hi","response":"Hello"}\n', 'x.jsonl');
  assert.deepEqual(ex, [{ prompt: 'Add\n\n2 and 2', response: '4' }, { prompt: 'Hi', response: 'Hello' }]);
  assert.throws(() => parseInstructions('{"prompt":"a"}\n', 'x.jsonl'), (e: Error) => e instanceof q.FormatError && e.message.includes('x.jsonl:1'));
  assert.throws(() => parseInstructions('not json', 'y.jsonl'), (e: Error) => e instanceof q.FormatError && e.message.includes('y.jsonl:1'));
  const path = testModelPath();
  if (path) {
    const { tokenizer } = loadModel(path);
    const { ids, labels } = encodeExample(tokenizer!, ex[1], 64);
    const firstScored = labels.findIndex((l) => l !== IGNORE_LABEL);
    assert.ok(firstScored > 3, 'the prompt is masked');
    assert.equal(tokenizer!.decode(Array.from(ids.subarray(firstScored))), 'Hello<|im_end|>\n');
    assert.deepEqual(labels.subarray(firstScored), ids.subarray(firstScored));
  }
  // finetuning with labels only learns the labelled positions: a fixed "answer" after random prompts
  const fp = fpModel();
  const qm = quantizeModel(fp, rtnLayers({ format: q.formats.nf(4, { group: 16 }), lora: { rank: 4 } }));
  const next = q.rng(5);
  const labels = new Map<Int32Array, Int32Array>();
  const make = () => {
    const w = Int32Array.from({ length: 16 }, (_, i) => (i < 10 ? 3 + Math.floor(next() * 50) : 40 + (i % 3)));
    labels.set(w, Int32Array.from(w, (v, i) => (i < 10 ? -100 : v)));
    return w;
  };
  const data = { seqlen: 16, train: Array.from({ length: 6 }, make), validation: Array.from({ length: 2 }, make), labels };
  const r = finetune(qm, { data, steps: 20, lr: 2e-2, evalEvery: 10 });
  assert.ok(r.bestLoss < r.validation[0].loss * 0.7, `masked validation loss ${r.validation[0].loss} -> ${r.bestLoss}`);
  fp.dispose();
  qm.dispose();
});

test('apiq checkpoint: a run stopped after block 0 resumes to the same packed weights and adapters', () => {
  const live = q.liveBuffers();
  const fp = fpModel();
  const format = q.formats.int(2, { group: 16 });
  const data = calibrationWindows(stream(4000, 6), { count: 3, seqlen: 16, seed: 4 });
  const make = () => quantizeModel(fp, rtnLayers({ format, lora: { rank: 4, seed: 2 } }));
  const snapshot = (m: LlamaModel) => quantLayers(m).flatMap(({ layer }) => [...layer.weight.tensors(), ...layer.parameters()].map((t) => Array.from(t.dataSync())));
  const dir = mkdtempSync(join(tmpdir(), 'ql-apiq-'));
  try {
    const straight = make();
    apiq(fp, straight, { mode: 'layer', windows: data.train, epochs: 2, lrLora: 5e-3 });
    const ck = join(dir, 'apiq.safetensors');
    const stopped = make();
    assert.throws(() => apiq(fp, stopped, { mode: 'layer', windows: data.train, epochs: 2, lrLora: 5e-3, checkpoint: ck,
      log: (line) => { if (line.startsWith('apiq layer 1.')) throw new Error('interrupted'); } }), /interrupted/);
    const resumed = make();
    const r = apiq(fp, resumed, { mode: 'layer', windows: data.train, epochs: 2, lrLora: 5e-3, checkpoint: ck });
    assert.equal(r.resumedFrom, 1);
    assert.equal(r.parts.length, 14, 'the report covers both blocks');
    const a = snapshot(straight);
    const b = snapshot(resumed);
    assert.equal(a.length, b.length);
    a.forEach((v, i) => assert.deepEqual(b[i], v, `tensor ${i}`));
    const other = make();
    assert.throws(() => apiq(fp, other, { mode: 'block', windows: data.train, checkpoint: ck }), q.ValueError);
    // `stopped` was left mid-calibration (stand-ins with their adapters): dispose frees it all
    for (const m of [straight, stopped, resumed, other]) m.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  fp.dispose();
  assert.equal(q.liveBuffers(), live, 'every buffer of the four models is freed');
});

// The Llama model against a float64 numpy reference (tiny random Llama and Qwen2 models), on every
// backend; backward through the whole model (finite differences on js, js vs other backends);
// KV-cache decoding equals the full forward; export -> reload is bit-identical; generation.

import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import * as q from '../ts/index.js';
import { exportHf } from '../ts/io/export-hf.js';
import { loadModel, unpermuteRotary } from '../ts/io/load-model.js';
import { generate } from '../ts/nn/generate.js';
import { KvCache, LlamaModel, PROJECTIONS } from '../ts/nn/llama.js';
import type { QuantLinear } from '../ts/nn/quant-linear.js';
import { gaussianArray } from '../ts/tensor.js';
import { perplexity, windowNll } from '../ts/eval/perplexity.js';
import { quantizeModel, rtnLayers } from '../ts/methods/quantize-model.js';

const FIXTURES = ['llama-tied', 'qwen2-untied'];
const dir = (name: string) => join('test/fixtures/tiny-llama', name);
const reference = (name: string) => JSON.parse(readFileSync(join(dir(name), 'reference.json'), 'utf8')) as { ids: number[]; logits: number[][]; hidden: number[][]; loss: number };
const available = q.backends().filter((b) => b.available).map((b) => b.name);

function onBackend<T>(name: string, fn: () => T): T {
  const prev = q.getBackend().name;
  q.setBackend(name);
  try { return fn(); } finally { q.setBackend(prev); }
}

function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  return worst;
}

const idsTensor = (ids: number[]) => q.tensor(Int32Array.from(ids), [1, ids.length], 'i32');

for (const name of FIXTURES) {
  for (const backend of available) {
    test(`${name} on ${backend}: logits, hidden states and loss match the numpy reference`, () => onBackend(backend, () => {
      const ref = reference(name);
      const { model } = loadModel(dir(name));
      const live = q.liveBuffers();
      q.tidy(() => {
        const ids = idsTensor(ref.ids);
        const logits = model.logits(ids).dataSync() as Float32Array;
        assert.ok(maxRelDiff(logits, ref.logits.flat()) < 2e-5, `logits differ by ${maxRelDiff(logits, ref.logits.flat())}`);
        const hidden = model.hidden(ids).dataSync() as Float32Array;
        assert.ok(maxRelDiff(hidden, ref.hidden.flat()) < 2e-5);
        const loss = (model.loss(ids).dataSync() as Float32Array)[0];
        assert.ok(Math.abs(loss - ref.loss) < 1e-5 * Math.max(1, ref.loss), `loss ${loss} vs ${ref.loss}`);
      });
      assert.equal(q.liveBuffers(), live, 'the forward passes leak no buffers');
      model.dispose();
    }));
  }
}

/** Loss and the gradient of every weight, on one backend. */
function lossAndGrads(backend: string, name: string): { loss: number; grads: Map<string, Float32Array> } {
  return onBackend(backend, () => {
    const { model } = loadModel(dir(name));
    const named = model.namedTensors();
    for (const [, t] of named) t.requireGrad();
    const loss = model.loss(idsTensor(reference(name).ids));
    q.backward(loss);
    const grads = new Map(named.map(([n, t]) => [n, t.grad!.dataSync().slice() as Float32Array]));
    const value = (loss.dataSync() as Float32Array)[0];
    loss.dispose();
    model.dispose();
    return { loss: value, grads };
  });
}

test('backward through the whole model matches central differences (js, f32)', () => {
  onBackend('js', () => {
    const name = 'qwen2-untied';
    const { grads } = lossAndGrads('js', name);
    const ids = reference(name).ids;
    const { model } = loadModel(dir(name));
    // perturb a few entries of tensors from every kind of parameter, through a host copy of each
    const probes: [string, number][] = [
      ['model.embed_tokens.weight', ids[3] * 32 + 5], ['model.layers.0.self_attn.q_proj.weight', 17], ['model.layers.0.self_attn.k_proj.bias', 3],
      ['model.layers.1.self_attn.v_proj.weight', 40], ['model.layers.1.mlp.down_proj.weight', 100], ['model.layers.0.input_layernorm.weight', 7],
      ['model.norm.weight', 11], ['lm_head.weight', 50],
    ];
    // rebuild the model from host copies of its weights with one entry moved by ±eps
    const values = new Map(model.namedTensors().map(([n, t]) => [n, t.dataSync().slice() as Float32Array]));
    const lossWith = (name: string, i: number, delta: number): number => {
      const m = LlamaModel.fromWeights(model.config, {
        has: (n) => values.has(n),
        read: (n) => { const v = values.get(n)!.slice(); if (n === name) v[i] += delta; return v; },
      });
      const l = q.noGrad(() => q.tidy(() => (m.loss(idsTensor(ids)).dataSync() as Float32Array)[0]));
      m.dispose();
      return l;
    };
    for (const [n, i] of probes) {
      const eps = 1e-2;
      const numeric = (lossWith(n, i, eps) - lossWith(n, i, -eps)) / (2 * eps);
      const analytic = grads.get(n)![i];
      assert.ok(Math.abs(numeric - analytic) < 2e-3 + 2e-2 * Math.abs(numeric), `${n}[${i}]: analytic ${analytic} vs numeric ${numeric}`);
    }
    model.dispose();
  });
});

for (const backend of available.filter((b) => b !== 'js')) {
  test(`gradients of every weight on ${backend} equal the js reference`, () => {
    for (const name of FIXTURES) {
      const ref = lossAndGrads('js', name);
      const got = lossAndGrads(backend, name);
      assert.ok(Math.abs(got.loss - ref.loss) < 1e-5);
      for (const [n, g] of ref.grads) {
        const d = maxRelDiff(got.grads.get(n)!, g);
        assert.ok(d < 1e-4, `${name} ${n}: ${d}`);
      }
    }
  });
}

for (const backend of available) {
  test(`decoding with the KV cache gives the logits of the full forward on ${backend}, across the storage's growth`, () => onBackend(backend, () => {
    const ref = reference('llama-tied');
    const { model } = loadModel(dir('llama-tied'));
    const full = q.tidy(() => model.logits(idsTensor(ref.ids)).dataSync() as Float32Array);
    const live = q.liveBuffers();
    // room for 3 positions at first: the prompt of 5 takes 5, then 10, 20 as the tokens come
    const cache = new KvCache({ capacity: 3 });
    const V = model.config.vocabSize;
    const first = q.tidy(() => model.logits(idsTensor(ref.ids.slice(0, 5)), cache).dataSync() as Float32Array);
    assert.ok(maxRelDiff(first, full.subarray(0, 5 * V)) < 2e-5, `prompt: ${maxRelDiff(first, full.subarray(0, 5 * V))}`);
    assert.equal(cache.capacity, 5);
    const caps = new Set<number>();
    for (let t = 5; t < ref.ids.length; t++) {
      const step = q.tidy(() => model.logits(idsTensor([ref.ids[t]]), cache).dataSync() as Float32Array);
      assert.ok(maxRelDiff(step, full.subarray(t * V, (t + 1) * V)) < 2e-5, `position ${t}: ${maxRelDiff(step, full.subarray(t * V, (t + 1) * V))}`);
      caps.add(cache.capacity);
    }
    assert.ok(ref.ids.length > 10, 'the fixture crosses two doublings');
    assert.deepEqual([...caps].slice(0, 2), [10, 20]);
    assert.equal(cache.length, ref.ids.length);
    cache.dispose();
    assert.equal(q.liveBuffers(), live, 'the cache frees its storage and masks');
    model.dispose();
  }));
}

for (const backend of available) {
  test(`a quantized model, plain and with LoRA adapters, decodes with the KV cache to the logits of its full forward on ${backend} (q/k/v and gate/up in one kernel each where the backend has it)`, () => onBackend(backend, () => {
    for (const rank of [0, 4]) decodesAsFull(rank);
  }));
}

/** A quantized qwen2 fixture (with LoRA adapters of `rank` with random A and B where rank > 0):
 *  its decoding's logits against its full forward's. */
function decodesAsFull(rank: number): void {
  {
    const ref = reference('qwen2-untied');
    const { model } = loadModel(dir('qwen2-untied'));
    const qm = quantizeModel(model, rtnLayers({ format: q.formats.int(4, { group: 32 }), lora: rank ? { rank } : undefined }));
    let seed = 500;
    if (rank) {
      for (const b of qm.blocks) {
        for (const key of Object.keys(PROJECTIONS) as (keyof typeof PROJECTIONS)[]) {
          const l = b[key] as QuantLinear;
          const old = l.lora!;
          l.lora = new q.Lora(q.tensor(gaussianArray(rank * l.inFeatures, seed++, 0.3), [rank, l.inFeatures]), q.tensor(gaussianArray(l.outFeatures * rank, seed++, 0.3), [l.outFeatures, rank]), { alpha: 8 });
          old.dispose();
        }
      }
    }
    const full = q.noGrad(() => q.tidy(() => qm.logits(idsTensor(ref.ids)).dataSync() as Float32Array));
    const cache = new KvCache();
    const V = qm.config.vocabSize;
    q.noGrad(() => q.tidy(() => qm.logits(idsTensor(ref.ids.slice(0, 4)), cache).dispose()));
    for (let t = 4; t < ref.ids.length; t++) {
      const step = q.noGrad(() => q.tidy(() => qm.logits(idsTensor([ref.ids[t]]), cache).dataSync() as Float32Array));
      // (1e-4: the GPU's GEMV decodes INT codes through the x sums, which can lose a few low bits
      // against the full forward's tiled kernel: 2.8e-5 here with or without the fused kernels)
      assert.ok(maxRelDiff(step, full.subarray(t * V, (t + 1) * V)) < 1e-4, `position ${t}: ${maxRelDiff(step, full.subarray(t * V, (t + 1) * V))}`);
    }
    cache.dispose();
    qm.dispose();
    model.dispose();
  }
}

test('the KV cache refuses keys that require grad (it writes in place: no gradient would reach them) and keys of another shape', () => {
  const cache = new KvCache();
  const k = q.zeros([1, 2, 1, 4]);
  cache.extend(0, k, k);
  assert.throws(() => cache.extend(0, q.zeros([1, 3, 1, 4]), q.zeros([1, 3, 1, 4])), (e: Error) => e instanceof q.ShapeError && /layer 0 holds \[1, 2, 64, 4\], extended with \[1, 3, 1, 4\]/.test(e.message));
  const g = q.zeros([1, 2, 1, 4]).requireGrad();
  assert.throws(() => cache.extend(1, g, g), (e: Error) => e instanceof q.ValueError && /noGrad/.test(e.message));
  q.noGrad(() => cache.extend(1, g, g));
  assert.equal(cache.length, 1);
  assert.throws(() => new KvCache({ capacity: 0 }), (e: Error) => e instanceof q.ValueError && /capacity/.test(e.message));
  cache.dispose();
});

async function collect(model: LlamaModel, prompt: number[], opts: Parameters<typeof generate>[2]): Promise<number[]> {
  const out: number[] = [];
  for await (const id of generate(model, prompt, opts)) out.push(id);
  return out;
}

test('greedy generation picks the argmax of the full forward; sampling repeats with a seed', async () => {
  const { model } = loadModel(dir('llama-tied'));
  const live = q.liveBuffers();
  const prompt = [3, 14, 15, 9];
  const greedy = await collect(model, prompt, { maxTokens: 6, stop: [] });
  assert.equal(greedy.length, 6);
  // check each greedy token against an uncached forward of the growing sequence
  let seq = [...prompt];
  for (const id of greedy) {
    const logits = q.tidy(() => model.logits(idsTensor(seq)).dataSync() as Float32Array);
    const V = model.config.vocabSize;
    const last = logits.subarray((seq.length - 1) * V);
    assert.equal(id, last.indexOf(Math.max(...last)));
    seq = [...seq, id];
  }
  const a = await collect(model, prompt, { maxTokens: 8, temperature: 1.5, topK: 20, seed: 5, stop: [] });
  const b = await collect(model, prompt, { maxTokens: 8, temperature: 1.5, topK: 20, seed: 5, stop: [] });
  assert.deepEqual(a, b);
  assert.equal(q.liveBuffers(), live, 'generation frees its cache');
  model.dispose();
});

for (const backend of available) {
  test(`greedy generation on ${backend} stops at a stop id and after a break, freeing everything (a step decoded ahead is dropped)`, async () => {
    const prev = q.getBackend().name;
    q.setBackend(backend);
    try {
      const { model } = loadModel(dir('llama-tied'));
      const live = q.liveBuffers();
      const prompt = [3, 14, 15, 9];
      const all = await collect(model, prompt, { maxTokens: 12, stop: [] });
      assert.equal(all.length, 12);
      // stop at the first id that repeats in the greedy run, if any, else at the 5th
      const at = all.findIndex((id, i) => all.indexOf(id) < i);
      const stopAt = at > 0 ? at : 4;
      const stopped = await collect(model, prompt, { maxTokens: 12, stop: [all[stopAt]] });
      assert.deepEqual(stopped, all.slice(0, all.indexOf(all[stopAt]) + 1));
      const taken: number[] = [];
      for await (const id of generate(model, prompt, { maxTokens: 12, stop: [] })) if (taken.push(id) === 3) break;
      assert.deepEqual(taken, all.slice(0, 3));
      assert.deepEqual(await collect(model, prompt, { maxTokens: 1, stop: [] }), all.slice(0, 1));
      assert.deepEqual(await collect(model, prompt, { maxTokens: 0, stop: [] }), []);
      assert.equal(q.liveBuffers(), live, 'nothing left alive');
      model.dispose();
    } finally {
      q.setBackend(prev);
    }
  });
}

test('generation with LoRA adapters (parameters that require grad) records no gradient graph: the live buffers stay flat per token; perplexity with them frees everything', async () => {
  const { model } = loadModel(dir('llama-tied'));
  const qm = quantizeModel(model, rtnLayers({ format: q.formats.int(4, { group: 32 }), lora: { rank: 4 } }));
  const live = q.liveBuffers();
  // the buffers alive during generation do not grow with the tokens (a recorded graph kept every
  // step's activations and the whole key/value history: ~60 more per token here)
  const seen: number[] = [];
  let n = 0;
  // (25 tokens: at the 24th, a backend that decodes a step ahead still holds the 25th's step)
  for await (const _ of generate(qm, [3, 14, 15, 9], { maxTokens: 25, stop: [] })) if (++n % 8 === 0) seen.push(q.liveBuffers() - live);
  assert.equal(seen.length, 3);
  assert.ok(seen.every((v) => v === seen[0]), `live buffers every 8 tokens: ${seen.join(', ')}`);
  assert.equal(q.liveBuffers(), live, 'generation frees its cache');
  // a window's loss comes back as a plain value, not the root of a graph
  const ids = Int32Array.from({ length: 33 }, (_, i) => (i * 7) % model.config.vocabSize);
  const before = q.liveBuffers();
  const r = await perplexity(qm, ids, { seqlen: 16 });
  assert.ok(Number.isFinite(r.perplexity));
  assert.equal(q.liveBuffers(), before);
  qm.dispose();
  model.dispose();
});

test('export to a Hugging Face directory and reload: identical weights and logits', async () => {
  for (const name of FIXTURES) {
    const out = mkdtempSync(join(tmpdir(), 'quantlora-export-'));
    try {
      const { model } = loadModel(dir(name));
      await exportHf(model, out);
      const again = loadModel(out).model;
      assert.deepEqual(again.config, model.config);
      const ids = idsTensor(reference(name).ids);
      const a = q.tidy(() => model.logits(ids).dataSync() as Float32Array);
      const b = q.tidy(() => again.logits(ids).dataSync() as Float32Array);
      assert.deepEqual(b, a);
      model.dispose(); again.dispose(); ids.dispose();
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }
});

test('the GGUF rotary row permutation is undone exactly', () => {
  // llama.cpp's permute: reshape(heads, 2, D/2, cols).swapaxes(1, 2)
  const heads = 3, D = 8, cols = 5;
  const hf = Float32Array.from({ length: heads * D * cols }, (_, i) => i);
  const gguf = new Float32Array(hf.length);
  for (let h = 0; h < heads; h++) for (let j = 0; j < 2; j++) for (let i = 0; i < D / 2; i++) {
    const src = (h * D + j * (D / 2) + i) * cols;
    const dst = (h * D + 2 * i + j) * cols;
    gguf.set(hf.subarray(src, src + cols), dst);
  }
  assert.deepEqual(unpermuteRotary(gguf, heads, D, cols), hf);
});

test('config/weight mismatches are typed errors naming the file and tensor', () => {
  const bad = mkdtempSync(join(tmpdir(), 'quantlora-bad-'));
  try {
    const cfg = JSON.parse(readFileSync(join(dir('llama-tied'), 'config.json'), 'utf8'));
    copyFileSync(join(dir('llama-tied'), 'model.safetensors'), join(bad, 'model.safetensors'));
    writeFileSync(join(bad, 'config.json'), JSON.stringify({ ...cfg, intermediate_size: 50 }));
    assert.throws(() => loadModel(bad), (e: Error) => e instanceof q.FormatError && /gate_proj/.test(e.message) && /\[50, 32\]/.test(e.message) && e.message.includes(bad));
    writeFileSync(join(bad, 'config.json'), JSON.stringify({ ...cfg, num_hidden_layers: 3 }));
    assert.throws(() => loadModel(bad), (e: Error) => e instanceof q.FormatError && /model\.layers\.2\./.test(e.message));
    assert.throws(() => loadModel(join(bad, 'nope.gguf')), q.FormatError);
  } finally {
    rmSync(bad, { recursive: true, force: true });
  }
});

test('perplexity with windows computed ahead: the same per-window NLLs as one at a time, ordered; a bad window is named and nothing leaks', async () => {
  const { model } = loadModel('test/fixtures/tiny-llama/llama-tied');
  const ids = Int32Array.from({ length: 16 * 5 + 3 }, (_, i) => 3 + ((i * 11) % 40));
  const live = q.liveBuffers();
  const seen: number[] = [];
  const r = await q.perplexity(model, ids, { seqlen: 16, first: 1, onWindow: (done) => seen.push(done) });
  assert.equal(r.windows, 4);
  assert.deepEqual(seen, [1, 2, 3, 4]);
  for (let w = 0; w < 4; w++) assert.equal(r.windowNll[w], await windowNll(model, ids, 1 + w, 16), `window ${1 + w}`);
  assert.equal(q.liveBuffers(), live);
  const bad = ids.slice();
  bad[16 * 2 + 5] = 10 ** 6; // an id outside the vocabulary in window 2
  await assert.rejects(q.perplexity(model, bad, { seqlen: 16 }), (e: Error) => e instanceof q.ValueError && /id 1000000/.test(e.message));
  assert.equal(q.liveBuffers(), live, 'the window computed ahead is freed');
  model.dispose();
});

// Hugging Face config.json: real configs (SmolLM2-135M-Instruct, Mistral-7B v0.1/v0.3, Qwen2-0.5B)
// parse to the right LlamaConfig, defaults follow transformers, unsupported features are refused
// with a FormatError naming file, key and value, and toHfConfig round-trips.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { FormatError, ValueError } from '../ts/errors.js';
import { parseHfConfig, toHfConfig } from '../ts/io/hf-config.js';
import type { LlamaConfig, LlamaFamily } from '../ts/nn/config.js';

function fixture(name: string): Record<string, unknown> {
  return JSON.parse(readFileSync(new URL(`./fixtures/hf/${name}`, import.meta.url), 'utf8'));
}

test('SmolLM2-135M-Instruct', () => {
  assert.deepEqual(parseHfConfig(fixture('smollm2-135m-instruct.json')), {
    family: 'llama', vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numLayers: 30,
    numHeads: 9, numKvHeads: 3, headDim: 64, ropeTheta: 100000, rmsNormEps: 1e-5, maxPositions: 8192,
    tieWordEmbeddings: true, attentionBias: false, bosTokenId: 1, eosTokenId: 2,
  } satisfies LlamaConfig);
});

test('Mistral-7B v0.3 parses; v0.1 (sliding window 4096) is refused', () => {
  assert.deepEqual(parseHfConfig(fixture('mistral-7b-v0.3.json')), {
    family: 'mistral', vocabSize: 32768, hiddenSize: 4096, intermediateSize: 14336, numLayers: 32,
    numHeads: 32, numKvHeads: 8, headDim: 128, ropeTheta: 1e6, rmsNormEps: 1e-5, maxPositions: 32768,
    tieWordEmbeddings: false, attentionBias: false, bosTokenId: 1, eosTokenId: 2,
  } satisfies LlamaConfig);
  assert.throws(() => parseHfConfig(fixture('mistral-7b-v0.1.json'), 'mistral/config.json'), (e: unknown) =>
    e instanceof FormatError && /^mistral\/config\.json: "sliding_window" = 4096 .*not supported/.test(e.message));
});

test('Qwen2-0.5B: q/k/v biases, tied embeddings, sliding window off', () => {
  assert.deepEqual(parseHfConfig(fixture('qwen2-0.5b.json')), {
    family: 'qwen2', vocabSize: 151936, hiddenSize: 896, intermediateSize: 4864, numLayers: 24,
    numHeads: 14, numKvHeads: 2, headDim: 64, ropeTheta: 1e6, rmsNormEps: 1e-6, maxPositions: 131072,
    tieWordEmbeddings: true, attentionBias: true, bosTokenId: 151643, eosTokenId: 151643,
  } satisfies LlamaConfig);
});

const minimal = { vocab_size: 100, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4 };

test('defaults follow transformers; architectures stand in for model_type; eos lists give the first id', () => {
  assert.deepEqual(parseHfConfig({ model_type: 'llama', ...minimal }), {
    family: 'llama', vocabSize: 100, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4,
    numKvHeads: 4, headDim: 16, ropeTheta: 10000, rmsNormEps: 1e-6, maxPositions: 2048,
    tieWordEmbeddings: false, attentionBias: false,
  } satisfies LlamaConfig);
  assert.equal(parseHfConfig({ model_type: 'mistral', ...minimal }).maxPositions, 131072);
  assert.equal(parseHfConfig({ model_type: 'qwen2', ...minimal }).maxPositions, 32768);
  assert.equal(parseHfConfig({ architectures: ['Qwen2ForCausalLM'], ...minimal }).family, 'qwen2');
  assert.equal(parseHfConfig({ architectures: ['Foo', 'MistralForCausalLM'], ...minimal }).family, 'mistral');
  assert.equal(parseHfConfig({ model_type: 'llama', ...minimal, eos_token_id: [128001, 128009] }).eosTokenId, 128001);
  assert.equal(parseHfConfig({ model_type: 'llama', ...minimal, num_key_value_heads: null, head_dim: null }).numKvHeads, 4);
  assert.equal(parseHfConfig({ model_type: 'llama', ...minimal, attention_bias: true }).attentionBias, true);
  assert.equal(parseHfConfig({ model_type: 'llama', ...minimal, head_dim: 32 }).headDim, 32);
  assert.equal(parseHfConfig({ model_type: 'llama', ...minimal, rope_scaling: { rope_type: 'default' } }).ropeTheta, 10000);
  assert.equal(parseHfConfig({ model_type: 'llama', ...minimal, rope_parameters: { rope_type: 'default', rope_theta: 5e5 } }).ropeTheta, 5e5);
  // a window at least as long as the context changes nothing
  assert.equal(parseHfConfig({ model_type: 'mistral', ...minimal, max_position_embeddings: 4096, sliding_window: 4096 }).family, 'mistral');
  assert.equal(parseHfConfig({ model_type: 'qwen2', ...minimal, use_sliding_window: false, sliding_window: 16 }).family, 'qwen2');
});

test('bad configs are FormatErrors naming the file, the key and the value', () => {
  const smol = fixture('smollm2-135m-instruct.json');
  const qwen = fixture('qwen2-0.5b.json');
  const without = (o: Record<string, unknown>, k: string) => Object.fromEntries(Object.entries(o).filter(([key]) => key !== k));
  const cases: [string, unknown, RegExp][] = [
    ['not an object', [1, 2], /not a JSON object/],
    ['null', null, /not a JSON object/],
    ['missing hidden_size', without(smol, 'hidden_size'), /required key "hidden_size" is missing/],
    ['missing vocab_size', without(smol, 'vocab_size'), /"vocab_size" is missing/],
    ['missing num_hidden_layers', { ...smol, num_hidden_layers: null }, /"num_hidden_layers" is missing/],
    ['zero size', { ...smol, intermediate_size: 0 }, /"intermediate_size" = 0 must be a positive integer/],
    ['negative size', { ...smol, hidden_size: -576 }, /"hidden_size" = -576 must be a positive integer/],
    ['fraction', { ...smol, num_hidden_layers: 2.5 }, /"num_hidden_layers" = 2.5/],
    ['string size', { ...smol, vocab_size: '49152' }, /"vocab_size" = "49152"/],
    ['heads do not divide hidden', { ...smol, num_attention_heads: 7, num_key_value_heads: 7 }, /"num_attention_heads" = 7 does not divide hidden_size 576/],
    ['kv heads do not divide heads', { ...smol, num_key_value_heads: 2 }, /"num_key_value_heads" = 2 does not divide num_attention_heads 9/],
    ['odd head_dim', { ...smol, head_dim: 63 }, /head dimension 63 is odd/],
    ['rope_scaling linear', { ...smol, rope_scaling: { type: 'linear', factor: 2 } }, /"rope_scaling" = \{"type":"linear","factor":2\} is not supported/],
    ['rope_scaling llama3', { ...smol, rope_scaling: { rope_type: 'llama3', factor: 8 } }, /"rope_scaling" .*not supported/],
    ['rope_parameters yarn', { ...smol, rope_parameters: { rope_type: 'yarn' } }, /"rope_parameters" .*not supported/],
    ['rope_theta', { ...smol, rope_theta: -1 }, /"rope_theta" = -1 must be a positive number/],
    ['rms_norm_eps', { ...smol, rms_norm_eps: 0 }, /"rms_norm_eps" = 0/],
    ['tie flag', { ...smol, tie_word_embeddings: 'yes' }, /"tie_word_embeddings" = "yes" must be true or false/],
    ['hidden_act', { ...smol, hidden_act: 'gelu' }, /"hidden_act" = "gelu" is not supported/],
    ['mlp_bias', { ...smol, mlp_bias: true }, /"mlp_bias" = true is not supported/],
    ['unknown model_type', { ...smol, model_type: 'gemma' }, /"model_type" = "gemma" is not supported/],
    ['model_type not a string', { ...smol, model_type: 3 }, /"model_type" = 3/],
    ['unknown architecture', { ...without(smol, 'model_type'), architectures: ['GPT2LMHeadModel'] }, /"architectures" = \["GPT2LMHeadModel"\]/],
    ['qwen2 sliding window', { ...qwen, use_sliding_window: true, sliding_window: 4096 }, /"sliding_window" = 4096 is smaller than max_position_embeddings 131072/],
    ['mistral bad window', { model_type: 'mistral', ...minimal, sliding_window: 'big' }, /"sliding_window" = "big"/],
    ['eos string', { ...smol, eos_token_id: '2' }, /"eos_token_id" = "2"/],
    ['bos negative', { ...smol, bos_token_id: -1 }, /"bos_token_id" = -1/],
  ];
  for (const [what, json, msg] of cases) {
    assert.throws(() => parseHfConfig(json, 'hf/config.json'), (e: unknown) => {
      assert.ok(e instanceof FormatError, `${what}: ${String(e)}`);
      assert.match(e.message, /^hf\/config\.json: /, what);
      assert.match(e.message, msg, what);
      return true;
    }, what);
  }
});

test('toHfConfig writes what transformers needs to pick the class', () => {
  const smol = fixture('smollm2-135m-instruct.json');
  const out = toHfConfig(parseHfConfig(smol));
  for (const k of ['architectures', 'model_type', 'vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers',
    'num_attention_heads', 'num_key_value_heads', 'max_position_embeddings', 'rms_norm_eps', 'rope_theta',
    'tie_word_embeddings', 'attention_bias', 'hidden_act', 'bos_token_id', 'eos_token_id', 'use_cache']) {
    assert.deepEqual(out[k], smol[k], k);
  }
  assert.equal(out.torch_dtype, 'float32');
  assert.equal(out.head_dim, 64);
  assert.equal(out.rope_scaling, null);
  assert.deepEqual(toHfConfig(parseHfConfig(fixture('qwen2-0.5b.json'))).architectures, ['Qwen2ForCausalLM']);
  assert.equal(toHfConfig(parseHfConfig(fixture('qwen2-0.5b.json'))).use_sliding_window, false);
  assert.deepEqual(toHfConfig(parseHfConfig(fixture('mistral-7b-v0.3.json'))).architectures, ['MistralForCausalLM']);
  const qwen = parseHfConfig(fixture('qwen2-0.5b.json'));
  assert.throws(() => toHfConfig({ ...qwen, attentionBias: false }), ValueError);
  assert.throws(() => toHfConfig({ ...qwen, family: 'mistral' }), ValueError);
});

const configArb: fc.Arbitrary<LlamaConfig> = fc.record({
  family: fc.constantFrom<LlamaFamily>('llama', 'mistral', 'qwen2'),
  vocabSize: fc.integer({ min: 1, max: 300_000 }),
  intermediateSize: fc.integer({ min: 1, max: 50_000 }),
  numLayers: fc.integer({ min: 1, max: 100 }),
  numKvHeads: fc.integer({ min: 1, max: 16 }),
  groups: fc.integer({ min: 1, max: 8 }),
  halfHeadDim: fc.integer({ min: 1, max: 128 }),
  hiddenSize: fc.option(fc.integer({ min: 1, max: 10_000 })), // null: heads * headDim
  ropeTheta: fc.double({ min: 1, max: 1e7, noNaN: true }),
  rmsNormEps: fc.double({ min: 1e-12, max: 0.1, noNaN: true }),
  maxPositions: fc.integer({ min: 1, max: 1 << 20 }),
  tieWordEmbeddings: fc.boolean(),
  llamaBias: fc.boolean(),
  bosTokenId: fc.option(fc.nat({ max: 300_000 })),
  eosTokenId: fc.option(fc.nat({ max: 300_000 })),
}).map((r) => {
  const numHeads = r.numKvHeads * r.groups;
  const headDim = 2 * r.halfHeadDim;
  const cfg: LlamaConfig = {
    family: r.family, vocabSize: r.vocabSize, hiddenSize: r.hiddenSize ?? numHeads * headDim,
    intermediateSize: r.intermediateSize, numLayers: r.numLayers, numHeads, numKvHeads: r.numKvHeads, headDim,
    ropeTheta: r.ropeTheta, rmsNormEps: r.rmsNormEps, maxPositions: r.maxPositions, tieWordEmbeddings: r.tieWordEmbeddings,
    attentionBias: r.family === 'qwen2' || (r.family === 'llama' && r.llamaBias),
  };
  if (r.bosTokenId !== null) cfg.bosTokenId = r.bosTokenId;
  if (r.eosTokenId !== null) cfg.eosTokenId = r.eosTokenId;
  return cfg;
});

test('round trip: parseHfConfig(toHfConfig(c)) == c, through JSON text', () => {
  fc.assert(fc.property(configArb, (cfg) => {
    assert.deepEqual(parseHfConfig(JSON.parse(JSON.stringify(toHfConfig(cfg)))), cfg);
  }), { numRuns: 300 });
  for (const f of ['smollm2-135m-instruct.json', 'mistral-7b-v0.3.json', 'qwen2-0.5b.json']) {
    const cfg = parseHfConfig(fixture(f));
    assert.deepEqual(parseHfConfig(toHfConfig(cfg)), cfg, f);
  }
});

// The byte-level BPE tokenizer against two independent references:
//  - llama.cpp's tokenizer on the SmolLM2 GGUF vocab (ids recorded by scripts/tokenizer_fixture.py into
//    test/fixtures/tokenizer/smollm2-llamacpp.json), for the 'smollm' pre-tokenizer and the same vocab
//    re-tagged as gpt-2 / llama-bpe / qwen2 / default;
//  - the npm package @huggingface/tokenizers loading our exported tokenizer.json, on the whole
//    WikiText-2 test file and the fixture's tricky strings.
// Plus synthetic tokenizer.json cases for merge order, Split behaviors and the errors.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { FormatError, ValueError } from '../ts/errors.js';
import { readGguf } from '../ts/io/gguf.js';
import { BYTE_TO_CHAR } from '../ts/io/pretokenize.js';
import { Tokenizer } from '../ts/io/tokenizer.js';
import { testModelPath } from './model-file.js';

interface Case { pre: string; text: string; ids: number[] }
const fixture = JSON.parse(readFileSync(new URL('./fixtures/tokenizer/smollm2-llamacpp.json', import.meta.url), 'utf8')) as {
  llama_cpp_version: string; cases: Case[];
};
const WIKI = new URL('../../shared/data/wikitext-2-raw/wiki.test.raw', import.meta.url);
const modelPath = testModelPath();
const metadata = modelPath ? (readGguf(modelPath).metadata as Record<string, unknown>) : undefined;
const skipModel = modelPath ? false : 'the default model file is missing';

function firstDiff(ours: readonly number[], ref: readonly number[]): string {
  for (let i = 0; i < Math.max(ours.length, ref.length); i++)
    if (ours[i] !== ref[i]) return `first difference at ${i} of ${ours.length}/${ref.length}: ours ${ours.slice(i, i + 5)}, reference ${ref.slice(i, i + 5)}`;
  return 'equal';
}

function reference(tok: Tokenizer): (text: string) => number[] {
  const hf = new HfTokenizer(tok.toTokenizerJson(), tok.toTokenizerConfig());
  return (text) => Array.from(hf.encode(text).ids, Number);
}

const PRES = ['smollm', 'gpt-2', 'llama-bpe', 'qwen2', 'default'];

test('SmolLM2 GGUF: vocabulary, special ids and settings', { skip: skipModel }, () => {
  const tok = Tokenizer.fromGguf(metadata!, modelPath);
  assert.equal(tok.vocabSize, 49152);
  assert.equal(tok.bosId, 1);
  assert.equal(tok.eosId, 2);
  assert.equal(tok.idToToken(2), '<|im_end|>');
  assert.equal(tok.tokenToId('<|im_start|>'), 1);
  assert.deepEqual(tok.encode('<|im_start|>user'), [1, 4093]);
  assert.deepEqual(tok.encode('Hi', { addBos: true }), [1, tok.tokenToId('Hi')]);
  assert.notEqual(tok.encode('<|im_start|>', { special: false })[0], 1);
  assert.equal(tok.decode([1, 4093, 2], { skipSpecial: true }), 'user');
  const cfg = tok.toTokenizerConfig();
  assert.equal(cfg.eos_token, '<|im_end|>');
  assert.equal(cfg.add_bos_token, false);
  assert.equal(cfg.model_max_length, 8192);
  assert.match(String(cfg.chat_template), /im_start/);
  // add_bos on: exported as a TemplateProcessing post-processor, which HF applies and we read back
  const withBos = Tokenizer.fromGguf({ ...metadata!, 'tokenizer.ggml.add_bos_token': true }, modelPath);
  assert.deepEqual(withBos.encode('Hi'), [1, tok.tokenToId('Hi')]);
  assert.deepEqual(reference(withBos)('Hi'), withBos.encode('Hi'));
  const back = Tokenizer.fromTokenizerJson(withBos.toTokenizerJson(), withBos.toTokenizerConfig());
  assert.equal(back.addBos, true);
  assert.deepEqual(back.encode('Hi'), withBos.encode('Hi'));
});

for (const pre of PRES) {
  test(`GGUF tokenizer (pre '${pre}') equals llama.cpp ${fixture.llama_cpp_version}`, { skip: skipModel }, () => {
    const tok = Tokenizer.fromGguf({ ...metadata!, 'tokenizer.ggml.pre': pre }, modelPath);
    const cases = fixture.cases.filter((c) => c.pre === pre);
    assert.ok(cases.length > 20);
    for (const c of cases) {
      const ids = tok.encode(c.text, { addBos: false, special: true });
      assert.deepEqual(ids, c.ids, `${JSON.stringify(c.text.slice(0, 60))}: ${firstDiff(ids, c.ids)}`);
      assert.equal(tok.decode(ids), c.text);
    }
  });

  test(`exported tokenizer.json (pre '${pre}') encodes as @huggingface/tokenizers does`, { skip: skipModel }, () => {
    const tok = Tokenizer.fromGguf({ ...metadata!, 'tokenizer.ggml.pre': pre }, modelPath);
    const ref = reference(tok);
    const again = Tokenizer.fromTokenizerJson(tok.toTokenizerJson(), tok.toTokenizerConfig(), `${pre} export`);
    for (const c of fixture.cases.filter((k) => k.pre === 'smollm')) {
      const ids = tok.encode(c.text);
      assert.deepEqual(ids, ref(c.text), `${JSON.stringify(c.text.slice(0, 60))}: ${firstDiff(ids, ref(c.text))}`);
      assert.deepEqual(again.encode(c.text), ids);
    }
  });
}

test('whole WikiText-2 test file: @huggingface/tokenizers ids, round trip, speed', { skip: skipModel || (!existsSync(WIKI) && 'wiki.test.raw is missing') }, () => {
  const text = readFileSync(WIKI, 'utf8');
  const tok = Tokenizer.fromGguf(metadata!, modelPath);
  const t0 = performance.now();
  const ids = tok.encode(text);
  const seconds = (performance.now() - t0) / 1000;
  console.log(`# encoded ${text.length} chars to ${ids.length} tokens in ${seconds.toFixed(2)} s (${Math.round(ids.length / seconds)} tokens/s)`);
  assert.ok(seconds < 10, `encoding took ${seconds} s`);
  const ref = reference(tok)(text);
  assert.deepEqual(ids, ref, firstDiff(ids, ref));
  assert.equal(tok.decode(ids), text);
  // as SmolLM2's own tokenizer.json writes the digit split: Digits(individual_digits), i.e. \p{N} in Rust
  const json = JSON.parse(JSON.stringify(tok.toTokenizerJson())) as { pre_tokenizer: { pretokenizers: unknown[] } };
  json.pre_tokenizer.pretokenizers[0] = { type: 'Digits', individual_digits: true };
  const again = Tokenizer.fromTokenizerJson(json, tok.toTokenizerConfig());
  assert.deepEqual(again.encode(text), ids);
});

// ---- synthetic tokenizers ----------------------------------------------------------------------

/** A byte-level BPE tokenizer.json over the 256 byte symbols plus the given merges. */
function tinyJson(merges: string[], pre: unknown = { type: 'ByteLevel', add_prefix_space: false, use_regex: true }): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  BYTE_TO_CHAR.forEach((c, i) => { vocab[c] = i; });
  for (const m of merges) { const [a, b] = m.split(' '); if (!(a + b in vocab)) vocab[a + b] = Object.keys(vocab).length; }
  vocab['<eos>'] = Object.keys(vocab).length;
  return {
    added_tokens: [{ id: vocab['<eos>'], content: '<eos>', special: true, lstrip: false, rstrip: false, single_word: false, normalized: false }],
    normalizer: null, pre_tokenizer: pre, decoder: { type: 'ByteLevel' }, post_processor: null,
    model: { type: 'BPE', vocab, merges },
  };
}

test('merges apply by rank, leftmost first on ties', () => {
  const tok = Tokenizer.fromTokenizerJson(tinyJson(['b c', 'a b', 'a a', 'aa a']));
  const pieces = (s: string) => tok.encode(s).map((id) => tok.idToToken(id));
  assert.deepEqual(pieces('abc'), ['a', 'bc']);
  assert.deepEqual(pieces('aaaa'), ['aa', 'aa']);
  assert.deepEqual(pieces('aaa'), ['aaa']);
  assert.deepEqual(pieces('ab<eos>ab'), ['ab', '<eos>', 'ab']);
  assert.equal(tok.decode(tok.encode('€ ok ')), '€ ok ');
  assert.equal(tok.decode([0xe2]), '\ufffd'); // id b is byte b here: a lone lead byte
});

test('NFC normalizer and user-defined (non-special) added tokens', () => {
  const j = tinyJson([]); // id b is byte b: e + U+0301 is 65 CC 81, é is C3 A9
  const nfc = Tokenizer.fromTokenizerJson({ ...j, normalizer: { type: 'NFC' } });
  assert.deepEqual(nfc.encode('e\u0301'), [0xc3, 0xa9]);
  assert.deepEqual(Tokenizer.fromTokenizerJson(j).encode('e\u0301'), [0x65, 0xcc, 0x81]);
  const vocab = j.model as { vocab: Record<string, number> };
  const id = Object.keys(vocab.vocab).length;
  const user = Tokenizer.fromTokenizerJson({ ...j, model: { ...vocab, vocab: { ...vocab.vocab, '<u>': id } }, added_tokens: [{ id, content: '<u>', special: false }] });
  assert.deepEqual(user.encode('a<u>', { special: false }), [0x61, id]); // matched even with special off
  assert.equal(user.decode([0x61, id], { skipSpecial: true }), 'a<u>');
});

test('Split behaviors and Digits', () => {
  const split = (behavior: string, invert = false) => Tokenizer.fromTokenizerJson(tinyJson([], {
    type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { String: '-' }, behavior, invert }, { type: 'ByteLevel', add_prefix_space: false, use_regex: false }],
  }));
  const ids = (t: Tokenizer, s: string) => t.encode(s).length;
  // no merges: one token per byte whatever the split, except that Removed drops the '-'
  assert.equal(ids(split('Removed'), 'a-b--c'), 3);
  for (const b of ['Isolated', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous']) assert.equal(ids(split(b), 'a-b--c'), 6);
  assert.equal(ids(split('Removed', true), 'a-b--c'), 3);
  const digits = Tokenizer.fromTokenizerJson(tinyJson(['1 2', 'a 1'], { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true }, { type: 'ByteLevel', use_regex: true }] }));
  assert.equal(digits.encode('12').length, 2);
  const runs = Tokenizer.fromTokenizerJson(tinyJson(['1 2'], { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: false }, { type: 'ByteLevel', use_regex: false }] }));
  assert.equal(runs.encode('12').length, 1);
});

test('unsupported or broken input is a FormatError naming the source and problem', () => {
  const bad = (j: unknown, re: RegExp) => assert.throws(() => Tokenizer.fromTokenizerJson(j, undefined, 'my.json'), (e: Error) => e instanceof FormatError && /my\.json/.test(e.message) && re.test(e.message));
  bad({ ...tinyJson([]), normalizer: { type: 'Lowercase' } }, /normalizer 'Lowercase'/);
  bad({ ...tinyJson([]), pre_tokenizer: { type: 'Metaspace' } }, /pre-tokenizer type 'Metaspace'/);
  bad({ ...tinyJson([]), model: { type: 'Unigram', vocab: [] } }, /model type 'Unigram'/);
  bad({ ...tinyJson([]), model: { type: 'BPE', vocab: {} } }, /merges is missing/);
  const j = tinyJson([]);
  bad({ ...j, model: { ...(j.model as object), merges: ['a zz'] } }, /unknown token 'zz'/);
  bad(tinyJson([], { type: 'Split', pattern: { Regex: 'a++' }, behavior: 'Isolated' }), /not supported/);
  const m = { 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': ['a'], 'tokenizer.ggml.merges': [] };
  assert.throws(() => Tokenizer.fromGguf({ ...m, 'tokenizer.ggml.pre': 'nope' }, 'x.gguf'), /x\.gguf: pre-tokenizer tokenizer\.ggml\.pre = 'nope'/);
  assert.throws(() => Tokenizer.fromGguf({ ...m, 'tokenizer.ggml.model': 'llama' }, 'x.gguf'), /tokenizer model 'llama'/);
  assert.throws(() => Tokenizer.fromGguf({ 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': ['a'] }, 'x.gguf'), /merges is missing/);
  assert.throws(() => Tokenizer.fromGguf({ ...m, 'tokenizer.ggml.merges': ['a b'] }, 'x.gguf'), /unknown token 'b'/);
  const tok = Tokenizer.fromTokenizerJson(tinyJson([]));
  assert.throws(() => tok.decode([tok.vocabSize]), ValueError);
  assert.throws(() => tok.decode([-1]), ValueError);
});

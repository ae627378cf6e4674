import { readFileSync, writeFileSync } from 'node:fs';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { readGguf } from './ts/io/gguf.js';
import { Tokenizer } from './ts/io/tokenizer.js';
const path = process.env.HOME + '/.cache/quantlora/models/SmolLM2-135M-Instruct.Q4_1.gguf';
let t0 = performance.now();
const md = readGguf(path).metadata as Record<string, unknown>;
console.log('gguf read', performance.now() - t0);
t0 = performance.now();
const tok = Tokenizer.fromGguf(md, path);
console.log('build', performance.now() - t0);
const text = readFileSync('/work/shared/data/wikitext-2-raw/wiki.test.raw', 'utf8');
for (let r = 0; r < 2; r++) {
  t0 = performance.now();
  const ids = tok.encode(text);
  const s = (performance.now() - t0) / 1000;
  console.log('encode', ids.length, s, ids.length / s);
}
const ids = tok.encode(text);
console.log('roundtrip', tok.decode(ids) === text);
for (const pre of ['smollm', 'gpt-2', 'llama-bpe', 'qwen2', 'default']) {
  const t = Tokenizer.fromGguf({ ...md, 'tokenizer.ggml.pre': pre }, path);
  writeFileSync(`/tmp/scratch/${pre}.json`, JSON.stringify(t.toTokenizerJson()));
  writeFileSync(`/tmp/scratch/${pre}_config.json`, JSON.stringify(t.toTokenizerConfig()));
  writeFileSync(`/tmp/scratch/${pre}_ids.json`, JSON.stringify(t.encode(text)));
}
t0 = performance.now();
const hf = new HfTokenizer(tok.toTokenizerJson(), tok.toTokenizerConfig());
console.log('hf build', performance.now() - t0);
t0 = performance.now();
const ref = hf.encode(text).ids;
console.log('hf encode', (performance.now() - t0) / 1000, ref.length);
let d = -1; for (let i = 0; i < Math.max(ref.length, ids.length); i++) if (ref[i] !== ids[i]) { d = i; break; }
console.log('first diff', d, ids.slice(d, d + 5), ref.slice(d, d + 5));

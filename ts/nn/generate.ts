// Text generation with a key/value cache: greedy (temperature 0) or sampled with temperature,
// top-k and top-p, from a seeded generator so a run can be repeated.

import { noGrad } from '../autograd.js';
import { ValueError } from '../errors.js';
import { slice } from '../ops/shape.js';
import { rng, tensor, tidy } from '../tensor.js';
import { KvCache, type LlamaModel } from './llama.js';

export interface GenerateOptions {
  maxTokens?: number;
  /** 0 (default) is greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  /** Generation stops after any of these ids (default: the model's eos). */
  stop?: number[];
}

/** Yields new token ids one at a time. */
export async function* generate(model: LlamaModel, prompt: readonly number[], opts: GenerateOptions = {}): AsyncGenerator<number> {
  const maxTokens = opts.maxTokens ?? 64;
  const temperature = opts.temperature ?? 0;
  if (!(temperature >= 0)) throw new ValueError(`generate: temperature must be >= 0, got ${temperature}`);
  if (prompt.length === 0) throw new ValueError('generate: the prompt has no tokens');
  const stop = new Set(opts.stop ?? (model.config.eosTokenId !== undefined ? [model.config.eosTokenId] : []));
  const random = rng(opts.seed ?? 0);
  const cache = new KvCache();
  try {
    let input: readonly number[] = prompt;
    for (let n = 0; n < maxTokens; n++) {
      // the head (a [vocab, hidden] matmul: the biggest of a small model's) on the last position
      // only; no gradient graph (LoRA parameters require grad: recorded, every step's
      // activations and the whole key/value history would stay alive until generation ends)
      const last = noGrad(() => tidy(() => {
        const h = model.hidden(tensor(Int32Array.from(input), [1, input.length], 'i32'), cache);
        return model.head(slice(h, [0, input.length - 1, 0], [1, 1, -1]));
      }));
      const row = (await last.data()) as Float32Array;
      last.dispose();
      const next = temperature === 0 ? argmax(row) : sample(row, temperature, opts.topK, opts.topP, random);
      yield next;
      if (stop.has(next)) return;
      input = [next];
    }
  } finally {
    cache.dispose();
  }
}

export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** Draws from softmax(row / temperature) restricted to the top-k and the top-p nucleus. */
export function sample(row: ArrayLike<number>, temperature: number, topK = 0, topP = 1, random: () => number = Math.random): number {
  let ids = Array.from({ length: row.length }, (_, i) => i).sort((a, b) => row[b] - row[a]);
  if (topK > 0) ids = ids.slice(0, topK);
  const top = row[ids[0]];
  let probs = ids.map((i) => Math.exp((row[i] - top) / temperature));
  let total = probs.reduce((a, b) => a + b, 0);
  if (topP < 1) {
    let acc = 0;
    let keep = 0;
    while (keep < probs.length && acc < topP * total) acc += probs[keep++];
    ids = ids.slice(0, Math.max(keep, 1));
    probs = probs.slice(0, ids.length);
    total = probs.reduce((a, b) => a + b, 0);
  }
  let r = random() * total;
  for (let i = 0; i < ids.length; i++) {
    r -= probs[i];
    if (r <= 0) return ids[i];
  }
  return ids[ids.length - 1];
}

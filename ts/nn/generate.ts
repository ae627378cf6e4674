// Text generation with a key/value cache: greedy (temperature 0) or sampled with temperature,
// top-k and top-p, from a seeded generator so a run can be repeated.

import { noGrad } from '../autograd.js';
import { ValueError } from '../errors.js';
import { argmaxRows } from '../ops/reduce.js';
import { reshape, slice } from '../ops/shape.js';
import { rng, tensor, tidy, type Tensor } from '../tensor.js';
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
  if (temperature === 0) {
    yield* greedy(model, prompt, maxTokens, stop);
    return;
  }
  const random = rng(opts.seed ?? 0);
  const cache = new KvCache();
  try {
    let input: readonly number[] = prompt;
    for (let n = 0; n < maxTokens; n++) {
      const last = noGrad(() => tidy(() => lastLogits(model, tensor(Int32Array.from(input), [1, input.length], 'i32'), cache)));
      const row = (await last.data()) as Float32Array;
      last.dispose();
      const next = sample(row, temperature, opts.topK, opts.topP, random);
      yield next;
      if (stop.has(next)) return;
      input = [next];
    }
  } finally {
    cache.dispose();
  }
}

/** The logits of the last position of ids [1, t] after the cache's positions: the head (a [vocab,
 *  hidden] matmul: the biggest of a small model's) on that position only. Called under noGrad: LoRA
 *  parameters require grad, and a recorded graph would keep every step's activations and the whole
 *  key/value history alive until generation ends. */
function lastLogits(model: LlamaModel, ids: Tensor, cache: KvCache): Tensor {
  const t = ids.shape[1];
  const h = model.hidden(ids, cache);
  return model.head(slice(h, [0, t - 1, 0], [1, 1, -1]));
}

/**
 * Greedy decoding: each step's token is the argmax of its logits, picked by argmaxRows on the
 * model's backend. Where that is a kernel (the GPU), the token id stays on the device and feeds the
 * next step directly, and the next step is recorded before this one's id is read (its read is
 * queued right behind the step): the GPU runs one step while the host records the next, instead of
 * waiting for the host at every token. After a stop id the step already recorded is dropped.
 */
async function* greedy(model: LlamaModel, prompt: readonly number[], maxTokens: number, stop: Set<number>): AsyncGenerator<number> {
  const cache = new KvCache();
  const ahead = !!model.embed.backend.argmaxRows;
  const step = (ids: Tensor): Tensor => noGrad(() => tidy(() => reshape(argmaxRows(lastLogits(model, ids, cache)), [1, 1])));
  const read = (t: Tensor) => {
    const p = t.data();
    p.catch(() => {}); // a read left behind by a stop or a break is not awaited
    return p;
  };
  let cur: Tensor | undefined;
  let next: Tensor | undefined;
  try {
    if (maxTokens <= 0) return;
    const ids = tensor(Int32Array.from(prompt), [1, prompt.length], 'i32');
    try {
      cur = step(ids);
    } finally {
      ids.dispose();
    }
    let reading = read(cur);
    for (let n = 0; n < maxTokens; n++) {
      const more = n + 1 < maxTokens;
      let nextRead: typeof reading | undefined;
      if (ahead && more) {
        next = step(cur);
        nextRead = read(next);
      }
      const id = ((await reading) as Int32Array)[0];
      yield id;
      if (stop.has(id) || !more) return;
      if (!next) {
        next = step(cur);
        nextRead = read(next);
      }
      cur.dispose();
      [cur, next, reading] = [next, undefined, nextRead!];
    }
  } finally {
    cur?.dispose();
    next?.dispose();
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

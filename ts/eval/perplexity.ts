// Perplexity the way the quantization papers measure it: tokenize the whole text once, cut it into
// non-overlapping windows of `seqlen` tokens (the remainder is dropped), score every position of
// each window but the first from its prefix inside the window, and report exp(mean token NLL).

import { ValueError } from '../errors.js';
import type { LlamaModel } from '../nn/llama.js';
import { tensor, tidy } from '../tensor.js';

export interface PerplexityOptions {
  seqlen: number;
  /** Evaluate at most `limit` windows. */
  limit?: number;
  /** Index of the first window to evaluate (to split one evaluation across processes). */
  first?: number;
  /** Called after every window with the running result. */
  onWindow?: (done: number, total: number, perplexity: number) => void;
}

export interface PerplexityResult {
  perplexity: number;
  /** Mean NLL per scored token (nats). */
  nll: number;
  seqlen: number;
  windows: number;
  /** Tokens scored: windows × (seqlen − 1). */
  scoredTokens: number;
  /** Tokens in the whole text. */
  totalTokens: number;
  /** Index of the first window evaluated. */
  first: number;
  /** Mean NLL of each window. */
  windowNll: number[];
}

export async function perplexity(model: LlamaModel, ids: Int32Array, opts: PerplexityOptions): Promise<PerplexityResult> {
  const { seqlen } = opts;
  if (!Number.isInteger(seqlen) || seqlen < 2) throw new ValueError(`perplexity: seqlen must be an integer >= 2, got ${seqlen}`);
  if (opts.limit !== undefined && !(Number.isInteger(opts.limit) && opts.limit > 0)) throw new ValueError(`perplexity: limit must be a positive integer, got ${opts.limit}`);
  const first = opts.first ?? 0;
  const total = Math.floor(ids.length / seqlen);
  if (!(Number.isInteger(first) && first >= 0 && first < total)) throw new ValueError(`perplexity: first window ${first} is outside the text's ${total} windows of ${seqlen} tokens`);
  const windows = Math.min(total - first, opts.limit ?? Infinity);
  const windowNll: number[] = [];
  let sum = 0;
  for (let w = 0; w < windows; w++) {
    const start = (first + w) * seqlen;
    const loss = tidy(() => model.loss(tensor(ids.subarray(start, start + seqlen), [1, seqlen], 'i32')));
    const nll = (await loss.data())[0];
    loss.dispose();
    if (!Number.isFinite(nll)) throw new ValueError(`perplexity: window ${first + w} has a non-finite loss (${nll})`);
    windowNll.push(nll);
    sum += nll;
    opts.onWindow?.(w + 1, windows, Math.exp(sum / (w + 1)));
  }
  const nll = sum / windows;
  return { perplexity: Math.exp(nll), nll, seqlen, first, windows, scoredTokens: windows * (seqlen - 1), totalTokens: ids.length, windowNll };
}

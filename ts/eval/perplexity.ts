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

/** Checks the options and returns the window range [first, first + windows) to evaluate. */
export function planWindows(tokens: number, opts: PerplexityOptions): { first: number; windows: number } {
  const { seqlen } = opts;
  if (!Number.isInteger(seqlen) || seqlen < 2) throw new ValueError(`perplexity: seqlen must be an integer >= 2, got ${seqlen}`);
  if (opts.limit !== undefined && !(Number.isInteger(opts.limit) && opts.limit > 0)) throw new ValueError(`perplexity: limit must be a positive integer, got ${opts.limit}`);
  const first = opts.first ?? 0;
  const total = Math.floor(tokens / seqlen);
  if (!(Number.isInteger(first) && first >= 0 && first < total)) throw new ValueError(`perplexity: first window ${first} is outside the text's ${total} windows of ${seqlen} tokens`);
  return { first, windows: Math.min(total - first, opts.limit ?? Infinity) };
}

/** The result from the NLLs of consecutive windows starting at `first`. */
export function summarize(windowNll: number[], seqlen: number, first: number, totalTokens: number): PerplexityResult {
  const nll = windowNll.reduce((a, b) => a + b, 0) / windowNll.length;
  return { perplexity: Math.exp(nll), nll, seqlen, first, windows: windowNll.length, scoredTokens: windowNll.length * (seqlen - 1), totalTokens, windowNll };
}

/** Perplexity on this thread's backend. */
export async function perplexity(model: LlamaModel, ids: Int32Array, opts: PerplexityOptions): Promise<PerplexityResult> {
  const { first, windows } = planWindows(ids.length, opts);
  const nlls: number[] = [];
  let sum = 0;
  for (let w = 0; w < windows; w++) {
    const nll = await windowNll(model, ids, first + w, opts.seqlen);
    nlls.push(nll);
    sum += nll;
    opts.onWindow?.(w + 1, windows, Math.exp(sum / (w + 1)));
  }
  return summarize(nlls, opts.seqlen, first, ids.length);
}

/** Mean NLL of window w (tokens w·seqlen .. (w+1)·seqlen − 1). */
export async function windowNll(model: LlamaModel, ids: Int32Array, w: number, seqlen: number): Promise<number> {
  const start = w * seqlen;
  const loss = tidy(() => model.loss(tensor(ids.subarray(start, start + seqlen), [1, seqlen], 'i32')));
  const nll = (await loss.data())[0];
  loss.dispose();
  if (!Number.isFinite(nll)) throw new ValueError(`perplexity: window ${w} has a non-finite loss (${nll})`);
  return nll;
}

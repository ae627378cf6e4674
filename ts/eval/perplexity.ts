// Perplexity the way the quantization papers measure it: tokenize the whole text once, cut it into
// non-overlapping windows of `seqlen` tokens (the remainder is dropped), score every position of
// each window but the first from its prefix inside the window, and report exp(mean token NLL).

import { ValueError } from '../errors.js';
import type { LlamaModel } from '../nn/llama.js';
import { noGrad } from '../autograd.js';
import { tensor, tidy, type Tensor } from '../tensor.js';

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

/** Windows whose loss is computed ahead of the one being read: an asynchronous backend (a GPU)
 *  runs window w while the host records window w + 1, instead of idling between them. */
const AHEAD = 1;

/** Perplexity on this thread's backend. */
export async function perplexity(model: LlamaModel, ids: Int32Array, opts: PerplexityOptions): Promise<PerplexityResult> {
  const { first, windows } = planWindows(ids.length, opts);
  const nlls: number[] = [];
  let sum = 0;
  const pending: { w: number; loss: Tensor; value: Promise<ArrayLike<number>> }[] = [];
  const take = async () => {
    const p = pending.shift()!;
    const nll = await finish(p.w, p.loss, p.value);
    nlls.push(nll);
    sum += nll;
    opts.onWindow?.(nlls.length, windows, Math.exp(sum / nlls.length));
  };
  try {
    for (let w = first; w < first + windows; w++) {
      const loss = windowLoss(model, ids, w, opts.seqlen);
      pending.push({ w, loss, value: loss.data() as Promise<ArrayLike<number>> });
      if (pending.length > AHEAD) await take();
    }
    while (pending.length) await take();
  } finally {
    for (const p of pending) {
      p.value.catch(() => {}); // its failure, if any, is not the one being reported
      p.loss.dispose();
    }
  }
  return summarize(nlls, opts.seqlen, first, ids.length);
}

/** The loss tensor of window w (tokens w·seqlen .. (w+1)·seqlen − 1), recorded, not read; with no
 *  gradient graph, which would keep the window's activations alive while the loss is read back. */
function windowLoss(model: LlamaModel, ids: Int32Array, w: number, seqlen: number): Tensor {
  const start = w * seqlen;
  return noGrad(() => tidy(() => model.loss(tensor(ids.subarray(start, start + seqlen), [1, seqlen], 'i32'))));
}

async function finish(w: number, loss: Tensor, value: Promise<ArrayLike<number>>): Promise<number> {
  let nll: number;
  try {
    nll = (await value)[0];
  } finally {
    loss.dispose();
  }
  if (!Number.isFinite(nll)) throw new ValueError(`perplexity: window ${w} has a non-finite loss (${nll})`);
  return nll;
}

/** Mean NLL of window w (tokens w·seqlen .. (w+1)·seqlen − 1). */
export async function windowNll(model: LlamaModel, ids: Int32Array, w: number, seqlen: number): Promise<number> {
  const loss = windowLoss(model, ids, w, seqlen);
  return finish(w, loss, loss.data() as Promise<ArrayLike<number>>);
}

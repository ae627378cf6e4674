// Perplexity over several worker threads, each with its own backend instance and copy of the
// model (the wasm kernels are single-threaded). Windows are dealt round-robin; the result is the
// same as the sequential evaluation's, window for window.

import { availableParallelism, totalmem } from 'node:os';
import { Worker } from 'node:worker_threads';
import { QuantloraError, ValueError } from '../errors.js';
import { planWindows, summarize, type PerplexityOptions, type PerplexityResult } from './perplexity.js';

/** Workers that fit: one per core, at most one per 2 GiB of memory (a model copy each). */
export function defaultJobs(): number {
  return Math.max(1, Math.min(availableParallelism(), Math.floor(totalmem() / 2 ** 31)));
}

export async function perplexityParallel(modelPath: string, ids: Int32Array, opts: PerplexityOptions & { jobs: number }): Promise<PerplexityResult> {
  const { first, windows } = planWindows(ids.length, opts);
  if (!(Number.isInteger(opts.jobs) && opts.jobs >= 1)) throw new ValueError(`perplexity: jobs must be a positive integer, got ${opts.jobs}`);
  const jobs = Math.min(opts.jobs, windows);
  const nlls = new Array<number>(windows);
  let done = 0;
  let sum = 0;
  // under tsx the sources run as .ts and the worker needs the same loader; the bundle ships .js
  const ts = import.meta.url.endsWith('.ts');
  const url = new URL(ts ? './eval-worker.ts' : './eval-worker.js', import.meta.url);
  const workers = Array.from({ length: jobs }, (_, j) => {
    const mine = Array.from({ length: Math.ceil((windows - j) / jobs) }, (_, i) => first + j + i * jobs);
    const workerData = { modelPath, ids, seqlen: opts.seqlen, windows: mine };
    if (!ts) return new Worker(url, { workerData });
    // development (tsx): register tsx's loader in the worker, then import the TypeScript worker
    const boot = `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(url.href)}); })`;
    return new Worker(boot, { eval: true, workerData });
  });
  try {
    await Promise.all(workers.map((worker) => new Promise<void>((resolve, reject) => {
      worker.on('message', (m: { window: number; nll: number }) => {
        nlls[m.window - first] = m.nll;
        sum += m.nll;
        done++;
        opts.onWindow?.(done, windows, Math.exp(sum / done));
      });
      worker.on('error', (e) => reject(e instanceof QuantloraError ? e : new QuantloraError(`perplexity worker failed: ${e.message}`)));
      worker.on('exit', (code) => (code === 0 ? resolve() : reject(new QuantloraError(`perplexity worker exited with code ${code}`))));
    })));
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
  return summarize(nlls, opts.seqlen, first, ids.length);
}

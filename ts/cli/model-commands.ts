// CLI commands over real models: fetch, eval (perplexity), generate, export.

import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { FormatError, ValueError } from '../errors.js';
import { defaultJobs, perplexityParallel } from '../eval/parallel.js';
import { perplexity, planWindows } from '../eval/perplexity.js';
import { exportHf } from '../io/export-hf.js';
import { fetchCalibration } from '../io/fetch-calibration.js';
import { fetchDefaultModel } from '../io/fetch-model.js';
import { loadModel, loadTokenizer, type LoadedModel } from '../io/load-model.js';
import type { Tokenizer } from '../io/tokenizer.js';
import { generate } from '../nn/generate.js';
import { getBackend } from '../registry.js';
import type { Args } from './args.js';
import { Progress } from './progress.js';

/** WikiText-2 raw test split, beside the repository (never committed). */
export const DEFAULT_EVAL_DATA = '../shared/data/wikitext-2-raw/wiki.test.raw';

const log = (line: string): void => { process.stderr.write(`${line}\n`); };

function modelPath(args: Args): string {
  return args.string('model') ?? process.env.QUANTLORA_MODEL ?? fetchDefaultModel(log);
}

/** Loads --model (or the default model) with its tokenizer, logging what was loaded. */
export function loadForCommand(args: Args): LoadedModel & { tokenizer: Tokenizer } {
  const loaded = loadAny(args);
  if (!loaded.tokenizer) throw new FormatError(`${loaded.path}: no tokenizer (a Hugging Face directory needs tokenizer.json)`);
  return loaded as LoadedModel & { tokenizer: Tokenizer };
}

function loadAny(args: Args): LoadedModel {
  const path = modelPath(args);
  const t0 = Date.now();
  const loaded = loadModel(path);
  const c = loaded.config;
  log(`loaded ${path} (${loaded.format}, ${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize}) in ${((Date.now() - t0) / 1000).toFixed(1)} s on backend ${getBackend().name}`);
  return loaded;
}

export async function fetchCommand(): Promise<number> {
  console.log(fetchDefaultModel(log));
  console.log(fetchCalibration(log));
  return 0;
}

export async function evalCommand(args: Args): Promise<number> {
  const seqlen = args.number('seqlen', { integer: true, min: 2 }) ?? 512;
  const limit = args.number('limit', { integer: true, min: 1 });
  const dataPath = resolve(args.string('data') ?? process.env.QUANTLORA_EVAL_DATA ?? DEFAULT_EVAL_DATA);
  if (!existsSync(dataPath)) throw new ValueError(`eval: data file ${dataPath} does not exist (pass --data FILE)`);
  // a backend that threads its own kernels (native) gets one worker; single-threaded ones one per core
  const threaded = Number(getBackend().info().details.threads ?? 1) > 1;
  const jobs = args.number('jobs', { integer: true, min: 1 }) ?? (threaded ? 1 : defaultJobs());
  const path = modelPath(args);
  const t0 = Date.now();
  const tokenizer = loadTokenizer(path);
  if (!tokenizer) throw new FormatError(`${path}: no tokenizer (a Hugging Face directory needs tokenizer.json)`);
  const ids = Int32Array.from(tokenizer.encode(readFileSync(dataPath, 'utf8'), { addBos: false }));
  log(`tokenized ${dataPath}: ${ids.length} tokens in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  let first: number | undefined;
  let count = limit;
  const range = args.string('windows');
  if (range !== undefined) {
    const m = /^(\d+):(\d+)$/.exec(range);
    if (!m || Number(m[1]) >= Number(m[2])) throw new ValueError(`eval: --windows must be START:END with START < END, got '${range}'`);
    first = Number(m[1]);
    count = Math.min(Number(m[2]) - first, limit ?? Infinity);
  }
  const totalWindows = Math.floor(ids.length / seqlen);
  const { windows } = planWindows(ids.length, { seqlen, first, limit: count });
  const workers = Math.min(jobs, windows);
  const bar = new Progress('eval', windows, args.has('quiet'));
  const onWindow = (done: number, _total: number, ppl: number): void => bar.update(done, `ppl ${ppl.toFixed(3)}`);
  const popts = { seqlen, first, limit: count, onWindow };
  const t1 = Date.now();
  let r;
  if (workers > 1) {
    log(`evaluating ${windows} windows in ${workers} worker threads on backend ${getBackend().name}`);
    r = await perplexityParallel(path, ids, { ...popts, jobs: workers });
  } else {
    const { model } = loadForCommand(args);
    r = await perplexity(model, ids, popts);
    model.dispose();
  }
  const seconds = (Date.now() - t1) / 1000;
  const result = {
    model: path, data: dataPath, backend: getBackend().name, jobs: workers, seqlen, first: r.first, windows: r.windows, totalWindows,
    totalTokens: r.totalTokens, scoredTokens: r.scoredTokens, nll: r.nll, perplexity: r.perplexity,
    seconds, tokensPerSecond: (r.windows * seqlen) / seconds, windowNll: r.windowNll,
  };
  if (args.has('json')) console.log(JSON.stringify(result));
  else console.log(`perplexity ${r.perplexity.toFixed(4)} (mean NLL ${r.nll.toFixed(5)}) over ${r.windows} windows of ${seqlen} tokens (${r.totalTokens} tokens in the text), ${result.tokensPerSecond.toFixed(0)} tokens/s on ${result.backend} × ${result.jobs}`);
  return 0;
}

export async function generateCommand(args: Args): Promise<number> {
  const prompt = args.string('prompt');
  if (prompt === undefined) throw new ValueError('generate: --prompt TEXT is required');
  const { model, tokenizer } = loadForCommand(args);
  const text = args.has('chat') ? `<|im_start|>user\n${prompt}<|im_end|>\n<|im_start|>assistant\n` : prompt;
  const ids = tokenizer.encode(text);
  const out: number[] = [];
  let printed = '';
  const stream = !args.has('json');
  for await (const id of generate(model, ids, {
    maxTokens: args.number('max-tokens', { integer: true, min: 1 }) ?? 64,
    temperature: args.number('temperature', { min: 0 }) ?? 0,
    topK: args.number('top-k', { integer: true, min: 0 }),
    topP: args.number('top-p', { min: 0, max: 1 }),
    seed: args.number('seed', { integer: true }),
  })) {
    out.push(id);
    const decoded = tokenizer.decode(out, { skipSpecial: true });
    // print only whole characters: a partial UTF-8 sequence decodes to U+FFFD at the end
    if (stream && !decoded.endsWith('\uFFFD')) {
      process.stdout.write(decoded.slice(printed.length));
      printed = decoded;
    }
  }
  const completion = tokenizer.decode(out, { skipSpecial: true });
  if (stream) process.stdout.write(`${completion.slice(printed.length)}\n`);
  else console.log(JSON.stringify({ prompt, promptIds: ids, ids: out, completion }));
  return 0;
}

export async function exportCommand(args: Args): Promise<number> {
  const outDir = args.string('out');
  if (!outDir) throw new ValueError('export: --out DIR is required');
  const dtype = (args.string('dtype') ?? 'f32').toUpperCase();
  if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') throw new ValueError(`export: --dtype must be f32, f16 or bf16, got '${dtype.toLowerCase()}'`);
  const { model, tokenizer } = loadAny(args);
  const files = await exportHf(model, outDir, { tokenizer, dtype });
  for (const f of files) console.log(f);
  return 0;
}

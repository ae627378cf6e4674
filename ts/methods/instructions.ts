// Instruction data for finetuning: JSON Lines of {"instruction", "input"?, "output"} (Alpaca) or
// {"prompt", "response"}, each rendered with the ChatML template SmolLM2-Instruct uses and scored
// only on the response: the prompt's positions get the label -100, which the loss skips.

import { FormatError, ValueError } from '../errors.js';
import type { Tokenizer } from '../io/tokenizer.js';
import { rng } from '../tensor.js';
import type { CalibrationSet } from './calibration.js';

export const IGNORE_LABEL = -100;

export interface InstructionExample {
  prompt: string;
  response: string;
}

/** The examples of a JSON Lines text; a bad line is a FormatError naming its line number. */
export function parseInstructions(jsonl: string, where = '<instructions>'): InstructionExample[] {
  const out: InstructionExample[] = [];
  jsonl.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let v: Record<string, unknown>;
    try {
      v = JSON.parse(line) as Record<string, unknown>;
    } catch (e) {
      throw new FormatError(`${where}:${i + 1}: not JSON (${(e as Error).message})`);
    }
    const str = (k: string) => (typeof v[k] === 'string' ? (v[k] as string) : undefined);
    const prompt = str('prompt') ?? (str('instruction') !== undefined ? [str('instruction'), str('input')].filter((s) => s).join('\n\n') : undefined);
    const response = str('response') ?? str('output');
    if (prompt === undefined || response === undefined) {
      throw new FormatError(`${where}:${i + 1}: expected {"instruction", "input"?, "output"} or {"prompt", "response"} strings, got keys ${Object.keys(v ?? {}).join(', ')}`);
    }
    out.push({ prompt, response });
  });
  if (!out.length) throw new FormatError(`${where}: no examples`);
  return out;
}

/** Token ids of one example and its labels (the prompt masked), at most maxTokens long. */
export function encodeExample(tok: Tokenizer, ex: InstructionExample, maxTokens: number): { ids: Int32Array; labels: Int32Array } {
  const prompt = tok.encode(`<|im_start|>user\n${ex.prompt}<|im_end|>\n<|im_start|>assistant\n`);
  const response = tok.encode(`${ex.response}<|im_end|>\n`);
  const ids = Int32Array.from([...prompt, ...response].slice(0, maxTokens));
  const labels = Int32Array.from(ids, (id, i) => (i < prompt.length ? IGNORE_LABEL : id));
  return { ids, labels };
}

/** Examples as a training set: seeded shuffle, the last `validation` held out; labels attached. */
export function instructionSet(tok: Tokenizer, examples: InstructionExample[], opts: { validation?: number; maxTokens?: number; seed?: number } = {}): CalibrationSet {
  const maxTokens = opts.maxTokens ?? 512;
  const nval = opts.validation ?? 0;
  if (examples.length <= nval) throw new ValueError(`instructions: ${examples.length} examples leave none for training with ${nval} held out`);
  const next = rng(opts.seed ?? 0);
  const order = examples.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) { const j = Math.floor(next() * (i + 1)); [order[i], order[j]] = [order[j], order[i]]; }
  const labels = new Map<Int32Array, Int32Array>();
  const enc = order.map((i) => { const e = encodeExample(tok, examples[i], maxTokens); labels.set(e.ids, e.labels); return e.ids; })
    .filter((ids) => ids.length >= 2 && labels.get(ids)!.some((l, i) => i > 0 && l !== IGNORE_LABEL));
  if (enc.length <= nval) throw new ValueError(`instructions: only ${enc.length} examples keep a response within ${maxTokens} tokens`);
  return { seqlen: maxTokens, train: enc.slice(0, enc.length - nval), validation: enc.slice(enc.length - nval), labels };
}

// `quantlora quantize`: one method on a model, from flags, written out as quantlora's packed model
// (reloads bit-identically), PEFT adapters and optionally the merged Hugging Face model; with
// --eval N, the WikiText-2 perplexity of the result on N windows.

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ValueError } from '../errors.js';
import { perplexity } from '../eval/perplexity.js';
import { exportPeft } from '../io/adapters.js';
import { exportHf } from '../io/export-hf.js';
import { fetchCalibration } from '../io/fetch-calibration.js';
import { savePacked } from '../io/packed.js';
import { calibrationWindows } from '../methods/calibration.js';
import { instructionSet, parseInstructions } from '../methods/instructions.js';
import { INIT_KINDS, methodName, runMethod, type InitKind, type MethodSpec } from '../methods/pipeline.js';
import { formats } from '../quant/formats.js';
import type { Args } from './args.js';
import { DEFAULT_EVAL_DATA, loadForCommand } from './model-commands.js';

const log = (line: string): void => { process.stderr.write(`${line}\n`); };

/** The method a command line describes (exported for tests). */
export function specFromArgs(args: Args): MethodSpec {
  const kind = args.string('format') ?? 'nf';
  if (kind !== 'nf' && kind !== 'int') throw new ValueError(`--format must be nf or int, got '${kind}'`);
  const bits = args.number('bits', { integer: true, min: 2, max: 4 }) ?? 4;
  const group = args.number('group', { integer: true, min: 1 }) ?? 64;
  const format = kind === 'nf'
    ? formats.nf(bits, { group, doubleQuant: !args.has('no-double-quant') })
    : formats.int(bits, { group, symmetric: args.has('symmetric') });
  const init = (args.string('init') ?? 'none') as InitKind;
  if (!INIT_KINDS.includes(init)) throw new ValueError(`--init must be one of ${INIT_KINDS.join(', ')}, got '${init}'`);
  const rilqSteps = args.number('rilq-steps', { integer: true, min: 1 });
  const ftSteps = args.number('finetune-steps', { integer: true, min: 1 });
  const lossKind = args.string('rilq-loss') ?? 'hidden';
  if (lossKind !== 'hidden' && lossKind !== 'logits') throw new ValueError(`--rilq-loss must be hidden or logits, got '${lossKind}'`);
  return {
    format,
    icq: args.has('icq'),
    init,
    rank: args.number('rank', { integer: true, min: 1 }) ?? 16,
    alpha: args.number('alpha', { min: 0 }),
    iec: args.has('iec'),
    loftqIters: args.number('loftq-iters', { integer: true, min: 1 }),
    apiq: { epochs: args.number('apiq-epochs', { integer: true, min: 1 }) ?? 2, checkpoint: args.string('checkpoint') && `${args.string('checkpoint')}.apiq` },
    rilq: rilqSteps ? {
      steps: rilqSteps, loss: lossKind, gtWeight: args.number('gt-weight', { min: 0, max: 1 }) ?? 0.5,
      lr: args.number('lr', { min: 0 }) ?? 1e-4, accumulate: args.number('accumulate', { integer: true, min: 1 }),
      checkpoint: args.string('checkpoint'), patience: args.number('patience', { integer: true, min: 1 }),
    } : undefined,
    finetune: ftSteps ? { steps: ftSteps, lr: args.number('lr', { min: 0 }) ?? 2e-4, schedule: 'cosine', clip: 1, checkpoint: args.string('checkpoint') } : undefined,
    seed: args.number('seed', { integer: true }) ?? 1,
  };
}

export async function quantizeCommand(args: Args): Promise<number> {
  const spec = specFromArgs(args);
  const out = args.string('out');
  if (!out) throw new ValueError('quantize: --out DIR is required (the packed model and adapters are written there)');
  const seqlen = args.number('calib-seqlen', { integer: true, min: 2 }) ?? 512;
  const count = args.number('calib-windows', { integer: true, min: 1 }) ?? 32;
  const { model: fp, tokenizer } = loadForCommand(args);
  const needsData = spec.init.startsWith('apiq') || spec.rilq || (spec.finetune && !args.string('finetune-data'));
  let data;
  if (needsData) {
    const calibPath = args.string('calib') ?? fetchCalibration(log);
    if (!existsSync(calibPath)) throw new ValueError(`quantize: calibration text ${calibPath} does not exist`);
    const ids = tokenizer.encode(readFileSync(calibPath, 'utf8').slice(0, (count + 8) * seqlen * 40));
    data = calibrationWindows(ids, { count, seqlen, validation: spec.rilq || spec.finetune ? Math.max(1, Math.floor(count / 8)) : 0, seed: spec.seed });
  }
  // finetuning data: --finetune-data FILE (.jsonl: instruction examples; otherwise plain text windows)
  const ftPath = args.string('finetune-data');
  let ftData;
  if (ftPath) {
    if (!existsSync(ftPath)) throw new ValueError(`quantize: finetuning data ${ftPath} does not exist`);
    const text = readFileSync(ftPath, 'utf8');
    ftData = ftPath.endsWith('.jsonl')
      ? instructionSet(tokenizer, parseInstructions(text, ftPath), { validation: Math.max(1, Math.floor(count / 8)), maxTokens: seqlen, seed: spec.seed })
      : calibrationWindows(tokenizer.encode(text), { count, seqlen, validation: Math.max(1, Math.floor(count / 8)), seed: spec.seed });
  }
  log(`quantize: ${methodName(spec)} (${spec.format.name}${spec.init !== 'none' ? `, rank ${spec.rank}` : ''})`);
  const { model, report } = runMethod(fp, spec, data, log, ftData);
  mkdirSync(out, { recursive: true });
  await savePacked(model, join(out, 'model.quantlora.safetensors'));
  if (spec.init !== 'none' || spec.rilq || spec.finetune) await exportPeft(model, join(out, 'adapter'), { baseModel: args.string('model') ?? 'HuggingFaceTB/SmolLM2-135M-Instruct' });
  if (args.has('merged')) await exportHf(model, join(out, 'merged'), { tokenizer });
  const evalWindows = args.number('eval', { integer: true, min: 1 });
  let ppl: number | undefined;
  if (evalWindows) {
    const dataPath = resolve(args.string('data') ?? process.env.QUANTLORA_EVAL_DATA ?? DEFAULT_EVAL_DATA);
    const r = await perplexity(model, Int32Array.from(tokenizer.encode(readFileSync(dataPath, 'utf8'))), { seqlen: 512, limit: evalWindows });
    ppl = r.perplexity;
    log(`quantize: WikiText-2 perplexity ${ppl.toFixed(3)} over ${r.windows} windows of 512`);
  }
  const summary = { method: methodName(spec), format: spec.format.name, out, perplexity: ppl, report };
  if (args.has('json')) console.log(JSON.stringify(summary, null, 2));
  else console.log(`${summary.method}: written to ${out}${ppl !== undefined ? `, perplexity ${ppl.toFixed(3)}` : ''} (${report.seconds.toFixed(1)} s)`);
  model.dispose();
  fp.dispose();
  return 0;
}

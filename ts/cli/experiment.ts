// `quantlora experiment`: reproduces the methods' results table from scratch. Loads the model,
// the evaluation text (WikiText-2 test) and the calibration text (State of the Union), runs every
// row of the preset (ts/methods/experiment.ts), and writes after each row (so an interrupted run
// resumes where it stopped): results/<name>.json, results/<name>.md, results/<name>.svg.
// Several processes can share one table: with --claims DIR each row is run by the process that
// claims it first (a file per row, created exclusively), each writing its own --out; --merge then
// joins their JSON files into one table without running anything.

import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ValueError } from '../errors.js';
import { perplexity } from '../eval/perplexity.js';
import { writeFileAtomic } from '../io/atomic.js';
import { fetchCalibration } from '../io/fetch-calibration.js';
import type { LlamaModel } from '../nn/llama.js';
import { getBackend } from '../registry.js';
import { dequantize } from '../quant/api.js';
import { codeEntropy } from '../quant/icq.js';
import { square, sub } from '../ops/arithmetic.js';
import { sum } from '../ops/reduce.js';
import { tidy } from '../tensor.js';
import { calibrationWindows } from '../methods/calibration.js';
import { experimentRows, markdownTable, PRESETS, rowCheckpoints, svgPlot, type Preset, type RowResult } from '../methods/experiment.js';
import { runMethod } from '../methods/pipeline.js';
import { quantLayers } from '../methods/quantize-model.js';
import type { Args } from './args.js';
import { DEFAULT_EVAL_DATA, loadForCommand } from './model-commands.js';

const log = (line: string): void => { process.stderr.write(`${line}\n`); };

/** Over every quantized layer of m: mean code entropy per block (bits) and the relative squared
 *  error of the dequantized weights against fp's, sum ||W - deq(Q)||² / sum ||W||². */
function quantStats(m: LlamaModel, fp: LlamaModel): { entropy: number; weightError: number } {
  let entropy = 0;
  let blocks = 0;
  let err = 0;
  let norm = 0;
  for (const { site, layer } of quantLayers(m)) {
    const e = codeEntropy(layer.weight);
    entropy += e.mean * e.perGroup.length;
    blocks += e.perGroup.length;
    const w = fp.blocks[site.block][site.key].dense().weight;
    tidy(() => {
      err += sum(square(sub(dequantize(layer.weight), w))).dataSync()[0];
      norm += sum(square(w)).dataSync()[0];
    });
  }
  return { entropy: entropy / blocks, weightError: err / norm };
}

interface TableDoc { preset: Preset; backend: string; model: unknown; evalData: string; calibData: string; date: string; rows: RowResult[] }

/** Writes NAME.json (rows in the preset's order), NAME.md and NAME.svg under outDir. */
function writeTable(outDir: string, name: string, p: Preset, meta: Omit<TableDoc, 'rows' | 'date' | 'preset'>, results: Map<string, RowResult>): void {
  const ordered = experimentRows(p).map((r) => results.get(r.key)).filter((r): r is RowResult => !!r);
  const doc: TableDoc = { preset: p, ...meta, date: new Date().toISOString(), rows: ordered };
  writeFileAtomic(join(outDir, `${name}.json`), JSON.stringify(doc, null, 1));
  writeFileAtomic(join(outDir, `${name}.md`), markdownTable(ordered, p));
  writeFileAtomic(join(outDir, `${name}.svg`), svgPlot(ordered, p));
}

function readTable(path: string, p: Preset): TableDoc {
  let doc: TableDoc;
  try {
    doc = JSON.parse(readFileSync(path, 'utf8')) as TableDoc;
  } catch (e) {
    throw new ValueError(`experiment: cannot read results ${path} (${(e as Error).message})`);
  }
  if (!doc || !Array.isArray(doc.rows)) throw new ValueError(`experiment: ${path} holds no rows`);
  if (doc.preset?.name !== p.name) throw new ValueError(`experiment: ${path} is preset '${doc.preset?.name}', not '${p.name}'`);
  return doc;
}

/** --merge: the rows of `files` (the first file to hold a row wins) added to outDir/NAME.json. */
function mergeTables(outDir: string, name: string, p: Preset, files: string[]): number {
  mkdirSync(outDir, { recursive: true });
  const target = join(outDir, `${name}.json`);
  const docs = [...(existsSync(target) ? [readTable(target, p)] : []), ...files.map((f) => readTable(resolve(f), p))];
  if (!docs.length) throw new ValueError('experiment: --merge names no results files');
  const results = new Map<string, RowResult>();
  for (const d of docs) for (const r of d.rows) if (!results.has(r.key)) results.set(r.key, r);
  const { backend, model, evalData, calibData } = docs[0];
  writeTable(outDir, name, p, { backend, model, evalData, calibData }, results);
  log(`experiment: ${results.size} rows merged from ${docs.length} files into ${target}`);
  return 0;
}

/** Claims a row for this process (true) unless another process has (false). */
function claim(dir: string | undefined, key: string): boolean {
  if (!dir) return true;
  try {
    closeSync(openSync(join(dir, key), 'wx'));
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
}

export async function experimentCommand(args: Args): Promise<number> {
  const presetName = args.string('preset') ?? 'small';
  const preset = PRESETS[presetName];
  if (!preset) throw new ValueError(`experiment: --preset must be one of ${Object.keys(PRESETS).join(', ')}, got '${presetName}'`);
  const p = { ...preset };
  const evalWindows = args.number('eval-windows', { integer: true, min: 1 });
  if (evalWindows) p.evalWindows = evalWindows;
  const name = args.string('name') ?? `issue6-${p.name}`;
  const outDir = resolve(args.string('out') ?? 'results');
  const only = args.string('only')?.split(',');
  const merge = args.string('merge');
  if (merge !== undefined) return mergeTables(outDir, name, p, merge.split(',').filter(Boolean));
  const claims = args.string('claims');
  if (claims) mkdirSync(claims, { recursive: true });
  // --checkpoints DIR: long rows (ApiQ, RILQ, finetuning) checkpoint there and resume inside the row
  const ckDir = args.string('checkpoints');
  if (ckDir) mkdirSync(ckDir, { recursive: true });
  const dataPath = resolve(args.string('data') ?? process.env.QUANTLORA_EVAL_DATA ?? DEFAULT_EVAL_DATA);
  if (!existsSync(dataPath)) throw new ValueError(`experiment: evaluation text ${dataPath} does not exist (pass --data FILE)`);
  const calibPath = args.string('calib') ?? fetchCalibration(log);
  if (!existsSync(calibPath)) throw new ValueError(`experiment: calibration text ${calibPath} does not exist (pass --calib FILE)`);

  const { model: fp, tokenizer } = loadForCommand(args);
  const evalIds = Int32Array.from(tokenizer.encode(readFileSync(dataPath, 'utf8')));
  // enough calibration text for the windows (about 4 characters per token, with room)
  const need = (p.calib.count + p.calib.validation) * p.calib.seqlen * 40;
  const calibIds = tokenizer.encode(readFileSync(calibPath, 'utf8').slice(0, need));
  const data = calibrationWindows(calibIds, { count: p.calib.count, seqlen: p.calib.seqlen, validation: p.calib.validation, seed: 1 });

  mkdirSync(outDir, { recursive: true });
  const jsonPath = join(outDir, `${name}.json`);
  const previous: RowResult[] = existsSync(jsonPath) && !args.has('fresh') ? readTable(jsonPath, p).rows : [];
  const results = new Map(previous.map((r) => [r.key, r]));
  const rows = experimentRows(p).filter((r) => !only || only.includes(r.key) || r.key === 'fp');
  const save = () => writeTable(outDir, name, p, { backend: getBackend().name, model: fp.config, evalData: dataPath, calibData: calibPath }, results);
  const evalOpts = { seqlen: p.evalSeqlen, limit: p.evalWindows };
  for (const row of rows) {
    if (results.has(row.key)) { log(`experiment: ${row.key} done earlier (${results.get(row.key)!.perplexity.toFixed(3)})`); continue; }
    if (!claim(claims, row.key)) { log(`experiment: ${row.key} claimed by another process`); continue; }
    const t0 = Date.now();
    const backend = getBackend();
    backend.memoryStats?.(true);
    const peak = (): { peakMiB?: number } => (backend.memoryStats ? { peakMiB: Math.round(backend.memoryStats().peakBytes / 2 ** 20) } : {});
    log(`experiment: ${row.key} (${row.label}, ${row.bits} bits)`);
    let result: RowResult;
    if (!row.spec) {
      const ppl = await perplexity(fp, evalIds, evalOpts);
      result = { ...row, perplexity: ppl.perplexity, evalWindows: ppl.windows, seconds: (Date.now() - t0) / 1000, ...peak() };
    } else {
      const ck = ckDir ? rowCheckpoints(row, resolve(ckDir)) : { spec: row.spec, files: [] };
      const { model, report } = runMethod(fp, ck.spec!, data, log);
      for (const f of ck.files) rmSync(f, { force: true }); // the row is done: its checkpoints are spent
      try {
        const stats = row.spec.init === 'none' ? quantStats(model, fp) : undefined;
        const ppl = await perplexity(model, evalIds, evalOpts);
        const resumed = [report.apiq, report.rilq, report.finetune].some((r) => r?.resumedFrom !== undefined);
        result = { ...row, perplexity: ppl.perplexity, evalWindows: ppl.windows, ...stats, seconds: (Date.now() - t0) / 1000, ...(resumed ? { resumed } : {}), ...peak(), details: report };
      } finally {
        model.dispose();
      }
    }
    log(`experiment: ${row.key}: perplexity ${result.perplexity.toFixed(3)} (${result.seconds.toFixed(0)} s${result.peakMiB !== undefined ? `, device peak ${result.peakMiB} MiB` : ''})`);
    results.set(row.key, result);
    save();
  }
  save();
  process.stdout.write(markdownTable([...results.values()], p));
  fp.dispose();
  return 0;
}

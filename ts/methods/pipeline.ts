// A method = quantizer × initialization × compensation × finetuning, one choice each (DESIGN.md,
// "Methods, composable"). runMethod builds the quantized model from the full-precision one:
//   quantizer      nf / int at bits and group, optionally ICQ-calibrated (LWC comes with ApiQ)
//   init           none (plain quantization, no adapter) | kaiming / gaussian (QLoRA) |
//                  loftq (iters) | apiq-layer | apiq-block
//   compensation   rilq (steps, loss, gtWeight) on top of any of the above
//   finetune       LoRA training on text (IEC on or off)

import { ValueError } from '../errors.js';
import type { LlamaModel } from '../nn/llama.js';
import { Lora } from '../nn/lora.js';
import { QuantLinear } from '../nn/quant-linear.js';
import { quantize, type QuantizedTensor } from '../quant/api.js';
import type { QuantFormat } from '../quant/formats.js';
import { quantizeIcq } from '../quant/icq.js';
import { tensor, type Tensor } from '../tensor.js';
import { apiq, type ApiqOptions, type ApiqReport } from './apiq.js';
import type { CalibrationSet } from './calibration.js';
import { loftqInit } from './loftq.js';
import { quantizeModel, rtnLayers, type LayerFactory } from './quantize-model.js';
import { finetune, rilq, type AdapterTrainingOptions, type RilqOptions, type TrainingReport } from './rilq.js';

export type InitKind = 'none' | 'kaiming' | 'gaussian' | 'loftq' | 'apiq-layer' | 'apiq-block';
export const INIT_KINDS: readonly InitKind[] = ['none', 'kaiming', 'gaussian', 'loftq', 'apiq-layer', 'apiq-block'];

export interface MethodSpec {
  format: QuantFormat;
  /** IR-QLoRA's information calibration of the quantizer. */
  icq?: boolean;
  init: InitKind;
  /** LoRA rank (default 16), alpha (default rank), elastic connections. */
  rank?: number;
  alpha?: number;
  iec?: boolean;
  loftqIters?: number;
  apiq?: Omit<ApiqOptions, 'mode' | 'windows'>;
  rilq?: Omit<RilqOptions, 'data'>;
  finetune?: Omit<AdapterTrainingOptions, 'data'>;
  seed?: number;
}

export interface MethodReport {
  quantizeSeconds: number;
  apiq?: ApiqReport;
  rilq?: TrainingReport;
  finetune?: TrainingReport;
  /** LoftQ's relative error per iteration, averaged over layers. */
  loftqErrors?: number[];
  seconds: number;
}

/** A short name like 'nf2 icq + apiq-block + rilq'. */
export function methodName(s: MethodSpec): string {
  const parts = [`${s.format.kind}${s.format.bits}${s.icq ? ' icq' : ''}`];
  if (s.init !== 'none') parts.push(s.init === 'loftq' ? `loftq(${s.loftqIters ?? 5})` : s.init);
  if (s.rilq) parts.push('rilq');
  if (s.finetune) parts.push(`finetune${s.iec ? ' iec' : ''}`);
  return parts.join(' + ');
}

function quantizerOf(s: MethodSpec): (w: Tensor, f: QuantFormat) => QuantizedTensor {
  return s.icq ? (w, f) => quantizeIcq(w, f) : quantize;
}

/** Builds the quantized, compensated model; `fp` is not changed. Finetuning uses `finetuneData`
 *  when given (text windows or instruction examples), else the calibration data. */
export function runMethod(fp: LlamaModel, spec: MethodSpec, data: CalibrationSet | undefined, log: (line: string) => void = () => {}, finetuneData?: CalibrationSet): { model: LlamaModel; report: MethodReport } {
  const t0 = Date.now();
  if (!INIT_KINDS.includes(spec.init)) throw new ValueError(`method: init must be one of ${INIT_KINDS.join(', ')}, got '${String(spec.init)}'`);
  const needsAdapter = spec.init !== 'none' || !!spec.rilq || !!spec.finetune;
  const rank = spec.rank ?? 16;
  const alpha = spec.alpha ?? rank;
  const lora = needsAdapter ? { rank, alpha, iec: spec.iec, init: spec.init === 'gaussian' ? 'gaussian' as const : 'kaiming' as const, seed: spec.seed } : undefined;
  const quantizer = quantizerOf(spec);
  const report: MethodReport = { quantizeSeconds: 0, seconds: 0 };
  let factory: LayerFactory = rtnLayers({ format: spec.format, lora, quantizer });
  const loftqErrors: number[][] = [];
  if (spec.init === 'loftq') {
    factory = (w, bias, site) => {
      const r = loftqInit(w, { format: spec.format, rank, iters: spec.loftqIters ?? 5, scaling: alpha / rank, quantizer: (x) => quantizer(x, spec.format), seed: site.seed });
      loftqErrors.push(r.errors);
      const be = w.backend;
      const iec = spec.iec ? { betaA: tensor([0], [1], 'f32', be).requireGrad(), betaB: tensor([0], [1], 'f32', be).requireGrad() } : undefined;
      return new QuantLinear(r.q, bias, new Lora(r.a.requireGrad(), r.b.requireGrad(), { alpha, seed: site.seed }, iec));
    };
  }
  const model = quantizeModel(fp, factory, { seed: spec.seed });
  if (loftqErrors.length) report.loftqErrors = loftqErrors[0].map((_, i) => loftqErrors.reduce((s, e) => s + e[i], 0) / loftqErrors.length);
  return finish(fp, model, spec, data, report, t0, log, finetuneData);
}

function finish(fp: LlamaModel, model: LlamaModel, spec: MethodSpec, data: CalibrationSet | undefined, report: MethodReport, t0: number, log: (line: string) => void, finetuneData?: CalibrationSet): { model: LlamaModel; report: MethodReport } {
  report.quantizeSeconds = (Date.now() - t0) / 1000;
  const need = (what: string): CalibrationSet => {
    if (!data) throw new ValueError(`method: ${what} needs calibration data`);
    return data;
  };
  try {
    if (spec.init === 'apiq-layer' || spec.init === 'apiq-block') {
      report.apiq = apiq(fp, model, { ...spec.apiq, mode: spec.init === 'apiq-layer' ? 'layer' : 'block', windows: need(spec.init).train, log });
    }
    if (spec.rilq) report.rilq = rilq(fp, model, { ...spec.rilq, data: need('rilq'), log });
    if (spec.finetune) report.finetune = finetune(model, { ...spec.finetune, data: finetuneData ?? need('finetune'), log });
  } catch (e) {
    model.dispose();
    throw e;
  }
  report.seconds = (Date.now() - t0) / 1000;
  return { model, report };
}

// LoRA adapters in PEFT's format, so any LoRA runtime (PEFT, vLLM, llama.cpp's converter) can load
// what quantlora trained on top of the base model:
//   adapter_config.json        peft_type LORA, r, lora_alpha, target_modules, rank/alpha patterns
//   adapter_model.safetensors  base_model.model.<module>.lora_A.weight [r, in]
//                              base_model.model.<module>.lora_B.weight [out, r]
// <module> is the Hugging Face module name (model.layers.3.self_attn.q_proj). IR-QLoRA's IEC has no
// PEFT counterpart; it is linear, so it is merged into the factors (Lora.merged()) and the file
// holds plain A', B' with scaling · B'·A' equal to the branch. PEFT matches rank_pattern and
// alpha_pattern keys as regexes against the end of a module's name ("(.*\.)?(key)$").
// The encoders run anywhere; exportPeft/loadPeft need Node's file system.

import { FormatError, ShapeError, ValueError, describeShape } from '../errors.js';
import { Lora } from '../nn/lora.js';
import type { LinearLayer } from '../nn/linear.js';
import { PROJECTIONS, type LlamaModel, type ProjectionName } from '../nn/llama.js';
import { QuantLinear } from '../nn/quant-linear.js';
import { tensor } from '../tensor.js';
import { nodeFs, nodePath, writeFileAtomic } from './atomic.js';
import { encodeSafetensors, parseSafetensors, safetensorsTensor, type SafetensorsFile, type TensorToWrite } from './safetensors.js';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
/** The prefix PEFT's PeftModelForCausalLM gives every key (PeftModel.base_model -> LoraModel.model). */
const PREFIX = 'base_model.model.';

/** Every linear layer of the model under its Hugging Face module name, blocks first, then lm_head. */
export function linearModules(model: LlamaModel): [string, LinearLayer][] {
  const out: [string, LinearLayer][] = [];
  model.blocks.forEach((b, i) => {
    for (const [key, module] of Object.entries(PROJECTIONS) as [ProjectionName, string][]) out.push([`model.layers.${i}.${module}`, b[key]]);
  });
  if (model.lmHead) out.push(['lm_head', model.lmHead]);
  return out;
}

/** The short name PEFT's target_modules use: the last part of the module name (q_proj). */
const shortName = (module: string): string => module.slice(module.lastIndexOf('.') + 1);

/** The value most layers have (first seen on a tie). */
function mostCommon(values: number[]): number {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  let best = values[0];
  for (const [v, n] of counts) if (n > counts.get(best)!) best = v;
  return best;
}

export interface PeftExportOptions {
  /** base_model_name_or_path of the config (e.g. HuggingFaceTB/SmolLM2-135M-Instruct). */
  baseModel?: string;
}

export interface PeftAdapter {
  /** The parsed adapter_config.json. */
  config: Record<string, unknown>;
  /** The bytes of adapter_model.safetensors. */
  weights: Uint8Array;
}

/** The model's adapters as PEFT's two files, in memory (IEC merged into the factors). */
export async function encodePeft(model: LlamaModel, opts: PeftExportOptions = {}): Promise<PeftAdapter> {
  const adapted = linearModules(model).filter((e): e is [string, QuantLinear] => e[1] instanceof QuantLinear && !!e[1].lora);
  if (!adapted.length) throw new ValueError('exportPeft: the model has no LoRA adapters (no QuantLinear layer with a lora branch)');
  const tensors: TensorToWrite[] = [];
  for (const [module, layer] of adapted) {
    const { a, b } = layer.lora!.merged();
    try {
      tensors.push({ name: `${PREFIX}${module}.lora_A.weight`, shape: [...a.shape], data: (await a.data()) as Float32Array });
      tensors.push({ name: `${PREFIX}${module}.lora_B.weight`, shape: [...b.shape], data: (await b.data()) as Float32Array });
    } finally {
      a.dispose();
      b.dispose();
    }
  }
  const loras = adapted.map(([, l]) => l.lora!);
  const r = mostCommon(loras.map((l) => l.rank));
  const alpha = mostCommon(loras.map((l) => l.alpha));
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  adapted.forEach(([module, l]) => {
    if (l.lora!.rank !== r) rankPattern[module] = l.lora!.rank;
    if (l.lora!.alpha !== alpha) alphaPattern[module] = l.lora!.alpha;
  });
  // short names when every block adapts the same projections (and lm_head is adapted or not by name);
  // otherwise the full module names, which PEFT matches exactly
  const names = adapted.map(([m]) => m);
  const shorts = [...new Set(names.map(shortName))];
  const covered = linearModules(model).filter(([m]) => shorts.includes(shortName(m))).map(([m]) => m);
  const targets = covered.length === names.length ? shorts : names;
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: opts.baseModel ?? null,
    revision: null,
    inference_mode: true,
    r,
    lora_alpha: alpha,
    lora_dropout: mostCommon(loras.map((l) => l.dropout)),
    target_modules: targets,
    rank_pattern: rankPattern,
    alpha_pattern: alphaPattern,
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: false,
    use_dora: false,
    init_lora_weights: true,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
  };
  return { config, weights: encodeSafetensors(tensors, { format: 'pt' }) };
}

/** Writes adapter_model.safetensors then adapter_config.json into `dir` (created if needed), each atomically. */
export async function exportPeft(model: LlamaModel, dir: string, opts: PeftExportOptions = {}): Promise<string[]> {
  const { config, weights } = await encodePeft(model, opts);
  nodeFs().mkdirSync(dir, { recursive: true });
  const { join } = nodePath();
  const files = [join(dir, ADAPTER_WEIGHTS), join(dir, ADAPTER_CONFIG)];
  writeFileAtomic(files[0], weights);
  writeFileAtomic(files[1], JSON.stringify(config, null, 2)); // last: a directory with a config is complete
  return files;
}

/** PEFT's lookup of rank_pattern / alpha_pattern: the first key matching the end of the module name. */
function patternValue(pattern: unknown, module: string, fallback: number, where: string): number {
  if (pattern === undefined || pattern === null) return fallback;
  if (typeof pattern !== 'object' || Array.isArray(pattern)) throw new FormatError(`${where} is not an object`);
  for (const [key, v] of Object.entries(pattern)) {
    let re: RegExp;
    try {
      re = new RegExp(`^(.*\\.)?(${key})$`);
    } catch {
      throw new FormatError(`${where}: key ${JSON.stringify(key)} is not a regular expression`);
    }
    if (!re.test(module)) continue;
    if (typeof v !== 'number' || !(v > 0)) throw new FormatError(`${where}: ${JSON.stringify(key)} = ${JSON.stringify(v)} is not a positive number`);
    return v;
  }
  return fallback;
}

const KEY = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/;

/**
 * Attaches the adapters of PEFT files (config JSON + safetensors bytes) to the model's QuantLinear
 * layers, replacing (and disposing) any branch they had. Everything is checked before anything is
 * attached. `where` names the files in errors. Returns the module names that got an adapter.
 */
export function applyPeft(model: LlamaModel, adapter: PeftAdapter, where = '<memory>'): string[] {
  const cfgPath = `${where}/${ADAPTER_CONFIG}`;
  const cfg = adapter.config;
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) throw new FormatError(`${cfgPath}: not a JSON object`);
  const bad = (key: string, msg: string) => new FormatError(`${cfgPath}: "${key}" = ${JSON.stringify(cfg[key])} ${msg}`);
  if (cfg.peft_type !== 'LORA') throw bad('peft_type', 'is not supported (LORA only)');
  if (cfg.use_dora === true) throw bad('use_dora', 'is not supported (plain LoRA only)');
  if (cfg.fan_in_fan_out === true) throw bad('fan_in_fan_out', 'is not supported (Llama weights are [out, in])');
  if (cfg.bias !== undefined && cfg.bias !== 'none') throw bad('bias', 'is not supported ("none" only)');
  const r = cfg.r ?? 8;
  const alpha = cfg.lora_alpha ?? 8;
  const dropout = cfg.lora_dropout ?? 0;
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1) throw bad('r', 'is not a positive integer');
  if (typeof alpha !== 'number' || !(alpha > 0)) throw bad('lora_alpha', 'is not a positive number');
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) throw bad('lora_dropout', 'is not in [0, 1)');
  const rslora = cfg.use_rslora === true;

  const file: SafetensorsFile = parseSafetensors(adapter.weights, `${where}/${ADAPTER_WEIGHTS}`);
  const modules = new Map(linearModules(model));
  const found = new Map<string, { A?: string; B?: string }>();
  for (const name of file.entries.keys()) {
    const m = KEY.exec(name);
    if (!m) throw new FormatError(`${file.path}: tensor ${JSON.stringify(name)} is not a LoRA factor (expected ${PREFIX}<module>.lora_A.weight / lora_B.weight)`);
    const [, module, which] = m;
    const layer = modules.get(module);
    if (!layer) throw new FormatError(`${file.path}: tensor ${JSON.stringify(name)} names module ${module}, which the model does not have`);
    if (!(layer instanceof QuantLinear)) throw new ValueError(`${file.path}: tensor ${JSON.stringify(name)}: module ${module} is not quantized (loadPeft attaches adapters to QuantLinear layers only)`);
    const slot = found.get(module) ?? {};
    slot[which as 'A' | 'B'] = name;
    found.set(module, slot);
  }
  if (!found.size) throw new FormatError(`${file.path}: holds no LoRA factors`);

  const plan: { layer: QuantLinear; a: Float32Array; b: Float32Array; shapeA: number[]; shapeB: number[]; alpha: number }[] = [];
  for (const [module, { A, B }] of found) {
    if (!A || !B) throw new FormatError(`${file.path}: module ${module} has ${A ? 'lora_A' : 'lora_B'} but no ${A ? `${PREFIX}${module}.lora_B.weight` : `${PREFIX}${module}.lora_A.weight`}`);
    const layer = modules.get(module) as QuantLinear;
    const sa = file.entries.get(A)!.shape;
    const sb = file.entries.get(B)!.shape;
    const rank = sa[0];
    if (sa.length !== 2 || sa[1] !== layer.inFeatures || !(rank >= 1)) {
      throw new ShapeError(`${file.path}: tensor ${JSON.stringify(A)} has shape ${describeShape(sa)}, expected [r, ${layer.inFeatures}]`);
    }
    if (sb.length !== 2 || sb[0] !== layer.outFeatures || sb[1] !== rank) {
      throw new ShapeError(`${file.path}: tensor ${JSON.stringify(B)} has shape ${describeShape(sb)}, expected [${layer.outFeatures}, ${rank}] (rank ${rank} from lora_A)`);
    }
    const want = patternValue(cfg.rank_pattern, module, r, `${cfgPath}: "rank_pattern"`);
    if (want !== rank) throw new ShapeError(`${file.path}: tensor ${JSON.stringify(A)} has rank ${rank}, but ${cfgPath} gives module ${module} rank ${want}`);
    let a = patternValue(cfg.alpha_pattern, module, alpha, `${cfgPath}: "alpha_pattern"`);
    if (rslora) a *= Math.sqrt(rank); // rsLoRA scales by alpha/√r: the same as alpha·√r / r
    plan.push({ layer, a: safetensorsTensor(file, A), b: safetensorsTensor(file, B), shapeA: sa, shapeB: sb, alpha: a });
  }
  for (const p of plan) {
    const be = p.layer.weight.backend;
    const lora = new Lora(
      tensor(p.a.slice(), p.shapeA, 'f32', be).requireGrad(),
      tensor(p.b.slice(), p.shapeB, 'f32', be).requireGrad(),
      { alpha: p.alpha, dropout },
    );
    p.layer.lora?.dispose();
    p.layer.lora = lora;
  }
  return [...found.keys()];
}

/** Attaches the PEFT adapter in `dir` (adapter_config.json + adapter_model.safetensors) to the model. */
export function loadPeft(model: LlamaModel, dir: string): string[] {
  const fs = nodeFs();
  const { join } = nodePath();
  const cfgPath = join(dir, ADAPTER_CONFIG);
  const weightsPath = join(dir, ADAPTER_WEIGHTS);
  for (const p of [cfgPath, weightsPath]) if (!fs.existsSync(p)) throw new FormatError(`${p}: no such file (expected a PEFT adapter directory)`);
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(fs.readFileSync(cfgPath, 'utf8'));
  } catch (e) {
    throw new FormatError(`${cfgPath}: not valid JSON (${(e as Error).message})`);
  }
  return applyPeft(model, { config, weights: new Uint8Array(fs.readFileSync(weightsPath)) }, dir);
}

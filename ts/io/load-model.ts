// Loads a Llama-family model from a GGUF file or a Hugging Face directory (config.json +
// safetensors + tokenizer.json) into one shape: LlamaConfig + WeightSource in Hugging Face names.
// GGUF stores Q and K of Llama with rows permuted for interleaved rotary pairs; the loader undoes
// that, so the model always runs Hugging Face's 'half' rotary layout and exports without changes.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend } from '../backend.js';
import { FormatError, describeShape } from '../errors.js';
import type { LlamaConfig } from '../nn/config.js';
import { LlamaModel, type WeightSource } from '../nn/llama.js';
import { readGguf, ggufTensor, type GgufFile } from './gguf.js';
import { parseHfConfig } from './hf-config.js';
import { readSafetensorsDir } from './safetensors.js';
import { Tokenizer } from './tokenizer.js';

export interface LoadedModel {
  model: LlamaModel;
  config: LlamaConfig;
  tokenizer?: Tokenizer;
  format: 'gguf' | 'safetensors';
  path: string;
}

export interface LoadOptions {
  /** Where the weights live (default: the active backend). */
  backend?: Backend;
}

/** Reads config, tokenizer and weights from `path` (a .gguf file or a Hugging Face directory). */
export function loadModel(path: string, opts: LoadOptions = {}): LoadedModel {
  if (!existsSync(path)) throw new FormatError(`${path}: no such file or directory`);
  if (statSync(path).isDirectory()) return loadHfDir(path, opts);
  const file = readGguf(path);
  const config = ggufConfig(file);
  const model = LlamaModel.fromWeights(config, ggufWeights(file, config), opts.backend);
  return { model, config, tokenizer: Tokenizer.fromGguf(file.metadata, path), format: 'gguf', path };
}

/** Only the tokenizer of a model (GGUF metadata, or tokenizer.json of a Hugging Face directory). */
export function loadTokenizer(path: string): Tokenizer | undefined {
  if (!existsSync(path)) throw new FormatError(`${path}: no such file or directory`);
  if (statSync(path).isDirectory()) return hfTokenizer(path);
  return Tokenizer.fromGguf(readGguf(path).metadata, path);
}

function readJson(dir: string, name: string): unknown {
  const p = join(dir, name);
  try {
    return JSON.parse(readFileSync(p, 'utf8'));
  } catch (e) {
    throw new FormatError(`${p}: not readable JSON (${(e as Error).message})`);
  }
}

function hfTokenizer(dir: string): Tokenizer | undefined {
  if (!existsSync(join(dir, 'tokenizer.json'))) return undefined;
  const config = existsSync(join(dir, 'tokenizer_config.json')) ? readJson(dir, 'tokenizer_config.json') : undefined;
  return Tokenizer.fromTokenizerJson(readJson(dir, 'tokenizer.json'), config, join(dir, 'tokenizer.json'));
}

function loadHfDir(dir: string, opts: LoadOptions): LoadedModel {
  const json = (name: string): unknown => readJson(dir, name);
  if (!existsSync(join(dir, 'config.json'))) throw new FormatError(`${dir}: no config.json (expected a Hugging Face model directory or a .gguf file)`);
  const config = parseHfConfig(json('config.json'), join(dir, 'config.json'));
  const st = readSafetensorsDir(dir);
  const src: WeightSource = {
    has: (name) => st.has(name),
    read: (name, shape) => {
      if (!st.has(name)) throw new FormatError(`${dir}: tensor '${name}' is missing (config says ${config.numLayers} layers${config.tieWordEmbeddings ? '' : ', untied head'})`);
      checkShape(dir, name, st.shape(name), shape);
      return st.tensor(name);
    },
  };
  // a separate head stored although config says tied (or the reverse) is taken as the file says
  if (config.tieWordEmbeddings && st.has('lm_head.weight')) config.tieWordEmbeddings = false;
  const model = LlamaModel.fromWeights(config, src, opts.backend);
  return { model, config, tokenizer: hfTokenizer(dir), format: 'safetensors', path: dir };
}

function checkShape(where: string, name: string, got: readonly number[], want: readonly number[]): void {
  if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
    throw new FormatError(`${where}: tensor '${name}' has shape ${describeShape(got)}, the config needs ${describeShape(want)}`);
  }
}

/** LlamaConfig from GGUF metadata (architectures llama and qwen2). */
export function ggufConfig(file: GgufFile): LlamaConfig {
  const m = file.metadata;
  const arch = m['general.architecture'];
  if (arch !== 'llama' && arch !== 'qwen2') throw new FormatError(`${file.path}: architecture '${String(arch)}' is not supported (llama, qwen2)`);
  const num = (key: string, fallback?: number): number => {
    const v = m[`${arch}.${key}`];
    if (v === undefined && fallback !== undefined) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new FormatError(`${file.path}: metadata '${arch}.${key}' is ${v === undefined ? 'missing' : `not a number (${String(v)})`}`);
    return v;
  };
  const scaling = m[`${arch}.rope.scaling.type`];
  if (scaling !== undefined && scaling !== 'none') throw new FormatError(`${file.path}: rope scaling '${String(scaling)}' is not supported`);
  const names = new Set(file.tensors.map((t) => t.name));
  const tokens = m['tokenizer.ggml.tokens'];
  const hiddenSize = num('embedding_length');
  const numHeads = num('attention.head_count');
  const config: LlamaConfig = {
    family: arch,
    vocabSize: num('vocab_size', Array.isArray(tokens) ? tokens.length : undefined),
    hiddenSize,
    intermediateSize: num('feed_forward_length'),
    numLayers: num('block_count'),
    numHeads,
    numKvHeads: num('attention.head_count_kv', numHeads),
    headDim: num('attention.key_length', hiddenSize / numHeads),
    ropeTheta: num('rope.freq_base', 10000),
    rmsNormEps: num('attention.layer_norm_rms_epsilon'),
    maxPositions: num('context_length'),
    tieWordEmbeddings: !names.has('output.weight'),
    attentionBias: names.has('blk.0.attn_q.bias'),
    bosTokenId: typeof m['tokenizer.ggml.bos_token_id'] === 'number' ? m['tokenizer.ggml.bos_token_id'] as number : undefined,
    eosTokenId: typeof m['tokenizer.ggml.eos_token_id'] === 'number' ? m['tokenizer.ggml.eos_token_id'] as number : undefined,
  };
  for (const k of ['vocabSize', 'hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'maxPositions'] as const) {
    if (!Number.isInteger(config[k]) || config[k] <= 0) throw new FormatError(`${file.path}: ${k} must be a positive integer, got ${config[k]}`);
  }
  if (config.numHeads % config.numKvHeads) throw new FormatError(`${file.path}: ${config.numHeads} heads are not a multiple of ${config.numKvHeads} kv heads`);
  return config;
}

const GGUF_NAMES: [RegExp, string][] = [
  [/^model\.embed_tokens\.weight$/, 'token_embd.weight'],
  [/^model\.norm\.weight$/, 'output_norm.weight'],
  [/^lm_head\.weight$/, 'output.weight'],
  [/^model\.layers\.(\d+)\.input_layernorm\.weight$/, 'blk.$1.attn_norm.weight'],
  [/^model\.layers\.(\d+)\.post_attention_layernorm\.weight$/, 'blk.$1.ffn_norm.weight'],
  [/^model\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)$/, 'blk.$1.attn_q.$2'],
  [/^model\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)$/, 'blk.$1.attn_k.$2'],
  [/^model\.layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)$/, 'blk.$1.attn_v.$2'],
  [/^model\.layers\.(\d+)\.self_attn\.o_proj\.weight$/, 'blk.$1.attn_output.weight'],
  [/^model\.layers\.(\d+)\.mlp\.gate_proj\.weight$/, 'blk.$1.ffn_gate.weight'],
  [/^model\.layers\.(\d+)\.mlp\.up_proj\.weight$/, 'blk.$1.ffn_up.weight'],
  [/^model\.layers\.(\d+)\.mlp\.down_proj\.weight$/, 'blk.$1.ffn_down.weight'],
];

/** The GGUF tensor name of a Hugging Face weight name. */
export function ggufName(hfName: string): string | undefined {
  for (const [re, to] of GGUF_NAMES) if (re.test(hfName)) return hfName.replace(re, to);
  return undefined;
}

function ggufWeights(file: GgufFile, config: LlamaConfig): WeightSource {
  const infos = new Map(file.tensors.map((t) => [t.name, t]));
  return {
    has: (name) => infos.has(ggufName(name) ?? ''),
    read: (name, shape) => {
      const g = ggufName(name);
      const info = g ? infos.get(g) : undefined;
      if (!g || !info) throw new FormatError(`${file.path}: tensor '${g ?? name}' (${name}) is missing`);
      checkShape(file.path, g, info.shape, shape);
      const values = ggufTensor(file, g);
      // llama.cpp's converter permutes Q/K rows of Llama models for interleaved rotary pairs
      if (config.family === 'llama' && /attn_[qk]\./.test(g)) {
        const heads = g.includes('attn_q') ? config.numHeads : config.numKvHeads;
        return unpermuteRotary(values, heads, config.headDim, shape.length === 2 ? shape[1] : 1);
      }
      return values;
    },
  };
}

/**
 * Undoes llama.cpp's rotary permutation of Q/K rows: within each head, GGUF row 2i + j holds
 * Hugging Face row j·(headDim/2) + i.
 */
export function unpermuteRotary(w: Float32Array, heads: number, headDim: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = (h * headDim + 2 * i + j) * cols;
        const dst = (h * headDim + j * half + i) * cols;
        out.set(w.subarray(src, src + cols), dst);
      }
    }
  }
  return out;
}

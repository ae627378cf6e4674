// Hugging Face config.json <-> LlamaConfig for the models transformers loads as LlamaForCausalLM,
// MistralForCausalLM and Qwen2ForCausalLM (SmolLM is model_type llama). Defaults follow the
// transformers config classes; anything the model here cannot compute the same way (rope scaling,
// sliding-window attention, MLP biases, another activation) is refused with a FormatError.
import { FormatError, ValueError } from '../errors.js';
import type { LlamaConfig, LlamaFamily } from '../nn/config.js';

const BY_MODEL_TYPE = new Map<string, LlamaFamily>([['llama', 'llama'], ['mistral', 'mistral'], ['qwen2', 'qwen2']]);
const ARCHITECTURE: Record<LlamaFamily, string> = {
  llama: 'LlamaForCausalLM',
  mistral: 'MistralForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
};
const BY_ARCHITECTURE = new Map<string, LlamaFamily>(
  (Object.entries(ARCHITECTURE) as [LlamaFamily, string][]).map(([f, a]) => [a, f]),
);
/** transformers' default max_position_embeddings per config class. */
const DEFAULT_MAX_POSITIONS: Record<LlamaFamily, number> = { llama: 2048, mistral: 4096 * 32, qwen2: 32768 };

const show = (v: unknown): string => {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s;
};

/** A LlamaConfig from the parsed JSON of a config.json; `path` names the file in errors. */
export function parseHfConfig(json: unknown, path = 'config.json'): LlamaConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FormatError(`${path}: not a JSON object`);
  const obj = json as Record<string, unknown>;
  const get = (key: string): unknown => (Object.hasOwn(obj, key) ? obj[key] : undefined);
  const bad = (key: string, msg: string) => new FormatError(`${path}: "${key}" = ${show(get(key))} ${msg}`);

  const family = detectFamily(obj, path);

  // null counts as absent, as transformers' None does
  const size = (key: string, def?: number): number => {
    const v = get(key);
    if (v === undefined || v === null) {
      if (def === undefined) throw new FormatError(`${path}: required key "${key}" is missing`);
      return def;
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw bad(key, 'must be a positive integer');
    return v;
  };
  const positive = (key: string, def: number): number => {
    const v = get(key);
    if (v === undefined || v === null) return def;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw bad(key, 'must be a positive number');
    return v;
  };
  const flag = (key: string, def: boolean): boolean => {
    const v = get(key);
    if (v === undefined || v === null) return def;
    if (typeof v !== 'boolean') throw bad(key, 'must be true or false');
    return v;
  };
  const tokenId = (key: string): number | undefined => {
    let v = get(key);
    if (Array.isArray(v)) v = v[0]; // eos may list several ids: the first is the main one
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(key, 'must be a non-negative integer (or a list of them)');
    return v;
  };

  const vocabSize = size('vocab_size');
  const hiddenSize = size('hidden_size');
  const intermediateSize = size('intermediate_size');
  const numLayers = size('num_hidden_layers');
  const numHeads = size('num_attention_heads');
  const numKvHeads = size('num_key_value_heads', numHeads);
  if (get('head_dim') == null && hiddenSize % numHeads !== 0) {
    throw bad('num_attention_heads', `does not divide hidden_size ${hiddenSize} (and no head_dim is given)`);
  }
  const headDim = size('head_dim', hiddenSize / numHeads);
  if (numHeads % numKvHeads !== 0) throw bad('num_key_value_heads', `does not divide num_attention_heads ${numHeads}`);
  if (headDim % 2 !== 0) throw new FormatError(`${path}: head dimension ${headDim} is odd; RoPE rotates pairs`);
  const maxPositions = size('max_position_embeddings', DEFAULT_MAX_POSITIONS[family]);

  // RoPE: plain only. transformers 5 moves rope_theta into rope_parameters.
  let ropeTheta = positive('rope_theta', 10000);
  const scaling = get('rope_scaling');
  if (scaling !== undefined && scaling !== null && !isDefaultRope(scaling)) throw bad('rope_scaling', 'is not supported (plain RoPE only)');
  const params = get('rope_parameters');
  if (params !== undefined && params !== null) {
    if (!isDefaultRope(params)) throw bad('rope_parameters', 'is not supported (plain RoPE only)');
    const theta = (params as Record<string, unknown>).rope_theta;
    if (theta !== undefined) {
      if (typeof theta !== 'number' || !Number.isFinite(theta) || theta <= 0) throw bad('rope_parameters', 'has a rope_theta that is not a positive number');
      ropeTheta = theta;
    }
  }

  const act = get('hidden_act');
  if (act !== undefined && act !== 'silu') throw bad('hidden_act', 'is not supported (silu only)');
  if (family === 'llama' && flag('mlp_bias', false)) throw bad('mlp_bias', 'is not supported (MLP without biases only)');

  // sliding-window attention: Mistral uses it whenever sliding_window is set; Qwen2 only with use_sliding_window
  const window = get('sliding_window');
  const windowed = family === 'mistral' || (family === 'qwen2' && flag('use_sliding_window', false));
  if (windowed && window !== undefined && window !== null) {
    if (typeof window !== 'number' || !Number.isSafeInteger(window) || window <= 0) throw bad('sliding_window', 'must be a positive integer or null');
    if (window < maxPositions) {
      throw bad('sliding_window', `is smaller than max_position_embeddings ${maxPositions}: sliding-window attention is not supported`);
    }
  }

  const attentionBias = family === 'qwen2' ? true : family === 'mistral' ? false : flag('attention_bias', false);
  const cfg: LlamaConfig = {
    family,
    vocabSize,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    ropeTheta,
    rmsNormEps: positive('rms_norm_eps', 1e-6),
    maxPositions,
    tieWordEmbeddings: flag('tie_word_embeddings', false),
    attentionBias,
  };
  const bos = tokenId('bos_token_id');
  const eos = tokenId('eos_token_id');
  if (bos !== undefined) cfg.bosTokenId = bos;
  if (eos !== undefined) cfg.eosTokenId = eos;
  return cfg;
}

/** rope_scaling / rope_parameters that change nothing: `{rope_type: 'default'}` (or `type`). */
function isDefaultRope(v: unknown): boolean {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const o = v as Record<string, unknown>;
  const type = o.rope_type ?? o.type;
  return type === undefined || type === 'default';
}

function detectFamily(obj: Record<string, unknown>, path: string): LlamaFamily {
  const type = Object.hasOwn(obj, 'model_type') ? obj.model_type : undefined;
  if (type !== undefined) {
    const f = typeof type === 'string' ? BY_MODEL_TYPE.get(type) : undefined;
    if (!f) throw new FormatError(`${path}: "model_type" = ${show(type)} is not supported (llama, mistral, qwen2)`);
    return f;
  }
  const archs = Object.hasOwn(obj, 'architectures') ? obj.architectures : undefined;
  if (Array.isArray(archs)) {
    for (const a of archs) {
      const f = typeof a === 'string' ? BY_ARCHITECTURE.get(a) : undefined;
      if (f) return f;
    }
  }
  throw new FormatError(`${path}: no "model_type", and "architectures" = ${show(archs)} names none of ${Object.values(ARCHITECTURE).join(', ')}`);
}

/** The config.json we write: transformers loads it as the family's *ForCausalLM class. */
export function toHfConfig(cfg: LlamaConfig): Record<string, unknown> {
  if (cfg.family === 'qwen2' && !cfg.attentionBias) throw new ValueError('a qwen2 config always has q/k/v biases: attentionBias must be true');
  if (cfg.family === 'mistral' && cfg.attentionBias) throw new ValueError('a mistral config cannot have attention biases: use family llama with attentionBias');
  const out: Record<string, unknown> = {
    architectures: [ARCHITECTURE[cfg.family]],
    model_type: cfg.family,
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    num_hidden_layers: cfg.numLayers,
    num_attention_heads: cfg.numHeads,
    num_key_value_heads: cfg.numKvHeads,
    head_dim: cfg.headDim,
    max_position_embeddings: cfg.maxPositions,
    hidden_act: 'silu',
    rms_norm_eps: cfg.rmsNormEps,
    rope_theta: cfg.ropeTheta,
    rope_scaling: null,
    tie_word_embeddings: cfg.tieWordEmbeddings,
    attention_dropout: 0.0,
    initializer_range: 0.02,
  };
  if (cfg.family === 'llama') Object.assign(out, { attention_bias: cfg.attentionBias, mlp_bias: false, pretraining_tp: 1 });
  if (cfg.family === 'mistral') out.sliding_window = null;
  if (cfg.family === 'qwen2') Object.assign(out, { use_sliding_window: false, sliding_window: null, max_window_layers: cfg.numLayers });
  if (cfg.bosTokenId !== undefined) out.bos_token_id = cfg.bosTokenId;
  if (cfg.eosTokenId !== undefined) out.eos_token_id = cfg.eosTokenId;
  out.torch_dtype = 'float32';
  out.use_cache = true;
  return out;
}

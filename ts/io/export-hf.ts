// Exports a loaded model as a Hugging Face directory: model.safetensors (the exact f32 weights
// quantlora computes with, or f16/bf16), config.json, and the tokenizer files. Each file is
// written atomically; config.json last, so a directory with a config is always complete.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { LlamaModel } from '../nn/llama.js';
import { writeFileAtomic } from './atomic.js';
import { toHfConfig } from './hf-config.js';
import { writeSafetensors, type SafetensorsDType, type TensorToWrite } from './safetensors.js';
import type { Tokenizer } from './tokenizer.js';

export interface ExportOptions {
  tokenizer?: Tokenizer;
  dtype?: SafetensorsDType;
}

/** Writes `dir` (created if needed); returns the files written. */
export async function exportHf(model: LlamaModel, dir: string, opts: ExportOptions = {}): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const tensors: TensorToWrite[] = [];
  for (const [name, t, owned] of model.namedTensors()) {
    tensors.push({ name, shape: [...t.shape], data: (await t.data()) as Float32Array, dtype: opts.dtype ?? 'F32' });
    if (owned) t.dispose();
  }
  const files: string[] = [];
  const put = (name: string, write: (path: string) => void): void => {
    const p = join(dir, name);
    write(p);
    files.push(p);
  };
  put('model.safetensors', (p) => writeSafetensors(p, tensors, { format: 'pt', producer: 'quantlora' }));
  if (opts.tokenizer) {
    const tok = opts.tokenizer;
    put('tokenizer.json', (p) => writeFileAtomic(p, JSON.stringify(tok.toTokenizerJson())));
    put('tokenizer_config.json', (p) => writeFileAtomic(p, JSON.stringify(tok.toTokenizerConfig(), null, 2)));
  }
  const cfg = model.config;
  const generation = { bos_token_id: cfg.bosTokenId, eos_token_id: cfg.eosTokenId, do_sample: false };
  put('generation_config.json', (p) => writeFileAtomic(p, JSON.stringify(generation, null, 2)));
  put('config.json', (p) => writeFileAtomic(p, JSON.stringify({ ...toHfConfig(cfg), torch_dtype: dtypeName(opts.dtype) }, null, 2)));
  return files;
}

function dtypeName(d: SafetensorsDType | undefined): string {
  return d === 'F16' ? 'float16' : d === 'BF16' ? 'bfloat16' : 'float32';
}

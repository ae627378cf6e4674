// The cache outside the repository where the default model is fetched once.
import { homedir } from 'node:os';
import { join } from 'node:path';

export const DEFAULT_MODEL_FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf';

/** $QUANTLORA_CACHE, else ~/.cache/quantlora. */
export function cacheDir(): string {
  return process.env.QUANTLORA_CACHE ?? join(homedir(), '.cache', 'quantlora');
}

export function defaultModelPath(): string {
  return join(cacheDir(), 'models', DEFAULT_MODEL_FILE);
}

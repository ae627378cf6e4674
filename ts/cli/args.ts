// Flag parsing for the CLI: `--name value` pairs and boolean switches, with typed errors.

import { ValueError } from '../errors.js';

export class Args {
  constructor(readonly argv: string[]) {}

  has(name: string): boolean {
    return this.argv.includes(`--${name}`);
  }

  string(name: string): string | undefined {
    const i = this.argv.indexOf(`--${name}`);
    if (i < 0) return undefined;
    const v = this.argv[i + 1];
    if (v === undefined || v.startsWith('--')) throw new ValueError(`--${name} needs a value`);
    return v;
  }

  number(name: string, opts: { integer?: boolean; min?: number; max?: number } = {}): number | undefined {
    const s = this.string(name);
    if (s === undefined) return undefined;
    const v = Number(s);
    const ok = s.trim() !== '' && Number.isFinite(v) && (!opts.integer || Number.isInteger(v))
      && (opts.min === undefined || v >= opts.min) && (opts.max === undefined || v <= opts.max);
    if (!ok) {
      const range = [opts.integer ? 'an integer' : 'a number', opts.min !== undefined ? `>= ${opts.min}` : '', opts.max !== undefined ? `<= ${opts.max}` : ''].filter(Boolean).join(' ');
      throw new ValueError(`--${name} must be ${range}, got '${s}'`);
    }
    return v;
  }
}

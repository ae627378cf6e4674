// Builds the npm package into dist/: ESM bundles (library, testing helpers, CLI) with esbuild and
// type declarations with tsc. Later issues add the WASM and native addon builds here.

import { execFileSync } from 'node:child_process';
import { chmodSync, rmSync } from 'node:fs';
import { build } from 'esbuild';

rmSync('dist', { recursive: true, force: true });

const common = {
  bundle: true,
  format: 'esm' as const,
  platform: 'neutral' as const,
  target: 'es2022',
  sourcemap: true,
  external: ['fast-check', 'node:*'],
  mainFields: ['module', 'main'],
};

await build({ ...common, entryPoints: { index: 'ts/index.ts', testing: 'ts/testing/index.ts' }, outdir: 'dist' });
await build({ ...common, platform: 'node', entryPoints: { cli: 'ts/cli/main.ts' }, outdir: 'dist' });
chmodSync('dist/cli.js', 0o755);

execFileSync('npx', ['tsc', '-p', '.', '--emitDeclarationOnly'], { stdio: 'inherit' });
console.log('built dist/ (index.js, testing.js, cli.js, types/)');

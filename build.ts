// Builds quantlora: the WASM kernels (SIMD and scalar variants) and the npm package in dist/ (ESM
// bundles with esbuild, type declarations with tsc). `--wasm` builds only the WASM modules.
// The WASM toolchain (Debian's rustc 1.63 + wasm32 std, wasm-bindgen-cli 0.2.83, wasm-opt) is
// installed by scripts/setup.sh.

import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { build } from 'esbuild';

const WASM_OUT = 'ts/backends/wasm/generated';
const cache = process.env.QUANTLORA_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'quantlora');

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): void {
  execFileSync(cmd, args, { stdio: 'inherit', env: { ...process.env, ...env }, cwd });
}

function tool(name: string, candidates: string[]): string | undefined {
  for (const c of candidates) if (existsSync(c)) return c;
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

function buildWasm(): void {
  if (!existsSync('/usr/bin/rustc') || !existsSync('/usr/lib/rustlib/wasm32-unknown-unknown')) {
    throw new Error('WASM toolchain missing: Debian rustc with libstd-rust-dev-wasm32 (run scripts/setup.sh)');
  }
  const bindgen = tool('wasm-bindgen', [join(cache, 'wasm-bindgen-0.2.83/bin/wasm-bindgen')]);
  const wasmOpt = tool('wasm-opt', ['/usr/bin/wasm-opt']);
  mkdirSync(WASM_OUT, { recursive: true });
  for (const variant of ['simd', 'scalar'] as const) {
    const flags = variant === 'simd' ? '-C target-feature=+simd128' : '';
    const targetDir = `target/${variant}`;
    // Debian's cargo + rustc (the rustup proxies would pick a toolchain without wasm32 std)
    run('/usr/bin/cargo', ['build', '--release', '--quiet', '--target', 'wasm32-unknown-unknown', '--target-dir', targetDir],
      { RUSTC: '/usr/bin/rustc', RUSTFLAGS: flags }, 'crates/wasm');
    let wasm = `crates/wasm/${targetDir}/wasm32-unknown-unknown/release/quantlora_wasm.wasm`;
    if (bindgen) {
      const dir = join(tmpdir(), `quantlora-bindgen-${variant}`);
      run(bindgen, ['--target', 'web', '--no-typescript', '--out-dir', dir, '--out-name', `quantlora_${variant}`, wasm]);
      wasm = join(dir, `quantlora_${variant}_bg.wasm`);
    } else {
      console.warn('build: wasm-bindgen-cli 0.2.83 not found (scripts/setup.sh builds it); using the raw cargo output');
    }
    const out = join(WASM_OUT, `quantlora_${variant}.wasm`);
    if (wasmOpt) run(wasmOpt, ['-O3', ...(variant === 'simd' ? ['--enable-simd'] : []), wasm, '-o', out]);
    else copyFileSync(wasm, out);
  }
}

/** The napi-rs addon (crates/node), release mode, with rustup's stable toolchain. */
function buildNative(): string {
  const out = execFileSync('bash', ['crates/node/build.sh'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n');
  return out[out.length - 1];
}

async function buildPackage(addon: string): Promise<void> {
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
  await build({ ...common, platform: 'node', entryPoints: { cli: 'ts/cli/main.ts', node: 'ts/node.ts', 'eval-worker': 'ts/eval/eval-worker.ts' }, outdir: 'dist' });
  chmodSync('dist/cli.js', 0o755);
  // the bundles look for the modules at new URL('./generated/...', import.meta.url)
  mkdirSync('dist/generated', { recursive: true });
  for (const variant of ['simd', 'scalar']) copyFileSync(join(WASM_OUT, `quantlora_${variant}.wasm`), `dist/generated/quantlora_${variant}.wasm`);
  // the addon for this platform, where ts/backends/native/addon.ts looks in a bundle
  mkdirSync('dist/native', { recursive: true });
  copyFileSync(addon, join('dist/native', basename(addon)));
  run('npx', ['tsc', '-p', '.', '--emitDeclarationOnly']);
}

if (process.argv.includes('--native')) {
  console.log(`built ${buildNative()}`);
} else if (process.argv.includes('--wasm')) {
  buildWasm();
  console.log(`built ${WASM_OUT}/quantlora_{simd,scalar}.wasm`);
} else {
  buildWasm();
  await buildPackage(buildNative());
  console.log('built wasm modules, the native addon and dist/ (index.js, node.js, testing.js, cli.js, generated/, native/, types/)');
}

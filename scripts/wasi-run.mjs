// Cargo test runner for wasm32-wasi: runs a test binary (.wasm) under Node's WASI, so
// `cargo +debian test --target wasm32-wasi` exercises the simd128 code paths of crates/kernels.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';

const [file, ...args] = process.argv.slice(2);
const wasi = new WASI({ version: 'preview1', args: [file, ...args], env: {}, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(file));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);

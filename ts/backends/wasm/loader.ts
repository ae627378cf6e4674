// Loads quantlora's WASM module in any JS runtime. A module comes as bytes, a URL (or URL string)
// or a compiled WebAssembly.Module; nothing here needs Node. The SIMD build is chosen when the
// runtime validates a tiny simd128 module, else the scalar build.

import { BackendError } from '../../errors.js';

export type WasmSource = ArrayBuffer | ArrayBufferView | URL | string | WebAssembly.Module;

/** (module (func (result v128) (v128.const i32x4 0 0 0 0))): valid only where simd128 is. */
const SIMD_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
  0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, // type section: [] -> [v128]
  0x03, 0x02, 0x01, 0x00, // function section
  0x0a, 0x16, 0x01, 0x14, 0x00, 0xfd, 0x0c, ...new Array<number>(16).fill(0), 0x0b, // code: v128.const 0
]);

export function simdSupported(): boolean {
  try {
    return WebAssembly.validate(SIMD_PROBE);
  } catch {
    return false;
  }
}

/** Default locations of the two builds, next to this module (dist/generated in the package). */
export function defaultModuleUrl(simd: boolean): URL {
  return new URL(simd ? './generated/quantlora_simd.wasm' : './generated/quantlora_scalar.wasm', import.meta.url);
}

function bytesOf(src: ArrayBuffer | ArrayBufferView): Uint8Array<ArrayBuffer> {
  return src instanceof ArrayBuffer ? new Uint8Array(src) : new Uint8Array(src.buffer as ArrayBuffer, src.byteOffset, src.byteLength);
}

interface NodeLike {
  getBuiltinModule?: (id: string) => unknown;
}

/** Reads a file: URL synchronously where the runtime offers a file system (Node >= 20.16). */
function readFileUrlSync(url: URL): Uint8Array<ArrayBuffer> | undefined {
  const proc = (globalThis as { process?: NodeLike }).process;
  const fs = proc?.getBuiltinModule?.('node:fs') as { readFileSync(p: URL): Uint8Array<ArrayBuffer>; existsSync(p: URL): boolean } | undefined;
  if (!fs) return undefined;
  if (!fs.existsSync(url)) throw new BackendError(`wasm module not built: ${url.pathname} is missing (run \`npm run build\`)`);
  return fs.readFileSync(url);
}

function describeSource(src: WasmSource): string {
  return src instanceof URL || typeof src === 'string' ? String(src) : `${(src as ArrayBufferView).byteLength ?? '?'} bytes`;
}

function invalid(src: WasmSource, err: unknown): BackendError {
  return new BackendError(`not a valid quantlora wasm module (${describeSource(src)}): ${(err as Error).message}`);
}

/** Compiles synchronously (bytes, Module, or a file: URL where a file system exists). */
export function compileWasmSync(src: WasmSource): WebAssembly.Module {
  if (src instanceof WebAssembly.Module) return src;
  let bytes: Uint8Array<ArrayBuffer> | undefined;
  if (src instanceof ArrayBuffer || ArrayBuffer.isView(src)) bytes = bytesOf(src);
  else {
    const url = typeof src === 'string' ? new URL(src, import.meta.url) : src;
    bytes = url.protocol === 'file:' ? readFileUrlSync(url) : undefined;
    if (!bytes) throw new BackendError(`cannot load ${url.href} synchronously here; call \`await initBackend('wasm')\``);
  }
  try {
    return new WebAssembly.Module(bytes);
  } catch (err) {
    throw invalid(src, err);
  }
}

/** Compiles from any source, fetching URLs. */
export async function compileWasm(src: WasmSource): Promise<WebAssembly.Module> {
  if (src instanceof WebAssembly.Module) return src;
  if (src instanceof ArrayBuffer || ArrayBuffer.isView(src)) return WebAssembly.compile(bytesOf(src)).catch((err) => { throw invalid(src, err); });
  const url = typeof src === 'string' ? new URL(src, import.meta.url) : src;
  if (url.protocol === 'file:') return compileWasmSync(url);
  const response = await fetch(url);
  if (!response.ok) throw new BackendError(`fetching ${url.href} failed: HTTP ${response.status}`);
  return WebAssembly.compile(await response.arrayBuffer()).catch((err) => { throw invalid(src, err); });
}

/**
 * Instantiates synchronously. Every import the module declares (wasm-bindgen's helpers, if any)
 * gets a stub that throws a descriptive error: the kernels themselves import nothing.
 */
export function instantiate(module: WebAssembly.Module): WebAssembly.Exports & { memory: WebAssembly.Memory } {
  const imports: Record<string, Record<string, WebAssembly.ImportValue>> = {};
  let memory: WebAssembly.Memory | undefined;
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.kind !== 'function') throw new BackendError(`unexpected wasm import ${imp.module}.${imp.name} (${imp.kind})`);
    imports[imp.module] ??= {};
    imports[imp.module][imp.name] = (...args: number[]) => {
      if (imp.name === '__wbindgen_throw' && memory) {
        const [ptr, len] = args;
        throw new Error(`wasm: ${new TextDecoder().decode(new Uint8Array(memory.buffer, ptr, len))}`);
      }
      throw new Error(`wasm import ${imp.module}.${imp.name} was called (${args.join(', ')})`);
    };
  }
  const instance = new WebAssembly.Instance(module, imports);
  const exports = instance.exports as WebAssembly.Exports & { memory: WebAssembly.Memory };
  if (!(exports.memory instanceof WebAssembly.Memory)) throw new BackendError('the wasm module exports no memory');
  memory = exports.memory;
  return exports;
}

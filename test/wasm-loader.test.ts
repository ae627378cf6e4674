// The WASM loader takes the module as bytes, a URL (fetched, as in a browser) or a compiled
// WebAssembly.Module, and picks SIMD only where the runtime validates it.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import * as q from '../ts/index.js';
import { defaultModuleUrl, simdSupported } from '../ts/backends/wasm/loader.js';

const simdBytes = readFileSync(defaultModuleUrl(true));
const scalarBytes = readFileSync(defaultModuleUrl(false));

async function works(b: q.WasmBackend): Promise<void> {
  const y = q.matmul(q.tensor([[1, 2], [3, 4]], undefined, 'f32', b), q.tensor([[5, 6], [7, 8]], undefined, 'f32', b));
  assert.deepEqual(Array.from(await y.data()), [19, 22, 43, 50]);
  y.dispose();
}

test('node validates simd128, so the default wasm backend is the SIMD build', () => {
  assert.equal(simdSupported(), true);
  assert.equal(q.backendByName('wasm').info().details.simd, true);
  assert.equal(q.backendByName('wasm-scalar').info().details.simd, false);
});

test('loads from bytes and from a compiled module', async () => {
  await works(await q.loadWasmBackend(new Uint8Array(scalarBytes), { simd: false }));
  await works(q.loadWasmBackendSync(new WebAssembly.Module(simdBytes), { simd: true }));
});

test('loads from an http URL through fetch, as a browser does', async () => {
  const server = createServer((req, res) => {
    if (req.url === '/quantlora_simd.wasm') {
      res.writeHead(200, { 'content-type': 'application/wasm' });
      res.end(simdBytes);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    await works(await q.loadWasmBackend(new URL(`${base}/quantlora_simd.wasm`), { simd: true }));
    await assert.rejects(q.loadWasmBackend(`${base}/missing.wasm`), (e: Error) => e instanceof q.BackendError && /HTTP 404/.test(e.message));
    assert.throws(() => q.loadWasmBackendSync(new URL(`${base}/quantlora_simd.wasm`)), (e: Error) => e instanceof q.BackendError && /synchronously/.test(e.message));
  } finally {
    server.close();
  }
});

test('a module of the wrong variant, corrupt bytes or a missing file is a clear typed error', async () => {
  await assert.rejects(q.loadWasmBackend(new Uint8Array([0, 97, 115, 109, 9])), (e: Error) => e instanceof q.BackendError && /not a valid/.test(e.message));
  assert.throws(() => q.loadWasmBackendSync(new Uint8Array(scalarBytes), { simd: true }), (e: Error) => e instanceof q.ValueError && /SIMD/.test(e.message));
  assert.throws(() => q.loadWasmBackendSync(new URL('file:///nonexistent/quantlora_simd.wasm')), (e: Error) => e instanceof q.BackendError && /not built/.test(e.message));
  // a valid wasm module that is not ours: (module (memory (export "memory") 1))
  const foreign = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 5, 3, 1, 0, 1, 7, 10, 1, 6, 109, 101, 109, 111, 114, 121, 2, 0]);
  assert.throws(() => q.loadWasmBackendSync(foreign), (e: Error) => e instanceof q.BackendError && /not a quantlora build: it lacks simd, alloc_bytes/.test(e.message));
  assert.throws(() => q.loadWasmBackendSync(new Uint8Array([0, 1, 2, 3])), (e: Error) => e instanceof q.BackendError && /not a valid quantlora wasm module \(4 bytes\)/.test(e.message));
});

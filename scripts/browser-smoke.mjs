// Loads the built package (dist/) in headless Chromium from a local HTTP server: the WASM backend
// must initialize there through fetch (no Node APIs) with SIMD, and compute bit-for-bit what it
// computes in Node. Needs /usr/bin/chromium (Debian's package; .ci/run installs it).
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = fileURLToPath(new URL('..', import.meta.url));
const types = { '.js': 'text/javascript', '.wasm': 'application/wasm', '.html': 'text/html', '.map': 'application/json' };

// the same computation, as page script and in Node
const job = `
  const backend = await q.initBackend();
  const w = q.randn([48, 100], { seed: 1, std: 0.02 });
  const qt = q.quantize(w, q.formats.nf(3, { group: 32 }));
  const y = q.dequantizeMatmul(q.randn([3, 100], { seed: 2 }), qt);
  const m = q.matmul(q.randn([33, 70], { seed: 3 }), q.randn([70, 20], { seed: 4 }));
  return { backend: backend.name, simd: backend.info().details.simd, y: Array.from(await y.data()), m: Array.from(await m.data()), codes: Array.from(await qt.codes.data()) };
`;
const page = `<!doctype html><script type="module">
  import * as q from '/dist/index.js';
  try { window.result = await (async () => { ${job} })(); } catch (e) { window.result = { error: String(e && e.stack || e) }; }
</script>`;

const server = createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (path === '/') { res.writeHead(200, { 'content-type': 'text/html' }); res.end(page); return; }
  if (path === '/favicon.ico') { res.writeHead(204); res.end(); return; }
  const file = normalize(join(root, path));
  if (!file.startsWith(join(root, 'dist'))) { res.writeHead(403); res.end(); return; }
  try {
    const body = await readFile(file);
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' });
    res.end(body);
  } catch { res.writeHead(404); res.end(); }
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const url = `http://127.0.0.1:${server.address().port}/`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let failed = false;
try {
  const tab = await browser.newPage();
  tab.on('console', (m) => console.log(`[browser] ${m.text()}`));
  // an exception while the page loads the package (it never sets window.result) names itself here
  tab.on('pageerror', (e) => console.log(`[browser] uncaught: ${e.message}`));
  await tab.goto(url);
  await tab.waitForFunction(() => window.result !== undefined, null, { timeout: 30000 });
  const inBrowser = await tab.evaluate(() => window.result);
  if (inBrowser.error) throw new Error(`page failed: ${inBrowser.error}`);
  // compare with Node on the same (wasm) backend; Node would otherwise pick the native addon
  process.env.QUANTLORA_BACKEND = 'wasm';
  const q = await import(new URL('../dist/index.js', import.meta.url).href);
  const inNode = await new Function('q', `return (async () => { ${job} })()`)(q);
  const same = (a, b) => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
  if (inBrowser.backend !== 'wasm' || inBrowser.simd !== true) throw new Error(`browser ran on ${inBrowser.backend} (simd ${inBrowser.simd}), expected wasm with SIMD`);
  for (const k of ['codes', 'y', 'm']) if (!same(inBrowser[k], inNode[k])) throw new Error(`browser and Node differ in ${k}`);
  console.log(`browser OK: ${inBrowser.backend} (simd) in ${browser.version()}, results identical to Node's`);
} catch (err) {
  console.error(err);
  failed = true;
} finally {
  await browser.close();
  server.close();
}
process.exitCode = failed ? 1 : 0;

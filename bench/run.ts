// `npm run bench`: runs every suite on every available backend in one process, prints a table with
// throughput and the ratio of each backend to the js reference, and writes machine-readable JSON.
// Options: --quick (small sizes), --suite <substring>, --backends a,b, --time <ms per task>, --out <file>.

import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { backendByName, backends } from '../ts/index.js';
import { numpySgemm, streamRead, type Reference } from './references.js';
import { suites } from './suites.js';

interface Row {
  suite: string;
  size: string;
  backend: string;
  meanMs: number;
  p50Ms: number;
  samples: number;
  gflops?: number;
  gbps?: number;
  vsJs?: number;
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const quick = process.argv.includes('--quick');
const filter = arg('suite');
const wanted = arg('backends')?.split(',');
const time = Number(arg('time') ?? (quick ? 50 : 1000));
const here = dirname(fileURLToPath(import.meta.url));
const outFile = arg('out') ?? join(here, 'results', 'latest.json');

const names = backends().filter((b) => b.available && (!wanted || wanted.includes(b.name))).map((b) => b.name);
const rows: Row[] = [];

for (const suite of suites.filter((s) => !filter || s.name.includes(filter))) {
  for (const name of names) {
    const skip = suite.skip?.(name, quick);
    if (skip) { console.error(`${suite.name} [${name}] skipped: ${skip}`); continue; }
    const backend = backendByName(name);
    const prepared = suite.prepare(backend, quick);
    const bench = new Bench({ name: suite.name, time, iterations: 3, warmupIterations: 1, warmupTime: 0 });
    bench.add(`${suite.name} [${name}]`, prepared.run);
    await bench.run();
    const result = bench.tasks[0].result as { state: string; latency?: { mean: number; p50?: number; samplesCount: number }; error?: unknown };
    prepared.dispose();
    if (result.state !== 'completed' || !result.latency) {
      console.error(`${suite.name} [${name}] failed: ${String(result.error ?? result.state)}`);
      continue;
    }
    const ms = result.latency.mean;
    const row: Row = { suite: suite.name, size: prepared.size, backend: name, meanMs: ms, p50Ms: result.latency.p50 ?? ms, samples: result.latency.samplesCount };
    if (prepared.work.flops) row.gflops = prepared.work.flops / (ms * 1e6);
    if (prepared.work.bytes) row.gbps = prepared.work.bytes / (ms * 1e6);
    rows.push(row);
  }
  const js = rows.find((r) => r.suite === suite.name && r.backend === 'js');
  for (const r of rows) if (r.suite === suite.name && js) r.vsJs = js.meanMs / r.meanMs;
}

console.table(rows.map((r) => ({
  suite: r.suite,
  size: r.size,
  backend: r.backend,
  'mean ms': r.meanMs.toFixed(2),
  'GFLOP/s': r.gflops?.toFixed(3) ?? '',
  'GB/s': r.gbps?.toFixed(3) ?? '',
  'x js': r.vsJs?.toFixed(2) ?? '',
  samples: r.samples,
})));

// outside references in the same run, and the ratios the speed goals are stated in
const references: Reference[] = [];
if (!filter || filter.includes('1024')) references.push(numpySgemm(quick ? 256 : 1024));
if (!filter || filter.includes('8192')) references.push(streamRead(quick ? 64 : 512));
for (const r of references) console.log(`${r.name}: ${Number.isNaN(r.value) ? r.note : `${r.value.toFixed(2)} ${r.unit}`}`);
const native = (suite: string) => rows.find((r) => r.suite === suite && r.backend === 'native');
const sgemm = references.find((r) => r.name.startsWith('numpy') && !Number.isNaN(r.value));
if (sgemm && native('matmul f32 1024')?.gflops) console.log(`native matmul f32 1024 / numpy sgemm: ${(native('matmul f32 1024')!.gflops! / sgemm.value).toFixed(2)}x`);
const bw = references.find((r) => r.name.startsWith('memory') && !Number.isNaN(r.value));
if (bw && native('dequantizeMatmul nf4-dq 8192, 1 token')?.gbps) console.log(`native dequantizeMatmul 8192 1 token weight GB/s / memory bandwidth: ${(100 * native('dequantizeMatmul nf4-dq 8192, 1 token')!.gbps! / bw.value).toFixed(0)}%`);

const report = { date: new Date().toISOString(), quick, node: process.version, platform: `${process.platform}-${process.arch}`, cpu: `${cpus()[0]?.model} x${cpus().length}`, rows, references };
mkdirSync(dirname(outFile), { recursive: true });
writeFileSync(`${outFile}.tmp`, JSON.stringify(report, null, 2));
renameSync(`${outFile}.tmp`, outFile);
console.log(`wrote ${outFile}`);

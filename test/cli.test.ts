// The `quantlora` command: demo output is sane, doctor lists backends, a bad forced backend fails cleanly.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import * as q from '../ts/index.js';

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'ts/cli/main.ts', ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('demo --json reports every format with errors that shrink as bits grow', () => {
  const r = cli(['demo', '--json', '--seed', '3']);
  assert.equal(r.code, 0, r.err);
  const { backend, reports } = JSON.parse(r.out) as { backend: string; reports: { format: string; bits: number; relError: number; entropy: number; bitsPerWeight: number }[] };
  assert.equal(backend, q.backends().find((b) => b.available)!.name, 'the demo runs on the best available backend');
  const by = (name: string) => reports.find((x) => x.format === name)!;
  for (const x of reports) {
    assert.ok(x.relError > 0 && x.relError < 1, `${x.format} error ${x.relError}`);
    assert.ok(x.entropy > 0 && x.entropy <= x.bits, `${x.format} entropy ${x.entropy}`);
    assert.ok(x.bitsPerWeight > x.bits && x.bitsPerWeight < x.bits + 1, `${x.format} ${x.bitsPerWeight} bits/weight`);
  }
  assert.ok(by('nf4-g64-dq').relError < by('nf3-g64-dq').relError);
  assert.ok(by('nf3-g64-dq').relError < by('nf2-g64-dq').relError);
  assert.ok(by('int4-g64-asym').relError < by('int3-g64-asym').relError);
  assert.ok(by('nf4-g64-dq').bitsPerWeight < by('nf4-g64').bitsPerWeight, 'double quantization saves space');
});

test('doctor lists the js backend and its details', () => {
  const r = cli(['doctor']);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /js\s+priority 0\s+available/);
  for (const b of q.backends()) assert.match(r.out, new RegExp(`${b.name}\\s+priority ${b.priority}\\s+${b.available ? 'available' : 'unavailable'}`));
  assert.match(r.out, new RegExp(`active: ${q.backends().find((b) => b.available)!.name}`));
});

test('a forced backend that does not exist is a clear error, not a crash', () => {
  const r = cli(['demo'], { QUANTLORA_BACKEND: 'nope' });
  assert.equal(r.code, 1);
  assert.match(r.err, /BackendError: backend 'nope' was forced \(QUANTLORA_BACKEND\) but is not registered; registered backends: [a-z, -]*js/);
});

test('unknown command prints usage and exits 2', () => {
  const r = cli(['frobnicate']);
  assert.equal(r.code, 2);
  assert.match(r.err, /unknown command 'frobnicate'/);
});

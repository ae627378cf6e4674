// The model commands end to end: eval (sequential = parallel, and the full-precision number
// checked against PyTorch), generate, export, and their typed errors on bad input.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import '../ts/index.js'; // registers the backends
import { loadModel } from '../ts/io/load-model.js';
import { windowNll } from '../ts/eval/perplexity.js';
import { testModelPath } from './model-file.js';

const MODEL = testModelPath();
const WIKI = '../shared/data/wikitext-2-raw/wiki.test.raw';
const skipModel = MODEL ? false : 'the default model is not in the cache (quantlora fetch)';

function cli(args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'ts/cli/main.ts', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function scratch(): string {
  return mkdtempSync(join(tmpdir(), 'quantlora-cli-'));
}

test('eval: worker threads give the same window NLLs as one thread', { skip: skipModel }, () => {
  const dir = scratch();
  try {
    const text = join(dir, 'text.txt');
    writeFileSync(text, readFileSync(WIKI, 'utf8').slice(0, 6000));
    const run = (jobs: number) => {
      const r = cli(['eval', '--model', MODEL!, '--data', text, '--seqlen', '96', '--limit', '3', '--jobs', String(jobs), '--json', '--quiet']);
      assert.equal(r.code, 0, r.err);
      return JSON.parse(r.out) as { windows: number; jobs: number; perplexity: number; windowNll: number[] };
    };
    const one = run(1);
    const two = run(2);
    assert.equal(one.windows, 3);
    assert.equal(two.jobs, 2);
    assert.deepEqual(two.windowNll, one.windowNll);
    assert.ok(one.perplexity > 1 && one.perplexity < 200, `perplexity ${one.perplexity}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the default model scores WikiText-2 window 0 as PyTorch did on the exported weights', { skip: skipModel || (!existsSync(WIKI) && 'no WikiText-2') }, async () => {
  // results/: our full evaluation, cross-checked on an H200 against transformers (max window NLL difference 1.2e-6)
  const recorded = JSON.parse(readFileSync('results/issue4-eval-fp-wikitext2-512.json', 'utf8')) as { windowNll: number[] };
  const { model, tokenizer } = loadModel(MODEL!);
  const ids = Int32Array.from(tokenizer!.encode(readFileSync(WIKI, 'utf8').slice(0, 4000), { addBos: false }));
  const nll = await windowNll(model, ids, 0, 512);
  assert.ok(Math.abs(nll - recorded.windowNll[0]) < 1e-5, `window 0 NLL ${nll} vs recorded ${recorded.windowNll[0]}`);
  model.dispose();
});

test('generate: the instruct model answers a chat prompt (greedy)', { skip: skipModel }, () => {
  const r = cli(['generate', '--model', MODEL!, '--chat', '--prompt', 'What is the capital of France?', '--max-tokens', '12', '--json']);
  assert.equal(r.code, 0, r.err);
  const out = JSON.parse(r.out) as { completion: string; ids: number[] };
  assert.match(out.completion, /Paris/);
  const again = JSON.parse(cli(['generate', '--model', MODEL!, '--chat', '--prompt', 'What is the capital of France?', '--max-tokens', '12', '--json']).out);
  assert.deepEqual(again.ids, out.ids, 'greedy decoding is deterministic');
});

test('export: a tiny model directory round-trips through the CLI; bad flags are typed errors', () => {
  const dir = scratch();
  try {
    const out = join(dir, 'hf');
    const r = cli(['export', '--model', 'test/fixtures/tiny-llama/qwen2-untied', '--out', out, '--dtype', 'bf16']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(readdirSync(out).sort(), ['config.json', 'generation_config.json', 'model.safetensors']);
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    assert.equal(cfg.model_type, 'qwen2');
    assert.equal(cfg.torch_dtype, 'bfloat16');
    const again = loadModel(out).model;
    assert.equal(again.config.attentionBias, true);
    again.dispose();
    const bad = cli(['export', '--model', 'test/fixtures/tiny-llama/qwen2-untied', '--out', out, '--dtype', 'f8']);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /ValueError: export: --dtype must be f32, f16 or bf16, got 'f8'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('eval: bad input is one typed error line, never a crash', { skip: skipModel }, () => {
  const dir = scratch();
  try {
    const truncated = join(dir, 'cut.gguf');
    writeFileSync(truncated, readFileSync(MODEL!).subarray(0, 3_000_000));
    const cases: [string[], RegExp][] = [
      [['eval', '--model', MODEL!, '--seqlen', 'abc'], /ValueError: --seqlen must be an integer >= 2, got 'abc'/],
      [['eval', '--model', MODEL!, '--data', join(dir, 'missing.txt')], /ValueError: eval: data file .*missing\.txt does not exist/],
      [['eval', '--model', truncated, '--data', WIKI], /FormatError: .*cut\.gguf: .*tensor '[^']+'.*past the end/],
      [['eval', '--model', join(dir, 'nope.gguf')], /FormatError: .*nope\.gguf: no such file/],
      [['eval', '--model', MODEL!, '--windows', '5:2'], /ValueError: eval: --windows must be START:END/],
      [['eval', '--model', MODEL!, '--windows', '600:602'], /ValueError: perplexity: first window 600 is outside the text's 595 windows of 512 tokens/],
      [['generate', '--model', MODEL!], /ValueError: generate: --prompt TEXT is required/],
    ];
    for (const [args, re] of cases) {
      const r = cli(args);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, re);
      assert.doesNotMatch(r.err, /\n\s+at /, 'no stack trace');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('experiment: processes sharing --claims split the rows, --merge joins their tables', { skip: skipModel }, () => {
  const dir = scratch();
  try {
    const wiki = readFileSync(WIKI, 'utf8');
    const data = join(dir, 'eval.txt');
    const calib = join(dir, 'calib.txt');
    writeFileSync(data, wiki.slice(0, 4000));
    writeFileSync(calib, wiki.slice(20000, 40000));
    const claims = join(dir, 'claims');
    const run = (out: string, only: string, extra: string[] = []) => {
      const r = cli(['experiment', '--preset', 'tiny', '--model', MODEL!, '--data', data, '--calib', calib, '--name', 't', '--out', join(dir, out), '--only', only, '--claims', claims, ...extra]);
      assert.equal(r.code, 0, r.err);
      return r.err;
    };
    const keys = (out: string) => (JSON.parse(readFileSync(join(dir, out, 't.json'), 'utf8')).rows as { key: string }[]).map((r) => r.key);
    // int4-rtn is held by "another process": the first run takes fp and nf4-rtn only
    mkdirSync(claims);
    writeFileSync(join(claims, 'int4-rtn'), '');
    const log = run('a', 'nf4-rtn,int4-rtn');
    assert.match(log, /int4-rtn claimed by another process/);
    assert.deepEqual(keys('a'), ['fp', 'nf4-rtn']);
    rmSync(join(claims, 'int4-rtn'));
    run('b', 'nf4-rtn,int4-rtn'); // fp and nf4-rtn are claimed: b runs int4-rtn alone
    assert.deepEqual(keys('b'), ['int4-rtn']);
    // merged in the preset's row order, nothing run
    const m = cli(['experiment', '--preset', 'tiny', '--name', 't', '--out', join(dir, 'm'), '--merge', `${join(dir, 'b', 't.json')},${join(dir, 'a', 't.json')}`]);
    assert.equal(m.code, 0, m.err);
    assert.deepEqual(keys('m'), ['fp', 'nf4-rtn', 'int4-rtn']);
    assert.ok(readFileSync(join(dir, 'm', 't.md'), 'utf8').includes('NF RTN'));
    const bad = cli(['experiment', '--preset', 'small', '--name', 't', '--out', join(dir, 'm2'), '--merge', join(dir, 'a', 't.json')]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.err, /preset 'tiny', not 'small'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

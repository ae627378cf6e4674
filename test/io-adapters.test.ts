// Export and reload of quantized + adapted models: PEFT adapters (IEC merged), the merged Hugging
// Face model, and quantlora's packed single-file format (bit-identical reload, typed errors).

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import * as q from '../ts/index.js';
import { exportPeft, loadPeft } from '../ts/io/adapters.js';
import { exportHf } from '../ts/io/export-hf.js';
import { loadModel } from '../ts/io/load-model.js';
import { loadPacked, savePacked } from '../ts/io/packed.js';
import { encodeSafetensors, parseSafetensors, type BytesToWrite, type TensorToWrite } from '../ts/io/safetensors.js';
import { Linear } from '../ts/nn/linear.js';
import { PROJECTIONS, type LlamaModel, type ProjectionName } from '../ts/nn/llama.js';
import { Lora } from '../ts/nn/lora.js';
import { QuantLinear } from '../ts/nn/quant-linear.js';
import { formats, type QuantFormat } from '../ts/quant/formats.js';

const fixture = (name: string) => join('test/fixtures/tiny-llama', name);
const IDS = [1, 5, 9, 17, 33, 2, 40, 60, 7, 11];
const KEYS = Object.keys(PROJECTIONS) as ProjectionName[];

const tempDir = () => mkdtempSync(join(tmpdir(), 'quantlora-adapters-'));
const idsTensor = () => q.tensor(Int32Array.from(IDS), [1, IDS.length], 'i32');
const logits = (m: LlamaModel) => q.tidy(() => m.logits(idsTensor()).dataSync().slice() as Float32Array);

interface Build {
  fixture?: string;
  format?: QuantFormat;
  /** Adapters on every projection (rank 4, alpha 8, IEC) unless false. */
  lora?: boolean;
  iec?: boolean;
  /** Quantize the untied head too (without an adapter). */
  head?: boolean;
  /** Give layer 0's q_proj NF-ICQ offset parts (offsetCodes, offset2). */
  icq?: boolean;
}

/** A tiny fixture model with every block projection a QuantLinear carrying a nonzero adapter. */
function quantModel(opts: Build = {}): LlamaModel {
  const { model } = loadModel(fixture(opts.fixture ?? 'llama-tied'));
  const fmt = opts.format ?? formats.nf(4, { group: 16 });
  const be = model.embed.backend;
  let seed = 1;
  const swap = (lin: Linear, lora?: Lora): QuantLinear => {
    const ql = new QuantLinear(q.quantize(lin.weight, fmt), lin.bias, lora);
    lin.weight.dispose();
    return ql;
  };
  model.blocks.forEach((b, i) => {
    for (const key of KEYS) {
      const lin = b[key] as Linear;
      // one layer with another rank and alpha, for PEFT's rank/alpha patterns
      const rank = i === 1 && key === 'v' ? 2 : 4;
      const alpha = rank === 2 ? 4 : 8;
      let lora: Lora | undefined;
      if (opts.lora !== false) {
        const t = (n: number, shape: number[], std: number) => q.tensor(q.gaussianArray(n, seed++, std), shape, 'f32', be).requireGrad();
        const iec = opts.iec === false ? undefined : { betaA: q.tensor([0.3 + 0.1 * i], [1], 'f32', be).requireGrad(), betaB: q.tensor([-0.25], [1], 'f32', be).requireGrad() };
        lora = new Lora(t(rank * lin.inFeatures, [rank, lin.inFeatures], 0.2), t(lin.outFeatures * rank, [lin.outFeatures, rank], 0.1), { alpha, dropout: 0.05 }, iec);
      }
      b[key] = swap(lin, lora);
    }
  });
  if (opts.head && model.lmHead) (model as { lmHead?: unknown }).lmHead = swap(model.lmHead as Linear);
  if (opts.icq) {
    const old = model.blocks[0].q as QuantLinear;
    const groups = old.outFeatures * Math.ceil(old.inFeatures / fmt.group);
    const offsetCodes = q.tensor(Uint8Array.from({ length: groups }, (_, i) => (i * 37) % 256), [groups], 'u8', be);
    const offset2 = q.tensor([0.01], [1], 'f32', be);
    const weight = new q.QuantizedTensor(fmt, old.weight.shape, { ...old.weight.parts, offsetCodes, offset2 } as q.QuantizedTensor['parts']);
    model.blocks[0].q = new QuantLinear(weight, old.bias, old.lora);
  }
  return model;
}

/** PEFT's convention for a module: the keys of its two factors. */
const peftKey = (module: string, which: 'A' | 'B') => `base_model.model.${module}.lora_${which}.weight`;

test('exportPeft: PEFT key names, shapes and config; scaling·B\'A\' equals the IEC branch', async () => {
  const model = quantModel();
  const dir = tempDir();
  try {
    const files = await exportPeft(model, dir, { baseModel: 'tiny/llama' });
    assert.deepEqual(readdirSync(dir).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
    assert.deepEqual(files.map((f) => f.slice(dir.length + 1)), ['adapter_model.safetensors', 'adapter_config.json']);
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.peft_type, 'LORA');
    assert.equal(cfg.task_type, 'CAUSAL_LM');
    assert.equal(cfg.r, 4);
    assert.equal(cfg.lora_alpha, 8);
    assert.equal(cfg.lora_dropout, 0.05);
    assert.equal(cfg.bias, 'none');
    assert.equal(cfg.fan_in_fan_out, false);
    assert.equal(cfg.inference_mode, true);
    assert.equal(cfg.use_rslora, false);
    assert.equal(cfg.base_model_name_or_path, 'tiny/llama');
    assert.deepEqual([...cfg.target_modules].sort(), ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
    assert.deepEqual(cfg.rank_pattern, { 'model.layers.1.self_attn.v_proj': 2 });
    assert.deepEqual(cfg.alpha_pattern, { 'model.layers.1.self_attn.v_proj': 4 });

    const file = parseSafetensors(new Uint8Array(readFileSync(join(dir, 'adapter_model.safetensors'))));
    assert.equal(file.entries.size, 2 * 7 * model.blocks.length);
    assert.equal(file.metadata.format, 'pt');
    const x = q.tensor(q.gaussianArray(3 * 48, 99), [3, 48]);
    model.blocks.forEach((b, i) => {
      for (const key of KEYS) {
        const module = `model.layers.${i}.${PROJECTIONS[key]}`;
        const layer = b[key] as QuantLinear;
        const lora = layer.lora!;
        const ea = file.entries.get(peftKey(module, 'A'))!;
        const eb = file.entries.get(peftKey(module, 'B'))!;
        assert.equal(ea.dtype, 'F32');
        assert.deepEqual(ea.shape, [lora.rank, layer.inFeatures], module);
        assert.deepEqual(eb.shape, [layer.outFeatures, lora.rank], module);
        // y = x · (scaling · B'A')ᵀ in float64 from the file's factors vs the IEC forward
        const A = new Float32Array(file.bytes.slice(ea.begin, ea.end).buffer);
        const B = new Float32Array(file.bytes.slice(eb.begin, eb.end).buffer);
        const [r, n] = ea.shape;
        const out = eb.shape[0];
        const xs = q.tidy(() => q.slice(x, [0, 0], [3, n]).dataSync().slice() as Float32Array);
        const want = q.tidy(() => lora.forward(q.tensor(xs, [3, n])).dataSync().slice() as Float32Array);
        let worst = 0;
        for (let t = 0; t < 3; t++) {
          for (let o = 0; o < out; o++) {
            let y = 0;
            for (let k = 0; k < r; k++) {
              let xa = 0;
              for (let c = 0; c < n; c++) xa += xs[t * n + c] * A[k * n + c];
              y += B[o * r + k] * xa;
            }
            y *= lora.scaling;
            worst = Math.max(worst, Math.abs(y - want[t * out + o]) / Math.max(1e-2, Math.abs(want[t * out + o])));
          }
        }
        assert.ok(worst < 1e-4, `${module}: merged factors differ from the IEC branch by ${worst}`);
        assert.ok(lora.iec && lora.iec.betaA.dataSync()[0] !== 0, 'IEC is active, so the merge is tested');
      }
    });
    x.dispose();
  } finally {
    model.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('loadPeft attaches the exported adapters: same factors, same logits as the IEC model', async () => {
  const model = quantModel();
  const bare = quantModel({ lora: false });
  const dir = tempDir();
  try {
    await exportPeft(model, dir);
    const modules = loadPeft(bare, dir);
    assert.equal(modules.length, 14);
    const layer = bare.blocks[1].v as QuantLinear;
    assert.equal(layer.lora!.rank, 2);
    assert.equal(layer.lora!.alpha, 4);
    assert.equal(layer.lora!.iec, undefined, 'IEC is merged: the loaded branch is plain');
    const a = logits(model);
    const b = logits(bare);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(a[i])));
    assert.ok(worst < 1e-4, `logits differ by ${worst}`);
    // a second load replaces the branches (the old ones are disposed, nothing leaks)
    const live = q.liveBuffers();
    loadPeft(bare, dir);
    assert.equal(q.liveBuffers(), live);
  } finally {
    model.dispose();
    bare.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('PEFT adapters on some layers only: target_modules lists full module names; rsLoRA configs load', async () => {
  const model = quantModel();
  const bare = quantModel({ lora: false });
  const dir = tempDir();
  try {
    // keep the adapters of layer 0's q_proj and v_proj only
    model.blocks.forEach((b, i) => {
      for (const key of KEYS) {
        const l = b[key] as QuantLinear;
        if (i === 0 && (key === 'q' || key === 'v')) continue;
        l.lora!.dispose();
        l.lora = undefined;
      }
    });
    await exportPeft(model, dir);
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    assert.deepEqual(cfg.target_modules, ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.v_proj']);
    assert.deepEqual(cfg.rank_pattern, {});
    assert.deepEqual(loadPeft(bare, dir), cfg.target_modules);
    assert.equal((bare.blocks[1].q as QuantLinear).lora, undefined);
    // rsLoRA: scaling alpha/√r, carried as alpha·√r over r
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, use_rslora: true }));
    loadPeft(bare, dir);
    const lora = (bare.blocks[0].q as QuantLinear).lora!;
    assert.ok(Math.abs(lora.scaling - 8 / Math.sqrt(4)) < 1e-12);
  } finally {
    model.dispose();
    bare.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Rewrites a safetensors file's tensors and metadata (values kept as bytes). */
function rewrite(bytes: Uint8Array, edit: (tensors: (TensorToWrite | BytesToWrite)[], meta: Record<string, string>) => void): Uint8Array {
  const file = parseSafetensors(bytes);
  const tensors: (TensorToWrite | BytesToWrite)[] = [...file.entries.values()].map((e) => {
    const raw = bytes.slice(e.begin, e.end);
    return e.dtype === 'U8'
      ? { name: e.name, shape: e.shape, data: raw, dtype: 'U8' as const }
      : { name: e.name, shape: e.shape, data: new Float32Array(raw.buffer) };
  });
  const meta = { ...file.metadata };
  edit(tensors, meta);
  return encodeSafetensors(tensors, meta);
}

test('loadPeft: wrong shapes, missing factors, unknown and dense modules are typed errors naming file and key', async () => {
  const model = quantModel();
  const dir = tempDir();
  const weights = join(dir, 'adapter_model.safetensors');
  try {
    await exportPeft(model, dir);
    const good = new Uint8Array(readFileSync(weights));
    const cases: [string, (t: (TensorToWrite | BytesToWrite)[]) => void, (e: Error) => boolean][] = [
      ['wrong shape', (t) => {
        const i = t.findIndex((x) => x.name === peftKey('model.layers.0.mlp.up_proj', 'A'));
        t[i] = { name: t[i].name, shape: [4, 16], data: (t[i].data as Float32Array).slice(0, 64) };
      }, (e) => e instanceof q.ShapeError && e.message.includes(weights) && e.message.includes(peftKey('model.layers.0.mlp.up_proj', 'A'))],
      ['missing B', (t) => { t.splice(t.findIndex((x) => x.name === peftKey('model.layers.1.self_attn.o_proj', 'B')), 1); },
        (e) => e instanceof q.FormatError && e.message.includes(weights) && e.message.includes(peftKey('model.layers.1.self_attn.o_proj', 'B'))],
      ['unknown module', (t) => { t.push({ name: peftKey('model.layers.7.self_attn.q_proj', 'A'), shape: [1, 1], data: new Float32Array(1) }); },
        (e) => e instanceof q.FormatError && e.message.includes('model.layers.7.self_attn.q_proj')],
    ];
    for (const [what, edit, check] of cases) {
      writeFileSync(weights, rewrite(good, edit));
      const bare = quantModel({ lora: false });
      const live = q.liveBuffers();
      assert.throws(() => loadPeft(bare, dir), check, what);
      assert.equal(q.liveBuffers(), live, `${what}: nothing attached`);
      assert.ok((bare.blocks[0].q as QuantLinear).lora === undefined);
      bare.dispose();
    }
    writeFileSync(weights, good);
    const { model: dense } = loadModel(fixture('llama-tied'));
    assert.throws(() => loadPeft(dense, dir), (e: Error) => e instanceof q.ValueError && /not quantized/.test(e.message) && e.message.includes(weights));
    dense.dispose();
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, rank_pattern: {} }));
    const bare = quantModel({ lora: false });
    assert.throws(() => loadPeft(bare, dir), (e: Error) => e instanceof q.ShapeError && /rank 2/.test(e.message) && e.message.includes('adapter_config.json'));
    bare.dispose();
  } finally {
    model.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('exportHf of a quantized + LoRA model reloads with the quantized model\'s logits', async () => {
  for (const name of ['llama-tied', 'qwen2-untied']) {
    const model = quantModel({ fixture: name, head: true });
    const dir = tempDir();
    try {
      const live = q.liveBuffers();
      await exportHf(model, dir);
      assert.equal(q.liveBuffers(), live, 'the dequantized + merged weights are disposed');
      const again = loadModel(dir).model;
      const a = logits(model);
      const b = logits(again);
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(a[i])));
      assert.ok(worst < 1e-4, `${name}: logits differ by ${worst}`);
      again.dispose();
    } finally {
      model.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

/** Every tensor of the model in order with its bytes (parts, adapters, dense weights). */
function snapshot(model: LlamaModel): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  const bytes = (t: q.Tensor) => {
    const d = t.dataSync();
    return new Uint8Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength));
  };
  out.set('embed', bytes(model.embed));
  out.set('norm', bytes(model.norm));
  const layers: [string, unknown][] = model.blocks.flatMap((b, i) => [
    [`${i}.inputNorm`, b.inputNorm], [`${i}.postNorm`, b.postNorm], ...KEYS.map((k): [string, unknown] => [`${i}.${k}`, b[k]]),
  ]);
  if (model.lmHead) layers.push(['head', model.lmHead]);
  for (const [name, l] of layers) {
    if (l instanceof q.Tensor) out.set(name, bytes(l));
    else if (l instanceof Linear) l.tensors().forEach((t, j) => out.set(`${name}.${j}`, bytes(t)));
    else if (l instanceof QuantLinear) {
      out.set(`${name}.format`, new TextEncoder().encode(JSON.stringify(l.weight.format)));
      for (const [p, t] of Object.entries(l.weight.parts)) out.set(`${name}.${p}`, bytes(t!));
      if (l.bias) out.set(`${name}.bias`, bytes(l.bias));
      if (l.lora) {
        const lo = l.lora;
        out.set(`${name}.lora`, new TextEncoder().encode(JSON.stringify([lo.rank, lo.alpha, lo.dropout, !!lo.iec])));
        lo.parameters().forEach((t, j) => { out.set(`${name}.lora.${j}`, bytes(t)); assert.ok(t.requiresGrad); });
      }
    } else assert.fail(`unexpected layer ${name}`);
  }
  return out;
}

const PACKED_FORMATS: [string, QuantFormat, string][] = [
  ['nf4-dq', formats.nf(4, { group: 16 }), 'qwen2-untied'],
  ['nf3', formats.nf(3, { group: 16, doubleQuant: false }), 'llama-tied'],
  ['int2-asym', formats.int(2, { group: 16 }), 'qwen2-untied'],
  ['int4-sym', formats.int(4, { group: 16, symmetric: true }), 'llama-tied'],
];

for (const [label, format, name] of PACKED_FORMATS) {
  test(`packed save/load is bit-identical: ${label} (${name})`, async () => {
    const model = quantModel({ fixture: name, format, head: true, iec: label !== 'int4-sym', icq: label === 'nf4-dq' });
    const dir = tempDir();
    const path = join(dir, 'model.qlora.safetensors');
    try {
      await savePacked(model, path);
      assert.deepEqual(readdirSync(dir), ['model.qlora.safetensors']);
      const file = parseSafetensors(new Uint8Array(readFileSync(path)));
      const codes = file.entries.get('model.layers.0.self_attn.q_proj.qweight.codes')!;
      assert.equal(codes.dtype, 'U8');
      assert.equal(file.entries.get('model.layers.0.self_attn.q_proj.lora.A')!.dtype, 'F32');
      if (label === 'nf4-dq') assert.equal(file.entries.get('model.layers.0.self_attn.q_proj.qweight.offsetCodes')!.dtype, 'U8');
      const again = loadPacked(path);
      assert.deepEqual(again.config, model.config);
      assert.deepEqual(snapshot(again), snapshot(model));
      assert.deepEqual(logits(again), logits(model));
      // saving the reloaded model gives the same file, byte for byte
      const path2 = join(dir, 'again.safetensors');
      await savePacked(again, path2);
      assert.deepEqual(new Uint8Array(readFileSync(path2)), new Uint8Array(readFileSync(path)));
      again.dispose();
      // onto another backend: the same parts
      const js = loadPacked(path, { backend: q.backendByName('js') });
      assert.equal(js.embed.backend.name, 'js');
      assert.deepEqual(snapshot(js), snapshot(model));
      js.dispose();
    } finally {
      model.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('corrupt or mismatched packed files are typed errors naming the file and tensor; nothing leaks', async () => {
  const model = quantModel({ fixture: 'qwen2-untied', icq: true });
  const dir = tempDir();
  const path = join(dir, 'model.safetensors');
  try {
    await savePacked(model, path);
    const good = new Uint8Array(readFileSync(path));
    const bad = join(dir, 'bad.safetensors');
    const layerKey = 'quantlora.layer.model.layers.1.mlp.down_proj';
    const cases: [string, Uint8Array, (e: Error) => boolean][] = [
      ['truncated', good.subarray(0, good.length - 100), (e) => e instanceof q.FormatError && e.message.includes(bad)],
      ['wrong bits in the metadata', rewrite(good, (_, m) => {
        const meta = JSON.parse(m[layerKey]);
        meta.format = { ...meta.format, bits: 3 };
        m[layerKey] = JSON.stringify(meta);
      }), (e) => e instanceof q.FormatError && e.message.includes(bad) && e.message.includes(layerKey)],
      ['format of another part layout', rewrite(good, (_, m) => {
        const meta = JSON.parse(m[layerKey]);
        meta.format = formats.int(4, { group: 16 });
        m[layerKey] = JSON.stringify(meta);
      }), (e) => e instanceof q.FormatError && e.message.includes(bad) && e.message.includes(layerKey)],
      ['missing part', rewrite(good, (t) => { t.splice(t.findIndex((x) => x.name === 'model.layers.1.mlp.down_proj.qweight.scaleCodes'), 1); }),
        (e) => e instanceof q.FormatError && e.message.includes(bad) && e.message.includes('model.layers.1.mlp.down_proj.qweight.scaleCodes')],
      ['part of the wrong shape', rewrite(good, (t) => {
        const i = t.findIndex((x) => x.name === 'model.layers.0.self_attn.k_proj.qweight.codes');
        t[i] = { ...t[i], shape: [t[i].data.length], dtype: 'U8', data: t[i].data as Uint8Array };
      }), (e) => e instanceof q.ShapeError && e.message.includes(bad) && e.message.includes('model.layers.0.self_attn.k_proj.qweight.codes')],
      ['part of the wrong dtype', rewrite(good, (t) => {
        const i = t.findIndex((x) => x.name === 'model.layers.0.self_attn.k_proj.qweight.scale2');
        t[i] = { name: t[i].name, shape: [4], data: new Uint8Array(4), dtype: 'U8' };
      }), (e) => e instanceof q.FormatError && /is U8, expected F32/.test(e.message) && e.message.includes('k_proj.qweight.scale2')],
      ['half of the ICQ parts', rewrite(good, (t, m) => {
        t.splice(t.findIndex((x) => x.name === 'model.layers.0.self_attn.q_proj.qweight.offset2'), 1);
        const key = 'quantlora.layer.model.layers.0.self_attn.q_proj';
        const meta = JSON.parse(m[key]);
        meta.parts = meta.parts.filter((p: string) => p !== 'offset2');
        m[key] = JSON.stringify(meta);
      }), (e) => e instanceof q.FormatError && e.message.includes(bad) && /offsetCodes without offset2/.test(e.message)],
      ['extra tensor', rewrite(good, (t) => { t.push({ name: 'model.layers.0.stray', shape: [1], data: new Float32Array(1) }); }),
        (e) => e instanceof q.FormatError && e.message.includes('model.layers.0.stray')],
      ['missing adapter', rewrite(good, (t) => { t.splice(t.findIndex((x) => x.name === 'model.layers.0.mlp.up_proj.lora.betaB'), 1); }),
        (e) => e instanceof q.FormatError && e.message.includes('model.layers.0.mlp.up_proj.lora.betaB')],
      ['config mismatch', rewrite(good, (_, m) => { m['quantlora.config'] = JSON.stringify({ ...JSON.parse(m['quantlora.config']), intermediate_size: 64 }); }),
        (e) => e instanceof q.ShapeError && e.message.includes(bad) && /gate_proj/.test(e.message)],
      ['not a packed file', readFileSync(fixture('llama-tied') + '/model.safetensors'), (e) => e instanceof q.FormatError && /quantlora\.format/.test(e.message)],
    ];
    for (const [what, bytes, check] of cases) {
      writeFileSync(bad, bytes);
      const live = q.liveBuffers();
      assert.throws(() => loadPacked(bad), check, what);
      assert.equal(q.liveBuffers(), live, `${what}: the tensors made before the error are freed`);
    }
    assert.throws(() => loadPacked(join(dir, 'nope.safetensors')), q.FormatError);

    // a failing save leaves the old file as it was and no temporary file behind
    const broken = quantModel({ fixture: 'qwen2-untied' });
    (broken.blocks[1].up as QuantLinear).weight.parts.codes.dispose();
    await assert.rejects(savePacked(broken, path), q.DisposedError);
    assert.deepEqual(new Uint8Array(readFileSync(path)), good);
    assert.deepEqual(readdirSync(dir).sort(), ['bad.safetensors', 'model.safetensors']);
    broken.dispose();
    assert.ok(existsSync(path));
  } finally {
    model.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

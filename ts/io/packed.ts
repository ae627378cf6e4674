// quantlora's own format: a whole quantized (and adapted) model in ONE safetensors file, every
// tensor as the model holds it, so a reload is bit-identical and training can continue.
//
// TENSORS
//   model.embed_tokens.weight, *_layernorm.weight, model.norm.weight           F32
//   <module>.weight, <module>.bias       a dense Linear (or a QuantLinear's bias)  F32
//   <module>.qweight.<part>              a QuantLinear's parts (codes, scales, zeros, scaleCodes,
//                                        scale2, scaleOffset, NF-ICQ's offsetCodes, offset2) in their own
//                                        dtype: u8 -> U8, f32 -> F32
//   <module>.lora.A [r, in]   <module>.lora.B [out, r]   (unmerged)              F32
//   <module>.lora.betaA [1]   <module>.lora.betaB [1]    (IEC only)              F32
// <module> is the Hugging Face module name: model.layers.3.self_attn.q_proj, lm_head.
//
// __metadata__ (all JSON strings but the first two)
//   quantlora.format = "packed", quantlora.version = "1"
//   quantlora.config            the model's config.json (toHfConfig), read back with parseHfConfig
//   quantlora.layer.<module>    one per QuantLinear: {format: {kind, bits, group, doubleQuant,
//                               symmetric, name}, shape: [out, in], parts: [names], bias: bool,
//                               lora?: {rank, alpha, dropout, iec: bool}}
// Every tensor of the file must be used: missing, extra, mistyped or misshapen tensors and bad
// metadata are FormatError/ShapeError naming the file and the tensor.

import type { Backend } from '../backend.js';
import type { DType } from '../dtype.js';
import { FormatError, ShapeError, ValueError, describeShape } from '../errors.js';
import type { LlamaConfig } from '../nn/config.js';
import { Linear, type LinearLayer } from '../nn/linear.js';
import { LlamaModel, PROJECTIONS, type LlamaBlock, type ProjectionName } from '../nn/llama.js';
import { Lora } from '../nn/lora.js';
import { QuantLinear } from '../nn/quant-linear.js';
import { QuantizedTensor } from '../quant/api.js';
import { DOUBLE_QUANT_BLOCK, checkFormat, formats, type QuantFormat } from '../quant/formats.js';
import { partLayout } from '../quant/layout.js';
import { getBackend } from '../registry.js';
import { tensor, type Tensor } from '../tensor.js';
import { linearModules } from './adapters.js';
import { nodeFs } from './atomic.js';
import { parseHfConfig, toHfConfig } from './hf-config.js';
import { encodeSafetensors, parseSafetensors, writeSafetensors, type BytesToWrite, type SafetensorsFile, type TensorToWrite } from './safetensors.js';

export const PACKED_VERSION = '1';
const LAYER_KEY = 'quantlora.layer.';

interface LayerMeta {
  format: QuantFormat;
  shape: number[];
  parts: string[];
  bias: boolean;
  lora?: { rank: number; alpha: number; dropout: number; iec: boolean };
}

const STORED: Partial<Record<DType, 'F32' | 'U8'>> = { f32: 'F32', u8: 'U8' };

type ToWrite = TensorToWrite | BytesToWrite;

async function toWrite(name: string, t: Tensor): Promise<ToWrite> {
  const shape = [...t.shape];
  if (t.dtype === 'u8') return { name, shape, data: (await t.data()) as Uint8Array, dtype: 'U8' };
  if (t.dtype === 'f32') return { name, shape, data: (await t.data()) as Float32Array, dtype: 'F32' };
  throw new ValueError(`savePacked: tensor ${name} is ${t.dtype}; the packed format stores f32 and u8`);
}

/** The tensors and metadata of the packed file (host copies of every tensor). */
async function packedContents(model: LlamaModel): Promise<{ tensors: ToWrite[]; metadata: Record<string, string> }> {
  const tensors: ToWrite[] = [];
  const metadata: Record<string, string> = {
    'quantlora.format': 'packed',
    'quantlora.version': PACKED_VERSION,
    'quantlora.config': JSON.stringify(toHfConfig(model.config)),
  };
  const put = async (name: string, t: Tensor) => { tensors.push(await toWrite(name, t)); };
  const layers = new Map(linearModules(model));
  const writeLayer = async (module: string) => {
    const layer = layers.get(module)!;
    if (layer instanceof QuantLinear) {
      const parts = Object.entries(layer.weight.parts).filter((e): e is [string, Tensor] => !!e[1]);
      for (const [part, t] of parts) await put(`${module}.qweight.${part}`, t);
      if (layer.bias) await put(`${module}.bias`, layer.bias);
      const meta: LayerMeta = { format: { ...layer.weight.format }, shape: [...layer.weight.shape], parts: parts.map(([p]) => p), bias: !!layer.bias };
      const lora = layer.lora;
      if (lora) {
        meta.lora = { rank: lora.rank, alpha: lora.alpha, dropout: lora.dropout, iec: !!lora.iec };
        await put(`${module}.lora.A`, lora.a);
        await put(`${module}.lora.B`, lora.b);
        if (lora.iec) {
          await put(`${module}.lora.betaA`, lora.iec.betaA);
          await put(`${module}.lora.betaB`, lora.iec.betaB);
        }
      }
      metadata[LAYER_KEY + module] = JSON.stringify(meta);
    } else if (layer instanceof Linear) {
      await put(`${module}.weight`, layer.weight);
      if (layer.bias) await put(`${module}.bias`, layer.bias);
    } else {
      throw new ValueError(`savePacked: ${module} is a ${layer.constructor.name}; the packed format stores Linear and QuantLinear layers`);
    }
  };
  await put('model.embed_tokens.weight', model.embed);
  for (let i = 0; i < model.blocks.length; i++) {
    const p = `model.layers.${i}`;
    const b = model.blocks[i];
    await put(`${p}.input_layernorm.weight`, b.inputNorm);
    for (const module of Object.values(PROJECTIONS)) await writeLayer(`${p}.${module}`);
    await put(`${p}.post_attention_layernorm.weight`, b.postNorm);
  }
  await put('model.norm.weight', model.norm);
  if (model.lmHead) await writeLayer('lm_head');
  return { tensors, metadata };
}

/** The packed file's bytes, in memory. */
export async function encodePacked(model: LlamaModel): Promise<Uint8Array> {
  const { tensors, metadata } = await packedContents(model);
  return encodeSafetensors(tensors, metadata);
}

/** Writes the model to one packed safetensors file, atomically (the old file stays on any failure). */
export async function savePacked(model: LlamaModel, path: string): Promise<void> {
  const { tensors, metadata } = await packedContents(model);
  writeSafetensors(path, tensors, metadata);
}

export interface PackedLoadOptions {
  /** Where the tensors go (default: the active backend). */
  backend?: Backend;
}

/** A format from its JSON: rebuilt by formats.nf/int and checked against the stored name. */
function formatFrom(v: unknown, where: string): QuantFormat {
  const f = (typeof v === 'object' && v !== null && !Array.isArray(v) ? v : {}) as Record<string, unknown>;
  let made: QuantFormat;
  try {
    checkFormat(where, f as unknown as QuantFormat);
    made = f.kind === 'nf'
      ? formats.nf(f.bits as number, { group: f.group as number, doubleQuant: f.doubleQuant as boolean })
      : formats.int(f.bits as number, { group: f.group as number, symmetric: f.symmetric as boolean });
  } catch (e) {
    throw new FormatError(`${where}: format ${JSON.stringify(v)} is not valid (${(e as Error).message})`);
  }
  if (made.name !== f.name) throw new FormatError(`${where}: format ${JSON.stringify(v)} does not match its name (rebuilt: ${made.name})`);
  // fields a later version of the format adds (e.g. ICQ) travel as stored
  return Object.freeze({ ...f, ...made }) as QuantFormat;
}

/** Reads a packed file's bytes into a model on `backend`. `path` names the file in errors. */
export function decodePacked(bytes: Uint8Array, opts: PackedLoadOptions & { path?: string } = {}): LlamaModel {
  const file = parseSafetensors(bytes, opts.path ?? '<memory>');
  return new PackedReader(file, opts.backend ?? getBackend()).model();
}

/** Loads a file written by savePacked. */
export function loadPacked(path: string, opts: PackedLoadOptions = {}): LlamaModel {
  if (!nodeFs().existsSync(path)) throw new FormatError(`${path}: no such file`);
  return decodePacked(new Uint8Array(nodeFs().readFileSync(path)), { ...opts, path });
}

class PackedReader {
  private used = new Set<string>();
  private made: Tensor[] = [];
  private readonly config: LlamaConfig;

  constructor(private file: SafetensorsFile, private backend: Backend) {
    const m = file.metadata;
    const kind = m['quantlora.format'];
    if (kind !== 'packed') throw this.fail(`__metadata__ "quantlora.format" is ${kind === undefined ? 'missing' : JSON.stringify(kind)}: not a quantlora packed file`);
    if (m['quantlora.version'] !== PACKED_VERSION) throw this.fail(`__metadata__ "quantlora.version" is ${JSON.stringify(m['quantlora.version'])}; this version reads ${PACKED_VERSION}`);
    this.config = parseHfConfig(this.json('quantlora.config'), `${file.path}: __metadata__ "quantlora.config"`);
    for (const key of Object.keys(m)) {
      if (key.startsWith(LAYER_KEY) && !linearNames(this.config).includes(key.slice(LAYER_KEY.length))) {
        throw this.fail(`__metadata__ "${key}" names a module the config does not have`);
      }
    }
  }

  private fail(msg: string): FormatError { return new FormatError(`${this.file.path}: ${msg}`); }

  private json(key: string): unknown {
    const s = this.file.metadata[key];
    if (s === undefined) throw this.fail(`__metadata__ "${key}" is missing`);
    try {
      return JSON.parse(s);
    } catch (e) {
      throw this.fail(`__metadata__ "${key}" is not valid JSON (${(e as Error).message})`);
    }
  }

  /** The tensor `name` with exactly this dtype and shape, uploaded (a copy of the file's bytes). */
  private tensor(name: string, shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const e = this.file.entries.get(name);
    if (!e) throw this.fail(`tensor ${JSON.stringify(name)} is missing`);
    const want = STORED[dtype]!;
    if (e.dtype !== want) throw this.fail(`tensor ${JSON.stringify(name)} is ${e.dtype}, expected ${want}`);
    if (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i])) {
      throw new ShapeError(`${this.file.path}: tensor ${JSON.stringify(name)} has shape ${describeShape(e.shape)}, expected ${describeShape(shape)}`);
    }
    const raw = this.file.bytes.slice(e.begin, e.end); // a copy: aligned, and independent of the file
    const values = dtype === 'u8' ? raw : new Float32Array(raw.buffer, 0, raw.length / 4);
    if (dtype === 'f32' && new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new FormatError('packed files are read on little-endian hosts only');
    const t = tensor(values, shape, dtype, this.backend);
    this.made.push(t);
    this.used.add(name);
    return t;
  }

  model(): LlamaModel {
    try {
      const c = this.config;
      const H = c.hiddenSize;
      const blocks: LlamaBlock[] = [];
      const dims = projectionDims(c);
      for (let i = 0; i < c.numLayers; i++) {
        const p = `model.layers.${i}`;
        const inputNorm = this.tensor(`${p}.input_layernorm.weight`, [H]);
        const proj = {} as Record<ProjectionName, LinearLayer>;
        for (const [key, module] of Object.entries(PROJECTIONS) as [ProjectionName, string][]) {
          const [out, inp, bias] = dims[key];
          proj[key] = this.layer(`${p}.${module}`, out, inp, bias);
        }
        const postNorm = this.tensor(`${p}.post_attention_layernorm.weight`, [H]);
        blocks.push({ inputNorm, ...proj, postNorm });
      }
      const embed = this.tensor('model.embed_tokens.weight', [c.vocabSize, H]);
      const norm = this.tensor('model.norm.weight', [H]);
      const head = c.tieWordEmbeddings ? undefined : this.layer('lm_head', c.vocabSize, H, false);
      const extra = [...this.file.entries.keys()].filter((n) => !this.used.has(n));
      if (extra.length) throw this.fail(`tensor ${JSON.stringify(extra[0])} belongs to no part of the model${extra.length > 1 ? ` (and ${extra.length - 1} more)` : ''}`);
      return new LlamaModel(c, embed, blocks, norm, head);
    } catch (e) {
      for (const t of this.made) t.dispose();
      throw e;
    }
  }

  private layer(module: string, out: number, inp: number, bias: boolean): LinearLayer {
    const metaKey = LAYER_KEY + module;
    if (this.file.metadata[metaKey] === undefined) {
      return new Linear(this.tensor(`${module}.weight`, [out, inp]), bias ? this.tensor(`${module}.bias`, [out]) : undefined);
    }
    const where = `${this.file.path}: __metadata__ "${metaKey}"`;
    const meta = this.json(metaKey) as Partial<LayerMeta> | null;
    if (typeof meta !== 'object' || meta === null) throw new FormatError(`${where} is not a JSON object`);
    const format = formatFrom(meta.format, where);
    if (!Array.isArray(meta.shape) || meta.shape.length !== 2 || meta.shape[0] !== out || meta.shape[1] !== inp) {
      throw new ShapeError(`${where}: shape ${JSON.stringify(meta.shape)}, the config needs [${out}, ${inp}]`);
    }
    if (meta.bias !== bias) throw new FormatError(`${where}: bias is ${JSON.stringify(meta.bias)}, the config says ${bias}`);
    const layout = { ...partLayout(out, inp, format), ...extraLayout(out, inp, format) };
    const listed: unknown[] = Array.isArray(meta.parts) ? meta.parts : [];
    for (const name of listed) {
      if (typeof name !== 'string' || !(name in layout)) throw new FormatError(`${where}: part ${JSON.stringify(name)} is not a part of ${format.name} (${Object.keys(layout).join(', ')})`);
    }
    for (const name of Object.keys(layout)) {
      if (!listed.includes(name) && !OPTIONAL_PARTS.includes(name)) throw new FormatError(`${where}: parts ${JSON.stringify(meta.parts)} lack ${name}, which ${format.name} needs`);
    }
    const optional = OPTIONAL_PARTS.filter((p) => p in layout && listed.includes(p));
    if (optional.length && optional.length !== OPTIONAL_PARTS.length) throw new FormatError(`${where}: parts ${JSON.stringify(meta.parts)} hold ${optional.join(', ')} without ${OPTIONAL_PARTS.filter((p) => !optional.includes(p)).join(', ')}`);
    const parts: Record<string, Tensor> = {};
    for (const name of listed as string[]) {
      const spec = layout[name as keyof typeof layout]!;
      parts[name] = this.tensor(`${module}.qweight.${name}`, spec.shape, spec.dtype);
    }
    const weight = new QuantizedTensor(format, [out, inp], parts as QuantizedTensor['parts']);
    const b = bias ? this.tensor(`${module}.bias`, [out]) : undefined;
    return new QuantLinear(weight, b, meta.lora === undefined ? undefined : this.lora(module, meta.lora, out, inp, where));
  }

  private lora(module: string, m: unknown, out: number, inp: number, where: string): Lora {
    const l = (typeof m === 'object' && m !== null ? m : {}) as Record<string, unknown>;
    const rank = l.rank;
    if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 1) throw new FormatError(`${where}: lora.rank ${JSON.stringify(rank)} is not a positive integer`);
    if (typeof l.alpha !== 'number' || typeof l.dropout !== 'number' || typeof l.iec !== 'boolean') {
      throw new FormatError(`${where}: lora ${JSON.stringify(m)} needs numbers alpha, dropout and a boolean iec`);
    }
    const a = this.tensor(`${module}.lora.A`, [rank, inp]).requireGrad();
    const b = this.tensor(`${module}.lora.B`, [out, rank]).requireGrad();
    const iec = l.iec
      ? { betaA: this.tensor(`${module}.lora.betaA`, [1]).requireGrad(), betaB: this.tensor(`${module}.lora.betaB`, [1]).requireGrad() }
      : undefined;
    try {
      return new Lora(a, b, { alpha: l.alpha, dropout: l.dropout }, iec);
    } catch (e) {
      throw new FormatError(`${where}: ${(e as Error).message}`);
    }
  }
}

/** NF-ICQ's per-group offset τ (quant/api.ts): an 8-bit code per group and a scale per 256 groups,
 *  both present or both absent. TODO: quant/layout.ts's offsetLayout once it is committed. */
const OPTIONAL_PARTS = ['offsetCodes', 'offset2'];

function extraLayout(rows: number, cols: number, f: QuantFormat): Record<string, { shape: number[]; dtype: DType }> {
  if (f.kind !== 'nf') return {};
  const groups = rows * Math.ceil(cols / f.group);
  return { offsetCodes: { shape: [groups], dtype: 'u8' }, offset2: { shape: [Math.ceil(groups / DOUBLE_QUANT_BLOCK)], dtype: 'f32' } };
}

/** [out, in, bias] of each projection. */
function projectionDims(c: LlamaConfig): Record<ProjectionName, [number, number, boolean]> {
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const ab = c.attentionBias;
  return { q: [qDim, H, ab], k: [kvDim, H, ab], v: [kvDim, H, ab], o: [H, qDim, false], gate: [I, H, false], up: [I, H, false], down: [H, I, false] };
}

function linearNames(c: LlamaConfig): string[] {
  const out: string[] = [];
  for (let i = 0; i < c.numLayers; i++) for (const m of Object.values(PROJECTIONS)) out.push(`model.layers.${i}.${m}`);
  if (!c.tieWordEmbeddings) out.push('lm_head');
  return out;
}

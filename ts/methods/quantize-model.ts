// Turns a full-precision Llama model into a quantized one: every block projection becomes a
// QuantLinear made by a layer factory (the quantizer and the LoRA initialization of a pipeline);
// embeddings, norms and the output head stay float (copied, so the two models are independent).

import { noGrad } from '../autograd.js';
import { ValueError } from '../errors.js';
import { affine } from '../ops/arithmetic.js';
import { Linear, type LinearLayer } from '../nn/linear.js';
import { LlamaModel, PROJECTIONS, type LlamaBlock, type ProjectionName } from '../nn/llama.js';
import { Lora, type LoraOptions } from '../nn/lora.js';
import { QuantLinear } from '../nn/quant-linear.js';
import { quantize, type QuantizedTensor } from '../quant/api.js';
import type { QuantFormat } from '../quant/formats.js';
import type { Tensor } from '../tensor.js';

/** Where a projection sits: block index, short key, Hugging Face module name. */
export interface LayerSite {
  block: number;
  key: ProjectionName;
  /** e.g. 'model.layers.3.self_attn.q_proj' */
  name: string;
  /** A seed distinct per layer (for LoRA initialization). */
  seed: number;
}

/** Makes the quantized layer for one float projection (weight [out, in], bias). */
export type LayerFactory = (weight: Tensor, bias: Tensor | undefined, site: LayerSite) => QuantLinear;

/** Every projection of a model, in forward order. */
export function layerSites(model: LlamaModel, seed = 0): LayerSite[] {
  const sites: LayerSite[] = [];
  model.blocks.forEach((_, block) => {
    (Object.keys(PROJECTIONS) as ProjectionName[]).forEach((key, j) => {
      sites.push({ block, key, name: `model.layers.${block}.${PROJECTIONS[key]}`, seed: seed * 7919 + block * 16 + j + 1 });
    });
  });
  return sites;
}

function copy(t: Tensor): Tensor {
  return affine(t, 1);
}

function floatOf(layer: LinearLayer, site: LayerSite): Linear {
  if (!(layer instanceof Linear)) throw new ValueError(`quantizeModel: ${site.name} is already quantized; start from the full-precision model`);
  return layer;
}

/** A new model whose projections come from `make`; `fp` is left unchanged. */
export function quantizeModel(fp: LlamaModel, make: LayerFactory, opts: { seed?: number; onLayer?: (site: LayerSite) => void } = {}): LlamaModel {
  return noGrad(() => {
    const sites = layerSites(fp, opts.seed ?? 0);
    const blocks: LlamaBlock[] = fp.blocks.map((b) => ({ ...b, inputNorm: copy(b.inputNorm), postNorm: copy(b.postNorm) }));
    for (const site of sites) {
      const src = floatOf(fp.blocks[site.block][site.key], site);
      blocks[site.block][site.key] = make(src.weight, src.bias ? copy(src.bias) : undefined, site);
      opts.onLayer?.(site);
    }
    const head = fp.lmHead ? new Linear(copy(fp.lmHead.dense().weight)) : undefined;
    return new LlamaModel(fp.config, copy(fp.embed), blocks, copy(fp.norm), head);
  });
}

export interface RtnOptions {
  format: QuantFormat;
  /** LoRA adapters to attach (B = 0, so the model starts as plain quantization). */
  lora?: LoraOptions;
  /** Replaces round-to-nearest quantization (ICQ, for instance). */
  quantizer?: (w: Tensor, format: QuantFormat) => QuantizedTensor;
}

/** QLoRA's layer: the weight quantized (round to nearest, or `quantizer`), a fresh adapter. */
export function rtnLayers(opts: RtnOptions): LayerFactory {
  const quant = opts.quantizer ?? quantize;
  return (w, bias, site) => {
    const [out, inp] = w.shape;
    const lora = opts.lora ? Lora.create(inp, out, { ...opts.lora, seed: (opts.lora.seed ?? 0) + site.seed }, w.backend) : undefined;
    return new QuantLinear(quant(w, opts.format), bias, lora);
  };
}

/** The quantized layers of a model with their sites. */
export function quantLayers(model: LlamaModel): { site: LayerSite; layer: QuantLinear }[] {
  return layerSites(model).flatMap((site) => {
    const layer = model.blocks[site.block][site.key];
    return layer instanceof QuantLinear ? [{ site, layer }] : [];
  });
}

/** The adapter tensors of a model (of blocks before `upToBlock`) under checkpoint names:
 *  `<module>.lora_A`, `.lora_B`, `.iec_betaA`, `.iec_betaB`. */
export function namedAdapters(model: LlamaModel, upToBlock = Infinity): Map<string, Tensor> {
  const names = ['lora_A', 'lora_B', 'iec_betaA', 'iec_betaB'];
  const out = new Map<string, Tensor>();
  for (const { site, layer } of quantLayers(model)) {
    if (site.block < upToBlock) layer.parameters().forEach((p, j) => out.set(`${site.name}.${names[j]}`, p));
  }
  return out;
}

/** Every trainable adapter tensor of a model. */
export function adapterParameters(model: LlamaModel): Tensor[] {
  return quantLayers(model).flatMap(({ layer }) => layer.parameters());
}

/** Sets dropout's training flag on every adapter. */
export function setTraining(model: LlamaModel, training: boolean): void {
  for (const { layer } of quantLayers(model)) if (layer.lora) layer.lora.training = training;
}

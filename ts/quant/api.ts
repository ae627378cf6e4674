// Quantized weights as a storage type: packed codes plus per-group scales (optionally
// double-quantized) and zero points, each part a tensor on the weight's backend. Kernels consume
// the parts directly; nothing materializes the float weight unless dequantize() is called.

import type { QuantHandles } from '../backend.js';
import { isGradEnabled, record } from '../autograd.js';
import { FormatError, ShapeError, describeShape } from '../errors.js';
import { add, affine, mul, siluMul } from '../ops/arithmetic.js';
import { cast } from '../ops/cast.js';
import { gather } from '../ops/gather.js';
import { matmul } from '../ops/matmul.js';
import { sum } from '../ops/reduce.js';
import { broadcastTo, concat, reshape, slice } from '../ops/shape.js';
import { expectDType, out } from '../ops/util.js';
import { fromHandle, tensor, tidy, zeros, type Tensor, type TensorContainer } from '../tensor.js';
import { dynamicMap } from './doublequant.js';
import { DOUBLE_QUANT_BLOCK, type QuantFormat } from './formats.js';
import { groupsPerRow, storageBytes } from './reference.js';
import { unpackCodes } from './packing.js';
import { PART_NAMES, partLayout, type PartName } from './layout.js';

export class QuantizedTensor implements TensorContainer {
  readonly rows: number;
  readonly cols: number;

  constructor(
    readonly format: QuantFormat,
    readonly shape: readonly number[],
    readonly parts: Readonly<Partial<Record<PartName, Tensor>>> & { codes: Tensor },
  ) {
    this.cols = shape[shape.length - 1];
    this.rows = this.cols ? shape.reduce((a, b) => a * b, 1) / this.cols : 0;
  }

  get backend() { return this.parts.codes.backend; }
  /** Packed codes (u8): each row an MSB-first bit stream of `bits`-bit codes, padded to a byte. */
  get codes(): Tensor { return this.parts.codes; }
  /** Storage size of every part, in bytes. */
  get bytes(): number { return storageBytes(this.rows, this.cols, this.format, !!this.parts.offsetCodes); }

  /** Handles of the parts the backend kernels read (not NF-ICQ's offset parts, composed in TS). */
  handles(): QuantHandles {
    const h: Record<string, object> = {};
    for (const k of PART_NAMES) if (this.parts[k]) h[k] = this.parts[k]!.handle;
    return h as unknown as QuantHandles;
  }

  /** One unpacked code per element (for inspection and tests). */
  async unpackedCodes(): Promise<Uint8Array> {
    return unpackCodes((await this.codes.data()) as Uint8Array, this.rows, this.cols, this.format.bits);
  }

  tensors(): Tensor[] {
    return Object.values(this.parts).filter((t): t is Tensor => !!t);
  }

  dispose(): void {
    for (const t of this.tensors()) t.dispose();
  }

  toString(): string {
    return `QuantizedTensor(${describeShape(this.shape)}, ${this.format.name}, ${this.bytes} bytes)`;
  }
}

/** Quantizes w (any shape; groups run along the last axis) to the given format. */
export function quantize(w: Tensor, format: QuantFormat): QuantizedTensor {
  expectDType('quantize', w, 'f32', 'weight');
  if (!format || (format.kind !== 'nf' && format.kind !== 'int')) throw new FormatError(`quantize: expected a format from formats.nf()/formats.int(), got ${JSON.stringify(format)}`);
  if (w.rank < 1 || w.size === 0) throw new ShapeError(`quantize: expected a non-empty tensor, got ${describeShape(w.shape)}`);
  const cols = w.shape[w.rank - 1];
  const rows = w.size / cols;
  const be = w.backend;
  const handles = be.quantize(w.handle, rows, cols, format);
  const layout = partLayout(rows, cols, format);
  const parts: Partial<Record<PartName, Tensor>> = {};
  for (const [k, h] of Object.entries(handles) as [PartName, object][]) {
    const spec = layout[k];
    if (h && spec) parts[k] = fromHandle(be, h, spec.shape, spec.dtype);
  }
  return new QuantizedTensor(format, [...w.shape], parts as QuantizedTensor['parts']);
}

/** The float tensor the codes stand for. */
export function dequantize(q: QuantizedTensor): Tensor {
  const w = out(q.backend, q.backend.dequantize(q.handles(), q.rows, q.cols, q.format), q.shape);
  if (!q.parts.offsetCodes) return w;
  return reshape(add(reshape(w, [q.rows, q.cols]), expandGroups(offsetValues(q), q.cols, q.format.group)), q.shape);
}

// ---- NF-ICQ's τ (formats.ts, "ICQ"), composed from ops on the weight's backend ----

/** v [rows, groupsPerRow] spread over each group's elements: [rows, cols]. */
export function expandGroups(v: Tensor, cols: number, group: number): Tensor {
  const rows = v.size / Math.ceil(cols / group);
  const gpr = Math.ceil(cols / group);
  const full = reshape(broadcastTo(reshape(v, [rows, gpr, 1]), [rows, gpr, group]), [rows, gpr * group]);
  return gpr * group === cols ? full : slice(full, [0, 0], [rows, cols]);
}

/** x [n, cols] summed within each group of columns: [n, groupsPerRow] (the last group partial). */
export function groupSums(x: Tensor, cols: number, group: number): Tensor {
  const n = x.size / cols;
  const gpr = Math.ceil(cols / group);
  const x2 = reshape(x, [n, cols]);
  const padded = gpr * group === cols ? x2 : concat([x2, zeros([n, gpr * group - cols], 'f32', x.backend)], 1);
  return sum(reshape(padded, [n, gpr, group]), 2);
}

/** The decoded τ of an NF-ICQ tensor, [rows, groupsPerRow]: f32(map[offsetCodes[g]] · offset2[g / 256]). */
export function offsetValues(q: QuantizedTensor): Tensor {
  const gpr = groupsPerRow(q.cols, q.format);
  const groups = q.rows * gpr;
  const blocks = Math.ceil(groups / DOUBLE_QUANT_BLOCK);
  const map = tensor(dynamicMap(), [256, 1], 'f32', q.backend);
  let v = gather(map, cast(q.parts.offsetCodes!, 'i32'));
  if (blocks * DOUBLE_QUANT_BLOCK !== groups) v = concat([v, zeros([blocks * DOUBLE_QUANT_BLOCK - groups, 1], 'f32', q.backend)], 0);
  const scaled = reshape(mul(reshape(v, [blocks, DOUBLE_QUANT_BLOCK]), reshape(q.parts.offset2!, [blocks, 1])), [blocks * DOUBLE_QUANT_BLOCK]);
  return reshape(blocks * DOUBLE_QUANT_BLOCK === groups ? scaled : slice(scaled, [0], [groups]), [q.rows, gpr]);
}

/** The checks of dequantizeMatmul(x, q) and its kernel sizes: weight [rows, cols], xRows rows of
 *  x, output shape (shared with ops/async.ts). */
export function dequantizeMatmulPlan(x: Tensor, q: QuantizedTensor): { rows: number; cols: number; xRows: number; shape: number[] } {
  expectDType('dequantizeMatmul', x, 'f32', 'x');
  if (q.shape.length !== 2) throw new ShapeError(`dequantizeMatmul: the quantized weight must be [out, in], got ${describeShape(q.shape)}`);
  if (x.backend !== q.backend) throw new ShapeError(`dequantizeMatmul: x lives on '${x.backend.name}', the weight on '${q.backend.name}'`);
  const [rows, cols] = q.shape;
  if (x.rank < 1 || x.shape[x.rank - 1] !== cols) {
    throw new ShapeError(`dequantizeMatmul: x ${describeShape(x.shape)} must end in the weight's input size ${cols} (weight ${describeShape(q.shape)})`);
  }
  return { rows, cols, xRows: x.size / cols, shape: [...x.shape.slice(0, -1), rows] };
}

/**
 * x [..., in] · dequantize(q)ᵀ + scale · (x · aᵀ) · bᵀ for a LoRA branch a [rank, in], b [out,
 * rank] (with `iec`, IR-QLoRA's βA and βB terms as nn/lora.ts adds them), the low-rank term added
 * by the GEMV's own epilogue where the backend has Backend.dequantizeMatmulLowRank for this format
 * and size (one kernel where the GEMV makes x · aᵀ itself, else a matmul before it); undefined
 * otherwise (and for NF-ICQ weights), for the caller to compose. Inference only: no gradient is
 * recorded, so call it where none is wanted (QuantLinear does, under noGrad).
 */
export function dequantizeMatmulLowRank(x: Tensor, q: QuantizedTensor, a: Tensor, b: Tensor, scale: number, iec?: { betaA: Tensor; betaB: Tensor }): Tensor | undefined {
  const { rows, cols, xRows, shape } = dequantizeMatmulPlan(x, q);
  const be = x.backend;
  const rank = a.shape[0];
  checkBranch('dequantizeMatmulLowRank', '', a, b, rows, cols);
  if (iec && (iec.betaA.size !== 1 || iec.betaB.size !== 1)) throw new ShapeError('dequantizeMatmulLowRank: the IEC scalars βA and βB must hold one value each');
  if (!be.dequantizeMatmulLowRank || q.parts.offsetCodes || [a, b, iec?.betaA ?? a, iec?.betaB ?? a].some((t) => t.backend !== be)) return undefined;
  const lr = { a: a.handle, b: b.handle, rank, scale, iec: iec && { betaA: iec.betaA.handle, betaB: iec.betaB.handle } };
  const y = be.dequantizeMatmulLowRank(x.handle, xRows, q.handles(), rows, cols, q.format, lr);
  return y === null ? undefined : out(be, y, shape);
}

/**
 * x [..., in] · dequantize(qᵢ)ᵀ for several quantized weights [outᵢ, in] on the same x: one result
 * [..., outᵢ] each, or with `glu` (two weights of equal out) one silu(x · W₀ᵀ) · (x · W₁ᵀ) (a gated
 * MLP's input). `lora` (one per weight) adds each weight's LoRA branch scale · (x · aᵀ) · bᵀ (a
 * [rank, in], b [outᵢ, rank]; before silu·mul with glu). Where the backend has
 * Backend.dequantizeMatmulMany for these weights (one format, no NF-ICQ offsets) and no gradient can
 * be wanted (grad mode off, or nothing requiring grad), one kernel computes them all (decoding's
 * q/k/v and gate/up: one dispatch instead of three); else the same per weight
 * (dequantizeMatmulLowRank where it serves without a gradient, else composed ops, differentiable).
 */
export function dequantizeMatmulMany(x: Tensor, qs: QuantizedTensor[], opts: { glu?: boolean; lora?: { a: Tensor; b: Tensor; scale: number }[] } = {}): Tensor[] {
  if (qs.length === 0) throw new ShapeError('dequantizeMatmulMany: no weights');
  const plans = qs.map((q) => dequantizeMatmulPlan(x, q));
  const glu = !!opts.glu;
  if (glu && !(qs.length === 2 && plans[0].rows === plans[1].rows)) {
    throw new ShapeError(`dequantizeMatmulMany: glu needs two weights of equal out size, got ${qs.map((q) => describeShape(q.shape)).join(' and ')}`);
  }
  const lora = opts.lora;
  if (lora && lora.length !== qs.length) throw new ShapeError(`dequantizeMatmulMany: ${lora.length} LoRA branches for ${qs.length} weights`);
  lora?.forEach(({ a, b }, i) => checkBranch('dequantizeMatmulMany', `branch ${i}'s `, a, b, plans[i].rows, plans[i].cols));
  const be = x.backend;
  const f = qs[0].format;
  const inputs = [x, ...(lora ?? []).flatMap((l) => [l.a, l.b])];
  const noGradWanted = !(isGradEnabled() && inputs.some((t) => t.requiresGrad));
  const fused = be.dequantizeMatmulMany && qs.length > 1 && noGradWanted && inputs.every((t) => t.backend === be) && qs.every((q) => !q.parts.offsetCodes && sameFormat(q.format, f));
  const lrs = lora?.map(({ a, b, scale }) => ({ a: a.handle, b: b.handle, rank: a.shape[0], scale }));
  const ys = fused ? be.dequantizeMatmulMany!(x.handle, plans[0].xRows, qs.map((q) => q.handles()), plans.map((p) => p.rows), plans[0].cols, f, glu, lrs) : null;
  if (ys) return ys.map((y, i) => out(be, y, plans[i].shape));
  const each = qs.map((q, i) => {
    const l = lora?.[i];
    if (!l) return dequantizeMatmul(x, q);
    const y = noGradWanted ? dequantizeMatmulLowRank(x, q, l.a, l.b, l.scale) : undefined;
    return y ?? tidy(() => add(dequantizeMatmul(x, q), affine(matmul(matmul(x, l.a, { transB: true }), l.b, { transB: true }), l.scale)));
  });
  if (!glu) return each;
  try {
    return [siluMul(each[0], each[1])];
  } finally {
    for (const t of each) t.dispose();
  }
}

/** The checks of a LoRA branch a [rank, cols], b [rows, rank] (f32) of op's `what` (a prefix of the
 *  names in the messages). */
function checkBranch(op: string, what: string, a: Tensor, b: Tensor, rows: number, cols: number): void {
  if (a.rank !== 2 || a.shape[1] !== cols || b.rank !== 2 || b.shape[0] !== rows || b.shape[1] !== a.shape[0]) {
    throw new ShapeError(`${op}: ${what}a ${describeShape(a.shape)} and b ${describeShape(b.shape)} must be [rank, ${cols}] and [${rows}, rank]`);
  }
  expectDType(op, a, 'f32', `${what}a`);
  expectDType(op, b, 'f32', `${what}b`);
}

/** Whether two formats name the same code layout (the fused kernels' one format). */
const sameFormat = (a: QuantFormat, b: QuantFormat) => a === b || a.name === b.name;

/**
 * x [..., in] · dequantize(q)ᵀ for q of shape [out, in] -> [..., out], without materializing the
 * float weight. Differentiable with respect to x (the quantized weight is frozen).
 */
export function dequantizeMatmul(x: Tensor, q: QuantizedTensor): Tensor {
  const { rows, cols, xRows, shape } = dequantizeMatmulPlan(x, q);
  const be = x.backend;
  const y = out(be, be.dequantizeMatmul(x.handle, xRows, q.handles(), rows, cols, q.format), shape);
  // dx = dy · W by the fused kernel (each weight row decoded once, no float copy of W); W without
  // τ: NF-ICQ's term below has its own gradient
  const yCodes = record('dequantizeMatmul', [x], y, (g) => {
    const gRows = g.size / rows;
    return [out(be, be.dequantizeMatmulT(g.handle, gRows, q.handles(), rows, cols, q.format), [...g.shape.slice(0, -1), cols])];
  });
  if (!q.parts.offsetCodes) return yCodes;
  // NF-ICQ: x · (W + τ spread over groups)ᵀ = x · Wᵀ + groupSums(x) · τᵀ (differentiable ops)
  const tauTerm = matmul(groupSums(x, cols, q.format.group), offsetValues(q), { transB: true });
  return add(yCodes, reshape(tauTerm, shape));
}

// A thin layer over the addon's GPU exports for the kernel files: buffer handles, cached
// pipelines, parameter packing, and dispatch sizes.
//
// Kernel convention (crates/node/src/gpu/device.rs): binding 0 is `var<storage, read> P:
// array<u32>` (the parameters: u32 words; f32 values as their bits, read with bitcast<f32>),
// bindings 1.. are the buffers in the order given to run(). Every binding must be used by the
// entry point (auto layouts drop unused ones). 1-D kernels get a 2-D grid when they need more than
// 65535 workgroups: index = gid.x + gid.y * num_workgroups.x * WG (see GRID_INDEX).

import type { GpuAddon, GpuInfo } from './addon.js';
import { BackendError } from '../../errors.js';

export const GEMV_COMPUTES = ['f32', 'f16', 'int8'] as const;
/** The quantized GEMV's compute dtype (Device.gemv). */
export type GemvCompute = (typeof GEMV_COMPUTES)[number];
/** `v` as a GEMV compute dtype (undefined or '' is f32); a BackendError naming it otherwise. */
export function gemvCompute(v: string | undefined): GemvCompute {
  if (v === undefined || v === '') return 'f32';
  if ((GEMV_COMPUTES as readonly string[]).includes(v)) return v as GemvCompute;
  throw new BackendError(`gpu: the GEMV compute dtype '${v}' (QUANTLORA_GPU_GEMV or the gemv option) is not one of ${GEMV_COMPUTES.join(', ')}`);
}

export interface GpuHandle {
  id: number;
  /** Logical size in bytes (the buffer is rounded up to a multiple of 4). */
  bytes: number;
}

/** WGSL: the flat thread index of a 1-D kernel launched by dispatch1d (WG = workgroup size). */
export const GRID_INDEX = 'gid.x + gid.y * nwg.x * WG';

const scratch = new DataView(new ArrayBuffer(4));
/** The u32 word holding the f32 bits of x (for parameters). */
export function f32Bits(x: number): number {
  scratch.setFloat32(0, x, true);
  return scratch.getUint32(0, true);
}

export class Device {
  /** Pipelines by key, compiled without and with shader runtime checks. */
  private readonly pipes = new Map<string, number>();
  private readonly pipesChecked = new Map<string, number>();
  /** Scratch for run(): parameter words, byte views of their first n words, id arrays by length. */
  private words = new Uint32Array(64);
  private wordViews: Uint8Array[] = [];
  private readonly idViews: Uint32Array[] = [];
  private liveCount = 0;

  /** Kernels may use subgroup operations (the adapter has them and they were not turned off). */
  readonly subgroups: boolean;
  /** Pipelines made from now on are compiled with wgpu's shader runtime checks (clamped indices
   *  into workgroup and private arrays, guarded integer division, bounded loops). Default: off
   *  (on with QUANTLORA_GPU_SHADER_CHECKS=1). The generated kernels bound their own indices and
   *  never divide by zero, so the results are the same with fewer instructions: the parity table
   *  passes both ways (lavapipe and the H200), test/gpu.test.ts compares a sample bit for bit, and
   *  on the H200 the GEMV is about 10% faster without them (bench/README). Pipelines are cached per
   *  setting, so it can be switched at any time (bench/gpu.ts times both). */
  checks: boolean;
  /** The compute dtype of the quantized GEMV (dequantizeMatmul of up to 8 x rows: decoding one
   *  token) for 2- and 4-bit codes (QUANTLORA_GPU_GEMV; may be changed at any time):
   *  - 'f32' (default): exact, as the parity table checks (1e-5);
   *  - 'int8': x quantized to int8 per slice of 16+ columns, the products summed as integer dot
   *    products, for 2/4-bit INT and 4-bit NF codes: about 0.5% relative RMS error for INT (x's
   *    rounding), 0.75% for NF (the values rounded to int8 as well), as 8-bit activations are
   *    elsewhere; on an H200, int4 at 82-83% of copy bandwidth instead of 54% (bench/README);
   *  - 'f16': 4-bit codes, on adapters with shader-f16: products in f16, summed in f16 over a
   *    thread's step (16 columns), then scaled in f32: about 1e-3 relative error, and |x| beyond
   *    ~4000 can overflow; about as fast as f32 on the H200.
   *  Other formats and shapes stay f32. */
  gemv: GemvCompute;

  constructor(readonly addon: GpuAddon, readonly info: GpuInfo, opts: { subgroups?: boolean; checks?: boolean; gemv?: string } = {}) {
    this.subgroups = info.subgroups && opts.subgroups !== false;
    this.checks = opts.checks ?? false;
    this.gemv = gemvCompute(opts.gemv);
  }

  alloc(bytes: number, zeroed = false): GpuHandle {
    const id = this.buffer(bytes, () => this.addon.gpuAlloc(bytes, zeroed));
    return { id, bytes };
  }

  upload(data: ArrayBufferView): GpuHandle {
    const id = this.buffer(data.byteLength, () => this.addon.gpuUpload(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)));
    return { id, bytes: data.byteLength };
  }

  /** A new buffer's id from `make`; the device's refusals (out of memory, over the memory limit,
   *  past the adapter's buffer limits) become BackendErrors. */
  private buffer(bytes: number, make: () => number): number {
    let id: number;
    try {
      id = make();
    } catch (e) {
      throw new BackendError(`gpu: a ${bytes}-byte buffer: ${(e as Error).message}`);
    }
    this.liveCount++;
    return id;
  }

  /** Caps the bytes the device holds (live, pending and pooled buffers; 0: no cap), as
   *  QUANTLORA_GPU_MEMORY_MB does at start; returns the previous cap. Past it, the pool is
   *  emptied and the buffer tried again, then refused with a BackendError. */
  setMemoryLimit(bytes: number): number {
    return this.addon.gpuSetMemoryLimit(bytes);
  }

  free(h: GpuHandle): void {
    if (h.id < 0) return;
    this.addon.gpuFree(h.id);
    h.id = -1;
    this.liveCount--;
  }

  get live(): number {
    return this.liveCount;
  }

  /** The bytes of h (all of them by default), waiting for the GPU. */
  readBytes(h: GpuHandle, offset = 0, bytes = h.bytes - offset): Uint8Array {
    return this.addon.gpuReadSync(h.id, offset, bytes);
  }

  /** Pipeline for `entry` of a WGSL module; compiled on first use, then cached. A generated
   *  source should be passed as a function: it is only called on the first use. */
  pipeline(module: string, source: string | (() => string), entry = 'main', constants?: Record<string, number>): number {
    const pipes = this.checks ? this.pipesChecked : this.pipes;
    const names = constants ? Object.keys(constants).sort() : undefined;
    // the common case (no constants, entry main) keys by the module name alone: no string is built
    const key = names?.length ? `${module}|${entry}|${names.map((n) => `${n}=${constants![n]}`).join(',')}` : entry === 'main' ? module : `${module}|${entry}`;
    let p = pipes.get(key);
    if (p === undefined) {
      p = this.addon.gpuPipeline(module, typeof source === 'string' ? source : source(), entry, names ?? [], (names ?? []).map((n) => constants![n]), this.checks);
      pipes.set(key, p);
    }
    return p;
  }

  /** Records one dispatch. params: u32 words (use f32Bits for floats). The addon copies the
   *  parameters and ids before it returns, so both travel in reused scratch views. */
  run(pipeline: number, params: ArrayLike<number>, buffers: GpuHandle[], groups: [number, number, number]): void {
    const n = Math.max(1, params.length);
    if (n > this.words.length) this.grow(n);
    const words = this.words;
    words[0] = 0;
    if (params instanceof Uint32Array) words.set(params);
    else for (let i = 0; i < params.length; i++) words[i] = params[i];
    const ids = this.idViews[buffers.length] ?? (this.idViews[buffers.length] = new Uint32Array(buffers.length));
    for (let i = 0; i < buffers.length; i++) ids[i] = buffers[i].id;
    this.addon.gpuRun(pipeline, this.wordViews[n] ?? (this.wordViews[n] = new Uint8Array(words.buffer, 0, 4 * n)), ids, groups[0], groups[1], groups[2]);
  }

  private grow(n: number): void {
    this.words = new Uint32Array(Math.max(n, 2 * this.words.length));
    this.wordViews = [];
  }

  /** A grid of at least ceil(threads / wg) workgroups of size wg, as [x, y, 1] with x <= 65535. */
  grid(threads: number, wg: number): [number, number, number] {
    const groups = Math.max(1, Math.ceil(threads / wg));
    if (groups <= 65535) return [groups, 1, 1];
    const x = 65535;
    return [x, Math.ceil(groups / x), 1];
  }

  copy(src: GpuHandle, srcOffset: number, dst: GpuHandle, dstOffset: number, bytes: number): void {
    this.addon.gpuCopy(src.id, srcOffset, dst.id, dstOffset, bytes);
  }
}

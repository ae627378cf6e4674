// The GPU backend: tensors live in GPU buffers (wgpu, in the native addon); kernels are WGSL
// (the kernel files next to this one) recorded into command batches; data comes back to the host
// only when read (`await t.data()`, or dataSync(), which waits for the GPU).
//
// Selection (environment): QUANTLORA_GPU_BACKENDS (vulkan, gl, metal, dx12, all; default: the
// platform's primary APIs), QUANTLORA_GPU_ADAPTER (a substring of the adapter name),
// QUANTLORA_GPU_SOFTWARE=1 (accept a software adapter such as Mesa's llvmpipe; refused otherwise,
// so a machine without a GPU keeps the native CPU backend), QUANTLORA_GPU_SUBGROUPS=0 (no subgroup
// operations), QUANTLORA_GPU_SHADER_CHECKS=1 (kernels compiled with wgpu's runtime checks:
// Device.checks; off by default), QUANTLORA_GPU_PROFILE=1 (a per-kernel profile),
// QUANTLORA_GPU_GEMV=f32|int8|f16 (the one-token quantized GEMV's compute dtype: Device.gemv; f32
// by default).
//
// A kernel without a WGSL implementation on this adapter runs on the native CPU backend with its
// inputs copied to the host and its outputs back (`hostKernels` in info() lists them); the kernel
// files decide per adapter (e.g. ICQ's search needs f64 in shaders to be bit-identical).

import type { Backend, BackendInfo, Handle, QuantHandles } from '../../backend.js';
import { BYTES_PER_ELEMENT, type AnyTypedArray, type DType } from '../../dtype.js';
import { BackendError } from '../../errors.js';
import { registerBackend } from '../../registry.js';
import { loadNativeAddon, type NativeAddon } from '../native/addon.js';
import { NativeBackend } from '../native/index.js';
import type { GpuAddon } from './addon.js';
import { Device, f32Bits, gemvCompute, GRID_INDEX, type GpuHandle } from './device.js';
import { elementwiseKernels } from './elementwise.js';
import { layoutKernels } from './layout.js';
import { lwcKernels } from './lwc.js';
import { matmulKernels } from './matmul.js';
import { optimKernels } from './optim.js';
import { quantEncodeKernels } from './quant-encode.js';
import { quantKernels } from './quant.js';
import { transformerKernels } from './transformer.js';

export const KERNEL_NAMES = [
  'unary', 'affine', 'pow', 'binary', 'cast', 'reduce',
  'strided', 'writeStrided', 'gather', 'scatterAddRows',
  'matmul',
  'rmsnorm', 'rmsnormBackward', 'rope', 'softmax', 'softmaxBackward', 'crossEntropy', 'crossEntropyBackward',
  'quantize', 'dequantize', 'dequantizeMatmul', 'dequantizeMatmulT', 'icqSearch',
] as const;
export type KernelName = (typeof KERNEL_NAMES)[number];
/** Optional kernels of the Backend interface: a group may provide them; without one the method
 *  stays undefined (no host fallback here: callers take their own host path). */
export const OPTIONAL_KERNEL_NAMES = ['adamStep', 'lwcFakeQuant', 'lwcGrad', 'attention', 'siluMul', 'addRmsnorm', 'ropeAppend', 'dequantizeMatmulLowRank', 'dequantizeMatmulMany', 'argmaxRows'] as const;
type OptionalKernelName = (typeof OPTIONAL_KERNEL_NAMES)[number];

/** A kernel of the Backend interface with the device as its first argument. */
export type Kernels = {
  [K in KernelName | OptionalKernelName]: (dev: Device, ...args: Parameters<NonNullable<Backend[K]>>) => ReturnType<NonNullable<Backend[K]>>;
};
/** What a kernel file provides; a group may return undefined for a kernel this adapter cannot
 *  run (then the host runs it). */
export type KernelGroup = (dev: Device) => Partial<Kernels>;

const GROUPS: KernelGroup[] = [elementwiseKernels, layoutKernels, matmulKernels, transformerKernels, quantKernels, quantEncodeKernels, lwcKernels, optimKernels];

const FILL = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
override WG: u32 = 256u;
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = ${GRID_INDEX};
  if (i < P[0]) { y[i] = P[1]; }
}`;

const isGpu = (x: unknown): x is GpuHandle => typeof x === 'object' && x !== null && typeof (x as GpuHandle).id === 'number' && typeof (x as GpuHandle).bytes === 'number';
const isHost = (x: unknown): x is { buf: ArrayBuffer; bytes: number } => typeof x === 'object' && x !== null && (x as { buf?: unknown }).buf instanceof ArrayBuffer;

export class GpuBackend implements Backend {
  readonly name = 'gpu';
  readonly dev: Device;
  private readonly host: NativeBackend;
  /** Kernels this adapter runs on the host (no WGSL version, or a feature missing). */
  readonly hostKernels: KernelName[] = [];

  // the kernels, assigned in the constructor
  unary!: Backend['unary'];
  affine!: Backend['affine'];
  pow!: Backend['pow'];
  binary!: Backend['binary'];
  cast!: Backend['cast'];
  reduce!: Backend['reduce'];
  strided!: Backend['strided'];
  writeStrided!: Backend['writeStrided'];
  gather!: Backend['gather'];
  scatterAddRows!: Backend['scatterAddRows'];
  matmul!: Backend['matmul'];
  rmsnorm!: Backend['rmsnorm'];
  rmsnormBackward!: Backend['rmsnormBackward'];
  rope!: Backend['rope'];
  softmax!: Backend['softmax'];
  softmaxBackward!: Backend['softmaxBackward'];
  crossEntropy!: Backend['crossEntropy'];
  crossEntropyBackward!: Backend['crossEntropyBackward'];
  quantize!: Backend['quantize'];
  dequantize!: Backend['dequantize'];
  dequantizeMatmul!: Backend['dequantizeMatmul'];
  dequantizeMatmulT!: Backend['dequantizeMatmulT'];
  icqSearch!: Backend['icqSearch'];
  adamStep?: Backend['adamStep'];
  attention?: Backend['attention'];
  siluMul?: Backend['siluMul'];
  addRmsnorm?: Backend['addRmsnorm'];
  ropeAppend?: Backend['ropeAppend'];
  dequantizeMatmulLowRank?: Backend['dequantizeMatmulLowRank'];
  dequantizeMatmulMany?: Backend['dequantizeMatmulMany'];
  argmaxRows?: Backend['argmaxRows'];
  lwcFakeQuant?: Backend['lwcFakeQuant'];
  lwcGrad?: Backend['lwcGrad'];

  constructor(addon: GpuAddon & NativeAddon, opts: { backends?: string; adapter?: string; allowSoftware?: boolean; subgroups?: boolean; checks?: boolean; profile?: boolean; gemv?: string } = {}) {
    gemvCompute(opts.gemv); // a bad value fails before a device is opened
    const info = addon.gpuInit(opts.backends ?? null, opts.adapter ?? null, opts.allowSoftware ?? false);
    this.dev = new Device(addon, info, { subgroups: opts.subgroups, checks: opts.checks, gemv: opts.gemv });
    this.host = new NativeBackend(addon);
    const impl: Partial<Kernels> = {};
    for (const g of GROUPS) Object.assign(impl, g(this.dev));
    const self = this as unknown as Record<KernelName | OptionalKernelName, (...a: unknown[]) => unknown>;
    const optional: readonly string[] = OPTIONAL_KERNEL_NAMES;
    for (const name of [...KERNEL_NAMES, ...OPTIONAL_KERNEL_NAMES]) {
      const k = impl[name] as ((dev: Device, ...a: unknown[]) => unknown) | undefined;
      if (!k && optional.includes(name)) continue;
      if (!k) this.hostKernels.push(name as KernelName);
      const run = k ? (...a: unknown[]) => k(this.dev, ...a) : (...a: unknown[]) => this.onHost(name as KernelName, a);
      self[name] = opts.profile ? this.profiled(name, run) : run;
    }
    if (opts.profile) this.readSync = this.profiled('readSync', this.readSync.bind(this));
  }

  /** Per kernel and readSync (opts.profile, QUANTLORA_GPU_PROFILE=1): calls and milliseconds, each call timed from an idle
   *  GPU to the end of its own work (so kernels are serialized: for finding hot spots only). */
  readonly profile = new Map<string, { calls: number; ms: number }>();

  private profiled<A extends unknown[], R>(name: string, run: (...a: A) => R): (...a: A) => R {
    return (...a: A) => {
      this.dev.addon.gpuWait();
      const t = performance.now();
      const out = run(...a);
      this.dev.addon.gpuWait();
      const e = this.profile.get(name) ?? { calls: 0, ms: 0 };
      e.calls++;
      e.ms += performance.now() - t;
      this.profile.set(name, e);
      return out;
    };
  }

  info(): BackendInfo {
    const i = this.dev.info;
    return {
      name: this.name,
      details: {
        kind: 'wgpu (native addon)',
        adapter: i.name,
        api: i.backend,
        type: i.deviceType,
        driver: `${i.driver} ${i.driverInfo}`.trim(),
        f16: i.f16,
        f64: i.f64,
        subgroups: i.subgroups ? `${i.subgroupMin}-${i.subgroupMax}${this.dev.subgroups ? '' : ' (off: QUANTLORA_GPU_SUBGROUPS=0)'}` : false,
        maxBufferMiB: Math.floor(i.maxStorageBindingBytes / 2 ** 20),
        hostKernels: this.hostKernels.length ? this.hostKernels.join(' ') : 'none',
        shaderChecks: this.dev.checks ? 'on (QUANTLORA_GPU_SHADER_CHECKS=1)' : 'off',
        gemv: this.dev.gemv === 'f32' ? 'f32' : `${this.dev.gemv} (QUANTLORA_GPU_GEMV)`,
      },
    };
  }

  // ---- storage ----

  upload(data: AnyTypedArray): Handle {
    return this.dev.upload(data);
  }
  zeros(dtype: DType, size: number): Handle {
    return this.dev.alloc(size * BYTES_PER_ELEMENT[dtype], true);
  }
  fill(size: number, value: number): Handle {
    const out = this.dev.alloc(size * 4);
    if (size > 0) this.dev.run(this.dev.pipeline('fill', FILL), [size, f32Bits(value)], [out], this.dev.grid(size, 256));
    return out;
  }
  async read(h: Handle, dtype: DType, size: number): Promise<AnyTypedArray> {
    const bytes = size * BYTES_PER_ELEMENT[dtype];
    return typed(await this.dev.addon.gpuRead((h as GpuHandle).id, 0, bytes), dtype, size);
  }
  readSync(h: Handle, dtype: DType, size: number): AnyTypedArray {
    return typed(this.dev.readBytes(h as GpuHandle, 0, size * BYTES_PER_ELEMENT[dtype]), dtype, size);
  }
  free(h: Handle): void {
    this.dev.free(h as GpuHandle);
  }
  liveBuffers(): number {
    return this.dev.live;
  }
  memoryStats(resetPeak = false): { liveBytes: number; peakBytes: number } {
    const s = this.dev.addon.gpuStats(resetPeak);
    return { liveBytes: s.liveBytes, peakBytes: s.peakBytes };
  }

  // ---- host fallback ----

  /** Runs kernel `name` on the native CPU backend: GPU handles among the arguments (also inside
   *  QuantHandles) are copied to the host, the results copied back. writeStrided's dst (updated
   *  in place) is copied back into the same GPU buffer. */
  private onHost(name: KernelName, args: unknown[]): unknown {
    const temps: Handle[] = [];
    const toHost = (x: unknown): unknown => {
      if (isGpu(x)) {
        const h = this.host.upload(this.dev.readBytes(x));
        temps.push(h);
        return h;
      }
      if (typeof x === 'object' && x !== null && isGpu((x as QuantHandles).codes)) {
        return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, toHost(v)]));
      }
      return x;
    };
    const toGpu = (x: unknown): unknown => {
      if (isHost(x)) {
        const g = this.dev.upload(new Uint8Array(x.buf, 0, x.bytes));
        this.host.free(x);
        return g;
      }
      if (Array.isArray(x)) return x.map(toGpu);
      if (typeof x === 'object' && x !== null) return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, toGpu(v)]));
      return x;
    };
    try {
      const hostArgs = args.map(toHost);
      const out = (this.host as unknown as Record<string, (...a: unknown[]) => unknown>)[name](...hostArgs);
      if (name === 'writeStrided') {
        const dst = args[0] as GpuHandle;
        const h = hostArgs[0] as { buf: ArrayBuffer; bytes: number };
        const tmp = this.dev.upload(new Uint8Array(h.buf, 0, h.bytes));
        this.dev.copy(tmp, 0, dst, 0, Math.ceil(dst.bytes / 4) * 4);
        this.dev.free(tmp);
      }
      return toGpu(out);
    } finally {
      for (const h of temps) this.host.free(h);
    }
  }
}

function typed(b: Uint8Array, dtype: DType, size: number): AnyTypedArray {
  const bytes = b.byteOffset % 4 === 0 ? b : b.slice();
  if (dtype === 'f32') return new Float32Array(bytes.buffer, bytes.byteOffset, size);
  if (dtype === 'i32') return new Int32Array(bytes.buffer, bytes.byteOffset, size);
  return new Uint8Array(bytes.buffer, bytes.byteOffset, size);
}

/** Options from the environment (see the top of this file). */
export function gpuOptionsFromEnv(env: Record<string, string | undefined> = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env ?? {}) {
  return {
    backends: env.QUANTLORA_GPU_BACKENDS || undefined,
    adapter: env.QUANTLORA_GPU_ADAPTER || undefined,
    allowSoftware: env.QUANTLORA_GPU_SOFTWARE === '1' || env.QUANTLORA_GPU_SOFTWARE === 'true',
    profile: env.QUANTLORA_GPU_PROFILE === '1',
    subgroups: env.QUANTLORA_GPU_SUBGROUPS !== '0',
    checks: env.QUANTLORA_GPU_SHADER_CHECKS === '1' || env.QUANTLORA_GPU_SHADER_CHECKS === 'true',
    gemv: env.QUANTLORA_GPU_GEMV || undefined,
  };
}

/** A GPU backend on the native addon's device (what the registry makes, with the environment's
 *  options; tests pass allowSoftware to run on lavapipe). Throws BackendError saying why not. */
export function openGpuBackend(opts: ConstructorParameters<typeof GpuBackend>[1] = gpuOptionsFromEnv()): GpuBackend {
  const addon = loadNativeAddon() as NativeAddon & Partial<GpuAddon>;
  if (typeof addon.gpuInit !== 'function') throw new BackendError('gpu: the native addon was built without the GPU path (rebuild with `bash crates/node/build.sh`)');
  try {
    return new GpuBackend(addon as NativeAddon & GpuAddon, opts);
  } catch (e) {
    if (e instanceof BackendError) throw e; // already says gpu
    throw new BackendError(`gpu: ${(e as Error).message}`);
  }
}

registerBackend('gpu', () => openGpuBackend(), 30);

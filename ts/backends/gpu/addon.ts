// The GPU exports of the quantlora addon (crates/node/src/gpu): buffers are u32 ids; kernels are
// WGSL text compiled once (gpuPipeline) and run by index (gpuRun) into one pending command batch.

export interface GpuInfo {
  name: string;
  backend: string;
  deviceType: string;
  driver: string;
  driverInfo: string;
  f16: boolean;
  f64: boolean;
  subgroups: boolean;
  subgroupMin: number;
  subgroupMax: number;
  maxBufferBytes: number;
  maxStorageBindingBytes: number;
  maxWorkgroupStorageBytes: number;
  maxWorkgroupInvocations: number;
  /** Storage buffers one compute shader may bind. */
  maxStorageBuffers: number;
}

export interface GpuStats {
  dispatches: number;
  submits: number;
  live: number;
  liveBytes: number;
  deferredBytes: number;
  poolBytes: number;
  peakBytes: number;
  /** Dispatches that reused a cached bind group. */
  bindHits: number;
  /** Device buffers created (not taken from the pool). */
  created: number;
}

export interface GpuAddon {
  gpuInit(backends: string | null, adapter: string | null, allowSoftware: boolean): GpuInfo;
  gpuAlloc(bytes: number, zeroed: boolean): number;
  gpuUpload(data: Uint8Array): number;
  gpuFree(id: number): void;
  gpuLive(): number;
  /** Counters and memory (bytes: live, freed but still in the pending batch, pooled, and the peak
   *  of the three together since init or the last resetPeak). */
  gpuStats(resetPeak?: boolean): GpuStats;
  /** Bind group cache on/off (default on; QUANTLORA_GPU_BIND_CACHE=0); returns the previous setting. */
  gpuSetBindCache(on: boolean): boolean;
  /** Destroys the pooled free buffers. */
  gpuTrim(): void;
  /** Caps the bytes the device holds (0: none; QUANTLORA_GPU_MEMORY_MB); returns the previous cap. */
  gpuSetMemoryLimit(bytes: number): number;
  /** checks false: compiled without wgpu's shader runtime checks (see Device.checks). */
  gpuPipeline(module: string, source: string, entry: string, names: string[], values: number[], checks?: boolean): number;
  gpuRun(pipeline: number, params: Uint8Array, buffers: Uint32Array, x: number, y: number, z: number): void;
  gpuCopy(src: number, srcOffset: number, dst: number, dstOffset: number, bytes: number): void;
  gpuFlush(): void;
  /** The first batch's size after a wait (QUANTLORA_GPU_FIRST_BATCH); returns the previous one. */
  gpuSetFirstBatch(n: number): number;
  /** The most dispatches in one batch (QUANTLORA_GPU_MAX_BATCH); returns the previous one. */
  gpuSetMaxBatch(n: number): number;
  /** Starts summing the GPU time of the recorded work (timestamps around every pass); false where
   *  the adapter has no timestamp queries. */
  gpuTimingStart(): boolean;
  /** Submits, waits, and returns the GPU time since gpuTimingStart (null if not started). */
  gpuTimingStop(): { ms: number; passes: number } | null;
  gpuWait(): void;
  gpuReadSync(id: number, offset: number, bytes: number): Uint8Array;
  gpuRead(id: number, offset: number, bytes: number): Promise<Uint8Array>;
}

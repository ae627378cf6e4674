//! The GPU path of the addon: exports over device.rs. Buffers are u32 ids; kernels are WGSL text
//! sent once by ts/backends/gpu (gpuPipeline) and then run by index (gpuRun). Every export
//! returns a JS Error naming itself on bad input or a device error; none aborts the process.

mod device;
mod timing;

use crate::args::err;
use device::{read_staged, with_gpu, Gpu, Selection, GPU};
use napi::bindgen_prelude::{AsyncTask, Buffer, Uint32Array, Uint8Array};
use napi::{Env, Error, Result, Status, Task};
use napi_derive::napi;

fn js<T>(r: device::Res<T>) -> Result<T> {
    r.map_err(err)
}

fn bytes(name: &str, v: f64) -> Result<u64> {
    if !(v >= 0.0 && v.fract() == 0.0 && v <= 9.0e15) {
        return Err(err(format!("{name}: expected a non-negative integer byte count, got {v}")));
    }
    Ok(v as u64)
}

#[napi(object)]
pub struct GpuInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub f16: bool,
    pub f64: bool,
    pub subgroups: bool,
    pub subgroup_min: u32,
    pub subgroup_max: u32,
    pub max_buffer_bytes: f64,
    pub max_storage_binding_bytes: f64,
    pub max_workgroup_storage_bytes: u32,
    pub max_workgroup_invocations: u32,
    /// Storage buffers one compute shader may bind.
    pub max_storage_buffers: u32,
}

fn info_of(g: &Gpu) -> GpuInfo {
    let i = &g.info;
    GpuInfo {
        name: i.name.clone(),
        backend: format!("{:?}", i.backend).to_lowercase(),
        device_type: format!("{:?}", i.device_type),
        driver: i.driver.clone(),
        driver_info: i.driver_info.clone(),
        f16: g.features.contains(wgpu::Features::SHADER_F16),
        f64: g.features.contains(wgpu::Features::SHADER_F64),
        subgroups: g.features.contains(wgpu::Features::SUBGROUP),
        subgroup_min: i.subgroup_min_size,
        subgroup_max: i.subgroup_max_size,
        max_buffer_bytes: g.limits.max_buffer_size as f64,
        max_storage_binding_bytes: g.limits.max_storage_buffer_binding_size as f64,
        max_workgroup_storage_bytes: g.limits.max_compute_workgroup_storage_size,
        max_workgroup_invocations: g.limits.max_compute_invocations_per_workgroup,
        max_storage_buffers: g.limits.max_storage_buffers_per_shader_stage,
    }
}

/// Opens the GPU device once per process; a later call gets the same device's info when that
/// device fits its selection too, and an error otherwise (one process holds one device).
/// backends: comma list (vulkan, gl, metal, dx12, all); adapter: a substring of the adapter name;
/// allowSoftware: accept CPU (software) adapters such as llvmpipe.
#[napi(catch_unwind)]
pub fn gpu_init(backends: Option<String>, adapter: Option<String>, allow_software: bool) -> Result<GpuInfo> {
    let sel = Selection { backends, adapter, allow_software };
    let apis = sel.apis().map_err(|e| err(format!("gpuInit: {e}")))?;
    let mut g = GPU.lock().unwrap_or_else(|p| p.into_inner());
    match g.as_ref() {
        Some(open) if !sel.fits(apis, &open.info) => {
            let i = &open.info;
            return Err(err(format!("gpuInit: this process already opened {} [{:?}, {:?}], which does not fit this selection{}", i.name, i.backend, i.device_type, sel.asked())));
        }
        Some(_) => {}
        None => *g = Some(Gpu::new(&sel).map_err(|e| err(format!("gpuInit: {e}")))?),
    }
    Ok(info_of(g.as_ref().unwrap()))
}

#[napi(catch_unwind)]
pub fn gpu_alloc(bytes_: f64, zeroed: bool) -> Result<u32> {
    let n = bytes("gpuAlloc", bytes_)?;
    js(with_gpu("gpuAlloc", |g| g.alloc(n, zeroed)))
}

/// A new buffer holding a copy of data.
#[napi(catch_unwind)]
pub fn gpu_upload(data: Uint8Array) -> Result<u32> {
    js(with_gpu("gpuUpload", |g| g.upload(&data)))
}

#[napi(catch_unwind)]
pub fn gpu_free(id: u32) -> Result<()> {
    js(with_gpu("gpuFree", |g| g.free(id)))
}

/// Buffers allocated and not yet freed.
#[napi(catch_unwind)]
pub fn gpu_live() -> Result<u32> {
    js(with_gpu("gpuLive", |g| Ok(g.live() as u32)))
}

#[napi(object)]
pub struct GpuStats {
    pub dispatches: f64,
    pub submits: f64,
    pub live: u32,
    /// Bytes behind live buffers.
    pub live_bytes: f64,
    /// Bytes freed while the pending batch may still read them (reused only by kernel outputs).
    pub deferred_bytes: f64,
    /// Bytes in the free pool (QUANTLORA_GPU_POOL_MB caps it; default 1024).
    pub pool_bytes: f64,
    /// The most bytes the three held together (since init or the last reset).
    pub peak_bytes: f64,
    /// Dispatches that reused a cached bind group.
    pub bind_hits: f64,
    /// Device buffers created (not taken from the pool).
    pub created: f64,
}

/// Counters and memory; `resetPeak` starts the peak again from what is held now (after reading it).
#[napi(catch_unwind)]
pub fn gpu_stats(reset_peak: Option<bool>) -> Result<GpuStats> {
    js(with_gpu("gpuStats", |g| {
        let (live_bytes, deferred_bytes, pool_bytes, peak) = g.memory(reset_peak.unwrap_or(false));
        Ok(GpuStats {
            dispatches: g.dispatches as f64,
            submits: g.submits as f64,
            live: g.live() as u32,
            live_bytes: live_bytes as f64,
            deferred_bytes: deferred_bytes as f64,
            pool_bytes: pool_bytes as f64,
            peak_bytes: peak as f64,
            bind_hits: g.bind_hits as f64,
            created: g.serial as f64,
        })
    }))
}

/// Turns the bind group cache on or off (QUANTLORA_GPU_BIND_CACHE=0 starts with it off); returns
/// the previous setting. Benchmarks compare both in one process.
#[napi(catch_unwind)]
pub fn gpu_set_bind_cache(on: bool) -> Result<bool> {
    js(with_gpu("gpuSetBindCache", |g| Ok(std::mem::replace(&mut g.bind_cache_on, on))))
}

/// Caps the bytes the device holds (live, deferred and pooled buffers; 0: no cap); returns the
/// previous cap. A buffer past the cap is refused with the out-of-memory path: the pool is emptied
/// and the allocation tried once more, then a typed error. QUANTLORA_GPU_MEMORY_MB sets it at start.
#[napi(catch_unwind)]
pub fn gpu_set_memory_limit(bytes: f64) -> Result<f64> {
    js(with_gpu("gpuSetMemoryLimit", |g| {
        if !(bytes >= 0.0 && bytes.is_finite()) {
            return Err(format!("the memory limit must be a finite number of bytes >= 0, got {bytes}"));
        }
        Ok(std::mem::replace(&mut g.memory_limit, bytes as u64) as f64)
    }))
}

/// Destroys the pooled free buffers (the memory goes back to the driver).
#[napi(catch_unwind)]
pub fn gpu_trim() -> Result<()> {
    js(with_gpu("gpuTrim", |g| {
        g.trim();
        Ok(())
    }))
}

/// Compiles entry `entry` of WGSL `source` (the module cached under `module`) with override
/// constants (names[i] = values[i]); returns the pipeline index for gpuRun. `checks` false (default
/// true) compiles without wgpu's shader runtime checks (Device::pipeline says which).
#[napi(catch_unwind)]
pub fn gpu_pipeline(module: String, source: String, entry: String, names: Vec<String>, values: Vec<f64>, checks: Option<bool>) -> Result<u32> {
    if names.len() != values.len() {
        return Err(err(format!("gpuPipeline: {} constant names but {} values", names.len(), values.len())));
    }
    let consts: Vec<(String, f64)> = names.into_iter().zip(values).collect();
    js(with_gpu("gpuPipeline", |g| g.pipeline(&module, &source, &entry, &consts, checks.unwrap_or(true))))
}

/// Records one dispatch: params at binding 0, buffers[i] at binding i + 1, groups x, y, z.
#[napi(catch_unwind)]
pub fn gpu_run(pipeline: u32, params: Uint8Array, buffers: Uint32Array, x: u32, y: u32, z: u32) -> Result<()> {
    js(with_gpu("gpuRun", |g| g.run(pipeline, &params, &buffers, [x, y, z])))
}

/// Copies bytes from one buffer to another, in order with the pending kernels (offsets and size
/// multiples of 4).
#[napi(catch_unwind)]
pub fn gpu_copy(src: u32, src_offset: f64, dst: u32, dst_offset: f64, bytes_: f64) -> Result<()> {
    let (so, dof, n) = (bytes("gpuCopy", src_offset)?, bytes("gpuCopy", dst_offset)?, bytes("gpuCopy", bytes_)?);
    js(with_gpu("gpuCopy", |g| g.copy(src, so, dst, dof, n)))
}

/// Sets the first batch's size after a wait (QUANTLORA_GPU_FIRST_BATCH at run time; benchmarks
/// compare schedules in one process); returns the previous value.
#[napi(catch_unwind)]
pub fn gpu_set_first_batch(n: u32) -> Result<u32> {
    js(with_gpu("gpuSetFirstBatch", |g| Ok(g.set_first_batch(n))))
}

/// Sets the most dispatches in one batch (QUANTLORA_GPU_MAX_BATCH at run time); returns the
/// previous value.
#[napi(catch_unwind)]
pub fn gpu_set_max_batch(n: u32) -> Result<u32> {
    js(with_gpu("gpuSetMaxBatch", |g| Ok(g.set_max_batch(n))))
}

/// Starts summing the GPU time of the recorded work (timestamps around every pass; benchmarks).
/// false where the adapter has no timestamp queries.
#[napi(catch_unwind)]
pub fn gpu_timing_start() -> Result<bool> {
    js(with_gpu("gpuTimingStart", |g| g.timing_start()))
}

#[napi(object)]
pub struct GpuTiming {
    /// Milliseconds the GPU spent inside the timed passes.
    pub ms: f64,
    /// Passes timed (one per command batch).
    pub passes: f64,
}

/// Submits the pending work, waits for it, and returns the GPU time since gpuTimingStart (null if
/// timing was not started).
#[napi(catch_unwind)]
pub fn gpu_timing_stop() -> Result<Option<GpuTiming>> {
    js(with_gpu("gpuTimingStop", |g| Ok(g.timing_stop()?.map(|(ms, passes)| GpuTiming { ms, passes }))))
}

/// Submits the pending kernels.
#[napi(catch_unwind)]
pub fn gpu_flush() -> Result<()> {
    js(with_gpu("gpuFlush", |g| g.flush()))
}

/// Submits the pending kernels and waits until the GPU has finished them.
#[napi(catch_unwind)]
pub fn gpu_wait() -> Result<()> {
    let device = js(with_gpu("gpuWait", |g| {
        g.flush()?;
        g.synced();
        Ok(g.device.clone())
    }))?;
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| err(format!("gpuWait: {e}")))?;
    Ok(())
}

fn stage(what: &str, id: u32, offset: f64, bytes_: f64) -> Result<(wgpu::Device, wgpu::Buffer, usize, usize)> {
    let (off, n) = (bytes(what, offset)?, bytes(what, bytes_)?);
    js(with_gpu(what, |g| {
        let staging = g.stage(id, off, n)?;
        Ok((g.device.clone(), staging, (off & 3) as usize, n as usize))
    }))
}

/// Copies `bytes` of a buffer from `offset` to the host, waiting for the GPU (blocks the thread).
#[napi(catch_unwind)]
pub fn gpu_read_sync(id: u32, offset: f64, bytes_: f64) -> Result<Buffer> {
    if bytes_ == 0.0 {
        return Ok(Vec::new().into());
    }
    let (device, staging, skip, n) = stage("gpuReadSync", id, offset, bytes_)?;
    js(read_staged(&device, &staging, skip, n)).map(Buffer::from)
}

pub struct ReadTask {
    job: Option<(wgpu::Device, wgpu::Buffer, usize, usize)>,
}

impl Task for ReadTask {
    type Output = Vec<u8>;
    type JsValue = Buffer;
    fn compute(&mut self) -> Result<Vec<u8>> {
        let Some((device, staging, skip, n)) = self.job.take() else { return Ok(Vec::new()) };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_staged(&device, &staging, skip, n)))
            .map_err(|_| Error::new(Status::GenericFailure, "gpuRead: panicked while waiting for the GPU".to_string()))?
            .map_err(err)
    }
    fn resolve(&mut self, _env: Env, out: Vec<u8>) -> Result<Buffer> {
        Ok(out.into())
    }
}

/// gpuReadSync without blocking: the wait runs on a libuv worker; the commands are submitted now,
/// so later kernels may reuse or free the buffer at once.
#[napi(catch_unwind, ts_return_type = "Promise<Buffer>")]
pub fn gpu_read(id: u32, offset: f64, bytes_: f64) -> Result<AsyncTask<ReadTask>> {
    if bytes_ == 0.0 {
        return Ok(AsyncTask::new(ReadTask { job: None }));
    }
    let job = stage("gpuRead", id, offset, bytes_)?;
    Ok(AsyncTask::new(ReadTask { job: Some(job) }))
}

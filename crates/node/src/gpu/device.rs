//! The GPU device (wgpu): adapter selection, device-resident buffers behind u32 ids with a
//! size-keyed pool, compute pipelines built from WGSL text, and command batching (every kernel
//! is recorded into one pending command encoder; it is submitted when a read needs the results,
//! when the batch is full, or on flush()).
//!
//! Every kernel follows one binding convention: binding 0 is the kernel's parameters (a
//! `var<storage, read> P: array<u32>` slice of one shared parameter buffer), bindings 1.. are the
//! buffers in the order the caller lists them. Shapes and the dispatch size are decided by the
//! caller (ts/backends/gpu); this file knows nothing about kernels.
//!
//! Ordering. queue.write_buffer runs before the next submit's commands, so an upload may only go
//! into a buffer no pending command uses: a buffer freed while a batch is pending waits in
//! `deferred` and enters the pool only after that batch is submitted. A kernel's output (alloc) may
//! reuse a deferred buffer at once: whatever writes it is recorded after the commands that read
//! it, and wgpu orders the two. Without that, a batch of 2048 dispatches held every intermediate
//! it freed until its submit (the H200's results table ran out of memory with 4-5 processes). The
//! parameter buffer is written once per batch, just before its submit.
//!
//! Bind groups. A kernel whose WGSL follows the binding convention gets an explicit layout with
//! its parameters at a dynamic offset, so a bind group depends only on the buffers (and the size
//! of the parameter window): bind groups are cached by the buffers' serial numbers and reused
//! whenever a dispatch names the same buffers again (a chain of kernels on recycled buffers, a
//! training loop: the pool hands out the lowest serial first, so a repeated pattern of frees and
//! allocations gets the same buffers). Making one costs about 2.4 of the 6.3 us a small dispatch
//! takes to record on the CPU here (bench/README).
//!
//! Memory. Bytes are counted in three places: live (behind ids), deferred and pooled; `peak` is
//! the most the three ever held together. A buffer that does not fit on the device (wgpu reports
//! out-of-memory) is retried once after the pool is emptied and the batch submitted, then refused
//! with the counts in the message.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

pub type Res<T> = std::result::Result<T, String>;

use super::timing::{Timing, PAIRS};

/// The most dispatches a batch may be set to hold (QUANTLORA_GPU_MAX_BATCH, gpuSetMaxBatch; keeps
/// the parameter buffer small).
const MAX_BATCH: u32 = 2048;
/// Dispatches per batch by default: the host records a batch while the GPU runs the one before, and
/// a kernel costs the host about as much as the GPU or more, so a long batch leaves the GPU idle
/// while it is recorded, and the one still pending at a read runs after the recording, in series.
/// On an H200 (bench/README, eleventh session), 64 against doubling up to 2048: decoding at
/// 4.7-4.9 ms per token against 7.3, a RILQ step at 119-128 ms against 142-153.
const DEFAULT_MAX_BATCH: u32 = 64;
/// Dispatches in the first batch after the host waited for the GPU (then idle): submitted early so
/// the GPU starts while the host records the rest; each later batch doubles, up to max_batch.
const FIRST_BATCH: u32 = 32;
/// Bytes of parameters per batch.
const PARAMS_BYTES: u64 = 1 << 20;

pub struct Selection {
    pub backends: Option<String>,
    pub adapter: Option<String>,
    pub allow_software: bool,
}

impl Selection {
    /// The graphics APIs asked for (the platform's primary ones by default).
    pub fn apis(&self) -> Res<wgpu::Backends> {
        match &self.backends {
            Some(s) => parse_backends(s),
            None => Ok(wgpu::Backends::PRIMARY),
        }
    }

    /// Whether an adapter fits: its API was asked for, its name holds the asked substring, and
    /// it is a hardware adapter unless software ones are allowed.
    pub fn fits(&self, apis: wgpu::Backends, i: &wgpu::AdapterInfo) -> bool {
        apis.contains(wgpu::Backends::from(i.backend))
            && self.adapter.as_ref().map_or(true, |w| i.name.to_ascii_lowercase().contains(&w.to_ascii_lowercase()))
            && (self.allow_software || i.device_type != wgpu::DeviceType::Cpu)
    }

    /// What was asked beyond the API list, for error messages.
    pub fn asked(&self) -> String {
        format!(
            "{}{}",
            self.adapter.as_ref().map(|a| format!(" (asked for a name containing '{a}')")).unwrap_or_default(),
            if self.allow_software { "" } else { " (software adapters need QUANTLORA_GPU_SOFTWARE=1)" }
        )
    }
}

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    errors: Arc<Mutex<Vec<String>>>,
    pipelines: Vec<Pipe>,
    /// Explicit bind group layouts by binding signature (see `Pipe`), shared by pipelines.
    layouts: Vec<(Vec<bool>, wgpu::BindGroupLayout)>,
    /// Bind groups of explicit-layout pipelines, reused while their buffers live (see `BindKey`).
    bind_cache: HashMap<BindKey, wgpu::BindGroup>,
    pub bind_cache_on: bool,
    /// A cap on the bytes this device holds (live, deferred and pooled buffers); 0: none. A buffer
    /// past it is refused as if the GPU were out of memory (QUANTLORA_GPU_MEMORY_MB).
    pub memory_limit: u64,
    pub bind_hits: u64,
    /// Buffers created so far (the last serial number).
    pub serial: u64,
    modules: HashMap<String, wgpu::ShaderModule>,
    buffers: Vec<Option<(Buf, u64)>>,
    free_ids: Vec<u32>,
    live: usize,
    live_bytes: u64,
    pool: HashMap<u64, BinaryHeap<Buf>>,
    pool_bytes: u64,
    pool_cap: u64,
    /// Buffers freed while the pending batch may still use them, by size (see Ordering).
    deferred: HashMap<u64, BinaryHeap<Buf>>,
    deferred_bytes: u64,
    peak: u64,
    params: wgpu::Buffer,
    param_align: u64,
    batch: Option<Batch>,
    /// The pending batch is submitted once it holds this many dispatches (first_batch after a
    /// wait, doubling per submit up to max_batch).
    flush_at: u32,
    first_batch: u32,
    max_batch: u32,
    pub dispatches: u64,
    pub submits: u64,
    /// GPU time of the passes while a benchmark asks for it (timing.rs; needs TIMESTAMP_QUERY).
    pub timing: Option<Timing>,
}

/// A device buffer and its serial number (unique per creation: the bind group cache's key).
/// Free buffers of a size leave the pool lowest serial first (the order below), so a loop that
/// frees and allocates in the same pattern every step gets the same buffers every step, and its
/// cached bind groups apply again.
struct Buf {
    b: wgpu::Buffer,
    serial: u64,
}

impl Ord for Buf {
    fn cmp(&self, other: &Self) -> Ordering {
        other.serial.cmp(&self.serial) // BinaryHeap pops the greatest: the lowest serial
    }
}
impl PartialOrd for Buf {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Buf {
    fn eq(&self, other: &Self) -> bool {
        self.serial == other.serial
    }
}
impl Eq for Buf {}

/// A pipeline. `layout` is the index into `Gpu::layouts` where its WGSL declares every binding
/// in the project's convention (`@group(0) @binding(i) var<storage, read|read_write>`, binding 0
/// read): then binding 0 (the parameters) takes a dynamic offset and its bind groups are cached.
/// Otherwise (None) wgpu derives the layout and every dispatch makes its bind group.
struct Pipe {
    pipeline: wgpu::ComputePipeline,
    /// The pipeline's group 0 layout (wgpu's derived one where `layout` is None).
    auto_layout: wgpu::BindGroupLayout,
    layout: Option<u32>,
    bindings: usize,
}

/// A cached bind group: the layout, the parameter window's size and the buffers' serials.
#[derive(Hash, PartialEq, Eq)]
struct BindKey {
    layout: u32,
    window: u64,
    serials: [u64; MAX_BINDINGS],
}

/// Buffers per dispatch that explicit layouts and the bind group cache handle (more: a bind group
/// per dispatch); dequantizeMatmulMany with LoRA branches binds up to 20 (q/k/v of asymmetric INT).
const MAX_BINDINGS: usize = 24;
/// The cache is emptied when it holds this many bind groups.
const BIND_CACHE_MAX: usize = 16384;

/// The storage bindings of group 0 declared in WGSL `source`, in binding order (true =
/// read_write), when every one follows the convention and binding 0 is read-only; else None.
pub fn binding_signature(source: &str) -> Option<Vec<bool>> {
    let mut found: Vec<(u32, bool)> = Vec::new();
    let mut rest = source;
    while let Some(i) = rest.find("@binding(") {
        let before = rest[..i].trim_end();
        if !before.ends_with("@group(0)") {
            return None;
        }
        rest = &rest[i + "@binding(".len()..];
        let close = rest.find(')')?;
        let n: u32 = rest[..close].trim().parse().ok()?;
        rest = rest[close + 1..].trim_start();
        let access = rest.strip_prefix("var<storage,")?.trim_start();
        let rw = if access.starts_with("read_write>") {
            true
        } else if access.starts_with("read>") {
            false
        } else {
            return None;
        };
        found.push((n, rw));
    }
    found.sort();
    if found.is_empty() || found.len() > MAX_BINDINGS + 1 || found[0] != (0, false) || found.iter().enumerate().any(|(i, (n, _))| *n as usize != i) {
        return None;
    }
    Some(found.into_iter().map(|(_, rw)| rw).collect())
}

struct Batch {
    enc: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
    host: Vec<u8>,
    count: u32,
}

fn parse_backends(s: &str) -> Res<wgpu::Backends> {
    let mut b = wgpu::Backends::empty();
    for part in s.split(',').map(|p| p.trim().to_ascii_lowercase()).filter(|p| !p.is_empty()) {
        b |= match part.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "metal" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "all" => wgpu::Backends::all(),
            other => return Err(format!("unknown GPU backend '{other}' (expected vulkan, gl, metal, dx12 or all)")),
        };
    }
    if b.is_empty() {
        return Err("empty GPU backend list".into());
    }
    Ok(b)
}

fn rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn round4(bytes: u64) -> u64 {
    (bytes.max(4) + 3) & !3
}

impl Gpu {
    pub fn new(sel: &Selection) -> Res<Gpu> {
        let backends = sel.apis()?;
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        let all = pollster::block_on(instance.enumerate_adapters(backends));
        if all.is_empty() {
            return Err(format!("no GPU adapter found (backends {backends:?}; is a Vulkan driver installed?)"));
        }
        let names: Vec<String> = all.iter().map(|a| { let i = a.get_info(); format!("{} [{:?}, {:?}]", i.name, i.backend, i.device_type) }).collect();
        let mut cands: Vec<wgpu::Adapter> = all.into_iter().filter(|a| sel.fits(backends, &a.get_info())).collect();
        cands.sort_by_key(|a| rank(a.get_info().device_type));
        let adapter = cands.into_iter().next().ok_or_else(|| format!("no usable GPU adapter among: {}{}", names.join("; "), sel.asked()))?;
        let info = adapter.get_info();
        let wanted = wgpu::Features::SHADER_F16 | wgpu::Features::SHADER_F64 | wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY;
        let features = adapter.features() & wanted;
        let limits = adapter.limits();
        let mut dd = wgpu::DeviceDescriptor::default();
        dd.label = Some("quantlora");
        dd.required_features = features;
        dd.required_limits = limits.clone();
        let (device, queue) = pollster::block_on(adapter.request_device(&dd)).map_err(|e| format!("requesting a device from {}: {e}", info.name))?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
        }));
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: 2 * PARAMS_BYTES, // a parameter window (a power of two <= PARAMS_BYTES) may start anywhere below PARAMS_BYTES
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // QUANTLORA_GPU_FIRST_BATCH: the first batch's size after a wait (2048 = no early submit)
        let first_batch = std::env::var("QUANTLORA_GPU_FIRST_BATCH").ok().and_then(|s| s.parse::<u32>().ok()).unwrap_or(FIRST_BATCH).clamp(1, MAX_BATCH);
        // QUANTLORA_GPU_MAX_BATCH: the most dispatches in one batch (the doubling stops there)
        let max_batch = std::env::var("QUANTLORA_GPU_MAX_BATCH").ok().and_then(|s| s.parse::<u32>().ok()).unwrap_or(DEFAULT_MAX_BATCH).clamp(1, MAX_BATCH);
        let pool_cap = std::env::var("QUANTLORA_GPU_POOL_MB").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(1024) << 20;
        let param_align = (limits.min_storage_buffer_offset_alignment as u64).max(4);
        Ok(Gpu {
            device,
            queue,
            info,
            features,
            limits,
            errors,
            pipelines: Vec::new(),
            layouts: Vec::new(),
            bind_cache: HashMap::new(),
            bind_cache_on: std::env::var("QUANTLORA_GPU_BIND_CACHE").map_or(true, |v| v != "0"),
            memory_limit: std::env::var("QUANTLORA_GPU_MEMORY_MB").ok().and_then(|v| v.trim().parse::<f64>().ok()).filter(|m| *m > 0.0).map_or(0, |m| (m * 1048576.0) as u64),
            bind_hits: 0,
            serial: 0,
            modules: HashMap::new(),
            buffers: Vec::new(),
            free_ids: Vec::new(),
            live: 0,
            live_bytes: 0,
            pool: HashMap::new(),
            pool_bytes: 0,
            pool_cap,
            deferred: HashMap::new(),
            deferred_bytes: 0,
            peak: 0,
            params,
            param_align,
            batch: None,
            first_batch,
            max_batch,
            flush_at: first_batch,
            dispatches: 0,
            submits: 0,
            timing: None,
        })
    }

    /// Errors the device reported since the last check (validation, out of memory), as one Err.
    pub fn check(&self, what: &str) -> Res<()> {
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_empty() {
            return Ok(());
        }
        Err(format!("{what}: the GPU device reported: {}", summarize(&e.drain(..).collect::<Vec<_>>())))
    }

    // ---- buffers ----

    pub fn live(&self) -> usize {
        self.live
    }

    /// A buffer of `size` bytes (a multiple of 4): from the pool, else (`reuse_pending`, for kernel
    /// outputs) one freed in the pending batch, else a new one.
    fn create(&mut self, size: u64, reuse_pending: bool) -> Res<Buf> {
        if size > self.limits.max_buffer_size || size > self.limits.max_storage_buffer_binding_size as u64 {
            return Err(format!(
                "a {size}-byte buffer exceeds this adapter's limits (max buffer {} bytes, max storage binding {} bytes)",
                self.limits.max_buffer_size, self.limits.max_storage_buffer_binding_size
            ));
        }
        if let Some(b) = self.pool.get_mut(&size).and_then(|v| v.pop()) {
            self.pool_bytes -= size;
            return Ok(b);
        }
        if reuse_pending {
            if let Some(b) = self.deferred.get_mut(&size).and_then(|v| v.pop()) {
                self.deferred_bytes -= size;
                return Ok(b);
            }
        }
        if let Some(b) = self.try_new(size) {
            return Ok(b);
        }
        // out of device memory: give back what the pool holds (and, after a submit, what the batch
        // freed), then try once more
        self.flush_pending();
        self.trim();
        if let Some(b) = self.try_new(size) {
            return Ok(b);
        }
        let held = format!("{} live buffers of {} MiB (peak {} MiB)", self.live, self.live_bytes >> 20, self.peak >> 20);
        if self.over_limit(size) {
            return Err(format!(
                "over the GPU memory limit: a {size}-byte buffer would bring the bytes held to {} MiB, past the limit of {} MiB \
                 (QUANTLORA_GPU_MEMORY_MB); held: {held}",
                (self.held() + size) >> 20,
                self.memory_limit >> 20
            ));
        }
        Err(format!("the GPU is out of memory: a {size}-byte buffer did not fit beside {held}; other processes on this GPU count too"))
    }

    fn over_limit(&self, size: u64) -> bool {
        self.memory_limit > 0 && self.held() + size > self.memory_limit
    }

    /// A new buffer, or None where the device is out of memory or the memory limit is reached.
    fn try_new(&mut self, size: u64) -> Option<Buf> {
        if self.over_limit(size) {
            return None;
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let b = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        match pollster::block_on(scope.pop()) {
            None => {
                self.serial += 1;
                Some(Buf { b, serial: self.serial })
            }
            Some(_) => None,
        }
    }

    /// Destroys every pooled buffer. (Bind groups cached with a destroyed buffer stay until the
    /// cache is emptied, but are never used again: serials are not reused, so no later dispatch
    /// names theirs.)
    pub fn trim(&mut self) {
        for b in self.pool.drain().flat_map(|(_, v)| v) {
            b.b.destroy();
        }
        self.pool_bytes = 0;
    }

    /// (live, deferred, pooled, peak) bytes; `reset` starts the peak again from what is held now.
    pub fn memory(&mut self, reset: bool) -> (u64, u64, u64, u64) {
        let out = (self.live_bytes, self.deferred_bytes, self.pool_bytes, self.peak);
        if reset {
            self.peak = self.held();
        }
        out
    }

    fn held(&self) -> u64 {
        self.live_bytes + self.deferred_bytes + self.pool_bytes
    }

    fn insert(&mut self, b: Buf, bytes: u64) -> u32 {
        self.live += 1;
        self.live_bytes += round4(bytes);
        self.peak = self.peak.max(self.held());
        match self.free_ids.pop() {
            Some(id) => {
                self.buffers[id as usize] = Some((b, bytes));
                id
            }
            None => {
                self.buffers.push(Some((b, bytes)));
                (self.buffers.len() - 1) as u32
            }
        }
    }

    pub fn buffer(&self, id: u32) -> Res<(&wgpu::Buffer, u64)> {
        self.buf(id).map(|(b, n)| (&b.b, *n))
    }

    /// The live buffer behind `id` and its logical size in bytes.
    fn buf(&self, id: u32) -> Res<&(Buf, u64)> {
        match self.buffers.get(id as usize) {
            Some(Some(e)) => Ok(e),
            _ => Err(format!("GPU buffer {id} does not exist (freed already?)")),
        }
    }

    /// A new buffer of `bytes` (rounded up to 4); zeroed in order with the pending kernels.
    pub fn alloc(&mut self, bytes: u64, zeroed: bool) -> Res<u32> {
        let size = round4(bytes);
        let b = self.create(size, true)?;
        if zeroed {
            let batch = self.batch()?;
            batch.pass = None;
            batch.enc.clear_buffer(&b.b, 0, None);
        }
        Ok(self.insert(b, bytes))
    }

    pub fn upload(&mut self, data: &[u8]) -> Res<u32> {
        let size = round4(data.len() as u64);
        let b = self.create(size, false)?;
        if !data.is_empty() {
            let whole = data.len() & !3;
            if whole > 0 {
                self.queue.write_buffer(&b.b, 0, &data[..whole]);
            }
            if whole < data.len() {
                let mut tail = [0u8; 4];
                tail[..data.len() - whole].copy_from_slice(&data[whole..]);
                self.queue.write_buffer(&b.b, whole as u64, &tail);
            }
        }
        Ok(self.insert(b, data.len() as u64))
    }

    pub fn free(&mut self, id: u32) -> Res<()> {
        let slot = self.buffers.get_mut(id as usize).ok_or_else(|| format!("GPU buffer {id} does not exist"))?;
        let (b, bytes) = slot.take().ok_or_else(|| format!("GPU buffer {id} was freed already"))?;
        self.free_ids.push(id);
        self.live -= 1;
        let size = round4(bytes);
        self.live_bytes -= size;
        if self.batch.is_some() {
            self.deferred.entry(size).or_default().push(b);
            self.deferred_bytes += size;
        } else {
            self.to_pool(b, size);
        }
        Ok(())
    }

    fn to_pool(&mut self, b: Buf, size: u64) {
        if self.pool_bytes + size <= self.pool_cap {
            self.pool.entry(size).or_default().push(b);
            self.pool_bytes += size;
        } else {
            b.b.destroy();
        }
    }

    // ---- pipelines ----

    /// Compiles `entry` of the WGSL `source` (modules cached by `module_key`) with override
    /// constants; returns the pipeline's index. `checks` false compiles the module without wgpu's
    /// shader runtime checks (index clamping of workgroup and private arrays, integer division
    /// guards, loop bounding; buffer accesses stay bounded where the driver is robust, as on Vulkan
    /// with robustBufferAccess2): for the project's generated kernels, which bound every index
    /// themselves and never divide by zero (the parity tests run them both ways).
    pub fn pipeline(&mut self, module_key: &str, source: &str, entry: &str, constants: &[(String, f64)], checks: bool) -> Res<u32> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let key = if checks { module_key.to_string() } else { format!("{module_key}|unchecked") };
        if !self.modules.contains_key(&key) {
            let desc = wgpu::ShaderModuleDescriptor { label: Some(module_key), source: wgpu::ShaderSource::Wgsl(source.into()) };
            let m = if checks {
                self.device.create_shader_module(desc)
            } else {
                // SAFETY: see above; the WGSL is generated by the kernel files, not taken from users
                unsafe { self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
            };
            self.modules.insert(key.clone(), m);
        }
        let signature = binding_signature(source);
        let layout = signature.as_ref().map(|sig| self.layout_for(sig));
        let explicit = layout.map(|l| {
            let bgl = &self.layouts[l as usize].1;
            self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor { label: None, bind_group_layouts: &[Some(bgl)], immediate_size: 0 })
        });
        let module = &self.modules[&key];
        let consts: Vec<(&str, f64)> = constants.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let p = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: explicit.as_ref(),
            module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &consts, ..Default::default() },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            self.modules.remove(&key);
            return Err(format!("compiling GPU kernel {module_key}:{entry}: {e}"));
        }
        let auto_layout = p.get_bind_group_layout(0);
        let bindings = signature.map_or(0, |s| s.len());
        self.pipelines.push(Pipe { pipeline: p, auto_layout, layout, bindings });
        Ok((self.pipelines.len() - 1) as u32)
    }

    /// The explicit layout for a binding signature (made on first use): binding 0 the parameters
    /// (read-only, dynamic offset), the others read-only or read_write storage.
    fn layout_for(&mut self, sig: &[bool]) -> u32 {
        if let Some(i) = self.layouts.iter().position(|(s, _)| s == sig) {
            return i as u32;
        }
        let entries: Vec<wgpu::BindGroupLayoutEntry> = sig
            .iter()
            .enumerate()
            .map(|(i, &rw)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Storage { read_only: !rw }, has_dynamic_offset: i == 0, min_binding_size: None },
                count: None,
            })
            .collect();
        let l = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries });
        self.layouts.push((sig.to_vec(), l));
        (self.layouts.len() - 1) as u32
    }

    // ---- batching ----

    fn batch(&mut self) -> Res<&mut Batch> {
        if self.batch.is_none() {
            let enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("batch") });
            self.batch = Some(Batch { enc, pass: None, host: Vec::new(), count: 0 });
        }
        Ok(self.batch.as_mut().unwrap())
    }

    /// Records one dispatch of pipeline `pipe` with `params` at binding 0 and `ids` at 1...
    pub fn run(&mut self, pipe: u32, params: &[u8], ids: &[u32], groups: [u32; 3]) -> Res<()> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return Err(format!("dispatch of {groups:?} workgroups exceeds the adapter's {max} per dimension"));
        }
        let need = round4(params.len() as u64).max(self.param_align);
        let full = self.batch.as_ref().map_or(false, |b| b.host.len() as u64 + need + self.param_align > PARAMS_BYTES);
        if full {
            self.flush()?;
        }
        // every timestamp pair in use and a new pass to open: submit and read them first
        if self.timing.as_ref().map_or(false, |t| t.used >= PAIRS) && self.batch.as_ref().map_or(true, |b| b.pass.is_none()) {
            self.harvest_timing()?;
        }
        if need > PARAMS_BYTES {
            return Err(format!("{} bytes of kernel parameters is too many", params.len()));
        }
        let Pipe { pipeline, layout, bindings, .. } = self.pipelines.get(pipe as usize).ok_or_else(|| format!("GPU pipeline {pipe} does not exist"))?;
        let (pipeline, layout, bindings) = (pipeline.clone(), *layout, *bindings);
        if layout.is_some() && ids.len() + 1 != bindings {
            return Err(format!("GPU pipeline {pipe} declares {} buffers, the dispatch gave {}", bindings - 1, ids.len()));
        }
        let align = self.param_align;
        let batch = self.batch()?;
        let offset = (batch.host.len() as u64 + align - 1) / align * align;
        batch.host.resize(offset as usize, 0);
        batch.host.extend_from_slice(params);
        batch.host.resize((offset + need) as usize, 0);
        // the bind group: cached (parameters at a dynamic offset) or made for this dispatch
        let (bg, dynamic) = match layout {
            Some(layout) => {
                let window = need.next_power_of_two();
                let bg = if self.bind_cache_on {
                    let mut serials = [0u64; MAX_BINDINGS];
                    for (k, &id) in ids.iter().enumerate() {
                        serials[k] = self.buf(id)?.0.serial;
                    }
                    let key = BindKey { layout, window, serials };
                    match self.bind_cache.get(&key) {
                        Some(bg) => {
                            self.bind_hits += 1;
                            bg.clone()
                        }
                        None => {
                            if self.bind_cache.len() >= BIND_CACHE_MAX {
                                self.bind_cache.clear();
                            }
                            let bg = self.bind_group(&self.layouts[layout as usize].1, ids, 0, window)?;
                            self.bind_cache.insert(key, bg.clone());
                            bg
                        }
                    }
                } else {
                    self.bind_group(&self.layouts[layout as usize].1, ids, 0, window)?
                };
                (bg, Some(offset as u32))
            }
            None => (self.bind_group(&self.pipelines[pipe as usize].auto_layout, ids, offset, need)?, None),
        };
        let batch = self.batch.as_mut().unwrap();
        if batch.pass.is_none() {
            let timestamp_writes = self.timing.as_mut().and_then(|t| t.writes());
            batch.pass = Some(batch.enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes }).forget_lifetime());
        }
        let pass = batch.pass.as_mut().unwrap();
        pass.set_pipeline(&pipeline);
        match dynamic {
            Some(o) => pass.set_bind_group(0, &bg, &[o]),
            None => pass.set_bind_group(0, &bg, &[]),
        }
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        batch.count += 1;
        self.dispatches += 1;
        if batch.count >= self.flush_at {
            self.flush()?;
        }
        Ok(())
    }

    /// A bind group: the parameter window [offset, offset + size) at binding 0, `ids` at 1...
    fn bind_group(&self, layout: &wgpu::BindGroupLayout, ids: &[u32], offset: u64, size: u64) -> Res<wgpu::BindGroup> {
        let mut entries = Vec::with_capacity(ids.len() + 1);
        entries.push(wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: &self.params, offset, size: wgpu::BufferSize::new(size) }),
        });
        for (i, &id) in ids.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: self.buf(id)?.0.b.as_entire_binding() });
        }
        Ok(self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout, entries: &entries }))
    }

    /// Buffer-to-buffer copy in order with the pending kernels.
    pub fn copy(&mut self, src: u32, src_off: u64, dst: u32, dst_off: u64, bytes: u64) -> Res<()> {
        if bytes == 0 {
            return Ok(());
        }
        if src_off % 4 != 0 || dst_off % 4 != 0 || bytes % 4 != 0 {
            return Err(format!("copy: offsets and size must be multiples of 4 (got {src_off}, {dst_off}, {bytes})"));
        }
        let (s, sn) = self.buffer(src)?;
        let (d, dn) = self.buffer(dst)?;
        if src_off + bytes > round4(sn) || dst_off + bytes > round4(dn) {
            return Err(format!("copy: {bytes} bytes at {src_off} -> {dst_off} run past a buffer ({sn} / {dn} bytes)"));
        }
        let (s, d) = (s.clone(), d.clone());
        let batch = self.batch()?;
        batch.pass = None;
        batch.enc.copy_buffer_to_buffer(&s, src_off, &d, dst_off, bytes);
        Ok(())
    }

    /// Submits the pending batch (if any).
    pub fn flush(&mut self) -> Res<()> {
        if self.batch.is_some() {
            self.flush_pending();
            self.flush_at = (self.flush_at * 2).min(self.max_batch);
        }
        self.check("submit")
    }

    /// Submits the pending batch without reporting the device's errors (they stay for the next check).
    fn flush_pending(&mut self) {
        if let Some(mut b) = self.batch.take() {
            b.pass = None;
            if !b.host.is_empty() {
                self.queue.write_buffer(&self.params, 0, &b.host);
            }
            self.queue.submit([b.enc.finish()]);
            self.submits += 1;
            self.release_deferred();
        }
    }

    fn release_deferred(&mut self) {
        for (size, v) in std::mem::take(&mut self.deferred) {
            for buf in v {
                self.to_pool(buf, size);
            }
        }
        self.deferred_bytes = 0;
    }

    /// Starts summing the GPU time of the passes (false where the adapter has no timestamps).
    pub fn timing_start(&mut self) -> Res<bool> {
        if !self.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Ok(false);
        }
        self.flush()?; // the pending pass has no timestamps
        self.timing = Some(Timing::new(&self.device, &self.queue));
        Ok(true)
    }

    /// Submits the pending work, reads the outstanding timestamps and adds them up.
    pub fn harvest_timing(&mut self) -> Res<()> {
        self.flush()?;
        let (device, queue) = (self.device.clone(), self.queue.clone());
        match self.timing.as_mut() {
            Some(t) => t.harvest(&device, &queue),
            None => Ok(()),
        }
    }

    /// Stops timing: (GPU milliseconds, passes) since timing_start, or None if it was not started.
    pub fn timing_stop(&mut self) -> Res<Option<(f64, f64)>> {
        self.harvest_timing()?;
        Ok(self.timing.take().map(|t| (t.ns / 1e6, t.passes as f64)))
    }

    /// Sets the first batch's size after a wait (1..=MAX_BATCH); returns the previous one.
    pub fn set_first_batch(&mut self, n: u32) -> u32 {
        let old = self.first_batch;
        self.first_batch = n.clamp(1, MAX_BATCH);
        self.flush_at = self.first_batch;
        old
    }

    /// Sets the most dispatches in one batch (1..=MAX_BATCH; batches double up to it); returns the
    /// previous one.
    pub fn set_max_batch(&mut self, n: u32) -> u32 {
        let old = self.max_batch;
        self.max_batch = n.clamp(1, MAX_BATCH);
        self.flush_at = self.flush_at.min(self.max_batch);
        old
    }

    /// The host is about to wait for the GPU: the next batch starts small again.
    pub fn synced(&mut self) {
        self.flush_at = self.first_batch;
    }

    /// Flushes, then copies `bytes` of buffer `id` into a mappable staging buffer (submitted).
    /// The caller maps it and waits (readback).
    pub fn stage(&mut self, id: u32, offset: u64, bytes: u64) -> Res<wgpu::Buffer> {
        let (b, n) = self.buffer(id)?;
        if offset + bytes > n {
            return Err(format!("read: {bytes} bytes at {offset} run past buffer {id} ({n} bytes)"));
        }
        let b = b.clone();
        self.flush()?;
        // the copy runs on whole words: stage the aligned span around [offset, offset + bytes)
        let start = offset & !3;
        let span = round4(offset + bytes - start);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: span,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        enc.copy_buffer_to_buffer(&b, start, &staging, 0, span);
        self.queue.submit([enc.finish()]);
        self.submits += 1;
        self.synced();
        self.check("read")?;
        Ok(staging)
    }
}

/// The device's error messages, each distinct one once with its count ("... (x120)"), at most 8.
fn summarize(errors: &[String]) -> String {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for e in errors {
        let e = e.trim();
        match seen.iter_mut().find(|(m, _)| *m == e) {
            Some(s) => s.1 += 1,
            None => seen.push((e, 1)),
        }
    }
    let shown: Vec<String> = seen.iter().take(8).map(|(m, n)| if *n > 1 { format!("{m} (x{n})") } else { m.to_string() }).collect();
    let more = if seen.len() > 8 { format!("; and {} other messages", seen.len() - 8) } else { String::new() };
    format!("{}{more}", shown.join("; "))
}

/// Maps a staged buffer, waits for the GPU, and copies `bytes` starting at `skip`.
pub fn read_staged(device: &wgpu::Device, staging: &wgpu::Buffer, skip: usize, bytes: usize) -> Res<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| format!("read: waiting for the GPU: {e}"))?;
    rx.recv().map_err(|_| "read: the GPU never answered the map request".to_string())?.map_err(|e| format!("read: mapping the readback buffer: {e}"))?;
    let out = {
        let view = staging.slice(..).get_mapped_range().map_err(|e| format!("read: {e}"))?;
        view[skip..skip + bytes].to_vec()
    };
    staging.unmap();
    staging.destroy();
    Ok(out)
}

pub static GPU: Mutex<Option<Gpu>> = Mutex::new(None);

pub fn with_gpu<R>(what: &str, f: impl FnOnce(&mut Gpu) -> Res<R>) -> Res<R> {
    let mut g = GPU.lock().unwrap_or_else(|p| p.into_inner());
    let gpu = g.as_mut().ok_or_else(|| format!("{what}: the GPU is not initialized (call gpuInit first)"))?;
    f(gpu)
}

#[cfg(test)]
mod tests {
    use super::summarize;

    #[test]
    fn summarize_counts_repeats_and_bounds_the_list() {
        let e = |s: &str| s.to_string();
        assert_eq!(summarize(&[e("a"), e(" a "), e("b"), e("a")]), "a (x3); b");
        let many: Vec<String> = (0..11).map(|i| format!("m{i}")).collect();
        assert_eq!(summarize(&many), "m0; m1; m2; m3; m4; m5; m6; m7; and 3 other messages");
    }
}

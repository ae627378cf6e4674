//! Native memory handed to JS as external ArrayBuffers (no copy).
//!
//! Every allocation is recorded in LIVE (data pointer -> id, bytes). Two ways free it, whichever
//! comes first:
//! - `release(buf)`: the ArrayBuffer is detached (napi_detach_arraybuffer: every view of it
//!   becomes length 0, so JS can no longer reach the memory), then the memory is freed at once.
//! - the finalizer napi runs when JS garbage-collects the ArrayBuffer (Node also runs it, later,
//!   for a buffer that was detached). It frees the memory only if LIVE still holds the same
//!   allocation (same pointer and same id), so a released pointer reused by a later allocation is
//!   never freed twice.
//!
//! Async tasks (tasks.rs) pin the allocations they read or write (`pin`): while pinned, release()
//! still detaches the buffer at once, and the finalizer still runs, but the memory itself is freed
//! only when the last pin is dropped (after the task has finished with it). Such a deferred
//! allocation still counts in live_allocations() until it is freed.

use crate::args::err;
use napi::bindgen_prelude::{FromNapiValue, ToNapiValue, TypeName, ValidateNapiValue};
use napi::{sys, Env, Result, ValueType};
use std::alloc::{alloc, alloc_zeroed, dealloc, Layout};
use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const ALIGN: usize = 64;

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);
static LIVE: Mutex<Option<HashMap<usize, (usize, usize)>>> = Mutex::new(None);

fn live<R>(f: impl FnOnce(&mut HashMap<usize, (usize, usize)>) -> R) -> R {
    let mut g = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(HashMap::new))
}

/// Pinned allocations: data pointer -> (pins, Some(bytes) once release()/the finalizer has run and
/// the free waits for the last pin). Locked after LIVE when both are held.
static PINNED: Mutex<Option<HashMap<usize, (usize, Option<usize>)>>> = Mutex::new(None);

fn pinned<R>(f: impl FnOnce(&mut HashMap<usize, (usize, Option<usize>)>) -> R) -> R {
    let mut g = PINNED.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(HashMap::new))
}

/// Keeps the allocation at a data pointer from being freed while it lives (see the module doc).
pub struct Pin(usize);

/// Pins the live allocation whose data pointer is p; None when alloc() did not make it (or it
/// was released already).
pub fn pin(p: usize) -> Option<Pin> {
    live(|m| {
        m.contains_key(&p).then(|| {
            pinned(|q| q.entry(p).or_insert((0, None)).0 += 1);
            Pin(p)
        })
    })
}

impl Drop for Pin {
    fn drop(&mut self) {
        let free = pinned(|q| {
            let e = q.get_mut(&self.0)?;
            e.0 -= 1;
            if e.0 == 0 {
                q.remove(&self.0).and_then(|e| e.1)
            } else {
                None
            }
        });
        if let Some(bytes) = free {
            unsafe { raw_free(self.0 as *mut u8, bytes) };
        }
    }
}

/// Frees an allocation already taken out of LIVE, or leaves it to the last pin.
fn free_or_defer(p: usize, bytes: usize) {
    let deferred = pinned(|q| match q.get_mut(&p) {
        Some(e) => {
            e.1 = Some(bytes);
            true
        }
        None => false,
    });
    if !deferred {
        unsafe { raw_free(p as *mut u8, bytes) };
    }
}

/// A raw JS value passed through unchanged (an ArrayBuffer here).
pub struct JsRaw(pub sys::napi_value);

impl ToNapiValue for JsRaw {
    unsafe fn to_napi_value(_env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        Ok(val.0)
    }
}
impl FromNapiValue for JsRaw {
    unsafe fn from_napi_value(_env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        Ok(JsRaw(v))
    }
}
impl TypeName for JsRaw {
    fn type_name() -> &'static str {
        "ArrayBuffer"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}
impl ValidateNapiValue for JsRaw {}

unsafe extern "C" fn finalize(_env: sys::napi_env, data: *mut c_void, hint: *mut c_void) {
    let (p, id) = (data as usize, hint as usize);
    let bytes = live(|m| match m.get(&p) {
        Some(&(eid, bytes)) if eid == id => {
            m.remove(&p);
            Some(bytes)
        }
        _ => None,
    });
    if let Some(bytes) = bytes {
        free_or_defer(data as usize, bytes);
    }
}

/// Tensors of MMAP_MIN bytes or more get their own anonymous mapping (zeroed, page aligned) and go
/// back to the system the moment they are freed. Through malloc they would not: glibc raises its
/// mmap threshold each time a large mapped block is freed, after which tensor-sized buffers come
/// from the heap and freed ones stay with the process (an evaluation loop that frees everything it
/// allocates grew by ~1 GB per model pass). Smaller ones, and the kernels' own scratch vectors,
/// keep using malloc. Freed mappings are pooled for reuse up to a cap (Pool below).
#[cfg(unix)]
const MMAP_MIN: usize = 256 * 1024;

/// Freed mappings kept for reuse by the next allocation of the same size (evaluation and training
/// allocate the same shapes over and over; a fresh mapping costs a page fault per 4 KiB on first
/// touch), up to POOL_CAP bytes in all; beyond that they are unmapped.
#[cfg(unix)]
struct Pool {
    free: HashMap<usize, Vec<usize>>,
    bytes: usize,
}

#[cfg(unix)]
static POOL: Mutex<Option<Pool>> = Mutex::new(None);

#[cfg(unix)]
fn pool_cap() -> usize {
    static CAP: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| std::env::var("QUANTLORA_POOL_MB").ok().and_then(|s| s.parse::<usize>().ok()).unwrap_or(256) << 20)
}

#[cfg(unix)]
fn with_pool<R>(f: impl FnOnce(&mut Pool) -> R) -> R {
    let mut g = POOL.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(|| Pool { free: HashMap::new(), bytes: 0 }))
}

unsafe fn raw_alloc(bytes: usize, zeroed: bool) -> *mut u8 {
    #[cfg(unix)]
    {
        if bytes >= MMAP_MIN {
            let reused = with_pool(|pool| {
                let p = pool.free.get_mut(&bytes).and_then(|v| v.pop())?;
                pool.bytes -= bytes;
                Some(p)
            });
            if let Some(p) = reused {
                if zeroed {
                    ptr::write_bytes(p as *mut u8, 0, bytes);
                }
                return p as *mut u8;
            }
            let p = libc::mmap(ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
            return if p == libc::MAP_FAILED { ptr::null_mut() } else { p as *mut u8 };
        }
    }
    // glibc before 2.38 rarely reuses freed aligned (memalign) chunks: a loop that allocates and
    // frees the same 36 KiB tensor grew the process by ~38 KiB per iteration. So small buffers come
    // from plain malloc (16-byte aligned), over-allocated by ALIGN; the base pointer is kept in the
    // 8 bytes just before the aligned start.
    let l = malloc_layout(bytes);
    let base = if zeroed { alloc_zeroed(l) } else { alloc(l) };
    if base.is_null() {
        return base;
    }
    let p = base.add(ALIGN - (base as usize) % ALIGN);
    (p as *mut usize).sub(1).write_unaligned(base as usize);
    p
}

fn malloc_layout(bytes: usize) -> Layout {
    Layout::from_size_align(bytes + ALIGN, 16).expect("allocation size")
}

unsafe fn raw_free(p: *mut u8, bytes: usize) {
    #[cfg(unix)]
    {
        if bytes >= MMAP_MIN {
            let kept = with_pool(|pool| {
                if pool.bytes + bytes > pool_cap() {
                    return false;
                }
                pool.free.entry(bytes).or_default().push(p as usize);
                pool.bytes += bytes;
                true
            });
            if !kept {
                libc::munmap(p as *mut c_void, bytes);
            }
            return;
        }
    }
    let base = (p as *mut usize).sub(1).read_unaligned() as *mut u8;
    dealloc(base, malloc_layout(bytes))
}

pub fn alloc_buffer(env: Env, bytes: usize, zeroed: bool) -> Result<JsRaw> {
    let env = env.raw();
    let mut result = ptr::null_mut();
    if bytes == 0 {
        // nothing to own: a plain (V8-owned) empty ArrayBuffer, not counted as an allocation
        let mut data = ptr::null_mut();
        let st = unsafe { sys::napi_create_arraybuffer(env, 0, &mut data, &mut result) };
        if st != sys::Status::napi_ok {
            return Err(err(format!("alloc: napi_create_arraybuffer failed (status {st})")));
        }
        return Ok(JsRaw(result));
    }
    Layout::from_size_align(bytes, ALIGN).map_err(|_| err(format!("alloc: {bytes} bytes is too large")))?;
    let p = unsafe { raw_alloc(bytes, zeroed) };
    if p.is_null() {
        return Err(err(format!("alloc: out of memory allocating {bytes} bytes")));
    }
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    live(|m| m.insert(p as usize, (id, bytes)));
    let st = unsafe { sys::napi_create_external_arraybuffer(env, p as *mut c_void, bytes, Some(finalize), id as *mut c_void, &mut result) };
    if st != sys::Status::napi_ok {
        live(|m| m.remove(&(p as usize)));
        unsafe { raw_free(p, bytes) };
        return Err(err(format!(
            "alloc: napi_create_external_arraybuffer failed (status {st}); this runtime may not allow external ArrayBuffers"
        )));
    }
    Ok(JsRaw(result))
}

pub fn release_buffer(env: Env, buf: JsRaw) -> Result<()> {
    let env = env.raw();
    let mut is_ab = false;
    if unsafe { sys::napi_is_arraybuffer(env, buf.0, &mut is_ab) } != sys::Status::napi_ok || !is_ab {
        return Err(err("release: expected an ArrayBuffer returned by alloc()".into()));
    }
    let (mut data, mut len) = (ptr::null_mut(), 0usize);
    if unsafe { sys::napi_get_arraybuffer_info(env, buf.0, &mut data, &mut len) } != sys::Status::napi_ok {
        return Err(err("release: could not read the ArrayBuffer".into()));
    }
    if data.is_null() || len == 0 {
        return Ok(()); // already released (detached) or empty: nothing to free
    }
    let p = data as usize;
    let entry = live(|m| match m.get(&p) {
        Some(&(id, bytes)) if bytes == len => {
            m.remove(&p);
            Some((id, bytes))
        }
        _ => None,
    });
    let Some((id, bytes)) = entry else {
        return Err(err(format!("release: this ArrayBuffer ({len} bytes) was not allocated by alloc()")));
    };
    let st = unsafe { sys::napi_detach_arraybuffer(env, buf.0) };
    if st != sys::Status::napi_ok {
        // cannot cut JS off from the memory: keep it alive, the finalizer frees it after GC
        live(|m| m.insert(p, (id, bytes)));
        return Err(err(format!("release: napi_detach_arraybuffer failed (status {st}); the memory is left to the garbage collector")));
    }
    free_or_defer(p, bytes);
    Ok(())
}

pub fn live_allocations() -> usize {
    live(|m| m.len()) + pinned(|q| q.values().filter(|e| e.1.is_some()).count())
}

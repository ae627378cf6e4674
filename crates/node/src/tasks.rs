//! Async variants of the long kernels (matmulAsync, dequantizeMatmulAsync, dequantizeAsync): the
//! call checks its arguments on the JS thread and returns a Promise at once; the kernel runs on a
//! libuv worker thread (napi-rs `AsyncTask`), which hands the work to the process-wide rayon pool
//! exactly as the synchronous export does (same pool::* function, so results are bit-identical);
//! the Promise resolves (to undefined) on the JS thread once the output is written.
//!
//! Errors never throw: a bad typed array, length, shape or format rejects the Promise with the
//! same message the synchronous kernel would throw (named `<kernel>Async`). (Only a scalar
//! argument of the wrong JS type, e.g. a string for `m`, is refused synchronously by napi-rs'
//! own conversion.) A panic in the kernel is caught and rejects the Promise.
//!
//! Memory safety while the worker runs. Each typed array is turned, on the JS thread at call time,
//! into a pointer the worker may use until the task is dropped (after the Promise settles):
//! - Native memory (the typed array's ArrayBuffer was made by alloc(), mem.rs) is used in place
//!   and pinned (`mem::Pin`). release() of a pinned buffer still detaches it at once (JS loses
//!   its views, as for any release) but the free is deferred to the last pin, and so is a free
//!   by the garbage collector's finalizer: the worker never touches freed memory, whatever JS
//!   does meanwhile. (Pinning is by allocation, not by JS object, so this also holds if the
//!   ArrayBuffer itself is collected.)
//! - Any other memory (a plain JS typed array) could be detached, transferred or collected
//!   behind our back, so it is never used off the JS thread: inputs are copied at call time, and
//!   the output is computed into a scratch buffer that `resolve` copies into the caller's typed
//!   array (held by a napi reference until then; if it was detached or shrunk meanwhile, the
//!   Promise rejects instead).
//! - An input overlapping the output (or not aligned for its element type) is copied first, so
//!   the kernel never sees aliased `&`/`&mut` slices.
//!
//! The caller's side of the contract (as for any async I/O into a buffer): do not write to the
//! inputs or read the output until the Promise settles; the result is then what the synchronous
//! kernel would have produced.

use crate::args::{err, prod, size, Elem, View};
use crate::{check_parts, format, matmul_dims, mem, part_bytes, pool};
use napi::bindgen_prelude::{AsyncTask, FromNapiValue, TypeName, ValidateNapiValue};
use napi::{sys, Env, Error, Result, Status, Task, ValueType};
use napi_derive::napi;
use quantlora_kernels::quant;
use std::mem::{align_of, size_of};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

// ---- arguments (parsed without throwing: a failure rejects the Promise) ----

/// Where a typed array's bytes live: its first byte, and the data pointer of its ArrayBuffer (the
/// key of alloc()'s allocation table when the buffer is native memory).
struct Loc {
    data: usize,
    base: usize,
    value: sys::napi_value,
    env: sys::napi_env,
}

/// A typed-array argument of element type T.
pub struct Arg<T: Elem>(Result<(View<T>, Loc)>);

unsafe fn parse<T: Elem>(env: sys::napi_env, v: sys::napi_value) -> Result<(View<T>, Loc)> {
    let view = View::<T>::from_napi_value(env, v)?;
    let (mut ty, mut len, mut data, mut ab, mut off) = (0, 0usize, ptr::null_mut(), ptr::null_mut(), 0usize);
    let (mut base, mut ab_len) = (ptr::null_mut(), 0usize);
    if sys::napi_get_typedarray_info(env, v, &mut ty, &mut len, &mut data, &mut ab, &mut off) != sys::Status::napi_ok
        || sys::napi_get_arraybuffer_info(env, ab, &mut base, &mut ab_len) != sys::Status::napi_ok
    {
        return Err(err(format!("expected a {}: could not read its ArrayBuffer", T::NAME)));
    }
    Ok((view, Loc { data: data as usize, base: base as usize, value: v, env }))
}

impl<T: Elem> FromNapiValue for Arg<T> {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        Ok(Arg(parse(env, v)))
    }
}
impl<T: Elem> TypeName for Arg<T> {
    fn type_name() -> &'static str {
        T::NAME
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}
impl<T: Elem> ValidateNapiValue for Arg<T> {}

impl<T: Elem> Arg<T> {
    fn get(self, f: &str, name: &str) -> Result<(View<T>, Loc)> {
        self.0.map_err(|e| err(format!("{f}: {name}: {}", e.reason)))
    }
}

/// The quantized-weight parts argument: an array of six Uint8Arrays.
pub struct PartsArg(Result<Vec<Result<(View<u8>, Loc)>>>);

impl FromNapiValue for PartsArg {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        let mut is_array = false;
        if sys::napi_is_array(env, v, &mut is_array) != sys::Status::napi_ok || !is_array {
            return Ok(PartsArg(Err(err("expected an array of 6 Uint8Arrays".into()))));
        }
        let mut n = 0u32;
        if sys::napi_get_array_length(env, v, &mut n) != sys::Status::napi_ok {
            return Ok(PartsArg(Err(err("could not read the array".into()))));
        }
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut e = ptr::null_mut();
            if sys::napi_get_element(env, v, i, &mut e) != sys::Status::napi_ok {
                return Ok(PartsArg(Err(err(format!("could not read element {i}")))));
            }
            out.push(parse::<u8>(env, e));
        }
        Ok(PartsArg(Ok(out)))
    }
}
impl TypeName for PartsArg {
    fn type_name() -> &'static str {
        "Uint8Array[]"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}
impl ValidateNapiValue for PartsArg {}

// ---- memory the worker uses ----

/// An input slice the worker reads: native memory in place (pinned) or a copy it owns.
struct Src<T> {
    ptr: *const T,
    len: usize,
    _pin: Option<mem::Pin>,
    _own: Vec<T>,
}

// SAFETY: the pointer is into pinned native memory (never freed while the pin lives) or into
// `_own` (moves with the struct, its heap buffer does not); the worker only reads it.
unsafe impl<T: Send> Send for Src<T> {}

impl<T: Elem> Src<T> {
    /// n elements of T starting at loc.data (caller checked they are in bounds); copied unless
    /// the memory is native, aligned for T and clear of every output range in `outs`.
    fn new(loc: &Loc, n: usize, outs: &[(usize, usize)]) -> Self {
        let nb = n * size_of::<T>();
        let r = (loc.data, loc.data + nb);
        if n > 0 && r.0.is_multiple_of(align_of::<T>()) && !outs.iter().any(|&o| crate::args::overlaps(r, o)) {
            if let Some(pin) = mem::pin(loc.base) {
                return Src { ptr: r.0 as *const T, len: n, _pin: Some(pin), _own: Vec::new() };
            }
        }
        let mut own = vec![T::default(); n];
        if n > 0 {
            // SAFETY: nb bytes of a live typed array (checked by the caller), on the JS thread.
            unsafe { ptr::copy_nonoverlapping(r.0 as *const u8, own.as_mut_ptr() as *mut u8, nb) };
        }
        Src { ptr: own.as_ptr(), len: n, _pin: None, _own: own }
    }
    fn get(&self) -> &[T] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: see the Send impl; nothing writes these bytes while the task runs (outputs that
        // overlap were copied in `new`; JS promises not to write them).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A napi reference to a JS value, deleted when dropped (tasks are dropped on the JS thread).
struct JsRef {
    env: sys::napi_env,
    r: sys::napi_ref,
}
impl Drop for JsRef {
    fn drop(&mut self) {
        unsafe { sys::napi_delete_reference(self.env, self.r) };
    }
}

/// The output the worker writes: native memory in place (pinned), or a scratch buffer copied into
/// the caller's typed array by `resolve`.
struct Dst {
    ptr: *mut f32,
    len: usize,
    _pin: Option<mem::Pin>,
    scratch: Option<(Vec<f32>, JsRef)>,
}

// SAFETY: the pointer is into pinned native memory or into the scratch Vec's heap buffer; only
// the worker writes it while the task runs; the JsRef is only used (and dropped) on the JS thread.
unsafe impl Send for Dst {}

/// The output pointer as the worker's closure holds it.
struct OutPtr(*mut f32, usize);
unsafe impl Send for OutPtr {}
impl OutPtr {
    /// SAFETY: only the one worker closure calls this, once.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self) -> &mut [f32] {
        if self.1 == 0 {
            &mut []
        } else {
            std::slice::from_raw_parts_mut(self.0, self.1)
        }
    }
}

impl Dst {
    fn new(loc: &Loc, n: usize) -> Result<Self> {
        if n == 0 {
            return Ok(Dst { ptr: ptr::NonNull::dangling().as_ptr(), len: 0, _pin: None, scratch: None });
        }
        if let Some(pin) = mem::pin(loc.base) {
            return Ok(Dst { ptr: loc.data as *mut f32, len: n, _pin: Some(pin), scratch: None });
        }
        let mut r = ptr::null_mut();
        if unsafe { sys::napi_create_reference(loc.env, loc.value, 1, &mut r) } != sys::Status::napi_ok {
            return Err(err("could not reference the output".into()));
        }
        let mut v = vec![0f32; n];
        Ok(Dst { ptr: v.as_mut_ptr(), len: n, _pin: None, scratch: Some((v, JsRef { env: loc.env, r })) })
    }
    /// Byte range of native output memory (the inputs that overlap it are copied); none for scratch.
    fn ranges(&self) -> Vec<(usize, usize)> {
        if self._pin.is_some() {
            vec![(self.ptr as usize, self.ptr as usize + self.len * 4)]
        } else {
            vec![]
        }
    }
    fn out_ptr(&self) -> OutPtr {
        OutPtr(self.ptr, self.len)
    }
    /// On the JS thread, after the worker finished: copies scratch results into the caller's array.
    fn write_back(&mut self, f: &str) -> Result<()> {
        let Some((data, r)) = self.scratch.as_ref() else { return Ok(()) };
        unsafe {
            let mut v = ptr::null_mut();
            if sys::napi_get_reference_value(r.env, r.r, &mut v) != sys::Status::napi_ok || v.is_null() {
                return Err(err(format!("{f}: the output typed array is gone")));
            }
            let (mut ty, mut len, mut p, mut ab, mut off) = (0, 0usize, ptr::null_mut(), ptr::null_mut(), 0usize);
            if sys::napi_get_typedarray_info(r.env, v, &mut ty, &mut len, &mut p, &mut ab, &mut off) != sys::Status::napi_ok || ty != f32::TYPE {
                return Err(err(format!("{f}: could not read the output typed array")));
            }
            if len < data.len() || p.is_null() {
                return Err(err(format!("{f}: out was detached or shrunk while the kernel ran ({len} elements, needs {})", data.len())));
            }
            ptr::copy_nonoverlapping(data.as_ptr(), p as *mut f32, data.len());
        }
        Ok(())
    }
}

// ---- the task ----

type Work = Box<dyn FnOnce() + Send>;

/// One kernel call: the checked work (or the error that rejects the Promise) and its output.
pub struct Kernel {
    name: &'static str,
    run: Option<Work>,
    error: Option<Error>,
    out: Option<Dst>,
}

impl Kernel {
    fn new(name: &'static str, setup: impl FnOnce() -> Result<(Dst, Work)>) -> AsyncTask<Kernel> {
        AsyncTask::new(match setup() {
            Ok((out, run)) => Kernel { name, run: Some(run), error: None, out: Some(out) },
            Err(e) => Kernel { name, run: None, error: Some(e), out: None },
        })
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into())
}

impl Task for Kernel {
    type Output = ();
    type JsValue = ();

    /// On a libuv worker thread.
    fn compute(&mut self) -> Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let run = self.run.take().ok_or_else(|| err(format!("{}: task ran twice", self.name)))?;
        catch_unwind(AssertUnwindSafe(run)).map_err(|p| Error::new(Status::GenericFailure, format!("{}: the kernel panicked: {}", self.name, panic_message(&*p))))
    }

    /// On the JS thread.
    fn resolve(&mut self, _env: Env, _: ()) -> Result<()> {
        match self.out.as_mut() {
            Some(o) => o.write_back(self.name),
            None => Ok(()),
        }
    }
}

// ---- the kernels ----

/// out [batch, m, n] = op(a) · op(b), off the JS thread; resolves when out is written.
#[napi(catch_unwind, ts_return_type = "Promise<void>")]
#[allow(clippy::too_many_arguments)]
pub fn matmul_async(a: Arg<f32>, b: Arg<f32>, batch: f64, m: f64, k: f64, n: f64, trans_a: bool, trans_b: bool, a_batch_stride: f64, b_batch_stride: f64, out: Arg<f32>) -> AsyncTask<Kernel> {
    const F: &str = "matmulAsync";
    Kernel::new(F, || {
        let (d, [na, nb, no]) = matmul_dims(F, batch, m, k, n, trans_a, trans_b, a_batch_stride, b_batch_stride)?;
        let (av, al) = a.get(F, "a")?;
        let (bv, bl) = b.get(F, "b")?;
        let (ov, ol) = out.get(F, "out")?;
        av.need(F, "a", na)?;
        bv.need(F, "b", nb)?;
        ov.need(F, "out", no)?;
        let dst = Dst::new(&ol, no)?;
        let o = dst.ranges();
        let (a, b, op) = (Src::<f32>::new(&al, na, &o), Src::<f32>::new(&bl, nb, &o), dst.out_ptr());
        Ok((dst, Box::new(move || pool::matmul(a.get(), b.get(), &d, unsafe { op.get() })) as Work))
    })
}

/// The six parts as the worker reads them (PART_NAMES order), checked against the format.
struct PartsSrc {
    codes: Src<u8>,
    scales: Src<f32>,
    zeros: Src<u8>,
    scale_codes: Src<u8>,
    scale2: Src<f32>,
    scale_offset: Src<f32>,
}

/// The parts argument checked against the format (as the synchronous kernels check it).
fn checked_parts(f: &str, parts: PartsArg, lens: &[(usize, usize); 6]) -> Result<Vec<Loc>> {
    let parts = parts.0.map_err(|e| err(format!("{f}: parts: {}", e.reason)))?;
    let mut views = Vec::with_capacity(parts.len());
    let mut locs = Vec::with_capacity(parts.len());
    for (i, p) in parts.into_iter().enumerate() {
        let (v, l) = p.map_err(|e| err(format!("{f}: parts[{i}]: {}", e.reason)))?;
        views.push(v);
        locs.push(l);
    }
    check_parts(f, &views, lens)?;
    Ok(locs)
}

impl PartsSrc {
    fn new(locs: &[Loc], lens: &[(usize, usize); 6], outs: &[(usize, usize)]) -> Self {
        PartsSrc {
            codes: Src::new(&locs[0], lens[0].0, outs),
            scales: Src::new(&locs[1], lens[1].0, outs),
            zeros: Src::new(&locs[2], lens[2].0, outs),
            scale_codes: Src::new(&locs[3], lens[3].0, outs),
            scale2: Src::new(&locs[4], lens[4].0, outs),
            scale_offset: Src::new(&locs[5], lens[5].0, outs),
        }
    }
    fn parts(&self) -> quant::Parts<'_> {
        quant::Parts {
            codes: self.codes.get(),
            scales: self.scales.get(),
            zeros: self.zeros.get(),
            scale_codes: self.scale_codes.get(),
            scale2: self.scale2.get(),
            scale_offset: self.scale_offset.get(),
        }
    }
}

/// out [xRows, rows] = x [xRows, cols] · Wᵀ, off the JS thread; resolves when out is written.
#[napi(catch_unwind, ts_return_type = "Promise<void>")]
#[allow(clippy::too_many_arguments)]
pub fn dequantize_matmul_async(x: Arg<f32>, x_rows: f64, parts: PartsArg, rows: f64, cols: f64, kind: u32, bits: u32, group: f64, double_quant: bool, symmetric: bool, out: Arg<f32>) -> AsyncTask<Kernel> {
    const F: &str = "dequantizeMatmulAsync";
    Kernel::new(F, || {
        let (x_rows, rows, cols) = (size(F, "xRows", x_rows)?, size(F, "rows", rows)?, size(F, "cols", cols)?);
        let fm = format(F, kind, bits, group, double_quant, symmetric)?;
        let lens = part_bytes(F, rows, cols, &fm)?;
        let locs = checked_parts(F, parts, &lens)?;
        let (nx, no) = (prod(F, &[x_rows, cols])?, prod(F, &[x_rows, rows])?);
        let (xv, xl) = x.get(F, "x")?;
        let (ov, ol) = out.get(F, "out")?;
        xv.need(F, "x", nx)?;
        ov.need(F, "out", no)?;
        let dst = Dst::new(&ol, no)?;
        let o = dst.ranges();
        let p = PartsSrc::new(&locs, &lens, &o);
        let (x, op) = (Src::<f32>::new(&xl, nx, &o), dst.out_ptr());
        Ok((dst, Box::new(move || pool::dequantize_matmul(x.get(), x_rows, &p.parts(), rows, cols, &fm, unsafe { op.get() })) as Work))
    })
}

/// out [rows, cols] = the dequantized weight, off the JS thread; resolves when out is written.
#[napi(catch_unwind, ts_return_type = "Promise<void>")]
#[allow(clippy::too_many_arguments)]
pub fn dequantize_async(parts: PartsArg, rows: f64, cols: f64, kind: u32, bits: u32, group: f64, double_quant: bool, symmetric: bool, out: Arg<f32>) -> AsyncTask<Kernel> {
    const F: &str = "dequantizeAsync";
    Kernel::new(F, || {
        let (rows, cols) = (size(F, "rows", rows)?, size(F, "cols", cols)?);
        let fm = format(F, kind, bits, group, double_quant, symmetric)?;
        let lens = part_bytes(F, rows, cols, &fm)?;
        let locs = checked_parts(F, parts, &lens)?;
        let n = rows * cols;
        let (ov, ol) = out.get(F, "out")?;
        ov.need(F, "out", n)?;
        let dst = Dst::new(&ol, n)?;
        let o = dst.ranges();
        let p = PartsSrc::new(&locs, &lens, &o);
        let op = dst.out_ptr();
        Ok((dst, Box::new(move || pool::dequantize(&p.parts(), rows, cols, &fm, unsafe { op.get() })) as Work))
    })
}

//! Typed-array arguments and their checks. A `View<T>` is a JS typed array of element type T seen
//! as a raw pointer and a length; nothing is borrowed from it until its length has been checked,
//! and inputs that overlap an output are copied first, so the kernels never see aliased `&`/`&mut`
//! slices. Byte views (`View<u8>`) holding f32/i32 data are cast in place when 4-byte aligned and
//! copied otherwise.

use napi::bindgen_prelude::{FromNapiValue, TypeName, ValidateNapiValue};
use napi::{sys, Error, Result, Status, ValueType};
use std::borrow::Cow;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ptr;

pub fn err(msg: String) -> Error {
    Error::new(Status::InvalidArg, msg)
}

/// Element types the addon reads and writes (plain old data: every bit pattern is valid).
pub trait Elem: Copy + Default + Send + Sync + 'static {
    /// napi_typedarray_type of the matching JS typed array.
    const TYPE: sys::napi_typedarray_type;
    const NAME: &'static str;
}

impl Elem for u8 {
    const TYPE: sys::napi_typedarray_type = 1;
    const NAME: &'static str = "Uint8Array";
}
impl Elem for i32 {
    const TYPE: sys::napi_typedarray_type = 5;
    const NAME: &'static str = "Int32Array";
}
impl Elem for u32 {
    const TYPE: sys::napi_typedarray_type = 6;
    const NAME: &'static str = "Uint32Array";
}
impl Elem for f32 {
    const TYPE: sys::napi_typedarray_type = 7;
    const NAME: &'static str = "Float32Array";
}

/// A JS typed array argument (checked to be exactly the typed-array type of T).
pub struct View<T: Elem> {
    ptr: *mut T,
    pub len: usize,
    _t: PhantomData<T>,
}

impl<T: Elem> View<T> {
    pub fn empty() -> Self {
        View { ptr: ptr::NonNull::dangling().as_ptr(), len: 0, _t: PhantomData }
    }
    /// Byte range [start, end) of the first n elements.
    pub fn range(&self, n: usize) -> (usize, usize) {
        let s = self.ptr as usize;
        (s, s + n * size_of::<T>())
    }
    /// Checks that the view holds at least n elements.
    pub fn need(&self, f: &str, name: &str, n: usize) -> Result<()> {
        if self.len < n {
            return Err(err(format!("{f}: {name} has {} elements, needs at least {n}", self.len)));
        }
        Ok(())
    }
    /// The first n elements as an input; copied when they overlap one of `outs` (byte ranges).
    /// Caller checked n <= len.
    pub fn input(&self, n: usize, outs: &[(usize, usize)]) -> Cow<'_, [T]> {
        debug_assert!(n <= self.len);
        if n == 0 {
            return Cow::Borrowed(&[]);
        }
        let r = self.range(n);
        if outs.iter().any(|&o| overlaps(r, o)) {
            let mut v = vec![T::default(); n];
            // SAFETY: n <= len elements of a live typed array; v is a fresh buffer.
            unsafe { ptr::copy_nonoverlapping(self.ptr as *const T, v.as_mut_ptr(), n) };
            Cow::Owned(v)
        } else {
            // SAFETY: as above; no output overlaps these bytes, so no &mut aliases them.
            Cow::Borrowed(unsafe { std::slice::from_raw_parts(self.ptr as *const T, n) })
        }
    }
    /// The first n elements as an output. Caller checked n <= len and that no other output or
    /// borrowed input overlaps them.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn output(&self, n: usize) -> &mut [T] {
        debug_assert!(n <= self.len);
        if n == 0 {
            &mut []
        } else {
            std::slice::from_raw_parts_mut(self.ptr, n)
        }
    }
}

pub fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1 && a.0 < a.1 && b.0 < b.1
}

/// Fails when two outputs overlap (e.g. dx and dw of rmsnormBackward in one buffer).
pub fn disjoint(f: &str, outs: &[(&str, (usize, usize))]) -> Result<()> {
    for i in 0..outs.len() {
        for j in i + 1..outs.len() {
            if overlaps(outs[i].1, outs[j].1) {
                return Err(err(format!("{f}: outputs {} and {} overlap", outs[i].0, outs[j].0)));
            }
        }
    }
    Ok(())
}

impl<T: Elem> FromNapiValue for View<T> {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        let mut is_ta = false;
        if sys::napi_is_typedarray(env, v, &mut is_ta) != sys::Status::napi_ok || !is_ta {
            return Err(Error::new(Status::InvalidArg, format!("expected a {}, got a value that is not a typed array", T::NAME)));
        }
        let (mut ty, mut len, mut data, mut ab, mut off) = (0, 0usize, ptr::null_mut(), ptr::null_mut(), 0usize);
        if sys::napi_get_typedarray_info(env, v, &mut ty, &mut len, &mut data, &mut ab, &mut off) != sys::Status::napi_ok {
            return Err(Error::new(Status::InvalidArg, format!("expected a {}: could not read the typed array", T::NAME)));
        }
        if ty != T::TYPE {
            return Err(Error::new(Status::InvalidArg, format!("expected a {}, got another typed array (type code {ty})", T::NAME)));
        }
        if len == 0 || data.is_null() {
            return Ok(View::empty());
        }
        if !(data as usize).is_multiple_of(align_of::<T>()) {
            return Err(Error::new(Status::InvalidArg, format!("{} data is not aligned", T::NAME)));
        }
        Ok(View { ptr: data as *mut T, len, _t: PhantomData })
    }
}

impl<T: Elem> TypeName for View<T> {
    fn type_name() -> &'static str {
        T::NAME
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl<T: Elem> ValidateNapiValue for View<T> {}

/// An f32/i32/u8 slice read from the bytes of a `View<u8>`: cast in place when aligned, else copied.
pub fn bytes_as<'a, T: Elem>(v: &'a View<u8>, n: usize, outs: &[(usize, usize)]) -> Cow<'a, [T]> {
    let nb = n * size_of::<T>();
    debug_assert!(nb <= v.len);
    if n == 0 {
        return Cow::Borrowed(&[]);
    }
    let r = v.range(nb);
    if r.0.is_multiple_of(align_of::<T>()) && !outs.iter().any(|&o| overlaps(r, o)) {
        // SAFETY: nb bytes in bounds, aligned for T, T is plain old data, no output overlaps.
        return Cow::Borrowed(unsafe { std::slice::from_raw_parts(r.0 as *const T, n) });
    }
    let mut out = vec![T::default(); n];
    // SAFETY: nb bytes in bounds; out has room for nb bytes.
    unsafe { ptr::copy_nonoverlapping(r.0 as *const u8, out.as_mut_ptr() as *mut u8, nb) };
    Cow::Owned(out)
}

/// Runs `f` on n elements of T stored in the bytes of `v` (an output): in place when aligned,
/// else on a copy that is written back afterwards.
pub fn with_bytes_mut<T: Elem, R>(v: &View<u8>, n: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let nb = n * size_of::<T>();
    debug_assert!(nb <= v.len);
    if n == 0 {
        return f(&mut []);
    }
    let p = v.range(nb).0 as *mut u8;
    if (p as usize).is_multiple_of(align_of::<T>()) {
        // SAFETY: in bounds, aligned, plain old data; caller ensured no input borrows these bytes.
        return f(unsafe { std::slice::from_raw_parts_mut(p as *mut T, n) });
    }
    let mut tmp = vec![T::default(); n];
    // SAFETY: nb bytes in bounds both ways.
    unsafe { ptr::copy_nonoverlapping(p, tmp.as_mut_ptr() as *mut u8, nb) };
    let r = f(&mut tmp);
    unsafe { ptr::copy_nonoverlapping(tmp.as_ptr() as *const u8, p, nb) };
    r
}

/// A size or count argument: a finite non-negative integer.
pub fn size(f: &str, name: &str, v: f64) -> Result<usize> {
    if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9007199254740991.0) {
        return Err(err(format!("{f}: {name} must be a non-negative integer, got {v}")));
    }
    Ok(v as usize)
}

/// Product of sizes, failing on overflow.
pub fn prod(f: &str, xs: &[usize]) -> Result<usize> {
    xs.iter().try_fold(1usize, |a, &b| a.checked_mul(b)).ok_or_else(|| err(format!("{f}: size {xs:?} overflows")))
}

/// A shape/strides/axes argument as usize values.
pub fn dims(v: &View<u32>) -> Vec<usize> {
    v.input(v.len, &[]).iter().map(|&x| x as usize).collect()
}

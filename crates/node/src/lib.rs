//! quantlora's Node addon: every kernel of crates/kernels (the same set, op codes and return codes
//! as crates/wasm) over JS typed arrays, native memory exposed as external ArrayBuffers, and a
//! process-wide rayon pool for matmul, dequantizeMatmul and dequantize.
//!
//! Conventions: outputs are caller-allocated typed arrays the kernel writes into; every length is
//! checked against the shape numbers first (a view may be longer than needed: only its first
//! elements are used), and violations throw a JS Error naming the function and the argument.
//! Shapes, strides and axes are Uint32Arrays. Every export catches panics (`catch_unwind`), so a
//! bug surfaces as a JS exception, never as an abort.

mod args;
mod gpu;
mod icq;
mod mem;
mod pool;
mod quant_grad;
mod tasks;

use args::{bytes_as, disjoint, dims, err, prod, size, with_bytes_mut, View};
use mem::JsRaw;
use napi::{Env, Result};
use napi_derive::napi;
use quantlora_kernels::{elementwise, layout, matmul as mm, quant, transformer};

// ---- memory ----

/// Native memory (64-byte aligned) as an external ArrayBuffer; freed by release() or, if JS drops
/// it first, by its finalizer.
#[napi(catch_unwind, ts_return_type = "ArrayBuffer")]
pub fn alloc(env: Env, bytes: f64, zeroed: bool) -> Result<JsRaw> {
    let bytes = size("alloc", "bytes", bytes)?;
    mem::alloc_buffer(env, bytes, zeroed)
}

/// Detaches buf (its views become empty) and frees its memory now; a second call is a no-op.
#[napi(catch_unwind)]
pub fn release(env: Env, #[napi(ts_arg_type = "ArrayBuffer")] buf: JsRaw) -> Result<()> {
    mem::release_buffer(env, buf)
}

/// Allocations not yet freed by release() or a finalizer.
#[napi(catch_unwind)]
pub fn live_allocations() -> u32 {
    mem::live_allocations() as u32
}

#[napi(object)]
pub struct Info {
    pub simd: String,
    pub threads: u32,
    pub version: String,
}

fn simd_name() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return "avx512f".into();
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return "avx2+fma".into();
        }
        "sse2".into()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.into()
    }
}

#[napi(catch_unwind)]
pub fn info() -> Info {
    Info { simd: simd_name(), threads: pool::threads() as u32, version: env!("CARGO_PKG_VERSION").into() }
}

/// Rebuilds the pool with n threads (0 = one per core).
#[napi(catch_unwind)]
pub fn set_threads(n: f64) -> Result<()> {
    let n = size("setThreads", "n", n)?;
    if n > 4096 {
        return Err(err(format!("setThreads: {n} threads is too many")));
    }
    pool::set_threads(n).map_err(|e| err(format!("setThreads: {e}")))
}

/// out[0..out.length] = value.
#[napi(catch_unwind)]
pub fn fill_f32(out: View<f32>, value: f64) {
    unsafe { out.output(out.len) }.iter_mut().for_each(|v| *v = value as f32);
}

// ---- elementwise ----

#[napi(catch_unwind)]
pub fn unary(op: u32, a: View<f32>, out: View<f32>) -> Result<()> {
    const F: &str = "unary";
    let op = elementwise::UnaryOp::from_u32(op).ok_or_else(|| err(format!("{F}: unknown op code {op}")))?;
    let n = a.len;
    out.need(F, "out", n)?;
    let a = a.input(n, &[out.range(n)]);
    elementwise::unary(op, &a, unsafe { out.output(n) });
    Ok(())
}

#[napi(catch_unwind)]
pub fn affine(a: View<f32>, mul: f64, add: f64, out: View<f32>) -> Result<()> {
    let n = a.len;
    out.need("affine", "out", n)?;
    let a = a.input(n, &[out.range(n)]);
    elementwise::affine(&a, mul as f32, add as f32, unsafe { out.output(n) });
    Ok(())
}

#[napi(catch_unwind)]
pub fn power(a: View<f32>, p: f64, out: View<f32>) -> Result<()> {
    let n = a.len;
    out.need("power", "out", n)?;
    let a = a.input(n, &[out.range(n)]);
    elementwise::pow(&a, p as f32, unsafe { out.output(n) });
    Ok(())
}

#[napi(catch_unwind)]
pub fn binary(op: u32, a: View<f32>, a_shape: View<u32>, b: View<f32>, b_shape: View<u32>, out_shape: View<u32>, out: View<f32>) -> Result<()> {
    const F: &str = "binary";
    let op = elementwise::BinaryOp::from_u32(op).ok_or_else(|| err(format!("{F}: unknown op code {op}")))?;
    let (ash, bsh, osh) = (dims(&a_shape), dims(&b_shape), dims(&out_shape));
    if ash.len() != osh.len() || bsh.len() != osh.len() {
        return Err(err(format!("{F}: ranks differ: aShape {ash:?}, bShape {bsh:?}, outShape {osh:?}")));
    }
    for i in 0..osh.len() {
        if (ash[i] != osh[i] && ash[i] != 1) || (bsh[i] != osh[i] && bsh[i] != 1) {
            return Err(err(format!("{F}: aShape {ash:?} and bShape {bsh:?} do not broadcast to outShape {osh:?}")));
        }
    }
    let (na, nb, no) = (prod(F, &ash)?, prod(F, &bsh)?, prod(F, &osh)?);
    a.need(F, "a", na)?;
    b.need(F, "b", nb)?;
    out.need(F, "out", no)?;
    let o = [out.range(no)];
    let (a, b) = (a.input(na, &o), b.input(nb, &o));
    elementwise::binary(op, &a, &ash, &b, &bsh, &osh, unsafe { out.output(no) });
    Ok(())
}

#[napi(catch_unwind)]
pub fn reduce(op: u32, a: View<f32>, shape: View<u32>, axes: View<u32>, out: View<f32>) -> Result<()> {
    const F: &str = "reduce";
    let op = elementwise::ReduceOp::from_u32(op).ok_or_else(|| err(format!("{F}: unknown op code {op}")))?;
    let (sh, ax) = (dims(&shape), dims(&axes));
    for (i, &x) in ax.iter().enumerate() {
        if x >= sh.len() || ax[..i].contains(&x) {
            return Err(err(format!("{F}: axes {ax:?} must be distinct axes of shape {sh:?}")));
        }
    }
    let n = prod(F, &sh)?;
    let out_len = sh.iter().enumerate().map(|(i, &d)| if ax.contains(&i) { 1 } else { d }).product();
    a.need(F, "a", n)?;
    out.need(F, "out", out_len)?;
    let a = a.input(n, &[out.range(out_len)]);
    elementwise::reduce(op, &a, &sh, &ax, unsafe { out.output(out_len) });
    Ok(())
}

fn dtype_size(f: &str, code: u32) -> Result<usize> {
    match code {
        0 | 1 => Ok(4),
        2 => Ok(1),
        _ => Err(err(format!("{f}: unknown dtype code {code} (0 f32, 1 i32, 2 u8)"))),
    }
}

/// dtype codes: 0 f32, 1 i32, 2 u8. a and out are byte views; n is the element count.
#[napi(catch_unwind)]
pub fn cast(from: u32, to: u32, a: View<u8>, n: f64, out: View<u8>) -> Result<()> {
    const F: &str = "cast";
    let (fs, ts) = (dtype_size(F, from)?, dtype_size(F, to)?);
    let n = size(F, "n", n)?;
    a.need(F, "a (bytes)", prod(F, &[n, fs])?)?;
    out.need(F, "out (bytes)", prod(F, &[n, ts])?)?;
    let o = [out.range(n * ts)];
    match (from, to) {
        (0, 1) => with_bytes_mut(&out, n, |o_| layout::cast_f32_to_i32(&bytes_as::<f32>(&a, n, &o), o_)),
        (0, 2) => with_bytes_mut(&out, n, |o_| layout::cast_f32_to_u8(&bytes_as::<f32>(&a, n, &o), o_)),
        (1, 0) => with_bytes_mut(&out, n, |o_| layout::cast_i32_to_f32(&bytes_as::<i32>(&a, n, &o), o_)),
        (2, 0) => with_bytes_mut(&out, n, |o_| layout::cast_u8_to_f32(&bytes_as::<u8>(&a, n, &o), o_)),
        (1, 2) => with_bytes_mut(&out, n, |o_| layout::cast_i32_to_u8(&bytes_as::<i32>(&a, n, &o), o_)),
        (2, 1) => with_bytes_mut(&out, n, |o_| layout::cast_u8_to_i32(&bytes_as::<u8>(&a, n, &o), o_)),
        _ => {
            // same dtype (or f32 <-> i32 bit copy, as the wasm layer does): copy the bytes
            let src = a.input(n * ts, &o);
            unsafe { out.output(n * ts) }.copy_from_slice(&src);
        }
    }
    Ok(())
}

// ---- layout ----

/// Extent (elements) of the source a strided walk can touch (max offset + 1); None on overflow.
fn reach(offset: usize, strides: &[usize], shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    strides.iter().zip(shape).try_fold(offset.checked_add(1)?, |acc, (&st, &d)| acc.checked_add(st.checked_mul(d - 1)?))
}

fn strided_t<T: args::Elem>(a: &View<u8>, offset: usize, st: &[usize], sh: &[usize], reach: usize, n: usize, out: &View<u8>) {
    let o = [out.range(n * std::mem::size_of::<T>())];
    let src = bytes_as::<T>(a, reach, &o);
    with_bytes_mut::<T, _>(out, n, |dst| layout::strided(&src, offset, st, sh, dst));
}

fn write_strided_t<T: args::Elem>(dst: &View<u8>, src: &View<u8>, offset: usize, st: &[usize], sh: &[usize], reach: usize, n: usize) {
    let o = [dst.range(reach * std::mem::size_of::<T>())];
    let s = bytes_as::<T>(src, n, &o);
    with_bytes_mut::<T, _>(dst, reach, |d| layout::write_strided(d, &s, offset, st, sh));
}

#[allow(clippy::type_complexity)]
fn strided_args(f: &str, dtype: u32, offset: f64, strides: &View<u32>, shape: &View<u32>) -> Result<(usize, usize, Vec<usize>, Vec<usize>, usize, usize)> {
    let es = dtype_size(f, dtype)?;
    let offset = size(f, "offset", offset)?;
    let (st, sh) = (dims(strides), dims(shape));
    if st.len() != sh.len() {
        return Err(err(format!("{f}: strides {st:?} and shape {sh:?} have different ranks")));
    }
    let r = reach(offset, &st, &sh).ok_or_else(|| err(format!("{f}: offset/strides overflow")))?;
    let n = prod(f, &sh)?;
    prod(f, &[r.max(n), es])?;
    Ok((es, offset, st, sh, r, n))
}

/// out (dense, shape) = a[offset + Σ i·strides]; a and out are byte views of dtype elements.
#[napi(catch_unwind)]
pub fn strided(dtype: u32, a: View<u8>, offset: f64, strides: View<u32>, shape: View<u32>, out: View<u8>) -> Result<()> {
    const F: &str = "strided";
    let (es, offset, st, sh, r, n) = strided_args(F, dtype, offset, &strides, &shape)?;
    a.need(F, "a (bytes)", r * es)?;
    out.need(F, "out (bytes)", n * es)?;
    match dtype {
        0 => strided_t::<f32>(&a, offset, &st, &sh, r, n, &out),
        1 => strided_t::<i32>(&a, offset, &st, &sh, r, n, &out),
        _ => strided_t::<u8>(&a, offset, &st, &sh, r, n, &out),
    }
    Ok(())
}

/// dst[offset + Σ i·strides] = src (dense, shape); byte views of dtype elements.
#[napi(catch_unwind)]
pub fn write_strided(dtype: u32, dst: View<u8>, src: View<u8>, offset: f64, strides: View<u32>, shape: View<u32>) -> Result<()> {
    const F: &str = "writeStrided";
    let (es, offset, st, sh, r, n) = strided_args(F, dtype, offset, &strides, &shape)?;
    dst.need(F, "dst (bytes)", r * es)?;
    src.need(F, "src (bytes)", n * es)?;
    match dtype {
        0 => write_strided_t::<f32>(&dst, &src, offset, &st, &sh, r, n),
        1 => write_strided_t::<i32>(&dst, &src, offset, &st, &sh, r, n),
        _ => write_strided_t::<u8>(&dst, &src, offset, &st, &sh, r, n),
    }
    Ok(())
}

/// out [ids.length, dim] = rows of table [rows, dim]; -1, or the position of the first bad id.
#[napi(catch_unwind)]
pub fn gather(table: View<f32>, rows: f64, dim: f64, ids: View<i32>, out: View<f32>) -> Result<i32> {
    const F: &str = "gather";
    let (rows, dim) = (size(F, "rows", rows)?, size(F, "dim", dim)?);
    let count = ids.len;
    let (nt, no) = (prod(F, &[rows, dim])?, prod(F, &[count, dim])?);
    table.need(F, "table", nt)?;
    out.need(F, "out", no)?;
    let o = [out.range(no)];
    let (t, i) = (table.input(nt, &o), ids.input(count, &o));
    Ok(match layout::gather(&t, rows, dim, &i, unsafe { out.output(no) }) {
        Ok(()) => -1,
        Err(pos) => pos as i32,
    })
}

/// out [rows, dim] = 0, then += grad row i at row ids[i] (ids outside [0, rows) skipped).
#[napi(catch_unwind)]
pub fn scatter_add_rows(grad: View<f32>, count: f64, dim: f64, ids: View<i32>, rows: f64, out: View<f32>) -> Result<()> {
    const F: &str = "scatterAddRows";
    let (count, dim, rows) = (size(F, "count", count)?, size(F, "dim", dim)?, size(F, "rows", rows)?);
    let (ng, no) = (prod(F, &[count, dim])?, prod(F, &[rows, dim])?);
    grad.need(F, "grad", ng)?;
    ids.need(F, "ids", count)?;
    out.need(F, "out", no)?;
    let o = [out.range(no)];
    let (g, i) = (grad.input(ng, &o), ids.input(count, &o));
    layout::scatter_add_rows(&g, dim, &i, rows, unsafe { out.output(no) });
    Ok(())
}

// ---- linear algebra ----

/// The matmul's dims from its JS arguments, and the lengths a, b and out must have (a and b:
/// the last batch's offset plus one matrix; nothing when batch is 0). Used by matmul and
/// matmulAsync (tasks.rs).
#[allow(clippy::too_many_arguments)]
fn matmul_dims(f: &str, batch: f64, m: f64, k: f64, n: f64, trans_a: bool, trans_b: bool, a_batch_stride: f64, b_batch_stride: f64) -> Result<(mm::MatmulDims, [usize; 3])> {
    let d = mm::MatmulDims {
        batch: size(f, "batch", batch)?,
        m: size(f, "m", m)?,
        k: size(f, "k", k)?,
        n: size(f, "n", n)?,
        trans_a,
        trans_b,
        a_batch_stride: size(f, "aBatchStride", a_batch_stride)?,
        b_batch_stride: size(f, "bBatchStride", b_batch_stride)?,
    };
    let len = |stride: usize, x: usize, y: usize| -> Result<usize> {
        if d.batch == 0 {
            return Ok(0);
        }
        prod(f, &[stride, d.batch - 1])?.checked_add(prod(f, &[x, y])?).ok_or_else(|| err(format!("{f}: size overflows")))
    };
    let lens = [len(d.a_batch_stride, d.m, d.k)?, len(d.b_batch_stride, d.k, d.n)?, prod(f, &[d.batch, d.m, d.n])?];
    Ok((d, lens))
}

/// out [batch, m, n] = op(a) · op(b) per batch; threaded over the pool when large.
#[napi(catch_unwind)]
#[allow(clippy::too_many_arguments)]
pub fn matmul(a: View<f32>, b: View<f32>, batch: f64, m: f64, k: f64, n: f64, trans_a: bool, trans_b: bool, a_batch_stride: f64, b_batch_stride: f64, out: View<f32>) -> Result<()> {
    const F: &str = "matmul";
    let (d, [na, nb, no]) = matmul_dims(F, batch, m, k, n, trans_a, trans_b, a_batch_stride, b_batch_stride)?;
    a.need(F, "a", na)?;
    b.need(F, "b", nb)?;
    out.need(F, "out", no)?;
    let o = [out.range(no)];
    let (a, b) = (a.input(na, &o), b.input(nb, &o));
    pool::matmul(&a, &b, &d, unsafe { out.output(no) });
    Ok(())
}

// ---- transformer blocks ----

#[napi(catch_unwind)]
pub fn rmsnorm(x: View<f32>, w: View<f32>, rows: f64, dim: f64, eps: f64, out: View<f32>) -> Result<()> {
    const F: &str = "rmsnorm";
    let (rows, dim) = (size(F, "rows", rows)?, size(F, "dim", dim)?);
    let n = prod(F, &[rows, dim])?;
    x.need(F, "x", n)?;
    w.need(F, "w", dim)?;
    out.need(F, "out", n)?;
    let o = [out.range(n)];
    let (x, w) = (x.input(n, &o), w.input(dim, &o));
    transformer::rmsnorm(&x, &w, rows, dim, eps as f32, unsafe { out.output(n) });
    Ok(())
}

#[napi(catch_unwind)]
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(x: View<f32>, w: View<f32>, dy: View<f32>, rows: f64, dim: f64, eps: f64, dx: View<f32>, dw: View<f32>) -> Result<()> {
    const F: &str = "rmsnormBackward";
    let (rows, dim) = (size(F, "rows", rows)?, size(F, "dim", dim)?);
    let n = prod(F, &[rows, dim])?;
    x.need(F, "x", n)?;
    w.need(F, "w", dim)?;
    dy.need(F, "dy", n)?;
    dx.need(F, "dx", n)?;
    dw.need(F, "dw", dim)?;
    disjoint(F, &[("dx", dx.range(n)), ("dw", dw.range(dim))])?;
    let o = [dx.range(n), dw.range(dim)];
    let (x, w, dy) = (x.input(n, &o), w.input(dim, &o), dy.input(n, &o));
    transformer::rmsnorm_backward(&x, &w, &dy, rows, dim, eps as f32, unsafe { dx.output(n) }, unsafe { dw.output(dim) });
    Ok(())
}

/// x, out [outer, seq, dim] (dim even).
#[napi(catch_unwind)]
#[allow(clippy::too_many_arguments)]
pub fn rope(x: View<f32>, outer: f64, seq: f64, dim: f64, theta: f64, offset: f64, interleaved: bool, inverse: bool, out: View<f32>) -> Result<()> {
    const F: &str = "rope";
    let (outer, seq, dim, offset) = (size(F, "outer", outer)?, size(F, "seq", seq)?, size(F, "dim", dim)?, size(F, "offset", offset)?);
    if dim % 2 != 0 {
        return Err(err(format!("{F}: dim must be even, got {dim}")));
    }
    let n = prod(F, &[outer, seq, dim])?;
    x.need(F, "x", n)?;
    out.need(F, "out", n)?;
    let x = x.input(n, &[out.range(n)]);
    transformer::rope(&x, outer, seq, dim, theta as f32, offset, interleaved, inverse, unsafe { out.output(n) });
    Ok(())
}

#[napi(catch_unwind)]
pub fn softmax(x: View<f32>, rows: f64, cols: f64, causal_queries: f64, out: View<f32>) -> Result<()> {
    const F: &str = "softmax";
    let (rows, cols, cq) = (size(F, "rows", rows)?, size(F, "cols", cols)?, size(F, "causalQueries", causal_queries)?);
    let n = prod(F, &[rows, cols])?;
    x.need(F, "x", n)?;
    out.need(F, "out", n)?;
    let x = x.input(n, &[out.range(n)]);
    transformer::softmax(&x, rows, cols, cq, unsafe { out.output(n) });
    Ok(())
}

#[napi(catch_unwind)]
pub fn softmax_backward(y: View<f32>, dy: View<f32>, rows: f64, cols: f64, dx: View<f32>) -> Result<()> {
    const F: &str = "softmaxBackward";
    let (rows, cols) = (size(F, "rows", rows)?, size(F, "cols", cols)?);
    let n = prod(F, &[rows, cols])?;
    y.need(F, "y", n)?;
    dy.need(F, "dy", n)?;
    dx.need(F, "dx", n)?;
    let o = [dx.range(n)];
    let (y, dy) = (y.input(n, &o), dy.input(n, &o));
    transformer::softmax_backward(&y, &dy, rows, cols, unsafe { dx.output(n) });
    Ok(())
}

/// Writes the mean loss to out[0]; returns -1, or the row whose target is out of range.
#[napi(catch_unwind)]
pub fn cross_entropy(logits: View<f32>, targets: View<i32>, rows: f64, vocab: f64, ignore_index: i32, out: View<f32>) -> Result<i32> {
    const F: &str = "crossEntropy";
    let (rows, vocab) = (size(F, "rows", rows)?, size(F, "vocab", vocab)?);
    let n = prod(F, &[rows, vocab])?;
    logits.need(F, "logits", n)?;
    targets.need(F, "targets", rows)?;
    out.need(F, "out", 1)?;
    let o = [out.range(1)];
    let (l, t) = (logits.input(n, &o), targets.input(rows, &o));
    Ok(match transformer::cross_entropy(&l, &t, rows, vocab, ignore_index) {
        Ok(loss) => {
            (unsafe { out.output(1) })[0] = loss;
            -1
        }
        Err((row, _)) => row as i32,
    })
}

/// out [rows, vocab] = d loss / d logits · dLoss[0]; returns -1, or the row whose target is bad.
#[napi(catch_unwind)]
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_backward(logits: View<f32>, targets: View<i32>, d_loss: View<f32>, rows: f64, vocab: f64, ignore_index: i32, out: View<f32>) -> Result<i32> {
    const F: &str = "crossEntropyBackward";
    let (rows, vocab) = (size(F, "rows", rows)?, size(F, "vocab", vocab)?);
    let n = prod(F, &[rows, vocab])?;
    logits.need(F, "logits", n)?;
    targets.need(F, "targets", rows)?;
    d_loss.need(F, "dLoss", 1)?;
    out.need(F, "out", n)?;
    let o = [out.range(n)];
    let (l, t, dl) = (logits.input(n, &o), targets.input(rows, &o), d_loss.input(1, &o)[0]);
    Ok(match transformer::cross_entropy_backward(&l, &t, dl, rows, vocab, ignore_index, unsafe { out.output(n) }) {
        Ok(()) => -1,
        Err((row, _)) => row as i32,
    })
}

// ---- quantization ----

fn format(f: &str, kind: u32, bits: u32, group: f64, double_quant: bool, symmetric: bool) -> Result<quant::Format> {
    let group = size(f, "group", group)?;
    if kind > 1 {
        return Err(err(format!("{f}: unknown format kind {kind} (0 nf, 1 int)")));
    }
    if !(2..=4).contains(&bits) {
        return Err(err(format!("{f}: bits must be 2, 3 or 4, got {bits}")));
    }
    if group == 0 {
        return Err(err(format!("{f}: group must be >= 1")));
    }
    Ok(quant::Format { kind: if kind == 0 { quant::Kind::Nf } else { quant::Kind::Int }, bits, group, double_quant, symmetric })
}

const PART_NAMES: [&str; 6] = ["codes", "scales", "zeros", "scaleCodes", "scale2", "scaleOffset"];

/// Byte lengths of the six parts (PART_NAMES order; 0 = absent) and their element sizes.
fn part_bytes(f: &str, rows: usize, cols: usize, fm: &quant::Format) -> Result<[(usize, usize); 6]> {
    prod(f, &[rows, cols, 4])?;
    let l = quant::part_lengths(rows, cols, fm);
    Ok([(l.codes, 1), (l.scales, 4), (l.zeros, 1), (l.scale_codes, 1), (l.scale2, 4), (l.scale_offset, 4)])
}

fn check_parts(f: &str, parts: &[View<u8>], lens: &[(usize, usize); 6]) -> Result<()> {
    if parts.len() != 6 {
        return Err(err(format!("{f}: parts must be an array of 6 Uint8Arrays ({}), got {}", PART_NAMES.join(", "), parts.len())));
    }
    for i in 0..6 {
        let (n, es) = lens[i];
        parts[i].need(f, &format!("parts[{i}] ({})", PART_NAMES[i]), n * es)?;
    }
    Ok(())
}

/// Returns -1, or the index of the first non-finite weight.
#[napi(catch_unwind)]
#[allow(clippy::too_many_arguments)]
pub fn quantize(w: View<f32>, rows: f64, cols: f64, kind: u32, bits: u32, group: f64, double_quant: bool, symmetric: bool, #[napi(ts_arg_type = "Uint8Array[]")] parts: Vec<View<u8>>) -> Result<i32> {
    const F: &str = "quantize";
    let (rows, cols) = (size(F, "rows", rows)?, size(F, "cols", cols)?);
    let fm = format(F, kind, bits, group, double_quant, symmetric)?;
    let lens = part_bytes(F, rows, cols, &fm)?;
    check_parts(F, &parts, &lens)?;
    let n = rows * cols;
    w.need(F, "w", n)?;
    let ranges: Vec<(&str, (usize, usize))> = (0..6).map(|i| (PART_NAMES[i], parts[i].range(lens[i].0 * lens[i].1))).collect();
    disjoint(F, &ranges)?;
    let o: Vec<(usize, usize)> = ranges.iter().map(|r| r.1).collect();
    let w = w.input(n, &o);
    let p = &parts;
    let l = |i: usize| lens[i].0;
    let r = with_bytes_mut::<u8, _>(&p[0], l(0), |codes| {
        with_bytes_mut::<f32, _>(&p[1], l(1), |scales| {
            with_bytes_mut::<u8, _>(&p[2], l(2), |zeros| {
                with_bytes_mut::<u8, _>(&p[3], l(3), |scale_codes| {
                    with_bytes_mut::<f32, _>(&p[4], l(4), |scale2| {
                        with_bytes_mut::<f32, _>(&p[5], l(5), |scale_offset| {
                            let out = quant::PartsMut { codes, scales, zeros, scale_codes, scale2, scale_offset };
                            quant::quantize(&w, rows, cols, &fm, out)
                        })
                    })
                })
            })
        })
    });
    Ok(match r {
        Ok(()) => -1,
        Err(i) => i as i32,
    })
}

struct PartsIn<'a> {
    codes: std::borrow::Cow<'a, [u8]>,
    scales: std::borrow::Cow<'a, [f32]>,
    zeros: std::borrow::Cow<'a, [u8]>,
    scale_codes: std::borrow::Cow<'a, [u8]>,
    scale2: std::borrow::Cow<'a, [f32]>,
    scale_offset: std::borrow::Cow<'a, [f32]>,
}

impl PartsIn<'_> {
    fn parts(&self) -> quant::Parts<'_> {
        quant::Parts {
            codes: &self.codes,
            scales: &self.scales,
            zeros: &self.zeros,
            scale_codes: &self.scale_codes,
            scale2: &self.scale2,
            scale_offset: &self.scale_offset,
        }
    }
}

fn parts_in<'a>(p: &'a [View<u8>], lens: &[(usize, usize); 6], o: &[(usize, usize)]) -> PartsIn<'a> {
    PartsIn {
        codes: bytes_as::<u8>(&p[0], lens[0].0, o),
        scales: bytes_as::<f32>(&p[1], lens[1].0, o),
        zeros: bytes_as::<u8>(&p[2], lens[2].0, o),
        scale_codes: bytes_as::<u8>(&p[3], lens[3].0, o),
        scale2: bytes_as::<f32>(&p[4], lens[4].0, o),
        scale_offset: bytes_as::<f32>(&p[5], lens[5].0, o),
    }
}

/// out [rows, cols] = the dequantized weight; threaded over weight rows.
#[napi(catch_unwind)]
#[allow(clippy::too_many_arguments)]
pub fn dequantize(#[napi(ts_arg_type = "Uint8Array[]")] parts: Vec<View<u8>>, rows: f64, cols: f64, kind: u32, bits: u32, group: f64, double_quant: bool, symmetric: bool, out: View<f32>) -> Result<()> {
    const F: &str = "dequantize";
    let (rows, cols) = (size(F, "rows", rows)?, size(F, "cols", cols)?);
    let fm = format(F, kind, bits, group, double_quant, symmetric)?;
    let lens = part_bytes(F, rows, cols, &fm)?;
    check_parts(F, &parts, &lens)?;
    let n = rows * cols;
    out.need(F, "out", n)?;
    let o = [out.range(n)];
    let p = parts_in(&parts, &lens, &o);
    pool::dequantize(&p.parts(), rows, cols, &fm, unsafe { out.output(n) });
    Ok(())
}

/// out [xRows, rows] = x [xRows, cols] · Wᵀ, W never materialized; threaded over weight rows.
#[napi(catch_unwind)]
#[allow(clippy::too_many_arguments)]
pub fn dequantize_matmul(x: View<f32>, x_rows: f64, #[napi(ts_arg_type = "Uint8Array[]")] parts: Vec<View<u8>>, rows: f64, cols: f64, kind: u32, bits: u32, group: f64, double_quant: bool, symmetric: bool, out: View<f32>) -> Result<()> {
    const F: &str = "dequantizeMatmul";
    let (x_rows, rows, cols) = (size(F, "xRows", x_rows)?, size(F, "rows", rows)?, size(F, "cols", cols)?);
    let fm = format(F, kind, bits, group, double_quant, symmetric)?;
    let lens = part_bytes(F, rows, cols, &fm)?;
    check_parts(F, &parts, &lens)?;
    let (nx, no) = (prod(F, &[x_rows, cols])?, prod(F, &[x_rows, rows])?);
    x.need(F, "x", nx)?;
    out.need(F, "out", no)?;
    let o = [out.range(no)];
    let p = parts_in(&parts, &lens, &o);
    let x = x.input(nx, &o);
    pool::dequantize_matmul(&x, x_rows, &p.parts(), rows, cols, &fm, unsafe { out.output(no) });
    Ok(())
}

// ---- benchmarking ----

/// Reads every element of a over the whole pool (a memory-bandwidth probe for the benchmarks);
/// returns their sum so the reads cannot be optimized away.
#[napi(catch_unwind)]
pub fn stream_read(a: View<f32>) -> f64 {
    let s = a.input(a.len, &[]);
    pool::stream_read(&s)
}

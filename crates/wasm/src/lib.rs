//! quantlora's WASM layer: every kernel of crates/kernels behind a wasm-bindgen export that takes
//! raw offsets into this module's linear memory. The JS side owns allocation (alloc/free below),
//! so tensors live in wasm memory and nothing is copied per op. Shapes travel as pointers to u32
//! arrays (usize is 32-bit here). Kernels that can fail return -1 on success, else the index that
//! failed, so the TS side can raise a typed error.

use core::slice;
use quantlora_kernels::{elementwise, layout, matmul, quant, transformer};
use std::alloc::{alloc, alloc_zeroed, dealloc, Layout};
use wasm_bindgen::prelude::*;

const ALIGN: usize = 16;

fn layout_for(bytes: usize) -> Layout {
    Layout::from_size_align(bytes.max(ALIGN), ALIGN).expect("allocation size")
}

unsafe fn s<'a, T>(ptr: usize, len: usize) -> &'a [T] {
    if len == 0 { &[] } else { slice::from_raw_parts(ptr as *const T, len) }
}

unsafe fn m<'a, T>(ptr: usize, len: usize) -> &'a mut [T] {
    if len == 0 { &mut [] } else { slice::from_raw_parts_mut(ptr as *mut T, len) }
}

fn product(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// True when this build uses simd128 (the scalar build returns false).
#[wasm_bindgen]
pub fn simd() -> bool {
    cfg!(target_feature = "simd128")
}

#[wasm_bindgen]
pub fn alloc_bytes(bytes: usize) -> usize {
    unsafe { alloc(layout_for(bytes)) as usize }
}

#[wasm_bindgen]
pub fn alloc_zeroed_bytes(bytes: usize) -> usize {
    unsafe { alloc_zeroed(layout_for(bytes)) as usize }
}

#[wasm_bindgen]
pub fn free_bytes(ptr: usize, bytes: usize) {
    unsafe { dealloc(ptr as *mut u8, layout_for(bytes)) }
}

#[wasm_bindgen]
pub fn fill_f32(out: usize, n: usize, value: f32) {
    unsafe { m::<f32>(out, n) }.iter_mut().for_each(|v| *v = value);
}

// ---- elementwise ----

#[wasm_bindgen]
pub fn unary(op: u32, a: usize, n: usize, out: usize) {
    let op = elementwise::UnaryOp::from_u32(op).expect("unary op code");
    unsafe { elementwise::unary(op, s(a, n), m(out, n)) }
}

#[wasm_bindgen]
pub fn affine(a: usize, n: usize, mul: f32, add: f32, out: usize) {
    unsafe { elementwise::affine(s(a, n), mul, add, m(out, n)) }
}

// Not named `pow`: that is libm's symbol, and an export of that name would collide with it.
#[wasm_bindgen]
pub fn power(a: usize, n: usize, p: f32, out: usize) {
    unsafe { elementwise::pow(s(a, n), p, m(out, n)) }
}

#[wasm_bindgen]
pub fn binary(op: u32, a: usize, a_shape: usize, b: usize, b_shape: usize, out_shape: usize, rank: usize, out: usize) {
    let op = elementwise::BinaryOp::from_u32(op).expect("binary op code");
    unsafe {
        let (ash, bsh, osh) = (s::<usize>(a_shape, rank), s::<usize>(b_shape, rank), s::<usize>(out_shape, rank));
        elementwise::binary(op, s(a, product(ash)), ash, s(b, product(bsh)), bsh, osh, m(out, product(osh)))
    }
}

#[wasm_bindgen]
pub fn reduce(op: u32, a: usize, shape: usize, rank: usize, axes: usize, n_axes: usize, out: usize) {
    let op = elementwise::ReduceOp::from_u32(op).expect("reduce op code");
    unsafe {
        let sh = s::<usize>(shape, rank);
        let ax = s::<usize>(axes, n_axes);
        let out_len: usize = sh.iter().enumerate().map(|(i, &d)| if ax.contains(&i) { 1 } else { d }).product();
        elementwise::reduce(op, s(a, product(sh)), sh, ax, m(out, out_len))
    }
}

/// dtype codes: 0 f32, 1 i32, 2 u8.
#[wasm_bindgen]
pub fn cast(from: u32, to: u32, a: usize, n: usize, out: usize) {
    unsafe {
        match (from, to) {
            (0, 1) => layout::cast_f32_to_i32(s(a, n), m(out, n)),
            (0, 2) => layout::cast_f32_to_u8(s(a, n), m(out, n)),
            (1, 0) => layout::cast_i32_to_f32(s(a, n), m(out, n)),
            (2, 0) => layout::cast_u8_to_f32(s(a, n), m(out, n)),
            (1, 2) => layout::cast_i32_to_u8(s(a, n), m(out, n)),
            (2, 1) => layout::cast_u8_to_i32(s(a, n), m(out, n)),
            _ => m::<u8>(out, n * if to == 2 { 1 } else { 4 }).copy_from_slice(s(a, n * if to == 2 { 1 } else { 4 })),
        }
    }
}

// ---- layout ----

/// Extent of the source elements a strided walk can touch (max offset + 1).
fn reach(offset: usize, strides: &[usize], shape: &[usize]) -> usize {
    if shape.iter().any(|&d| d == 0) {
        return 0;
    }
    offset + strides.iter().zip(shape).map(|(&st, &d)| st * (d - 1)).sum::<usize>() + 1
}

macro_rules! for_dtype {
    ($dtype:expr, $f:ident, $($args:tt)*) => {
        match $dtype {
            0 => $f::<f32>($($args)*),
            1 => $f::<i32>($($args)*),
            _ => $f::<u8>($($args)*),
        }
    };
}

unsafe fn strided_t<T: Copy>(a: usize, offset: usize, strides: &[usize], shape: &[usize], out: usize) {
    layout::strided(s::<T>(a, reach(offset, strides, shape)), offset, strides, shape, m::<T>(out, product(shape)))
}

unsafe fn write_strided_t<T: Copy>(dst: usize, src: usize, offset: usize, strides: &[usize], shape: &[usize]) {
    layout::write_strided(m::<T>(dst, reach(offset, strides, shape)), s::<T>(src, product(shape)), offset, strides, shape)
}

#[wasm_bindgen]
pub fn strided(dtype: u32, a: usize, offset: usize, strides: usize, shape: usize, rank: usize, out: usize) {
    unsafe {
        let (st, sh) = (s::<usize>(strides, rank), s::<usize>(shape, rank));
        for_dtype!(dtype, strided_t, a, offset, st, sh, out)
    }
}

#[wasm_bindgen]
pub fn write_strided(dtype: u32, dst: usize, src: usize, offset: usize, strides: usize, shape: usize, rank: usize) {
    unsafe {
        let (st, sh) = (s::<usize>(strides, rank), s::<usize>(shape, rank));
        for_dtype!(dtype, write_strided_t, dst, src, offset, st, sh)
    }
}

#[wasm_bindgen]
pub fn gather(table: usize, rows: usize, dim: usize, ids: usize, count: usize, out: usize) -> i32 {
    match unsafe { layout::gather(s(table, rows * dim), rows, dim, s(ids, count), m(out, count * dim)) } {
        Ok(()) => -1,
        Err(pos) => pos as i32,
    }
}

#[wasm_bindgen]
pub fn scatter_add_rows(grad: usize, count: usize, dim: usize, ids: usize, rows: usize, out: usize) {
    unsafe { layout::scatter_add_rows(s(grad, count * dim), dim, s(ids, count), rows, m(out, rows * dim)) }
}

// ---- linear algebra ----

#[wasm_bindgen]
#[allow(clippy::too_many_arguments)]
pub fn matmul(a: usize, b: usize, batch: usize, m_: usize, k: usize, n: usize, trans_a: bool, trans_b: bool, a_batch_stride: usize, b_batch_stride: usize, out: usize) {
    let d = matmul::MatmulDims { batch, m: m_, k, n, trans_a, trans_b, a_batch_stride, b_batch_stride };
    let a_len = if batch == 0 { 0 } else { a_batch_stride * (batch - 1) + m_ * k };
    let b_len = if batch == 0 { 0 } else { b_batch_stride * (batch - 1) + k * n };
    unsafe { matmul::matmul(s(a, a_len), s(b, b_len), &d, m(out, batch * m_ * n)) }
}

// ---- transformer blocks ----

#[wasm_bindgen]
pub fn rmsnorm(x: usize, w: usize, rows: usize, dim: usize, eps: f32, out: usize) {
    unsafe { transformer::rmsnorm(s(x, rows * dim), s(w, dim), rows, dim, eps, m(out, rows * dim)) }
}

#[wasm_bindgen]
pub fn rmsnorm_backward(x: usize, w: usize, dy: usize, rows: usize, dim: usize, eps: f32, dx: usize, dw: usize) {
    unsafe { transformer::rmsnorm_backward(s(x, rows * dim), s(w, dim), s(dy, rows * dim), rows, dim, eps, m(dx, rows * dim), m(dw, dim)) }
}

#[wasm_bindgen]
#[allow(clippy::too_many_arguments)]
pub fn rope(x: usize, outer: usize, seq: usize, dim: usize, theta: f32, offset: usize, interleaved: bool, inverse: bool, out: usize) {
    let n = outer * seq * dim;
    unsafe { transformer::rope(s(x, n), outer, seq, dim, theta, offset, interleaved, inverse, m(out, n)) }
}

#[wasm_bindgen]
pub fn softmax(x: usize, rows: usize, cols: usize, causal_queries: usize, out: usize) {
    unsafe { transformer::softmax(s(x, rows * cols), rows, cols, causal_queries, m(out, rows * cols)) }
}

#[wasm_bindgen]
pub fn softmax_backward(y: usize, dy: usize, rows: usize, cols: usize, dx: usize) {
    unsafe { transformer::softmax_backward(s(y, rows * cols), s(dy, rows * cols), rows, cols, m(dx, rows * cols)) }
}

/// Writes the mean loss to out[0]; returns -1, or the row whose target is out of range.
#[wasm_bindgen]
pub fn cross_entropy(logits: usize, targets: usize, rows: usize, vocab: usize, ignore_index: i32, out: usize) -> i32 {
    match unsafe { transformer::cross_entropy(s(logits, rows * vocab), s(targets, rows), rows, vocab, ignore_index) } {
        Ok(loss) => {
            unsafe { m::<f32>(out, 1)[0] = loss };
            -1
        }
        Err((row, _)) => row as i32,
    }
}

#[wasm_bindgen]
pub fn cross_entropy_backward(logits: usize, targets: usize, d_loss: usize, rows: usize, vocab: usize, ignore_index: i32, out: usize) -> i32 {
    let dl = unsafe { s::<f32>(d_loss, 1)[0] };
    match unsafe { transformer::cross_entropy_backward(s(logits, rows * vocab), s(targets, rows), dl, rows, vocab, ignore_index, m(out, rows * vocab)) } {
        Ok(()) => -1,
        Err((row, _)) => row as i32,
    }
}

// ---- quantization ----

fn format(kind: u32, bits: u32, group: usize, double_quant: bool, symmetric: bool) -> quant::Format {
    quant::Format { kind: if kind == 0 { quant::Kind::Nf } else { quant::Kind::Int }, bits, group, double_quant, symmetric }
}

/// parts: pointer to 6 u32 offsets (codes, scales, zeros, scale_codes, scale2, scale_offset; 0 = absent).
unsafe fn parts<'a>(p: usize, l: &quant::PartLengths) -> quant::Parts<'a> {
    let o = s::<usize>(p, 6);
    quant::Parts {
        codes: s(o[0], l.codes),
        scales: s(o[1], l.scales),
        zeros: s(o[2], l.zeros),
        scale_codes: s(o[3], l.scale_codes),
        scale2: s(o[4], l.scale2),
        scale_offset: s(o[5], l.scale_offset),
    }
}

unsafe fn parts_mut<'a>(p: usize, l: &quant::PartLengths) -> quant::PartsMut<'a> {
    let o = s::<usize>(p, 6);
    quant::PartsMut {
        codes: m(o[0], l.codes),
        scales: m(o[1], l.scales),
        zeros: m(o[2], l.zeros),
        scale_codes: m(o[3], l.scale_codes),
        scale2: m(o[4], l.scale2),
        scale_offset: m(o[5], l.scale_offset),
    }
}

/// Returns -1, or the index of the first non-finite weight.
#[wasm_bindgen]
#[allow(clippy::too_many_arguments)]
pub fn quantize(w: usize, rows: usize, cols: usize, kind: u32, bits: u32, group: usize, double_quant: bool, symmetric: bool, parts_ptr: usize) -> i32 {
    let f = format(kind, bits, group, double_quant, symmetric);
    let l = quant::part_lengths(rows, cols, &f);
    match unsafe { quant::quantize(s(w, rows * cols), rows, cols, &f, parts_mut(parts_ptr, &l)) } {
        Ok(()) => -1,
        Err(i) => i as i32,
    }
}

#[wasm_bindgen]
#[allow(clippy::too_many_arguments)]
pub fn dequantize(parts_ptr: usize, rows: usize, cols: usize, kind: u32, bits: u32, group: usize, double_quant: bool, symmetric: bool, out: usize) {
    let f = format(kind, bits, group, double_quant, symmetric);
    let l = quant::part_lengths(rows, cols, &f);
    unsafe { quant::dequantize(&parts(parts_ptr, &l), rows, cols, &f, m(out, rows * cols)) }
}

#[wasm_bindgen]
#[allow(clippy::too_many_arguments)]
pub fn dequantize_matmul(x: usize, x_rows: usize, parts_ptr: usize, rows: usize, cols: usize, kind: u32, bits: u32, group: usize, double_quant: bool, symmetric: bool, out: usize) {
    let f = format(kind, bits, group, double_quant, symmetric);
    let l = quant::part_lengths(rows, cols, &f);
    unsafe { quant::dequantize_matmul(s(x, x_rows * cols), x_rows, &parts(parts_ptr, &l), rows, cols, &f, m(out, x_rows * rows)) }
}

/// out [n, cols] = dy [n, rows] · W (the backward of dequantize_matmul), W never materialized.
#[wasm_bindgen]
#[allow(clippy::too_many_arguments)]
pub fn dequantize_matmul_t(dy: usize, n: usize, parts_ptr: usize, rows: usize, cols: usize, kind: u32, bits: u32, group: usize, double_quant: bool, symmetric: bool, out: usize) {
    let f = format(kind, bits, group, double_quant, symmetric);
    let l = quant::part_lengths(rows, cols, &f);
    unsafe { quant::dequantize_matmul_t(s(dy, n * rows), n, &parts(parts_ptr, &l), rows, cols, &f, m(out, n * cols)) }
}

// ---- ICQ ----

/// out[g] = ICQ's τ (nf) or clip ratio (int) of each group (crates/kernels quant/icq.rs).
/// Returns -1, or the index of the first non-finite weight.
#[wasm_bindgen]
#[allow(clippy::too_many_arguments)]
pub fn icq_search(w: usize, rows: usize, cols: usize, kind: u32, bits: u32, group: usize, double_quant: bool, symmetric: bool, lambda: f64, n: usize, sigma: f64, clip_low: f64, clip_high: f64, clip_points: usize, out: usize) -> i32 {
    let f = format(kind, bits, group, double_quant, symmetric);
    let p = quant::IcqParams { lambda, n, sigma, clip_low, clip_high, clip_points };
    let groups = rows * quant::groups_per_row(cols, &f);
    match unsafe { quant::icq_search(s(w, rows * cols), rows, cols, &f, &p, m(out, groups)) } {
        Ok(()) => -1,
        Err(i) => i as i32,
    }
}

//! Quantization kernels: quantize, dequantize and the fused dequantize-matmul for NF2/3/4 (with or
//! without bitsandbytes' double quantization) and INT2/3/4 (symmetric or asymmetric), bit-exact
//! with the TS reference (ts/quant/reference.ts; layout and algorithms in ts/quant/formats.ts).
//!
//! Layout: a weight is [rows, cols]; row r has `groups_per_row` groups along the row (the last
//! possibly partial), group g = r * groups_per_row + c / group. Codes are packed per row, MSB first,
//! each row padded to a whole byte (`crate::packing`).
//!
//! Every optimized kernel has a scalar reference next to it (`*_reference`, straight ports of the
//! TS, float32 steps written out); `tests.rs` checks they agree on awkward shapes for every format.
//! quantize and dequantize are bit-exact with the references; dequantize_matmul differs only by
//! float reassociation (f32 accumulation in a different order, per-group scale factored out).
//!
//! SIMD: `simd.rs` holds the one place where the target matters (wasm32 simd128 at compile time,
//! a portable lane-array version elsewhere; an AVX2 version would slot in there).

#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

#[cfg(test)]
mod bench;
mod decode;
mod icq;
mod matmul;
mod matmul_t;
#[cfg(test)]
mod owned;
mod quantize;
mod reference;
mod simd;
mod tables;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(all(test, target_arch = "x86_64"))]
mod x86_tests;

pub use decode::{dequantize, dequantize_rows};
pub use icq::{icq_search, icq_search_reference, IcqParams, ICQ_TIE};
pub use matmul::{dequantize_matmul, dequantize_matmul_rows};
pub use matmul_t::{dequantize_matmul_t, dequantize_matmul_t_cols, dequantize_matmul_t_reference};
pub use quantize::quantize;
pub use reference::{dequantize_matmul_reference, dequantize_reference, quantize_reference};
pub use tables::{nf_table, NfTable, DOUBLE_QUANT_BLOCK, DYNAMIC_MAP, DYNAMIC_ZERO_CODE};

use crate::packing::row_bytes;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Nf,
    Int,
}

/// A quantization format. `double_quant` is honoured for `Nf` only and `symmetric` for `Int` only
/// (the TS formats always set the other one false).
#[derive(Clone, Copy, Debug)]
pub struct Format {
    pub kind: Kind,
    /// 2, 3 or 4.
    pub bits: u32,
    /// Elements per group along a row, >= 1.
    pub group: usize,
    pub double_quant: bool,
    pub symmetric: bool,
}

impl Format {
    /// Whether the scales are double-quantized (parts scale_codes, scale2, scale_offset).
    #[inline]
    pub fn dq(&self) -> bool {
        self.kind == Kind::Nf && self.double_quant
    }
    /// Whether per-group zero points are stored (int asymmetric).
    #[inline]
    pub fn has_zeros(&self) -> bool {
        self.kind == Kind::Int && !self.symmetric
    }
}

/// Groups in one row: ceil(cols / group).
pub fn groups_per_row(cols: usize, f: &Format) -> usize {
    (cols + f.group - 1) / f.group
}

/// Lengths (in elements) of each part; 0 = absent for this format (or empty).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PartLengths {
    pub codes: usize,
    pub scales: usize,
    pub zeros: usize,
    pub scale_codes: usize,
    pub scale2: usize,
    pub scale_offset: usize,
}

pub fn part_lengths(rows: usize, cols: usize, f: &Format) -> PartLengths {
    let groups = rows * groups_per_row(cols, f);
    let mut l = PartLengths {
        codes: rows * row_bytes(cols, f.bits),
        ..PartLengths::default()
    };
    if f.dq() {
        l.scale_codes = groups;
        l.scale2 = (groups + DOUBLE_QUANT_BLOCK - 1) / DOUBLE_QUANT_BLOCK;
        l.scale_offset = 1;
    } else {
        l.scales = groups;
    }
    if f.has_zeros() {
        l.zeros = groups;
    }
    l
}

/// The parts of a quantized weight; an absent part is an empty slice.
#[derive(Clone, Copy, Debug)]
pub struct Parts<'a> {
    pub codes: &'a [u8],
    pub scales: &'a [f32],
    pub zeros: &'a [u8],
    pub scale_codes: &'a [u8],
    pub scale2: &'a [f32],
    pub scale_offset: &'a [f32],
}

/// Output parts of `quantize`, at the lengths `part_lengths` gives (absent parts: empty slices).
/// Every element of every present part is written (no need to zero them first).
#[derive(Debug)]
pub struct PartsMut<'a> {
    pub codes: &'a mut [u8],
    pub scales: &'a mut [f32],
    pub zeros: &'a mut [u8],
    pub scale_codes: &'a mut [u8],
    pub scale2: &'a mut [f32],
    pub scale_offset: &'a mut [f32],
}

fn check_parts(p: &Parts, rows: usize, cols: usize, f: &Format) {
    let l = part_lengths(rows, cols, f);
    debug_assert!(f.bits >= 2 && f.bits <= 4 && f.group >= 1, "bad format {:?}", f);
    debug_assert_eq!(p.codes.len(), l.codes, "codes");
    debug_assert!(p.scales.len() >= l.scales, "scales");
    debug_assert!(p.zeros.len() >= l.zeros, "zeros");
    debug_assert!(p.scale_codes.len() >= l.scale_codes, "scale_codes");
    debug_assert!(p.scale2.len() >= l.scale2, "scale2");
    debug_assert!(p.scale_offset.len() >= l.scale_offset, "scale_offset");
    let _ = l;
}

/// The effective scale of group g: nf absmax (decoded when double-quantized) or int step.
/// Decoded absmax = f32(f32(map[code] * scale2[g / 256]) + offset).
#[inline(always)]
fn group_scale(p: &Parts, f: &Format, g: usize) -> f32 {
    if f.dq() {
        tables::dynamic_value(p.scale_codes[g]) * p.scale2[g / DOUBLE_QUANT_BLOCK] + p.scale_offset[0]
    } else {
        p.scales[g]
    }
}

/// The zero point of group g (0 for nf).
#[inline(always)]
fn group_zero(p: &Parts, f: &Format, g: usize) -> u32 {
    match f.kind {
        Kind::Nf => 0,
        Kind::Int if f.symmetric => (1 << (f.bits - 1)) - 1,
        Kind::Int => p.zeros[g] as u32,
    }
}

/// The value each code stands for before the group's scale (and zero point): the NF codebook, or
/// the integer code itself for int.
fn code_values(f: &Format) -> [f32; 16] {
    match f.kind {
        Kind::Nf => nf_table(f.bits).values,
        Kind::Int => {
            let mut v = [0.0f32; 16];
            for (i, x) in v.iter_mut().enumerate() {
                *x = i as f32;
            }
            v
        }
    }
}

/// Reads the code of element i of the row that starts at byte `start` (packing.ts readCode).
#[inline(always)]
fn read_code(packed: &[u8], start: usize, i: usize, bits: u32) -> u32 {
    let bit = i * bits as usize;
    let byte = start + (bit >> 3);
    let shift = 16 - bits as usize - (bit & 7);
    let window = if shift >= 8 {
        (packed[byte] as u32) << 8
    } else {
        ((packed[byte] as u32) << 8) | packed[byte + 1] as u32
    };
    (window >> shift) & ((1 << bits) - 1)
}

/// ORs `code` into element i of the row that starts at byte `start` (packing.ts writeCode).
#[inline(always)]
fn write_code(packed: &mut [u8], start: usize, i: usize, bits: u32, code: u32) {
    let bit = i * bits as usize;
    let byte = start + (bit >> 3);
    let shift = 16 - bits as usize - (bit & 7);
    let window = code << shift;
    packed[byte] |= (window >> 8) as u8;
    if shift < 8 {
        packed[byte + 1] |= window as u8;
    }
}

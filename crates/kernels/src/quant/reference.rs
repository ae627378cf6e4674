//! Scalar references: line-by-line ports of ts/quant/reference.ts and doublequant.ts. Where the
//! TS computes in float64 and rounds with Math.fround, this does the same (`as f64` ... `as f32`).
//! The optimized kernels are checked against these; these are checked against the TS.

use super::tables::{dynamic_code, f32_toward_zero, nf_table, round_half_away, DOUBLE_QUANT_BLOCK, DYNAMIC_ZERO_CODE};
use super::{check_parts, code_values, group_scale, group_zero, groups_per_row, part_lengths, read_code, write_code};
use super::{Format, Kind, Parts, PartsMut};
use crate::packing::row_bytes;

/// x * f32(1 / absmax) in float32; divides when 1 / absmax overflows (doublequant.ts scaleToUnit).
#[inline(always)]
pub(super) fn scale_to_unit(x: f32, absmax: f32, inv: f32) -> f32 {
    if inv == f32::INFINITY {
        (x as f64 / absmax as f64) as f32
    } else {
        (x as f64 * inv as f64) as f32
    }
}

/// Double-quantizes the per-group absmax values: offset = f32(f64 sum / groups), centered =
/// f32(absmax - offset), then bnb's 8-bit blockwise quantization in blocks of 256.
pub(super) fn double_quantize(absmax: &[f32], scale_codes: &mut [u8], scale2: &mut [f32], scale_offset: &mut [f32]) {
    let n = absmax.len();
    let mut sum = 0.0f64;
    for &a in absmax {
        sum += a as f64;
    }
    let offset = if n > 0 { (sum / n as f64) as f32 } else { 0.0 };
    scale_offset[0] = offset;
    let blocks = (n + DOUBLE_QUANT_BLOCK - 1) / DOUBLE_QUANT_BLOCK;
    let mut centered = [0.0f32; DOUBLE_QUANT_BLOCK];
    for b in 0..blocks {
        let begin = b * DOUBLE_QUANT_BLOCK;
        let end = (begin + DOUBLE_QUANT_BLOCK).min(n);
        let mut m = 0.0f32;
        for i in begin..end {
            centered[i - begin] = (absmax[i] as f64 - offset as f64) as f32;
            m = m.max(centered[i - begin].abs());
        }
        scale2[b] = m;
        let inv = (1.0 / m as f64) as f32;
        for i in begin..end {
            scale_codes[i] = if m == 0.0 {
                DYNAMIC_ZERO_CODE
            } else {
                dynamic_code(scale_to_unit(centered[i - begin], m, inv))
            };
        }
    }
}

/// Index of the first NaN or infinite element.
pub(super) fn first_non_finite(w: &[f32]) -> Option<usize> {
    w.iter().position(|x| !x.is_finite())
}

/// Reference quantization (reference.ts quantizeRows). Err(i): w[i] is not finite; nothing is
/// written then.
pub fn quantize_reference(w: &[f32], rows: usize, cols: usize, f: &Format, out: PartsMut) -> Result<(), usize> {
    debug_assert_eq!(w.len(), rows * cols);
    if let Some(i) = first_non_finite(w) {
        return Err(i);
    }
    let l = part_lengths(rows, cols, f);
    debug_assert_eq!(out.codes.len(), l.codes);
    let rb = row_bytes(cols, f.bits);
    let gpr = groups_per_row(cols, f);
    let groups = rows * gpr;
    for b in out.codes.iter_mut() {
        *b = 0;
    }
    match f.kind {
        Kind::Nf => {
            let t = nf_table(f.bits);
            let mut absmax = vec![0.0f32; groups];
            for r in 0..rows {
                let off = r * cols;
                for gi in 0..gpr {
                    let (begin, end) = (gi * f.group, ((gi + 1) * f.group).min(cols));
                    let mut m = 0.0f32;
                    for c in begin..end {
                        m = m.max(w[off + c].abs());
                    }
                    absmax[r * gpr + gi] = m;
                    let inv = (1.0 / m as f64) as f32;
                    for c in begin..end {
                        let code = if m == 0.0 {
                            t.zero_code as u32
                        } else {
                            let n = scale_to_unit(w[off + c], m, inv);
                            let mut code = 0usize;
                            while code < t.len - 1 && n > t.thresholds[code] {
                                code += 1;
                            }
                            code as u32
                        };
                        write_code(out.codes, r * rb, c, f.bits, code);
                    }
                }
            }
            if f.dq() {
                double_quantize(&absmax, out.scale_codes, out.scale2, out.scale_offset);
            } else {
                out.scales[..groups].copy_from_slice(&absmax);
            }
        }
        Kind::Int => {
            let maxq = ((1u32 << f.bits) - 1) as f64;
            let half = ((1u32 << (f.bits - 1)) - 1) as f64;
            for r in 0..rows {
                let off = r * cols;
                for gi in 0..gpr {
                    let g = r * gpr + gi;
                    let (begin, end) = (gi * f.group, ((gi + 1) * f.group).min(cols));
                    let (mut lo, mut hi) = (0.0f64, 0.0f64);
                    for c in begin..end {
                        lo = lo.min(w[off + c] as f64);
                        hi = hi.max(w[off + c] as f64);
                    }
                    let mut scale = if f.symmetric {
                        f32_toward_zero(hi.max(-lo) / half)
                    } else {
                        f32_toward_zero((hi - lo) / maxq)
                    };
                    if scale == 0.0 {
                        scale = 1.0;
                    }
                    let zero = if f.symmetric {
                        half
                    } else {
                        round_half_away(-lo / scale as f64).max(0.0).min(maxq)
                    };
                    out.scales[g] = scale;
                    if f.has_zeros() {
                        out.zeros[g] = zero as u8;
                    }
                    for c in begin..end {
                        let q = (round_half_away(w[off + c] as f64 / scale as f64) + zero).max(0.0).min(maxq);
                        write_code(out.codes, r * rb, c, f.bits, q as u32);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Decodes row `row` into out[0..cols) (reference.ts decodeRow).
fn decode_row(p: &Parts, row: usize, cols: usize, f: &Format, out: &mut [f32]) {
    let values = code_values(f);
    let start = row * row_bytes(cols, f.bits);
    let gpr = groups_per_row(cols, f);
    for gi in 0..gpr {
        let g = row * gpr + gi;
        let scale = group_scale(p, f, g) as f64;
        let zero = group_zero(p, f, g) as f64;
        let end = ((gi + 1) * f.group).min(cols);
        for c in gi * f.group..end {
            let code = read_code(p.codes, start, c, f.bits);
            out[c] = match f.kind {
                Kind::Nf => (values[code as usize] as f64 * scale) as f32,
                Kind::Int => ((code as f64 - zero) * scale) as f32,
            };
        }
    }
}

/// Reference dequantization (reference.ts dequantizeRows): out[rows * cols].
pub fn dequantize_reference(p: &Parts, rows: usize, cols: usize, f: &Format, out: &mut [f32]) {
    check_parts(p, rows, cols, f);
    debug_assert_eq!(out.len(), rows * cols);
    for r in 0..rows {
        decode_row(p, r, cols, f, &mut out[r * cols..(r + 1) * cols]);
    }
}

/// Reference fused dequantize-matmul (reference.ts dequantizeMatmulRows): each weight row decoded
/// into a scratch row, dotted with every x row in float64. Bit-exact with the TS.
/// out[i * rows + r] = sum_c x[i * cols + c] * W[r, c].
pub fn dequantize_matmul_reference(x: &[f32], x_rows: usize, p: &Parts, rows: usize, cols: usize, f: &Format, out: &mut [f32]) {
    check_parts(p, rows, cols, f);
    debug_assert_eq!(x.len(), x_rows * cols);
    debug_assert_eq!(out.len(), x_rows * rows);
    let mut w = vec![0.0f32; cols];
    for r in 0..rows {
        decode_row(p, r, cols, f, &mut w);
        for i in 0..x_rows {
            let xr = &x[i * cols..(i + 1) * cols];
            let mut dot = 0.0f64;
            for c in 0..cols {
                dot += xr[c] as f64 * w[c] as f64;
            }
            out[i * rows + r] = dot as f32;
        }
    }
}

//! Layout kernels (ts/backends/js/layout.ts): strided reads/writes (transpose, slice, broadcast,
//! concat), row gather/scatter (embedding lookup and its gradient), and dtype casts with the
//! conversions of JavaScript typed-array stores. Memory-bound, so one version each (tested against
//! naive loops); strided copies merge dimensions and move contiguous runs with `copy_from_slice`.

use crate::elementwise::simd::F32x4;

/// (length, stride) of a strided view, outermost first, with size-1 dims dropped and neighbours
/// merged where the outer stride is the inner stride times the inner length.
fn merged(strides: &[usize], shape: &[usize]) -> Vec<(usize, usize)> {
    let mut dims: Vec<(usize, usize)> = Vec::with_capacity(shape.len());
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        if let Some(last) = dims.last_mut() {
            if last.1 == strides[d] * shape[d] {
                *last = (last.0 * shape[d], strides[d]);
                continue;
            }
        }
        dims.push((shape[d], strides[d]));
    }
    dims
}

/// Calls visit(i, offset, len, stride) for each innermost run: elements i..i+len of the dense
/// order, at offset, offset+stride, ... of the strided side.
fn for_each_run<F: FnMut(usize, usize, usize, usize)>(offset: usize, strides: &[usize], shape: &[usize], mut visit: F) {
    assert_eq!(strides.len(), shape.len(), "strided: strides and shape ranks differ");
    let size: usize = shape.iter().product();
    if size == 0 {
        return;
    }
    let dims = merged(strides, shape);
    let (len, stride) = dims.last().copied().unwrap_or((1, 0));
    let outer = &dims[..dims.len().saturating_sub(1)];
    let mut idx = vec![0usize; outer.len()];
    let mut off = offset;
    let mut i = 0;
    while i < size {
        visit(i, off, len, stride);
        i += len;
        for d in (0..outer.len()).rev() {
            idx[d] += 1;
            off += outer[d].1;
            if idx[d] < outer[d].0 {
                break;
            }
            off -= outer[d].1 * outer[d].0;
            idx[d] = 0;
        }
    }
}

/// out[i] = a[offset + Σ_d idx_d·strides_d] for every index of out_shape (row-major i).
pub fn strided<T: Copy>(a: &[T], offset: usize, strides: &[usize], out_shape: &[usize], out: &mut [T]) {
    for_each_run(offset, strides, out_shape, |i, off, len, stride| {
        let dst = &mut out[i..i + len];
        match stride {
            1 => dst.copy_from_slice(&a[off..off + len]),
            0 => {
                let v = a[off];
                for d in dst.iter_mut() {
                    *d = v;
                }
            }
            _ => {
                let src = &a[off..off + (len - 1) * stride + 1];
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = src[j * stride];
                }
            }
        }
    });
}

/// In place: dst[offset + Σ_d idx_d·strides_d] = src[i] over src_shape (later elements win where
/// strides alias, as in the JS loop).
pub fn write_strided<T: Copy>(dst: &mut [T], src: &[T], offset: usize, strides: &[usize], src_shape: &[usize]) {
    for_each_run(offset, strides, src_shape, |i, off, len, stride| {
        let s = &src[i..i + len];
        match stride {
            1 => dst[off..off + len].copy_from_slice(s),
            0 => dst[off] = s[len - 1],
            _ => {
                let d = &mut dst[off..off + (len - 1) * stride + 1];
                for (j, &v) in s.iter().enumerate() {
                    d[j * stride] = v;
                }
            }
        }
    });
}

/// Rows of table [rows, dim] picked by ids into out [ids.len(), dim]. Err(position) of the first
/// id outside [0, rows) (nothing is written then).
pub fn gather(table: &[f32], rows: usize, dim: usize, ids: &[i32], out: &mut [f32]) -> Result<(), usize> {
    if let Some(pos) = ids.iter().position(|&r| r < 0 || r as usize >= rows) {
        return Err(pos);
    }
    for (i, &r) in ids.iter().enumerate() {
        let r = r as usize;
        out[i * dim..(i + 1) * dim].copy_from_slice(&table[r * dim..(r + 1) * dim]);
    }
    Ok(())
}

/// Backward of gather: out [rows, dim] (zeroed here) += grad row i at row ids[i], in order of i.
/// Ids outside [0, rows) are skipped, as the JS typed-array writes out of bounds are.
pub fn scatter_add_rows(grad: &[f32], dim: usize, ids: &[i32], rows: usize, out: &mut [f32]) {
    let out = &mut out[..rows * dim];
    for v in out.iter_mut() {
        *v = 0.0;
    }
    let d4 = dim / 4 * 4;
    for (i, &r) in ids.iter().enumerate() {
        if r < 0 || r as usize >= rows {
            continue;
        }
        let dst = &mut out[r as usize * dim..(r as usize + 1) * dim];
        let src = &grad[i * dim..(i + 1) * dim];
        let mut j = 0;
        while j < d4 {
            F32x4::from_slice(dst, j).add(F32x4::from_slice(src, j)).write_to(dst, j);
            j += 4;
        }
        for j in d4..dim {
            dst[j] += src[j];
        }
    }
}

/// JavaScript ToInt32 of Math.trunc(x): NaN and ±inf give 0, others wrap modulo 2^32.
#[inline]
pub fn js_to_i32(x: f32) -> i32 {
    if x.abs() < 2147483648.0 {
        x as i32
    } else if !x.is_finite() {
        0
    } else {
        // |x| ≥ 2^31: already an integer
        (x as f64).rem_euclid(4294967296.0) as u64 as u32 as i32
    }
}

/// JavaScript ToUint8 of Math.trunc(x): NaN and ±inf give 0, others wrap modulo 256.
#[inline]
pub fn js_to_u8(x: f32) -> u8 {
    if x.abs() < 2147483648.0 {
        (x as i32) as u8
    } else if !x.is_finite() {
        0
    } else {
        (x as f64).rem_euclid(256.0) as u8
    }
}

pub fn cast_f32_to_i32(a: &[f32], out: &mut [i32]) {
    for (o, &x) in out[..a.len()].iter_mut().zip(a) {
        *o = js_to_i32(x);
    }
}
pub fn cast_f32_to_u8(a: &[f32], out: &mut [u8]) {
    for (o, &x) in out[..a.len()].iter_mut().zip(a) {
        *o = js_to_u8(x);
    }
}
/// Round to nearest, ties to even (a Float32Array store of an integer).
pub fn cast_i32_to_f32(a: &[i32], out: &mut [f32]) {
    for (o, &x) in out[..a.len()].iter_mut().zip(a) {
        *o = x as f32;
    }
}
pub fn cast_u8_to_f32(a: &[u8], out: &mut [f32]) {
    for (o, &x) in out[..a.len()].iter_mut().zip(a) {
        *o = x as f32;
    }
}
/// Low 8 bits (modulo 256).
pub fn cast_i32_to_u8(a: &[i32], out: &mut [u8]) {
    for (o, &x) in out[..a.len()].iter_mut().zip(a) {
        *o = x as u8;
    }
}
pub fn cast_u8_to_i32(a: &[u8], out: &mut [i32]) {
    for (o, &x) in out[..a.len()].iter_mut().zip(a) {
        *o = x as i32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_offsets(offset: usize, strides: &[usize], shape: &[usize]) -> Vec<usize> {
        let size: usize = shape.iter().product();
        (0..size)
            .map(|mut i| {
                let mut off = offset;
                for d in (0..shape.len()).rev() {
                    off += (i % shape[d]) * strides[d];
                    i /= shape[d];
                }
                off
            })
            .collect()
    }

    const CASES: &[(usize, &[usize], &[usize])] = &[
        (0, &[], &[]),
        (3, &[1], &[5]),
        (0, &[0], &[7]),
        (2, &[3], &[4]),
        (0, &[1, 4], &[4, 3]),             // transpose of [3, 4]
        (5, &[9, 1], &[2, 4]),             // slice
        (0, &[0, 1], &[3, 5]),             // broadcast rows
        (0, &[1, 0], &[5, 3]),             // broadcast columns
        (1, &[60, 20, 5, 1], &[2, 3, 4, 5]), // contiguous, merges to one run
        (0, &[20, 1, 5], &[3, 5, 4]),      // permute
        (0, &[7, 0, 1], &[2, 1, 7]),
        (0, &[0, 0], &[2, 3]),
        (4, &[3, 1], &[0, 2]),
        (0, &[13, 1, 4], &[3, 4, 4]),
    ];

    #[test]
    fn strided_matches_naive_for_each_dtype() {
        for &(offset, strides, shape) in CASES {
            let offs = naive_offsets(offset, strides, shape);
            let src_len = offs.iter().max().map_or(offset + 1, |m| m + 1);
            let a: Vec<f32> = (0..src_len).map(|v| v as f32 * 0.5).collect();
            let mut out = vec![-1f32; offs.len()];
            strided(&a, offset, strides, shape, &mut out);
            let want: Vec<f32> = offs.iter().map(|&o| a[o]).collect();
            assert_eq!(out, want, "f32 {:?} {:?}", strides, shape);
            let ai: Vec<i32> = (0..src_len as i32).collect();
            let mut oi = vec![-1i32; offs.len()];
            strided(&ai, offset, strides, shape, &mut oi);
            assert_eq!(oi, offs.iter().map(|&o| o as i32).collect::<Vec<_>>());
            let au: Vec<u8> = (0..src_len).map(|v| v as u8).collect();
            let mut ou = vec![0u8; offs.len()];
            strided(&au, offset, strides, shape, &mut ou);
            assert_eq!(ou, offs.iter().map(|&o| o as u8).collect::<Vec<_>>());
        }
    }

    #[test]
    fn write_strided_matches_naive() {
        for &(offset, strides, shape) in CASES {
            let offs = naive_offsets(offset, strides, shape);
            let dst_len = offs.iter().max().map_or(offset + 1, |m| m + 1) + 2;
            let src: Vec<f32> = (0..offs.len()).map(|v| v as f32 + 100.0).collect();
            let mut want = vec![-1f32; dst_len];
            for (i, &o) in offs.iter().enumerate() {
                want[o] = src[i];
            }
            let mut got = vec![-1f32; dst_len];
            write_strided(&mut got, &src, offset, strides, shape);
            assert_eq!(got, want, "{:?} {:?}", strides, shape);
        }
    }

    #[test]
    fn gather_and_scatter() {
        let (rows, dim) = (5usize, 7usize);
        let table: Vec<f32> = (0..rows * dim).map(|v| v as f32).collect();
        let ids = [4, 0, 4, 2, 1, 4];
        let mut out = vec![0f32; ids.len() * dim];
        assert_eq!(gather(&table, rows, dim, &ids, &mut out), Ok(()));
        for (i, &r) in ids.iter().enumerate() {
            assert_eq!(&out[i * dim..(i + 1) * dim], &table[r as usize * dim..(r as usize + 1) * dim]);
        }
        assert_eq!(gather(&table, rows, dim, &[0, 1, 5, -1], &mut out), Err(2));
        assert_eq!(gather(&table, rows, dim, &[-1], &mut out), Err(0));
        for &dim in &[1usize, 3, 4, 9, 16] {
            let grad: Vec<f32> = (0..ids.len() * dim).map(|v| (v as f32).sin()).collect();
            let ids2 = [4, 0, 4, -2, 1, 9];
            let mut want = vec![0f32; rows * dim];
            for (i, &r) in ids2.iter().enumerate() {
                if r >= 0 && (r as usize) < rows {
                    for j in 0..dim {
                        want[r as usize * dim + j] += grad[i * dim + j];
                    }
                }
            }
            let mut got = vec![f32::NAN; rows * dim];
            scatter_add_rows(&grad, dim, &ids2, rows, &mut got);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn casts_follow_typed_array_stores() {
        // expectations checked with node: Int32Array.from / Uint8Array.from of Math.trunc(Math.fround(x))
        let xs = [0.0f32, -0.0, 1.9, -1.9, 255.5, 256.0, -1.0, -256.5, 300.7, 2147483647.0, 2147483648.0, -2147483648.0, -2147483904.0, 3e9, -3e9, 1e20, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        let want_i32 = [0, 0, 1, -1, 255, 256, -1, -256, 300, i32::MIN, i32::MIN, i32::MIN, 2147483392, -1294967296, 1294967296, 0, 0, 0, 0];
        let want_u8 = [0u8, 0, 1, 255, 255, 0, 255, 0, 44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut oi = vec![0i32; xs.len()];
        cast_f32_to_i32(&xs, &mut oi);
        assert_eq!(&oi[..], &want_i32[..]);
        let mut ou = vec![0u8; xs.len()];
        cast_f32_to_u8(&xs, &mut ou);
        assert_eq!(&ou[..], &want_u8[..]);
        let ints = [0i32, 1, -1, 255, 256, -129, 16777217, i32::MAX, i32::MIN];
        let mut of = vec![0f32; ints.len()];
        cast_i32_to_f32(&ints, &mut of);
        assert_eq!(of, vec![0.0, 1.0, -1.0, 255.0, 256.0, -129.0, 16777216.0, 2147483648.0, -2147483648.0]);
        let mut ou = vec![0u8; ints.len()];
        cast_i32_to_u8(&ints, &mut ou);
        assert_eq!(ou, vec![0, 1, 255, 255, 0, 127, 1, 255, 0]);
        let bytes = [0u8, 7, 255];
        let mut of = vec![0f32; 3];
        cast_u8_to_f32(&bytes, &mut of);
        assert_eq!(of, vec![0.0, 7.0, 255.0]);
        let mut oi = vec![0i32; 3];
        cast_u8_to_i32(&bytes, &mut oi);
        assert_eq!(oi, vec![0, 7, 255]);
    }
}

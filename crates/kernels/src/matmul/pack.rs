//! Packing of A and B blocks into the panel layouts the micro-kernel reads contiguously.
//! Element (i, p) of A is a[i*ars + p*acs]; element (p, j) of B is b[p*brs + j*bcs].

/// A block rows [i0, i0+mc) × cols [p0, p0+kc) into panels of `mr` rows: panel q holds
/// out[q*mr*kc + p*mr + r] = A(i0 + q*mr + r, p0 + p), rows past mc zero.
#[allow(clippy::too_many_arguments)]
pub fn pack_a(a: &[f32], ars: usize, acs: usize, i0: usize, mc: usize, p0: usize, kc: usize, mr: usize, out: &mut [f32]) {
    let panels = (mc + mr - 1) / mr;
    for q in 0..panels {
        let dst = &mut out[q * mr * kc..(q + 1) * mr * kc];
        let rows = mr.min(mc - q * mr);
        let ib = i0 + q * mr;
        if acs == 1 {
            // A row-major: each row is contiguous in p; write it down a column of the panel
            for r in 0..rows {
                let src = &a[(ib + r) * ars + p0..(ib + r) * ars + p0 + kc];
                for (p, &v) in src.iter().enumerate() {
                    dst[p * mr + r] = v;
                }
            }
        } else if ars == 1 {
            // A transposed: the mr rows of one p are contiguous
            for p in 0..kc {
                let src = &a[(p0 + p) * acs + ib..(p0 + p) * acs + ib + rows];
                dst[p * mr..p * mr + rows].copy_from_slice(src);
            }
        } else {
            for p in 0..kc {
                for r in 0..rows {
                    dst[p * mr + r] = a[(ib + r) * ars + (p0 + p) * acs];
                }
            }
        }
        if rows < mr {
            for p in 0..kc {
                for r in rows..mr {
                    dst[p * mr + r] = 0.0;
                }
            }
        }
    }
}

/// B block rows [p0, p0+kc) × cols [j0, j0+nc) into panels of `nr` columns: panel q holds
/// out[q*nr*kc + p*nr + c] = B(p0 + p, j0 + q*nr + c), columns past nc zero.
#[allow(clippy::too_many_arguments)]
pub fn pack_b(b: &[f32], brs: usize, bcs: usize, p0: usize, kc: usize, j0: usize, nc: usize, nr: usize, out: &mut [f32]) {
    let panels = (nc + nr - 1) / nr;
    for q in 0..panels {
        let dst = &mut out[q * nr * kc..(q + 1) * nr * kc];
        let cols = nr.min(nc - q * nr);
        let jb = j0 + q * nr;
        if bcs == 1 {
            for p in 0..kc {
                let src = &b[(p0 + p) * brs + jb..(p0 + p) * brs + jb + cols];
                dst[p * nr..p * nr + cols].copy_from_slice(src);
            }
        } else if brs == 1 {
            // B transposed: column j of B is contiguous in p
            for c in 0..cols {
                let src = &b[(jb + c) * bcs + p0..(jb + c) * bcs + p0 + kc];
                for (p, &v) in src.iter().enumerate() {
                    dst[p * nr + c] = v;
                }
            }
        } else {
            for p in 0..kc {
                for c in 0..cols {
                    dst[p * nr + c] = b[(p0 + p) * brs + (jb + c) * bcs];
                }
            }
        }
        if cols < nr {
            for p in 0..kc {
                for c in cols..nr {
                    dst[p * nr + c] = 0.0;
                }
            }
        }
    }
}

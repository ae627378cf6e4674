//! The register-tiled micro-kernel: C[MR×NR] (+)= Â·B̂ over one kc slice, where Â is a packed
//! panel [kc][MR] and B̂ a packed panel [kc][NR] (or B itself read with a row stride).
//! Accumulators live in F32x4 registers: MR × NR/4 of them. simd128 has no FMA, so every step is
//! one mul and one add per accumulator.
//!
//! Seam for later issues: `MicroKernel` is what the blocked driver is generic over; an AVX2+FMA
//! tile (e.g. 6×16 with 256-bit lanes) would be another implementation chosen at run time with
//! `is_x86_feature_detected!` in `matmul::gemm` without touching packing or blocking.

use crate::elementwise::simd::F32x4;

pub trait MicroKernel {
    const MR: usize;
    const NR: usize;
    /// C[r*ldc + c] for r < MR, c < NR: set (first) or add Σ_p a[p*MR + r]·b[p*ldb + c].
    ///
    /// # Safety
    /// `a` holds kc*MR floats, `b` holds (kc-1)*ldb + NR, `c` holds (MR-1)*ldc + NR.
    unsafe fn run(kc: usize, a: *const f32, b: *const f32, ldb: usize, c: *mut f32, ldc: usize, first: bool);
}

#[inline(always)]
unsafe fn step<const MR: usize, const NV: usize>(acc: &mut [[F32x4; NV]; MR], ap: *const f32, bp: *const f32) {
    let mut bv = [F32x4::zero(); NV];
    for v in 0..NV {
        bv[v] = F32x4::load(bp.add(4 * v));
    }
    for r in 0..MR {
        let ar = F32x4::load_splat(ap.add(r));
        for v in 0..NV {
            acc[r][v] = acc[r][v].add(ar.mul(bv[v]));
        }
    }
}

#[inline(always)]
unsafe fn tile<const MR: usize, const NV: usize>(kc: usize, a: *const f32, b: *const f32, ldb: usize, c: *mut f32, ldc: usize, first: bool) {
    let mut acc = [[F32x4::zero(); NV]; MR];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        step::<MR, NV>(&mut acc, ap, bp);
        ap = ap.add(MR);
        bp = bp.add(ldb);
    }
    for r in 0..MR {
        for v in 0..NV {
            let p = c.add(r * ldc + 4 * v);
            let x = if first { acc[r][v] } else { F32x4::load(p).add(acc[r][v]) };
            x.store(p);
        }
    }
}

macro_rules! tile_kernel {
    ($(#[$doc:meta])* $name:ident, $mr:literal, $nv:literal) => {
        $(#[$doc])*
        pub struct $name;
        impl MicroKernel for $name {
            const MR: usize = $mr;
            const NR: usize = 4 * $nv;
            #[inline(never)]
            unsafe fn run(kc: usize, a: *const f32, b: *const f32, ldb: usize, c: *mut f32, ldc: usize, first: bool) {
                tile::<$mr, $nv>(kc, a, b, ldb, c, ldc, first)
            }
        }
    };
}

tile_kernel!(
    /// 4 rows × 8 columns: 8 accumulators + 2 B vectors + 1 broadcast. The fastest under V8 on
    /// x86-64 (16 xmm registers; larger tiles spill or leave no room for the loads' registers).
    K4x8, 4, 2
);

/// Tile shapes measured against K4x8 (tests::bench_tiles); GFLOP/s at 512³ / 1024³, wasm simd128
/// under Node 20 on this 2-core AMD EPYC, best of two runs:
/// 4x8 28.5/29.1, 2x16 27.4/26.4, 3x16 23.2/23.1, 6x8 22.8/23.5, 4x12 22.5/23.4, 8x8 21.5/21.9,
/// 5x8 18.7/20.1, 3x12 17.6/17.7 (unrolling the k loop by 2 or 4 did not help 4x8).
#[cfg(test)]
pub mod alt {
    use super::{tile, MicroKernel};
    tile_kernel!(K6x8, 6, 2);
    tile_kernel!(K4x12, 4, 3);
    tile_kernel!(K8x8, 8, 2);
    tile_kernel!(K3x16, 3, 4);
    tile_kernel!(K5x8, 5, 2);
    tile_kernel!(K2x16, 2, 4);
    tile_kernel!(K3x12, 3, 3);
}

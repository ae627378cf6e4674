//! The target-specific part of the quant kernels, behind one small interface:
//! - `V`: four f32 lanes (wasm `v128` with simd128, a lane array elsewhere);
//! - `Lut`: a table of up to 16 f32 values indexed by a code;
//! - `decode32::<BITS>(p, lut)`: the 32 codes packed at `p` (4 * BITS bytes, MSB-first) mapped
//!   through `lut`, as 8 vectors in element order; `decode32_int` the same as `code - z` (int);
//! - `nf_codes16` / `int_codes8`: the codes of 16 / 8 weights (quantize's inner loops).
//!
//! simd128 (simd_wasm.rs) decodes NF with `i8x16.swizzle` on the 4 byte planes of the table, then
//! interleaves the planes back into f32 lanes; INT by widening the codes (no table). Everything else
//! gets simd_portable.rs. Seam for later issues: an x86-64 AVX2 module would implement the same
//! interface; the kernels (decode.rs, matmul.rs, quantize.rs) would then be instantiated for it and
//! picked at run time with `is_x86_feature_detected!`, the scalar references staying the oracle.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[path = "simd_wasm.rs"]
mod imp;

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[path = "simd_portable.rs"]
mod imp;

pub use imp::{decode32, decode32_int, int_codes8, nf_codes16, Lut, Zp, V};

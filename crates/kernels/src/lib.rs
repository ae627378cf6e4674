//! quantlora kernels: plain Rust over slices, no dependencies, no allocation in hot loops.
//! Every kernel has a scalar reference next to its optimized version, and a test that they agree.
//! Must build with Rust 1.63 (the toolchain that has a wasm32 standard library here).

pub mod packing;
pub mod quant;

// f32 kernels of the JS reference backend (matmul, elementwise/reductions, layout, transformer)
pub mod elementwise;
pub mod layout;
pub mod matmul;
pub mod transformer;

// WGSL kernels: layout (ts/backends/js/layout.ts): strided reads (transpose, slice, broadcast),
// strided writes into an existing buffer (concat, slice backward), row gather and its
// deterministic scatter-add.
//
// strided / writeStrided: shapes and strides are collapsed on the host (size-1 dims dropped,
// contiguous neighbours merged); a contiguous case is a plain buffer copy. 4-byte dtypes (f32,
// i32) move u32 words, one thread per element. u8: strided writes one output word (4 elements)
// per thread; writeStrided's u8 path writes each byte with an atomicAnd/atomicOr pair on its word
// (each byte has one writer, so neighbouring threads cannot clobber each other and the result
// does not depend on their order).
//
// scatterAddRows: one workgroup per output row walks the ids in tiles of 256, in order; tiles
// that name the row are compacted (in order) and the row's columns add the named grad rows. Each
// output element is a sum in id order starting from 0, exactly the JS loop: bit-identical, no
// float atomics.

import { BYTES_PER_ELEMENT, type DType } from '../../dtype.js';
import { GRID_INDEX, type Device, type GpuHandle } from './device.js';
import { collapse } from './elementwise.js';
import type { KernelGroup } from './index.js';

const WG = 256;

// P = [size, offset, rank, shape[rank], strides[rank]]
const INDEX_FN = /* wgsl */ `
fn src_index(i: u32) -> u32 {
  let rank = P[2];
  var rem = i;
  var off = P[1];
  for (var d = rank; d > 0u; d--) {
    let n = P[2u + d];
    off += (rem % n) * P[2u + rank + d];
    rem = rem / n;
  }
  return off;
}`;

// Entries: word (4-byte elements), byte (u8: one output word per thread).
const STRIDED = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;
override WG: u32 = 256u;
${INDEX_FN}
@compute @workgroup_size(WG) fn word(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = ${GRID_INDEX};
  if (i >= P[0]) { return; }
  y[i] = a[src_index(i)];
}
@compute @workgroup_size(WG) fn byte(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = ${GRID_INDEX};
  let n = P[0];
  if (w * 4u >= n) { return; }
  var word = 0u;
  for (var j = 0u; j < 4u; j++) {
    let i = w * 4u + j;
    if (i < n) {
      let s = src_index(i);
      word |= ((a[s >> 2u] >> ((s & 3u) * 8u)) & 0xffu) << (j * 8u);
    }
  }
  y[w] = word;
}`;

// dst[index(i)] = src[i] over src's shape. Bindings: dst, src.
const WRITE_WORD = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<storage, read> src: array<u32>;
override WG: u32 = 256u;
${INDEX_FN}
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = ${GRID_INDEX};
  if (i >= P[0]) { return; }
  dst[src_index(i)] = src[i];
}`;

const WRITE_BYTE = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<atomic<u32>>;
@group(0) @binding(2) var<storage, read> src: array<u32>;
override WG: u32 = 256u;
${INDEX_FN}
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = ${GRID_INDEX};
  if (i >= P[0]) { return; }
  let v = (src[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
  let d = src_index(i);
  let sh = (d & 3u) * 8u;
  atomicAnd(&dst[d >> 2u], ~(0xffu << sh));
  atomicOr(&dst[d >> 2u], v << sh);
}`;

// y[i, j] = table[ids[i], j]; an out-of-range id (the ops layer rejects them) gives zeros.
const GATHER = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>; // [count, dim, rows]
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
override WG: u32 = 256u;
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = ${GRID_INDEX};
  let dim = P[1];
  if (e >= P[0] * dim) { return; }
  let i = e / dim;
  let j = e - i * dim;
  let r = ids[i];
  var v = 0.0;
  if (r >= 0 && u32(r) < P[2]) { v = table[u32(r) * dim + j]; }
  y[e] = v;
}`;

// One workgroup of 256 per output row r (2-D grid of workgroups).
const SCATTER = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>; // [count, dim, rows]
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
const WG = 256u;
var<workgroup> hit: array<u32, 256>;
var<workgroup> pos: array<u32, 256>;
var<workgroup> any_hit: u32;
var<workgroup> n_hit: u32;
@compute @workgroup_size(256) fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let count = P[0]; let dim = P[1]; let rows = P[2];
  let r = wid.x + wid.y * nwg.x;
  if (r >= rows) { return; }
  let t = lid.x;
  let row = r * dim;
  for (var j = t; j < dim; j += WG) { y[row + j] = 0.0; }
  for (var base = 0u; base < count; base += WG) {
    if (t == 0u) { any_hit = 0u; }
    workgroupBarrier();
    let i = base + t;
    var h = 0u;
    if (i < count && ids[i] == i32(r)) { h = 1u; any_hit = 1u; }
    hit[t] = h;
    if (workgroupUniformLoad(&any_hit) == 0u) { continue; }
    if (t == 0u) {
      var n = 0u;
      for (var k = 0u; k < WG; k++) {
        if (hit[k] == 1u) { pos[n] = base + k; n++; }
      }
      n_hit = n;
    }
    let n = workgroupUniformLoad(&n_hit);
    for (var j = t; j < dim; j += WG) {
      var acc = y[row + j];
      for (var m = 0u; m < n; m++) { acc += g[pos[m] * dim + j]; }
      y[row + j] = acc;
    }
  }
}`;

const prod = (xs: number[]) => xs.reduce((p, x) => p * x, 1);

/** Collapsed shape/strides; contiguous when one dim of stride 1 (or a single element). */
function plan(shape: number[], strides: number[]) {
  const c = collapse(shape, [strides]);
  const contiguous = c.shape.length === 0 || (c.shape.length === 1 && c.strides[0][0] === 1);
  return { shape: c.shape, strides: c.strides[0], contiguous };
}

export const layoutKernels: KernelGroup = () => ({
  strided: (dev, a, dtype, offset, strides, outShape) => {
    const size = prod(outShape);
    const esize = BYTES_PER_ELEMENT[dtype];
    const y = dev.alloc(size * esize);
    if (size === 0) return y;
    const src = a as GpuHandle;
    const p = plan(outShape, strides);
    if (p.contiguous && esize === 4) {
      dev.copy(src, offset * 4, y, 0, size * 4);
      return y;
    }
    if (p.contiguous && offset % 4 === 0 && offset + Math.ceil(size / 4) * 4 <= Math.ceil(src.bytes / 4) * 4) {
      dev.copy(src, offset, y, 0, Math.ceil(size / 4) * 4);
      return y;
    }
    const params = [size, offset, p.shape.length, ...p.shape, ...p.strides];
    const wide = esize === 4;
    dev.run(dev.pipeline('layout-strided', STRIDED, wide ? 'word' : 'byte'), params, [src, y], dev.grid(wide ? size : Math.ceil(size / 4), WG));
    return y;
  },

  writeStrided: (dev, dst, dtype, src, offset, strides, srcShape) => {
    const size = prod(srcShape);
    if (size === 0) return;
    const esize = BYTES_PER_ELEMENT[dtype];
    const d = dst as GpuHandle;
    const s = src as GpuHandle;
    const p = plan(srcShape, strides);
    if (p.contiguous && esize === 4) {
      dev.copy(s, 0, d, offset * 4, size * 4);
      return;
    }
    if (p.contiguous && offset % 4 === 0 && size % 4 === 0) {
      dev.copy(s, 0, d, offset, size);
      return;
    }
    const params = [size, offset, p.shape.length, ...p.shape, ...p.strides];
    const pipe = esize === 4 ? dev.pipeline('layout-write-word', WRITE_WORD) : dev.pipeline('layout-write-byte', WRITE_BYTE);
    dev.run(pipe, params, [d, s], dev.grid(size, WG));
  },

  gather: (dev, table, rows, dim, ids, count) => {
    const y = dev.alloc(count * dim * 4);
    if (count * dim === 0) return y;
    dev.run(dev.pipeline('layout-gather', GATHER), [count, dim, rows], [table as GpuHandle, ids as GpuHandle, y], dev.grid(count * dim, WG));
    return y;
  },

  scatterAddRows: (dev, grad, count, dim, ids, rows) => {
    if (count === 0 || rows * dim === 0) return dev.alloc(rows * dim * 4, true);
    const y = dev.alloc(rows * dim * 4);
    dev.run(dev.pipeline('layout-scatter-add-rows', SCATTER), [count, dim, rows], [grad as GpuHandle, ids as GpuHandle, y], dev.grid(rows * WG, WG));
    return y;
  },
});

// Tensor: a shape, a dtype and refcounted storage owned by a backend. Data moves to the host only
// when asked (`await t.data()`). Memory is explicit: dispose(), tidy(fn), and per-backend
// live-buffer counts. Autograd nodes (ts/autograd.ts) hold their own references to the tensors
// they need, so disposing an intermediate never breaks a backward pass.

import type { Backend, Handle } from './backend.js';
import { allocArray, dtypeOfArray, type AnyTypedArray, type DType } from './dtype.js';
import { DisposedError, DTypeError, NonFiniteError, ShapeError, ValueError, describeShape } from './errors.js';
import { getBackend } from './registry.js';

/** Backend storage shared by a tensor and its views (reshape) and by autograd's saved copies. */
export class Storage {
  refs = 1;
  /** Integer storages made from host data: every value lies in [min, max] (integer storages are
   *  never written in place). Ops validate ids and targets from these without reading back. */
  bounds?: readonly [number, number];
  constructor(
    readonly backend: Backend,
    readonly handle: Handle,
    readonly dtype: DType,
    readonly size: number,
  ) {}
  release(): void {
    if (--this.refs === 0) this.backend.free(this.handle);
  }
}

/** A recorded op: what backward needs, held by the op's output tensor. */
export interface GradNode {
  name: string;
  inputs: Tensor[];
  saved: Tensor[];
  backward: (dy: Tensor, ctx: BackwardContext) => (Tensor | null | undefined)[];
  refs: number;
}

export interface BackwardContext {
  inputs: Tensor[];
  saved: Tensor[];
  /** needs[i]: whether input i wants a gradient. */
  needs: boolean[];
}

let nextId = 1;
const scopes: Set<Tensor>[] = [];

export class Tensor {
  /** Identity of the logical tensor; shared by autograd's internal references to it. */
  readonly id: number;
  requiresGrad = false;
  /** Accumulated gradient (set by backward() on leaves that require grad). */
  grad: Tensor | undefined;
  node: GradNode | undefined;
  /** The user-visible tensor this one is an internal reference to (itself for user tensors). */
  origin: Tensor;
  private alive = true;

  constructor(
    readonly shape: readonly number[],
    readonly storage: Storage,
    id?: number,
  ) {
    this.id = id ?? nextId++;
    this.origin = this;
  }

  get dtype(): DType { return this.storage.dtype; }
  get backend(): Backend { return this.storage.backend; }
  get handle(): Handle { this.assertAlive(); return this.storage.handle; }
  get size(): number { return this.storage.size; }
  get rank(): number { return this.shape.length; }
  get isDisposed(): boolean { return !this.alive; }

  assertAlive(): void {
    if (!this.alive) throw new DisposedError(`tensor ${describeShape(this.shape)} (${this.dtype}) was used after dispose()`);
  }

  /** Copies the values to the host. */
  async data(): Promise<AnyTypedArray> {
    this.assertAlive();
    return this.backend.read(this.storage.handle, this.dtype, this.size);
  }

  /** Synchronous read, for backends that keep data on the host (js, wasm, native CPU). */
  dataSync(): AnyTypedArray {
    this.assertAlive();
    const read = this.backend.readSync;
    if (!read) throw new ValueError(`backend '${this.backend.name}' has no synchronous reads; use await tensor.data()`);
    return read.call(this.backend, this.storage.handle, this.dtype, this.size);
  }

  /** Nested array of the values (for printing and tests). */
  async array(): Promise<unknown> {
    const flat = Array.from(await this.data());
    const build = (dim: number, offset: number): unknown => {
      if (dim === this.shape.length) return flat[offset];
      const stride = this.shape.slice(dim + 1).reduce((a, b) => a * b, 1);
      return Array.from({ length: this.shape[dim] }, (_, i) => build(dim + 1, offset + i * stride));
    };
    return build(0, 0);
  }

  dispose(): void {
    if (!this.alive) return;
    this.alive = false;
    for (const s of scopes) s.delete(this);
    this.storage.release();
    if (this.node) releaseNode(this.node);
    this.node = undefined;
    if (this.grad && this.origin === this) this.grad.dispose();
    this.grad = undefined;
  }

  /** Marks this tensor as a trainable leaf. */
  requireGrad(flag = true): this {
    this.requiresGrad = flag;
    return this;
  }

  toString(): string {
    return `Tensor(${describeShape(this.shape)}, ${this.dtype}, ${this.backend.name}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }
}

/** An internal reference to t (same id, storage and node) that outlives disposal of t itself. */
export function retain(t: Tensor): Tensor {
  t.assertAlive();
  t.storage.refs++;
  if (t.node) t.node.refs++;
  const r = new Tensor(t.shape, t.storage, t.id);
  r.node = t.node;
  r.requiresGrad = t.requiresGrad;
  r.origin = t.origin;
  return r;
}

/** Drops a node reference; when the last goes, its retained tensors are released (iteratively). */
function releaseNode(root: GradNode): void {
  const stack = [root];
  while (stack.length) {
    const n = stack.pop()!;
    if (--n.refs > 0) continue;
    for (const t of [...n.inputs, ...n.saved]) {
      t.storage.release();
      if (t.node) stack.push(t.node);
      t.node = undefined;
    }
    n.inputs = [];
    n.saved = [];
  }
}

/** Wraps a fresh handle as a tensor, tracked by the innermost tidy scope. */
export function fromHandle(backend: Backend, handle: Handle, shape: readonly number[], dtype: DType): Tensor {
  const t = new Tensor([...shape], new Storage(backend, handle, dtype, sizeOf(shape)));
  if (scopes.length) scopes[scopes.length - 1].add(t);
  return t;
}

/** A new tensor sharing t's storage with another shape (no copy). */
export function view(t: Tensor, shape: readonly number[]): Tensor {
  t.assertAlive();
  t.storage.refs++;
  const v = new Tensor([...shape], t.storage);
  if (scopes.length) scopes[scopes.length - 1].add(v);
  return v;
}

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function checkShape(shape: readonly number[], where: string): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new ShapeError(`${where}: dimensions must be non-negative integers, got ${describeShape(shape)}`);
  }
}

// ---- memory scopes ----

/** Runs fn; every tensor created inside and not returned (or kept) is disposed afterwards. */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    // a throwing fn returns nothing: everything it made is garbage
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  if (result instanceof Promise) throw new ValueError('tidy(fn): fn must be synchronous (it returned a Promise)');
  const returned = new Set<Tensor>();
  collectTensors(result, returned);
  const parent = scopes.length ? scopes[scopes.length - 1] : undefined;
  for (const t of scope) {
    if (returned.has(t)) parent?.add(t);
    else t.dispose();
  }
  return result;
}

/** Puts a tensor under the innermost tidy scope (the inverse of keep). */
export function track<T extends Tensor>(t: T): T {
  if (scopes.length) scopes[scopes.length - 1].add(t);
  return t;
}

/** Exempts tensors from the enclosing tidy scopes. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

/** Anything that owns tensors (QuantizedTensor, layers) exposes them for tidy and disposal. */
export interface TensorContainer {
  tensors(): Tensor[];
}

function collectTensors(x: unknown, out: Set<Tensor>, depth = 0): void {
  if (x == null || typeof x !== 'object' || depth > 8) return;
  if (x instanceof Tensor) { out.add(x); return; }
  if (typeof (x as TensorContainer).tensors === 'function') {
    for (const t of (x as TensorContainer).tensors()) out.add(t);
    return;
  }
  if (Array.isArray(x)) { for (const v of x) collectTensors(v, out, depth + 1); return; }
  if (Object.getPrototypeOf(x) === Object.prototype) for (const v of Object.values(x)) collectTensors(v, out, depth + 1);
}

/** Live (not yet freed) buffers of a backend, the active one by default. */
export function liveBuffers(backend: Backend = getBackend()): number {
  return backend.liveBuffers();
}

// ---- creation ----

export type TensorLike = number | number[] | AnyTypedArray | number[][] | number[][][];

function flatten(x: TensorLike): { values: number[] | AnyTypedArray; shape: number[] } {
  if (typeof x === 'number') return { values: [x], shape: [] };
  if (ArrayBuffer.isView(x)) return { values: x, shape: [x.length] };
  const shape: number[] = [];
  let probe: unknown = x;
  while (Array.isArray(probe)) { shape.push(probe.length); probe = probe[0]; }
  const values = (x as unknown[]).flat(Infinity) as number[];
  if (values.length !== sizeOf(shape)) throw new ShapeError(`tensor(): ragged nested array, expected ${sizeOf(shape)} values for shape ${describeShape(shape)}, got ${values.length}`);
  return { values, shape };
}

/** A tensor from numbers or a typed array (dtype from the array type, else f32). */
export function tensor(x: TensorLike, shape?: readonly number[], dtype?: DType, backend: Backend = getBackend()): Tensor {
  const flat = flatten(x);
  const s = shape ? [...shape] : flat.shape;
  checkShape(s, 'tensor()');
  const dt = dtype ?? (ArrayBuffer.isView(flat.values) ? dtypeOfArray(flat.values as AnyTypedArray) : 'f32');
  if (flat.values.length !== sizeOf(s)) throw new ShapeError(`tensor(): ${flat.values.length} values do not fill shape ${describeShape(s)} (needs ${sizeOf(s)})`);
  let arr: AnyTypedArray;
  if (ArrayBuffer.isView(flat.values) && dtypeOfArray(flat.values as AnyTypedArray) === dt) arr = flat.values as AnyTypedArray;
  else {
    arr = allocArray(dt, flat.values.length);
    for (let i = 0; i < arr.length; i++) arr[i] = flat.values[i] as number;
  }
  if (dt !== 'f32') {
    for (let i = 0; i < flat.values.length; i++) {
      if (arr[i] !== flat.values[i]) throw new DTypeError(`tensor(): value ${flat.values[i]} at index ${i} is not representable as ${dt}`);
    }
  }
  const t = fromHandle(backend, backend.upload(arr), s, dt);
  if (dt !== 'f32' && arr.length) {
    let lo = arr[0];
    let hi = arr[0];
    for (let i = 1; i < arr.length; i++) {
      const v = arr[i];
      if (v < lo) lo = v;
      else if (v > hi) hi = v;
    }
    t.storage.bounds = [lo, hi];
  }
  return t;
}

/** Bounds of an integer tensor's values known on the host without reading it (see Storage.bounds). */
export function knownBounds(t: Tensor): readonly [number, number] | undefined {
  return t.storage.bounds;
}

/** Gives y (a copy of values of the srcs: a slice, transpose, concat) the union of their bounds. */
export function inheritBounds(y: Tensor, ...srcs: Tensor[]): Tensor {
  const b = srcs.map((t) => t.storage.bounds);
  if (y.dtype !== 'f32' && b.length && b.every((x) => x)) {
    y.storage.bounds = [Math.min(...b.map((x) => x![0])), Math.max(...b.map((x) => x![1]))];
  }
  return y;
}

export function zeros(shape: readonly number[], dtype: DType = 'f32', backend: Backend = getBackend()): Tensor {
  checkShape(shape, 'zeros()');
  return fromHandle(backend, backend.zeros(dtype, sizeOf(shape)), shape, dtype);
}

export function full(shape: readonly number[], value: number, backend: Backend = getBackend()): Tensor {
  checkShape(shape, 'full()');
  return fromHandle(backend, backend.fill(sizeOf(shape), value), shape, 'f32');
}

export function ones(shape: readonly number[], backend: Backend = getBackend()): Tensor {
  return full(shape, 1, backend);
}

/** Small seeded generator (mulberry32) so runs are reproducible; `state` can be saved and restored. */
export class Rng {
  state: number;
  constructor(seed: number) { this.state = seed >>> 0; }
  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/** rng(seed)() draws uniforms in [0, 1) from a fresh Rng. */
export function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

/** Fills a Float32Array with normal samples (Box-Muller) from a seeded generator. */
export function gaussianArray(size: number, seed: number, std = 1, mean = 0): Float32Array {
  const next = rng(seed);
  const out = new Float32Array(size);
  for (let i = 0; i < size; i += 2) {
    const u = Math.max(next(), 1e-12);
    const v = next();
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    out[i] = mean + r * Math.cos(2 * Math.PI * v);
    if (i + 1 < size) out[i + 1] = mean + r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

export function randn(shape: readonly number[], opts: { seed?: number; std?: number; mean?: number } = {}, backend: Backend = getBackend()): Tensor {
  checkShape(shape, 'randn()');
  return tensor(gaussianArray(sizeOf(shape), opts.seed ?? 0, opts.std ?? 1, opts.mean ?? 0), shape, 'f32', backend);
}

export function rand(shape: readonly number[], opts: { seed?: number; low?: number; high?: number } = {}, backend: Backend = getBackend()): Tensor {
  checkShape(shape, 'rand()');
  const next = rng(opts.seed ?? 0);
  const lo = opts.low ?? 0;
  const hi = opts.high ?? 1;
  const out = new Float32Array(sizeOf(shape));
  for (let i = 0; i < out.length; i++) out[i] = lo + (hi - lo) * next();
  return tensor(out, shape, 'f32', backend);
}

/** Throws NonFiniteError naming the first NaN/Inf of a host array. */
export function assertFinite(values: ArrayLike<number>, shape: readonly number[], where: string): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      const idx: number[] = [];
      let rest = i;
      for (let d = shape.length - 1; d >= 0; d--) { idx.unshift(rest % shape[d]); rest = Math.floor(rest / shape[d]); }
      throw new NonFiniteError(`${where}: expected finite values, got ${values[i]} at index [${idx.join(', ')}] of a ${describeShape(shape)} tensor`);
    }
  }
}

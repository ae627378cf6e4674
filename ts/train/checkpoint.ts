// Training checkpoints: named f32 tensors, the optimizer's state and JSON metadata (step, rng
// state, best validation loss...) in one safetensors file, written atomically (a crash leaves the
// previous checkpoint intact). Layout:
//   tensors        the caller's names, F32
//   optimizer/m/i, optimizer/v/i   the optimizer's moments for its i-th parameter
//   arrays/NAME    the caller's host arrays (1-D F32)
//   __metadata__   format = "quantlora-checkpoint", version = "1", tensors = JSON list of the
//                  caller's names, optimizer = JSON {step, paramSteps, lrs, count}, arrays = JSON
//                  list of the array names (when there are any), meta = JSON
// Reading validates all of it; anything wrong is a CheckpointError naming the file and the problem.

import { FormatError } from '../errors.js';
import { parseSafetensors, safetensorsTensor, writeSafetensors, type SafetensorsFile, type TensorToWrite } from '../io/safetensors.js';
import { nodeFs } from '../io/atomic.js';
import { describeShape } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { CheckpointError } from './errors.js';
import type { AdamW, OptimizerState } from './optim.js';
import { assignHost, readF32 } from './tensors.js';

const FORMAT = 'quantlora-checkpoint';
const VERSION = '1';
const OPT_PREFIX = 'optimizer/';
const ARRAY_PREFIX = 'arrays/';

export type NamedTensors = Record<string, Tensor> | Map<string, Tensor>;

export interface CheckpointContents {
  /** Named f32 tensors (parameters, buffers). */
  tensors: NamedTensors;
  /** The optimizer (its state() is saved) or a state taken earlier. */
  optimizer?: AdamW | OptimizerState;
  /** Named host arrays (large state such as a best-so-far copy of the parameters: as JSON metadata
   *  it would blow past the header limit). They come back in LoadedCheckpoint.arrays. */
  arrays?: Record<string, Float32Array>;
  /** JSON-serializable metadata (step, rng state, best validation loss, guard state...). */
  meta?: Record<string, unknown>;
}

export interface LoadedCheckpoint {
  path: string;
  tensors: Map<string, { shape: number[]; data: Float32Array }>;
  optimizer: OptimizerState | undefined;
  arrays: Map<string, Float32Array>;
  meta: Record<string, unknown>;
}

const entriesOf = (t: NamedTensors): [string, Tensor][] => (t instanceof Map ? [...t.entries()] : Object.entries(t));

/** Writes a checkpoint atomically to `path` (replacing any file there). */
export function saveCheckpoint(path: string, c: CheckpointContents): void {
  const list: TensorToWrite[] = [];
  for (const [name, t] of entriesOf(c.tensors)) {
    for (const reserved of [OPT_PREFIX, ARRAY_PREFIX]) {
      if (name.startsWith(reserved)) throw new CheckpointError(`saveCheckpoint: tensor names starting with '${reserved}' are reserved, got '${name}'`);
    }
    list.push({ name, shape: [...t.shape], data: readF32(t, `saveCheckpoint (tensor '${name}')`) });
  }
  const names = list.map((t) => t.name);
  const arrays = Object.entries(c.arrays ?? {});
  for (const [name, data] of arrays) list.push({ name: `${ARRAY_PREFIX}${name}`, shape: [data.length], data });
  const opt = c.optimizer && 'loadState' in c.optimizer ? c.optimizer.state() : c.optimizer;
  const metadata: Record<string, string> = { format: FORMAT, version: VERSION, tensors: JSON.stringify(names) };
  if (opt) {
    opt.m.forEach((m, i) => list.push({ name: `${OPT_PREFIX}m/${i}`, shape: [m.length], data: m }));
    opt.v.forEach((v, i) => list.push({ name: `${OPT_PREFIX}v/${i}`, shape: [v.length], data: v }));
    metadata.optimizer = JSON.stringify({ step: opt.step, paramSteps: opt.paramSteps, lrs: opt.lrs, count: opt.m.length });
  }
  if (arrays.length) metadata.arrays = JSON.stringify(arrays.map(([name]) => name));
  let meta: string;
  try {
    meta = JSON.stringify(c.meta ?? {});
  } catch (e) {
    throw new CheckpointError(`saveCheckpoint: meta is not JSON-serializable (${(e as Error).message})`);
  }
  metadata.meta = meta;
  writeSafetensors(path, list, metadata);
}

function parseJson(path: string, key: string, text: string | undefined): unknown {
  if (text === undefined) throw new CheckpointError(`${path}: metadata '${key}' is missing`);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`${path}: metadata '${key}' is not valid JSON (${(e as Error).message})`);
  }
}

function f32Tensor(file: SafetensorsFile, name: string): { shape: number[]; data: Float32Array } {
  const e = file.entries.get(name);
  if (!e) throw new CheckpointError(`${file.path}: tensor '${name}' is missing`);
  if (e.dtype !== 'F32') throw new CheckpointError(`${file.path}: tensor '${name}' is ${e.dtype}, checkpoints hold F32`);
  return { shape: e.shape.slice(), data: safetensorsTensor(file, name).slice() };
}

const isCount = (x: unknown): x is number => Number.isInteger(x) && (x as number) >= 0;

/** Parses a checkpoint held in memory (see readCheckpoint). */
export function parseCheckpoint(bytes: Uint8Array, path = '<memory>'): LoadedCheckpoint {
  let file: SafetensorsFile;
  try {
    file = parseSafetensors(bytes, path);
  } catch (e) {
    if (e instanceof FormatError) throw Object.assign(new CheckpointError(`not a readable checkpoint: ${e.message}`), { cause: e });
    throw e;
  }
  const md = file.metadata;
  if (md.format !== FORMAT) throw new CheckpointError(`${path}: not a quantlora checkpoint (metadata format is ${JSON.stringify(md.format)})`);
  if (md.version !== VERSION) throw new CheckpointError(`${path}: checkpoint version ${JSON.stringify(md.version)} is not supported (expected ${VERSION})`);
  const names = parseJson(path, 'tensors', md.tensors);
  if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) throw new CheckpointError(`${path}: metadata 'tensors' is not a list of names`);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const n of names as string[]) tensors.set(n, f32Tensor(file, n));

  let optimizer: OptimizerState | undefined;
  if (md.optimizer !== undefined) {
    const o = parseJson(path, 'optimizer', md.optimizer) as Record<string, unknown>;
    const ok = o && isCount(o.step) && isCount(o.count) && Array.isArray(o.paramSteps) && o.paramSteps.length === o.count &&
      o.paramSteps.every(isCount) && Array.isArray(o.lrs) && o.lrs.every((x) => typeof x === 'number');
    if (!ok) throw new CheckpointError(`${path}: metadata 'optimizer' is malformed: ${md.optimizer}`);
    const count = o.count as number;
    const m: Float32Array[] = [];
    const v: Float32Array[] = [];
    for (let i = 0; i < count; i++) {
      m.push(f32Tensor(file, `${OPT_PREFIX}m/${i}`).data);
      v.push(f32Tensor(file, `${OPT_PREFIX}v/${i}`).data);
      if (m[i].length !== v[i].length) throw new CheckpointError(`${path}: optimizer moments ${i} differ in size (m ${m[i].length}, v ${v[i].length})`);
    }
    optimizer = { step: o.step as number, paramSteps: o.paramSteps as number[], lrs: o.lrs as number[], m, v };
  }
  const arrays = new Map<string, Float32Array>();
  if (md.arrays !== undefined) {
    const list = parseJson(path, 'arrays', md.arrays);
    if (!Array.isArray(list) || !list.every((n) => typeof n === 'string')) throw new CheckpointError(`${path}: metadata 'arrays' is not a list of names`);
    for (const n of list as string[]) arrays.set(n, f32Tensor(file, `${ARRAY_PREFIX}${n}`).data);
  }
  const expected = names.length + 2 * (optimizer?.m.length ?? 0) + arrays.size;
  if (file.entries.size !== expected) {
    const known = new Set<string>(names as string[]);
    const extra = [...file.entries.keys()].filter((n) => !known.has(n) && !n.startsWith(OPT_PREFIX) && !n.startsWith(ARRAY_PREFIX));
    throw new CheckpointError(`${path}: holds ${file.entries.size} tensors, its metadata accounts for ${expected}${extra.length ? ` (unlisted: ${extra.slice(0, 5).join(', ')})` : ''}`);
  }
  const meta = parseJson(path, 'meta', md.meta);
  if (typeof meta !== 'object' || meta === null || Array.isArray(meta)) throw new CheckpointError(`${path}: metadata 'meta' is not a JSON object`);
  return { path, tensors, optimizer, arrays, meta: meta as Record<string, unknown> };
}

/** Reads and validates a checkpoint file. */
export function readCheckpoint(path: string): LoadedCheckpoint {
  let bytes: Uint8Array;
  try {
    bytes = nodeFs().readFileSync(path);
  } catch (e) {
    throw Object.assign(new CheckpointError(`${path}: cannot read checkpoint (${(e as Error).message})`), { cause: e });
  }
  return parseCheckpoint(bytes, path);
}

/**
 * Copies the checkpoint's tensors into existing tensors (in place), checking names and shapes.
 * strict (default): the checkpoint must hold exactly the names given, no more.
 */
export function restoreTensors(ckpt: LoadedCheckpoint, into: NamedTensors, opts: { strict?: boolean } = {}): void {
  const targets = entriesOf(into);
  for (const [name, t] of targets) {
    const src = ckpt.tensors.get(name);
    if (!src) throw new CheckpointError(`${ckpt.path}: has no tensor '${name}' (it holds ${[...ckpt.tensors.keys()].slice(0, 8).join(', ') || 'none'})`);
    if (src.shape.length !== t.shape.length || src.shape.some((d, i) => d !== t.shape[i])) {
      throw new CheckpointError(`${ckpt.path}: tensor '${name}' is ${describeShape(src.shape)}, expected ${describeShape(t.shape)}`);
    }
  }
  if (opts.strict ?? true) {
    const wanted = new Set(targets.map(([n]) => n));
    const extra = [...ckpt.tensors.keys()].filter((n) => !wanted.has(n));
    if (extra.length) throw new CheckpointError(`${ckpt.path}: holds tensors not restored: ${extra.slice(0, 8).join(', ')} (pass strict: false to allow)`);
  }
  for (const [name, t] of targets) assignHost(t, ckpt.tensors.get(name)!.data);
}

/**
 * Reads a checkpoint and restores it: tensors into `tensors` (in place), the optimizer's state into
 * `optimizer`. Returns the metadata. Everything is validated before anything is written.
 */
export function loadCheckpoint(path: string, into: { tensors: NamedTensors; optimizer?: AdamW; strict?: boolean }): LoadedCheckpoint {
  const ckpt = readCheckpoint(path);
  if (into.optimizer) {
    if (!ckpt.optimizer) throw new CheckpointError(`${path}: holds no optimizer state`);
    const params = into.optimizer.params();
    if (ckpt.optimizer.m.length !== params.length) throw new CheckpointError(`${path}: optimizer state for ${ckpt.optimizer.m.length} parameters, the optimizer has ${params.length}`);
    params.forEach((p, i) => {
      if (ckpt.optimizer!.m[i].length !== p.size) throw new CheckpointError(`${path}: optimizer moments ${i} hold ${ckpt.optimizer!.m[i].length} values, parameter ${i} is ${describeShape(p.shape)}`);
    });
    if (ckpt.optimizer.lrs.length !== into.optimizer.groups.length) throw new CheckpointError(`${path}: optimizer state for ${ckpt.optimizer.lrs.length} groups, the optimizer has ${into.optimizer.groups.length}`);
  }
  restoreTensors(ckpt, into.tensors, { strict: into.strict });
  if (into.optimizer) into.optimizer.loadState(ckpt.optimizer!);
  return ckpt;
}

// safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length N, N bytes of UTF-8 JSON `{name: {dtype, shape, data_offsets: [begin, end]}, ...,
// "__metadata__": {string: string}}` padded with spaces, then the data. Offsets are relative to the
// start of the data, and the tensors must cover the data exactly: no overlaps, no gaps, no tail.
// Reading and writing files needs Node (see atomic.ts); parsing and encoding run anywhere.
// Validation follows the reference implementation (safetensors 0.8); everything wrong with a file
// is a FormatError naming the file, the tensor and the problem.
import { FormatError, ShapeError, ValueError, describeShape } from '../errors.js';
import { decodeBf16, decodeF16, encodeBf16, encodeF16 } from './half.js';
import { nodeFs, nodePath, withAtomicFile } from './atomic.js';

/** The dtypes we read into f32 and write. */
export type SafetensorsDType = 'F32' | 'F16' | 'BF16';

export interface SafetensorsEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** Absolute byte offsets into the file's bytes. */
  begin: number;
  end: number;
}

export interface SafetensorsFile {
  path: string;
  metadata: Record<string, string>;
  /** In the order of the data. */
  entries: Map<string, SafetensorsEntry>;
  bytes: Uint8Array;
}

export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array;
  /** Stored dtype; F32 by default. F16/BF16 round to nearest even. */
  dtype?: SafetensorsDType;
}

/** Raw bytes written as a U8 tensor (packed quantization codes). */
export interface BytesToWrite {
  name: string;
  shape: number[];
  data: Uint8Array;
  dtype: 'U8';
}

type AnyToWrite = TensorToWrite | BytesToWrite;

/** The reference implementation's limit on the header length. */
const MAX_HEADER = 100_000_000;

/** Bits per element of every dtype the spec names (as of safetensors 0.8); others are refused. */
const DTYPE_BITS = new Map<string, number>([
  ['BOOL', 8], ['F4', 4], ['F6_E2M3', 6], ['F6_E3M2', 6], ['U8', 8], ['I8', 8],
  ['F8_E5M2', 8], ['F8_E4M3', 8], ['F8_E8M0', 8], ['F8_E4M3FNUZ', 8], ['F8_E5M2FNUZ', 8],
  ['I16', 16], ['U16', 16], ['F16', 16], ['BF16', 16],
  ['I32', 32], ['U32', 32], ['F32', 32], ['C64', 64], ['F64', 64], ['I64', 64], ['U64', 64],
]);
const WRITABLE = new Set<string>(['F32', 'F16', 'BF16', 'U8']);

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const encoder = new TextEncoder();

function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Parses and validates a whole safetensors file held in memory. Tensors stay in `bytes`. */
export function parseSafetensors(bytes: Uint8Array, path = '<memory>'): SafetensorsFile {
  const fail = (msg: string) => new FormatError(`${path}: ${msg}`);
  if (bytes.length < 8) throw fail(`${bytes.length} bytes, too short to hold the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, 8);
  const n = view.getUint32(4, true) * 2 ** 32 + view.getUint32(0, true);
  if (n > MAX_HEADER) throw fail(`header length ${n} is over the 100 MB limit`);
  if (n > bytes.length - 8) throw fail(`header length ${n} runs past the end of the file (${bytes.length} bytes)`);

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    throw fail('header is not valid UTF-8');
  }
  if (!text.startsWith('{')) throw fail('header does not start with "{"');
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw fail('header is not a JSON object');

  const dataStart = 8 + n;
  const dataLen = bytes.length - dataStart;
  const metaPairs: [string, string][] = [];
  const entries = new Map<string, SafetensorsEntry>();
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (v === null) continue; // as the reference implementation: null is no metadata
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw fail('__metadata__ is not an object');
      for (const [k, s] of Object.entries(v)) {
        if (typeof s !== 'string') throw fail(`__metadata__ value of ${JSON.stringify(k)} is ${JSON.stringify(s)}, not a string`);
        metaPairs.push([k, s]);
      }
      continue;
    }
    const where = `tensor ${JSON.stringify(name)}`;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw fail(`${where}: entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = v as Record<string, unknown>;
    if (typeof dtype !== 'string') throw fail(`${where}: dtype is missing or not a string`);
    if (!DTYPE_BITS.has(dtype)) throw fail(`${where}: unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape)) throw fail(`${where}: shape is missing or not an array`);
    for (const d of shape) {
      if (typeof d === 'number' && Number.isInteger(d) && d < 0) throw fail(`${where}: shape ${JSON.stringify(shape)} has a negative dimension`);
      if (!isCount(d)) throw fail(`${where}: shape ${JSON.stringify(shape)} holds ${JSON.stringify(d)}, not a non-negative integer`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2) throw fail(`${where}: data_offsets is missing or not a [begin, end] pair`);
    const [begin, end] = offsets;
    if (!isCount(begin) || !isCount(end)) throw fail(`${where}: data_offsets ${JSON.stringify(offsets)} are not non-negative integers`);
    if (begin > end) throw fail(`${where}: data_offsets begin ${begin} > end ${end}`);
    if (end > dataLen) throw fail(`${where}: data_offsets end ${end} is past the end of the data (${dataLen} bytes)`);
    const bits = numel(shape) * DTYPE_BITS.get(dtype)!;
    if (bits % 8 !== 0) throw fail(`${where}: ${dtype} ${describeShape(shape)} does not end on a byte boundary`);
    if (bits / 8 !== end - begin) throw fail(`${where}: ${end - begin} bytes, but ${dtype} ${describeShape(shape)} needs ${bits / 8}`);
    entries.set(name, { name, dtype, shape: shape.slice(), begin: dataStart + begin, end: dataStart + end });
  }

  // the tensors must tile the data exactly
  const sorted = [...entries.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = dataStart;
  let prev: SafetensorsEntry | undefined;
  for (const e of sorted) {
    const rel = (x: number) => x - dataStart;
    if (e.begin < pos) throw fail(`tensor ${JSON.stringify(e.name)} (data bytes ${rel(e.begin)}..${rel(e.end)}) overlaps tensor ${JSON.stringify(prev!.name)} (${rel(prev!.begin)}..${rel(prev!.end)})`);
    if (e.begin > pos) throw fail(`data bytes ${rel(pos)}..${rel(e.begin)} before tensor ${JSON.stringify(e.name)} belong to no tensor`);
    pos = e.end;
    prev = e;
  }
  if (pos !== bytes.length) throw fail(`data bytes ${pos - dataStart}..${dataLen} after the last tensor belong to no tensor`);
  // entries in data order (JSON objects do not keep key order for names like "0")
  return { path, metadata: Object.fromEntries(metaPairs), entries: new Map(sorted.map((e) => [e.name, e])), bytes };
}

/** Reads a whole file into memory (the default model's f32 export is ~540 MB). */
function readWhole(path: string): Uint8Array {
  const fs = nodeFs();
  const fd = fs.openSync(path, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    let buf: Uint8Array;
    try {
      buf = new Uint8Array(size);
    } catch {
      throw new FormatError(`${path}: ${size} bytes do not fit in one buffer`);
    }
    for (let off = 0; off < size;) {
      const got = fs.readSync(fd, buf, off, Math.min(size - off, 1 << 30), off);
      if (got === 0) throw new FormatError(`${path}: file shrank while being read`);
      off += got;
    }
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

export function readSafetensors(path: string): SafetensorsFile {
  return parseSafetensors(readWhole(path), path);
}

/** Little-endian f32 values at `begin`: a view of `bytes` when aligned, else a copy. */
function f32At(bytes: Uint8Array, begin: number, count: number): Float32Array {
  if (!LITTLE_ENDIAN) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset + begin, count * 4);
    return Float32Array.from({ length: count }, (_, i) => dv.getFloat32(i * 4, true));
  }
  if ((bytes.byteOffset + begin) % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset + begin, count);
  const out = new Float32Array(count);
  new Uint8Array(out.buffer).set(bytes.subarray(begin, begin + count * 4));
  return out;
}

/** Little-endian u16 values at `begin`: a view of `bytes` when aligned, else a copy. */
function u16At(bytes: Uint8Array, begin: number, count: number): Uint16Array {
  if (!LITTLE_ENDIAN) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset + begin, count * 2);
    return Uint16Array.from({ length: count }, (_, i) => dv.getUint16(i * 2, true));
  }
  if ((bytes.byteOffset + begin) % 2 === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset + begin, count);
  const out = new Uint16Array(count);
  new Uint8Array(out.buffer).set(bytes.subarray(begin, begin + count * 2));
  return out;
}

/**
 * One tensor as f32. F32 comes back as a view of the file's bytes when aligned (writing to it
 * writes to `file.bytes`); F16 and BF16 are decoded exactly. Other dtypes are refused.
 */
export function safetensorsTensor(file: SafetensorsFile, name: string): Float32Array {
  const e = file.entries.get(name);
  if (!e) throw new FormatError(`${file.path}: no tensor ${JSON.stringify(name)}`);
  const count = numel(e.shape);
  switch (e.dtype) {
    case 'F32': return f32At(file.bytes, e.begin, count);
    case 'F16': return decodeF16(u16At(file.bytes, e.begin, count));
    case 'BF16': return decodeBf16(u16At(file.bytes, e.begin, count));
    default:
      throw new FormatError(`${file.path}: tensor ${JSON.stringify(name)} has unsupported dtype ${e.dtype} (F32, F16 and BF16 are read)`);
  }
}

interface Plan { header: Uint8Array; dataBytes: number }

/** Validates what is to be written and builds the header (length prefix included). */
function planHeader(tensors: readonly AnyToWrite[], metadata: Record<string, string> = {}): Plan {
  const parts: string[] = [];
  const metaKeys = Object.keys(metadata);
  for (const k of metaKeys) {
    if (typeof metadata[k] !== 'string') throw new ValueError(`safetensors metadata ${JSON.stringify(k)} must be a string, got ${typeof metadata[k]}`);
  }
  if (metaKeys.length) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  const seen = new Set<string>();
  let off = 0;
  for (const t of tensors) {
    const where = `safetensors tensor ${JSON.stringify(t.name)}`;
    if (typeof t.name !== 'string' || t.name === '__metadata__' || seen.has(t.name)) throw new ValueError(`${where}: name is reserved, repeated or not a string`);
    seen.add(t.name);
    const dtype = t.dtype ?? 'F32';
    if (!WRITABLE.has(dtype)) throw new ValueError(`${where}: dtype ${dtype} cannot be written (F32, F16, BF16, U8)`);
    if ((dtype === 'U8') !== (t.data instanceof Uint8Array)) throw new ValueError(`${where}: ${dtype} needs ${dtype === 'U8' ? 'a Uint8Array' : 'a Float32Array'}, got a ${t.data.constructor.name}`);
    if (!Array.isArray(t.shape) || !t.shape.every(isCount)) throw new ShapeError(`${where}: shape ${JSON.stringify(t.shape)} must hold non-negative integers`);
    if (numel(t.shape) !== t.data.length) throw new ShapeError(`${where}: shape ${describeShape(t.shape)} holds ${numel(t.shape)} elements, data has ${t.data.length}`);
    const nb = (t.data.length * DTYPE_BITS.get(dtype)!) / 8;
    parts.push(`${JSON.stringify(t.name)}:{"dtype":"${dtype}","shape":${JSON.stringify(t.shape)},"data_offsets":[${off},${off + nb}]}`);
    off += nb;
  }
  const json = encoder.encode(`{${parts.join(',')}}`);
  const padded = Math.ceil(json.length / 8) * 8; // the data then starts 8-byte aligned
  const header = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  const dv = new DataView(header.buffer);
  dv.setUint32(0, padded % 2 ** 32, true);
  dv.setUint32(4, Math.floor(padded / 2 ** 32), true);
  header.set(json, 8);
  return { header, dataBytes: off };
}

/** 16-bit values as little-endian bytes. */
function u16Bytes(v: Uint16Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  const out = new Uint8Array(v.length * 2);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < v.length; i++) dv.setUint16(i * 2, v[i], true);
  return out;
}

const CHUNK = 1 << 20; // elements converted at a time when writing

/** A tensor's stored bytes, in pieces of at most CHUNK elements (F32 on little-endian: one view). */
function* tensorBytes(t: AnyToWrite): Generator<Uint8Array> {
  const dtype = t.dtype ?? 'F32';
  if (dtype === 'U8' || (dtype === 'F32' && LITTLE_ENDIAN)) {
    yield new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    return;
  }
  const data = t.data as Float32Array;
  for (let i = 0; i < data.length; i += CHUNK) {
    const part = data.subarray(i, Math.min(data.length, i + CHUNK));
    if (dtype === 'F16') yield u16Bytes(encodeF16(part));
    else if (dtype === 'BF16') yield u16Bytes(encodeBf16(part));
    else {
      const out = new Uint8Array(part.length * 4);
      const dv = new DataView(out.buffer);
      for (let j = 0; j < part.length; j++) dv.setFloat32(j * 4, part[j], true);
      yield out;
    }
  }
}

/** The whole file in memory: header padded to 8 bytes, then the tensors in the given order. */
export function encodeSafetensors(tensors: AnyToWrite[], metadata?: Record<string, string>): Uint8Array {
  const { header, dataBytes } = planHeader(tensors, metadata);
  const out = new Uint8Array(header.length + dataBytes);
  out.set(header);
  let off = header.length;
  for (const t of tensors) {
    for (const chunk of tensorBytes(t)) {
      out.set(chunk, off);
      off += chunk.length;
    }
  }
  return out;
}

/** Same bytes as encodeSafetensors, streamed tensor by tensor into an atomically replaced file. */
export function writeSafetensors(path: string, tensors: AnyToWrite[], metadata?: Record<string, string>): void {
  const { header } = planHeader(tensors, metadata); // validate before touching the disk
  withAtomicFile(path, (write) => {
    write(header);
    for (const t of tensors) for (const chunk of tensorBytes(t)) write(chunk);
  });
}

/** Tensors of a checkpoint by name, whether in one file or in shards. */
export interface SafetensorsLookup {
  names(): string[];
  has(name: string): boolean;
  tensor(name: string): Float32Array;
  shape(name: string): number[];
}

function fileLookup(file: SafetensorsFile): SafetensorsLookup {
  const entry = (name: string) => {
    const e = file.entries.get(name);
    if (!e) throw new FormatError(`${file.path}: no tensor ${JSON.stringify(name)}`);
    return e;
  };
  return {
    names: () => [...file.entries.keys()],
    has: (name) => file.entries.has(name),
    tensor: (name) => safetensorsTensor(file, name),
    shape: (name) => entry(name).shape.slice(),
  };
}

/** A shard file name from an index: a plain name in the same directory, nothing that climbs out. */
const plainName = (s: unknown): s is string =>
  typeof s === 'string' && s !== '' && s !== '.' && s !== '..' && !s.includes('/') && !s.includes('\\');

function shardedLookup(dir: string, indexPath: string): SafetensorsLookup {
  const fs = nodeFs();
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (e) {
    throw new FormatError(`${indexPath}: not valid JSON (${(e as Error).message})`);
  }
  const map = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new FormatError(`${indexPath}: no "weight_map" object`);
  const weightMap = new Map<string, string>();
  for (const [name, shard] of Object.entries(map)) {
    if (!plainName(shard)) throw new FormatError(`${indexPath}: tensor ${JSON.stringify(name)} maps to ${JSON.stringify(shard)}, not a file name in ${dir}`);
    weightMap.set(name, shard);
  }
  const shards = new Map<string, SafetensorsFile>(); // loaded on first use, kept
  const load = (name: string): [SafetensorsFile, SafetensorsEntry] => {
    const shard = weightMap.get(name);
    if (shard === undefined) throw new FormatError(`${indexPath}: no tensor ${JSON.stringify(name)}`);
    let file = shards.get(shard);
    if (!file) {
      const p = nodePath().join(dir, shard);
      if (!fs.existsSync(p)) throw new FormatError(`${indexPath}: shard ${shard} (holding ${JSON.stringify(name)}) is missing`);
      file = readSafetensors(p);
      shards.set(shard, file);
    }
    const e = file.entries.get(name);
    if (!e) throw new FormatError(`${file.path}: no tensor ${JSON.stringify(name)}, though ${indexPath} puts it there`);
    return [file, e];
  };
  return {
    names: () => [...weightMap.keys()],
    has: (name) => weightMap.has(name),
    tensor: (name) => safetensorsTensor(load(name)[0], name),
    shape: (name) => load(name)[1].shape.slice(),
  };
}

/**
 * A checkpoint directory: `model.safetensors.index.json` with its shards (read lazily), else
 * `model.safetensors`. A path to a single .safetensors file works too.
 */
export function readSafetensorsDir(dir: string): SafetensorsLookup {
  const fs = nodeFs();
  const { join } = nodePath();
  if (fs.existsSync(dir) && fs.statSync(dir).isFile()) return fileLookup(readSafetensors(dir));
  const indexPath = join(dir, 'model.safetensors.index.json');
  if (fs.existsSync(indexPath)) return shardedLookup(dir, indexPath);
  const single = join(dir, 'model.safetensors');
  if (fs.existsSync(single)) return fileLookup(readSafetensors(single));
  throw new FormatError(`${dir}: holds neither model.safetensors nor model.safetensors.index.json`);
}

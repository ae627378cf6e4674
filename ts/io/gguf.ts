// GGUF reader: parses an in-memory file synchronously, checking every count, length and offset
// against the bytes that remain before allocating anything, so lying headers fail fast with a
// FormatError that names the file, the key or tensor, and the byte offset.
// Layout (v2/v3, little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count,
// metadata (string key, u32 value type, value), tensor infos (string name, u32 n_dims,
// u64 ne[n_dims], u32 ggml type, u64 offset relative to the data section), padding to
// `general.alignment`, then the tensor data.

import { FormatError } from '../errors.js';
import { GGML_TYPES, dequantizeGgml, ggmlTypeName } from './ggml.js';

export type GgufValue = number | bigint | boolean | string | GgufValue[];

export interface GgufTensorInfo {
  name: string;
  /** Row-major shape, i.e. ggml's ne[] reversed: token_embd is [n_vocab, n_embd]. */
  shape: number[];
  /** ggml type number (see GGML_TYPES). */
  type: number;
  typeName: string;
  /** Absolute byte offset of the data in the file. */
  offset: number;
  byteLength: number;
}

export interface GgufFile {
  path: string;
  version: number;
  alignment: number;
  /** Absolute byte offset of the tensor data section. */
  dataOffset: number;
  metadata: Record<string, GgufValue>;
  tensors: GgufTensorInfo[];
  bytes: Uint8Array;
}

/** GGUF metadata value types. */
export const GGUF_VALUE_TYPES = {
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7,
  STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12,
} as const;

// Bytes of one value of each type; strings and arrays: their smallest possible encoding.
const MIN_SIZE = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8];
const MAX_ARRAY_DEPTH = 64;
const MAX_DIMS = 4;

const utf8 = new TextDecoder('utf-8');

/** A key or tensor name for a message, cut short when a corrupt file makes it huge. */
function quoted(name: string): string {
  return `'${name.length > 80 ? `${name.slice(0, 80)}...` : name}'`;
}

class Reader {
  pos = 0;
  /** What is being read, for messages: "metadata key 'x'", "tensor 'y'". */
  ctx = 'header';
  readonly view: DataView;

  constructor(readonly bytes: Uint8Array, readonly path: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  fail(problem: string, at = this.pos): never {
    throw new FormatError(`${this.path}: ${this.ctx} at byte ${at}: ${problem}`);
  }

  need(n: number, what: string): void {
    if (n > this.bytes.length - this.pos) {
      this.fail(`${what} (${n} bytes) runs past the end of the file (${this.bytes.length} bytes)`);
    }
  }

  u8(what: string): number {
    this.need(1, what);
    return this.bytes[this.pos++];
  }

  u32(what: string): number {
    this.need(4, what);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  /** A u64 that must fit a safe integer (lengths, counts, dims, offsets). */
  size(what: string): number {
    this.need(8, what);
    const lo = this.view.getUint32(this.pos, true);
    const hi = this.view.getUint32(this.pos + 4, true);
    if (hi >= 0x200000) this.fail(`${what} ${this.view.getBigUint64(this.pos, true)} is too large`);
    this.pos += 8;
    return hi * 2 ** 32 + lo;
  }

  /** An element count, checked against the bytes left given each element takes >= minBytes. */
  count(what: string, minBytes: number): number {
    const at = this.pos;
    const n = this.size(what);
    const left = this.bytes.length - this.pos;
    if (n * minBytes > left) {
      this.fail(`${what} ${n} needs at least ${n * minBytes} bytes but only ${left} remain`, at);
    }
    return n;
  }

  string(what: string): string {
    const at = this.pos;
    const len = this.size(`${what} length`);
    if (len > this.bytes.length - this.pos) {
      this.fail(`${what} of ${len} bytes runs past the end of the file (${this.bytes.length} bytes)`, at);
    }
    const start = this.pos;
    this.pos += len;
    return decodeString(this.bytes, start, len);
  }
}

// Short ASCII strings (most tokenizer entries) skip TextDecoder; anything else decodes as UTF-8,
// invalid sequences becoming U+FFFD as in llama.cpp, which does not validate either.
function decodeString(b: Uint8Array, start: number, len: number): string {
  if (len <= 32) {
    let s = '';
    for (let i = start; i < start + len; i++) {
      const c = b[i];
      if (c >= 0x80) return utf8.decode(b.subarray(start, start + len));
      s += String.fromCharCode(c);
    }
    return s;
  }
  return utf8.decode(b.subarray(start, start + len));
}

function readValue(r: Reader, type: number, depth: number): GgufValue {
  const v = r.view;
  const at = r.pos;
  switch (type) {
    case 0: return r.u8('u8 value');
    case 1: r.need(1, 'i8 value'); r.pos += 1; return v.getInt8(at);
    case 2: r.need(2, 'u16 value'); r.pos += 2; return v.getUint16(at, true);
    case 3: r.need(2, 'i16 value'); r.pos += 2; return v.getInt16(at, true);
    case 4: return r.u32('u32 value');
    case 5: r.need(4, 'i32 value'); r.pos += 4; return v.getInt32(at, true);
    case 6: r.need(4, 'f32 value'); r.pos += 4; return v.getFloat32(at, true);
    case 7: {
      const b = r.u8('bool value');
      if (b > 1) r.fail(`bool value is ${b}, expected 0 or 1`, at);
      return b === 1;
    }
    case 8: return r.string('string value');
    case 9: return readArray(r, depth);
    case 10: {
      r.need(8, 'u64 value');
      r.pos += 8;
      const x = v.getBigUint64(at, true);
      return x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x;
    }
    case 11: {
      r.need(8, 'i64 value');
      r.pos += 8;
      const x = v.getBigInt64(at, true);
      return x <= BigInt(Number.MAX_SAFE_INTEGER) && x >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(x) : x;
    }
    case 12: r.need(8, 'f64 value'); r.pos += 8; return v.getFloat64(at, true);
    default: return r.fail(`unknown metadata value type ${type}`);
  }
}

function readArray(r: Reader, depth: number): GgufValue[] {
  if (depth >= MAX_ARRAY_DEPTH) r.fail(`arrays nested deeper than ${MAX_ARRAY_DEPTH}`);
  const typeAt = r.pos;
  const type = r.u32('array element type');
  if (!(type < MIN_SIZE.length)) r.fail(`unknown array element type ${type}`, typeAt);
  const n = r.count('array length', MIN_SIZE[type]);
  const out: GgufValue[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = readValue(r, type, depth + 1);
  return out;
}

function readTensorInfo(r: Reader, index: number): { name: string; ne: number[]; type: number; rel: number } {
  r.ctx = `tensor #${index}`;
  const name = r.string('tensor name');
  r.ctx = `tensor ${quoted(name)}`;
  const dimsAt = r.pos;
  const nDims = r.u32('dimension count');
  if (nDims < 1 || nDims > MAX_DIMS) r.fail(`has ${nDims} dimensions, expected 1 to ${MAX_DIMS}`, dimsAt);
  const ne: number[] = [];
  let elements = 1;
  for (let d = 0; d < nDims; d++) {
    const at = r.pos;
    const n = r.size(`dimension ${d}`);
    if (n === 0) r.fail(`dimension ${d} is 0`, at);
    elements *= n;
    if (!Number.isSafeInteger(elements)) r.fail(`element count overflows (dimensions ${[...ne, n].join(' x ')})`, at);
    ne.push(n);
  }
  const typeAt = r.pos;
  const type = r.u32('tensor type');
  const info = GGML_TYPES[type];
  if (!info) r.fail(`unknown ggml tensor type ${type}`, typeAt);
  if (ne[0] % info.blockSize !== 0) {
    r.fail(`row length ${ne[0]} is not a multiple of the ${info.name} block size ${info.blockSize}`, dimsAt);
  }
  const rel = r.size('data offset');
  return { name, ne, type, rel };
}

/** Parses a GGUF file held in memory. `path` is used only in error messages. */
export function parseGguf(bytes: Uint8Array, path = '<memory>'): GgufFile {
  const r: Reader = new Reader(bytes, path); // annotated so r.fail() narrows types (never)
  r.need(4, 'magic');
  if (bytes[0] !== 0x47 || bytes[1] !== 0x47 || bytes[2] !== 0x55 || bytes[3] !== 0x46) {
    const got = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
    r.fail(`not a GGUF file: magic is ${got}, expected 47 47 55 46 ("GGUF")`, 0);
  }
  r.pos = 4;
  const version = r.u32('version');
  if (version === 1) r.fail('GGUF version 1 (32-bit counts) is not supported; re-convert the model to version 3', 4);
  if (version !== 2 && version !== 3) {
    const swapped = r.view.getUint32(4, false);
    const hint = swapped === 2 || swapped === 3 ? ' (a big-endian GGUF file? only little-endian is supported)' : '';
    r.fail(`unsupported GGUF version ${version}, expected 2 or 3${hint}`, 4);
  }
  // smallest tensor info: empty name, 1 dim, type, offset = 8 + 4 + 8 + 4 + 8 bytes
  const tensorCount = r.count('tensor count', 32);
  // smallest metadata entry: empty key, type, 1-byte value = 8 + 4 + 1 bytes
  const kvCount = r.count('metadata count', 13);

  const metadata: Record<string, GgufValue> = {};
  let alignAt = 0;
  for (let i = 0; i < kvCount; i++) {
    r.ctx = `metadata entry #${i}`;
    const keyAt = r.pos;
    const key = r.string('key');
    r.ctx = `metadata key ${quoted(key)}`;
    if (Object.prototype.hasOwnProperty.call(metadata, key)) r.fail('duplicate key', keyAt);
    const type = r.u32('value type');
    if (key === 'general.alignment') alignAt = r.pos;
    // defineProperty: a key named '__proto__' must stay a plain entry
    Object.defineProperty(metadata, key, { value: readValue(r, type, 0), enumerable: true, writable: true, configurable: true });
  }

  r.ctx = "metadata key 'general.alignment'";
  let alignment = 32;
  if (Object.prototype.hasOwnProperty.call(metadata, 'general.alignment')) {
    const a = metadata['general.alignment'];
    if (typeof a !== 'number' || !Number.isInteger(a) || a <= 0 || a > 2 ** 30 || (a & (a - 1)) !== 0) {
      r.fail(`alignment ${String(a)} is not a power of two`, alignAt);
    }
    alignment = a;
  }

  const raw: ReturnType<typeof readTensorInfo>[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const at = r.pos;
    const t = readTensorInfo(r, i);
    if (names.has(t.name)) r.fail('duplicate tensor name', at);
    names.add(t.name);
    raw.push(t);
  }
  const dataOffset = Math.ceil(r.pos / alignment) * alignment;

  const tensors: GgufTensorInfo[] = raw.map(({ name, ne, type, rel }) => {
    const info = GGML_TYPES[type];
    const elements = ne.reduce((a, b) => a * b, 1);
    const byteLength = (elements / info.blockSize) * info.typeSize;
    const offset = dataOffset + rel;
    const where = `tensor ${quoted(name)} data [offset ${offset}, ${byteLength} bytes]`;
    if (rel % alignment !== 0) {
      throw new FormatError(`${path}: ${where} is not aligned to ${alignment} bytes (relative offset ${rel})`);
    }
    if (offset + byteLength > bytes.length) {
      throw new FormatError(`${path}: ${where} runs past the end of the file (${bytes.length} bytes)`);
    }
    return { name, shape: ne.slice().reverse(), type, typeName: ggmlTypeName(type), offset, byteLength };
  });

  return { path, version, alignment, dataOffset, metadata, tensors, bytes };
}

interface FsLike {
  readFileSync(p: string): Uint8Array;
}

/** Reads and parses a GGUF file (needs a runtime with a file system, e.g. Node >= 20.16). */
export function readGguf(path: string): GgufFile {
  const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  const fs = proc?.getBuiltinModule?.('node:fs') as FsLike | undefined;
  if (!fs) throw new FormatError(`${path}: no file system in this runtime (Node >= 20.16 has one); read the bytes yourself and call parseGguf`);
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(path);
  } catch (err) {
    throw new FormatError(`${path}: cannot read the file: ${(err as Error).message}`);
  }
  return parseGguf(bytes, path);
}

const indexes = new WeakMap<GgufFile, Map<string, GgufTensorInfo>>();

/** The tensor's info; FormatError naming the file when there is no such tensor. */
export function ggufTensorInfo(file: GgufFile, name: string): GgufTensorInfo {
  let index = indexes.get(file);
  if (!index) {
    index = new Map(file.tensors.map((t) => [t.name, t]));
    indexes.set(file, index);
  }
  const info = index.get(name);
  if (!info) throw new FormatError(`${file.path}: no tensor named '${name}' (the file has ${file.tensors.length} tensors)`);
  return info;
}

/**
 * The tensor's values as f32, row-major. F32 data at a 4-byte aligned address is returned as a
 * zero-copy view of file.bytes (writes to it change the file's bytes).
 */
export function ggufTensor(file: GgufFile, name: string): Float32Array {
  const t = ggufTensorInfo(file, name);
  const count = t.shape.reduce((a, b) => a * b, 1);
  const where = `${file.path}: tensor '${name}' (${t.typeName}, offset ${t.offset})`;
  if (t.offset + t.byteLength > file.bytes.length) throw new FormatError(`${where}: data runs past the end of the file`);
  return dequantizeGgml(t.type, file.bytes.subarray(t.offset, t.offset + t.byteLength), count, where);
}

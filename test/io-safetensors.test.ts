// safetensors: round trips per dtype, a hand-built file checked byte by byte against the spec,
// sharded directories, atomic writes, every validation error, and fuzzed files that must parse or
// throw FormatError.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { FormatError, ShapeError, ValueError } from '../ts/errors.js';
import { decodeBf16, decodeF16, encodeBf16, encodeF16 } from '../ts/io/half.js';
import { withAtomicFile, writeFileAtomic } from '../ts/io/atomic.js';
import {
  encodeSafetensors, parseSafetensors, readSafetensors, readSafetensorsDir, safetensorsTensor, writeSafetensors,
  type SafetensorsDType, type TensorToWrite,
} from '../ts/io/safetensors.js';

const enc = new TextEncoder();
const bits = (a: Float32Array) => new Uint32Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** What reading back a tensor stored as `dtype` must give. */
function stored(data: Float32Array, dtype: SafetensorsDType): Float32Array {
  if (dtype === 'F16') return decodeF16(encodeF16(data));
  if (dtype === 'BF16') return decodeBf16(encodeBf16(data));
  return data;
}

/** A file from a header string taken as is (no padding) and raw data bytes. */
function rawFile(header: string, data: Uint8Array | number = 0): Uint8Array {
  const h = enc.encode(header);
  const d = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + h.length + d.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(d, 8 + h.length);
  return out;
}

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'quantlora-st-'));
}

const tensorArb = fc.record({
  shape: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 3 }),
  dtype: fc.constantFrom<SafetensorsDType>('F32', 'F16', 'BF16'),
}).chain(({ shape, dtype }) => fc.float32Array({ minLength: numel(shape), maxLength: numel(shape) }).map((data) => ({ shape, dtype, data })));

const filesArb = fc.uniqueArray(fc.string({ maxLength: 12 }).filter((s) => s !== '__metadata__'), { maxLength: 5 })
  .chain((names) => fc.tuple(fc.constant(names), fc.array(tensorArb, { minLength: names.length, maxLength: names.length })))
  .map(([names, ts]) => names.map((name, i): TensorToWrite => ({ name, ...ts[i] })));

const metaArb = fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 3, noNullPrototype: true });

test('round trip: F32 exact, F16/BF16 rounded as half.ts rounds, shapes, names and metadata kept', () => {
  fc.assert(fc.property(filesArb, metaArb, (tensors, metadata) => {
    const bytes = encodeSafetensors(tensors, metadata);
    const file = parseSafetensors(bytes, 'rt.safetensors');
    assert.deepEqual(file.metadata, Object.keys(metadata).length ? metadata : {});
    assert.deepEqual([...file.entries.keys()].sort(), tensors.map((t) => t.name).sort());
    for (const t of tensors) {
      const e = file.entries.get(t.name)!;
      assert.equal(e.dtype, t.dtype);
      assert.deepEqual(e.shape, t.shape);
      assert.deepEqual(bits(safetensorsTensor(file, t.name)), bits(stored(t.data, t.dtype!)));
    }
    assert.equal((new DataView(bytes.buffer).getUint32(0, true) + 8) % 8, 0, 'data starts 8-byte aligned');
  }), { numRuns: 150 });
});

test('writeSafetensors writes the same bytes as encodeSafetensors (multi-chunk F16/BF16 too) and reads back', () => {
  const dir = tempDir();
  try {
    const n = (1 << 20) + 37; // more than one conversion chunk
    const big = new Float32Array(n);
    for (let i = 0; i < n; i++) big[i] = Math.sin(i) * 1000;
    const tensors: TensorToWrite[] = [
      { name: 'h', shape: [n], data: big, dtype: 'F16' },
      { name: 'b', shape: [n], data: big, dtype: 'BF16' },
      { name: 'f', shape: [1, n], data: big },
    ];
    const path = join(dir, 'model.safetensors');
    writeSafetensors(path, tensors, { format: 'pt' });
    assert.deepEqual(new Uint8Array(readFileSync(path)), encodeSafetensors(tensors, { format: 'pt' }));
    const file = readSafetensors(path);
    assert.deepEqual(file.metadata, { format: 'pt' });
    for (const t of tensors) assert.deepEqual(bits(safetensorsTensor(file, t.name)), bits(stored(t.data, t.dtype ?? 'F32')));
    assert.deepEqual(readdirSync(dir), ['model.safetensors']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a hand-built file matches the spec byte by byte', () => {
  const bytes = encodeSafetensors([{ name: 'a', shape: [2], data: new Float32Array([1, -2]) }], { format: 'pt' });
  const json = '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
  const padded = Math.ceil(json.length / 8) * 8;
  const expected = [
    padded & 0xff, padded >> 8, 0, 0, 0, 0, 0, 0, // u64 little-endian header length
    ...enc.encode(json), ...new Array(padded - json.length).fill(0x20), // JSON padded with spaces
    0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0, // 1.0f, -2.0f little-endian
  ];
  assert.deepEqual([...bytes], expected);
});

test('reads a file built by hand: F16, BF16, unaligned F32 (copied) and aligned F32 (a view)', () => {
  // header 92 bytes, unpadded: data starts at 100, so the F32 tensor at data offset 6 is unaligned
  const header = '{"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"y":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]},"z":{"dtype":"F32","shape":[1,1],"data_offsets":[6,10]}}';
  const data = new Uint8Array([0x00, 0x3c, 0x00, 0xc0, 0x00, 0x3f, 0x00, 0x00, 0x40, 0x40]);
  const file = parseSafetensors(rawFile(header, data), 'hand.safetensors');
  assert.deepEqual([...safetensorsTensor(file, 'x')], [1, -2]);
  assert.deepEqual([...safetensorsTensor(file, 'y')], [0.5]);
  assert.deepEqual([...safetensorsTensor(file, 'z')], [3]);
  assert.deepEqual(file.metadata, {});
  assert.equal(file.entries.get('z')!.begin, 8 + enc.encode(header).length + 6);

  const aligned = parseSafetensors(encodeSafetensors([{ name: 'w', shape: [3], data: new Float32Array([1, 2, 3]) }]));
  const w = safetensorsTensor(aligned, 'w');
  assert.equal(w.buffer, aligned.bytes.buffer, 'aligned F32 is a zero-copy view');
  assert.deepEqual([...w], [1, 2, 3]);
});

test('empty files and zero-sized tensors are valid', () => {
  assert.equal(parseSafetensors(rawFile('{}')).entries.size, 0);
  assert.deepEqual(parseSafetensors(rawFile('{"__metadata__":null}')).metadata, {});
  const file = parseSafetensors(encodeSafetensors([
    { name: 'e', shape: [0, 4], data: new Float32Array(0) },
    { name: 'a', shape: [], data: new Float32Array([7]) },
    { name: 'f', shape: [3, 0], data: new Float32Array(0), dtype: 'BF16' },
  ]));
  assert.deepEqual([...safetensorsTensor(file, 'a')], [7]);
  assert.equal(safetensorsTensor(file, 'e').length, 0);
  assert.equal(safetensorsTensor(file, 'f').length, 0);
});

test('every malformed file is a FormatError naming the file, the tensor and the problem', () => {
  const t = (dtype: string, shape: unknown, offsets: unknown) => JSON.stringify({ dtype, shape, data_offsets: offsets });
  const bigLen = new Uint8Array(16);
  new DataView(bigLen.buffer).setBigUint64(0, 200_000_000n, true);
  const hugeLen = new Uint8Array(16);
  new DataView(hugeLen.buffer).setBigUint64(0, 2n ** 63n + 5n, true);
  const pastEnd = rawFile('{}');
  new DataView(pastEnd.buffer).setBigUint64(0, 3n, true);
  const badUtf8 = rawFile('{"a":1}');
  badUtf8[10] = 0xff;
  const cases: [string, Uint8Array, RegExp][] = [
    ['short', new Uint8Array(5), /too short/],
    ['100 MB', bigLen, /100 MB/],
    ['2^63', hugeLen, /100 MB/],
    ['past end', pastEnd, /past the end of the file/],
    ['utf8', badUtf8, /UTF-8/],
    ['bom', rawFile('\ufeff{}'), /start with/],
    ['json', rawFile('{"a": '), /not valid JSON/],
    ['array', rawFile('[]'), /start with/],
    ['entry', rawFile('{"w":[1,2]}'), /"w".*not an object/],
    ['dtype', rawFile(`{"w":{"shape":[1],"data_offsets":[0,4]}}`, 4), /"w".*dtype/],
    ['shape', rawFile(`{"w":{"dtype":"F32","data_offsets":[0,4]}}`, 4), /"w".*shape/],
    ['offsets', rawFile(`{"w":{"dtype":"F32","shape":[1]}}`, 4), /"w".*data_offsets/],
    ['offsets fraction', rawFile(`{"w":${t('F32', [1], [0, 4.5])}}`, 5), /"w".*not non-negative integers/],
    ['offsets string', rawFile(`{"w":${t('F32', [1], ['0', 4])}}`, 4), /"w".*not non-negative integers/],
    ['offsets negative', rawFile(`{"w":${t('F32', [1], [-4, 0])}}`, 4), /"w".*not non-negative integers/],
    ['offsets triple', rawFile(`{"w":${t('F32', [1], [0, 4, 8])}}`, 4), /"w".*pair/],
    ['begin > end', rawFile(`{"w":${t('F32', [0], [4, 0])}}`, 4), /"w".*begin 4 > end 0/],
    ['end past data', rawFile(`{"w":${t('F32', [2], [0, 8])}}`, 4), /"w".*past the end of the data/],
    ['byte length', rawFile(`{"w":${t('F32', [3], [0, 8])}}`, 8), /"w".*8 bytes, but F32 \[3\] needs 12/],
    ['f16 byte length', rawFile(`{"w":${t('F16', [3], [0, 4])}}`, 4), /"w".*needs 6/],
    ['unknown dtype', rawFile(`{"w":${t('Q4', [1], [0, 1])}}`, 1), /"w".*unknown dtype "Q4"/],
    ['dtype not a string', rawFile(`{"w":{"dtype":32,"shape":[1],"data_offsets":[0,4]}}`, 4), /"w".*dtype is missing or not a string/],
    ['sub-byte boundary', rawFile(`{"w":${t('F4', [3], [0, 2])}}`, 2), /"w".*F4 \[3\] does not end on a byte boundary/],
    ['negative dim', rawFile(`{"w":${t('F32', [-1, -4], [0, 16])}}`, 16), /"w".*negative dimension/],
    ['fraction dim', rawFile(`{"w":${t('F32', [1.5], [0, 4])}}`, 4), /"w".*not a non-negative integer/],
    ['huge dim', rawFile(`{"w":${t('F32', [1e300], [0, 4])}}`, 4), /"w".*not a non-negative integer/],
    ['overlap', rawFile(`{"a":${t('F32', [2], [0, 8])},"b":${t('F32', [1], [4, 8])}}`, 8), /"b".*overlaps tensor "a"/],
    ['overlap empty', rawFile(`{"a":${t('F32', [2], [0, 8])},"b":${t('F32', [0], [4, 4])}}`, 8), /"b".*overlaps/],
    ['duplicate range', rawFile(`{"a":${t('F32', [1], [0, 4])},"b":${t('F32', [1], [0, 4])}}`, 4), /overlaps/],
    ['gap', rawFile(`{"a":${t('F32', [1], [0, 4])},"b":${t('F32', [1], [8, 12])}}`, 12), /bytes 4\.\.8 before tensor "b"/],
    ['gap at start', rawFile(`{"a":${t('F32', [1], [4, 8])}}`, 8), /bytes 0\.\.4 before tensor "a"/],
    ['tail', rawFile(`{"a":${t('F32', [1], [0, 4])}}`, 6), /bytes 4\.\.6 after the last tensor/],
    ['data without tensors', rawFile('{}', 2), /bytes 0\.\.2 after/],
    ['metadata value', rawFile('{"__metadata__":{"k":1}}'), /__metadata__ value of "k"/],
    ['metadata array', rawFile('{"__metadata__":["k"]}'), /__metadata__ is not an object/],
  ];
  for (const [what, bytes, msg] of cases) {
    assert.throws(() => parseSafetensors(bytes, 'bad.safetensors'), (e: unknown) => {
      assert.ok(e instanceof FormatError, `${what}: ${String(e)}`);
      assert.match(e.message, /^bad\.safetensors: /, what);
      assert.match(e.message, msg, what);
      return true;
    }, what);
  }
});

test('other dtypes parse (sub-byte ones sized in bits), and reading them is a FormatError naming file and tensor', () => {
  const header = JSON.stringify({
    ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] },
    mask: { dtype: 'U8', shape: [3], data_offsets: [16, 19] },
    d: { dtype: 'F64', shape: [1], data_offsets: [19, 27] },
    q: { dtype: 'F4', shape: [2], data_offsets: [27, 28] }, // two 4-bit values in one byte
  });
  const file = parseSafetensors(rawFile(header, 28), 'ints.safetensors');
  for (const name of ['ids', 'mask', 'd', 'q']) {
    assert.throws(() => safetensorsTensor(file, name), (e: unknown) =>
      e instanceof FormatError && e.message.startsWith('ints.safetensors: ') && e.message.includes(`"${name}"`) && /unsupported dtype/.test(e.message));
  }
  assert.throws(() => safetensorsTensor(file, 'nope'), FormatError);
});

test('writing refuses bad tensors before creating any file', () => {
  const dir = tempDir();
  try {
    const path = join(dir, 'x.safetensors');
    const d = new Float32Array(4);
    assert.throws(() => writeSafetensors(path, [{ name: 'a', shape: [3], data: d }]), ShapeError);
    assert.throws(() => writeSafetensors(path, [{ name: 'a', shape: [-1, -4], data: d }]), ShapeError);
    assert.throws(() => writeSafetensors(path, [{ name: 'a', shape: [4], data: d }, { name: 'a', shape: [4], data: d }]), ValueError);
    assert.throws(() => writeSafetensors(path, [{ name: '__metadata__', shape: [4], data: d }]), ValueError);
    assert.throws(() => writeSafetensors(path, [{ name: 'a', shape: [4], data: d, dtype: 'I8' as SafetensorsDType }]), ValueError);
    assert.throws(() => writeSafetensors(path, [], { k: 1 as unknown as string }), ValueError);
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('atomic writes: a writer that throws midway leaves no file and no temp file; the old file survives', () => {
  const dir = tempDir();
  try {
    const path = join(dir, 'out.bin');
    assert.throws(() => withAtomicFile(path, (write) => {
      write(new Uint8Array(1000).fill(1));
      write('half');
      throw new Error('boom');
    }), /boom/);
    assert.deepEqual(readdirSync(dir), []);

    writeFileAtomic(path, 'old');
    assert.throws(() => withAtomicFile(path, (write) => { write('new, partial'); throw new Error('boom'); }), /boom/);
    assert.equal(readFileSync(path, 'utf8'), 'old');
    assert.deepEqual(readdirSync(dir), ['out.bin']);

    writeFileAtomic(path, new Uint8Array([1, 2, 3]));
    assert.deepEqual([...readFileSync(path)], [1, 2, 3]);
    withAtomicFile(path, (write) => { write('a'); write(new Uint8Array([0x62])); });
    assert.equal(readFileSync(path, 'utf8'), 'ab');
    assert.deepEqual(readdirSync(dir), ['out.bin']);

    assert.throws(() => writeFileAtomic(join(dir, 'missing', 'x'), 'x'), /ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('checkpoint directories: single file, sharded index with lazy shards, and their errors', () => {
  const dir = tempDir();
  try {
    const a = new Float32Array([1, 2, 3, 4, 5, 6]);
    const b = new Float32Array([0.5, -0.25]);
    const c = new Float32Array([9]);
    writeSafetensors(join(dir, 'model-00001-of-00002.safetensors'), [{ name: 'a', shape: [2, 3], data: a }, { name: 'b', shape: [2], data: b, dtype: 'BF16' }]);
    writeSafetensors(join(dir, 'model-00002-of-00002.safetensors'), [{ name: 'c', shape: [1], data: c, dtype: 'F16' }]);
    const index = (map: Record<string, string>) => writeFileSync(join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: { total_size: 34 }, weight_map: map }));
    index({ a: 'model-00001-of-00002.safetensors', b: 'model-00001-of-00002.safetensors', c: 'model-00002-of-00002.safetensors' });

    const ck = readSafetensorsDir(dir);
    assert.deepEqual(ck.names(), ['a', 'b', 'c']);
    assert.ok(ck.has('c') && !ck.has('d'));
    assert.deepEqual(ck.shape('a'), [2, 3]);
    assert.deepEqual([...ck.tensor('a')], [...a]);
    assert.deepEqual([...ck.tensor('b')], [...b]);
    assert.deepEqual([...ck.tensor('c')], [9]);
    assert.throws(() => ck.tensor('d'), FormatError);

    index({ a: 'model-00002-of-00002.safetensors' });
    assert.throws(() => readSafetensorsDir(dir).tensor('a'), /model-00002-of-00002.safetensors: no tensor "a", though .*index\.json puts it there/);
    index({ a: 'model-00003-of-00003.safetensors' });
    assert.throws(() => readSafetensorsDir(dir).tensor('a'), /shard model-00003-of-00003.safetensors .* is missing/);
    index({ a: '../model.safetensors' });
    assert.throws(() => readSafetensorsDir(dir), (e: unknown) => e instanceof FormatError && /"a" maps to "..\/model.safetensors"/.test(e.message));
    writeFileSync(join(dir, 'model.safetensors.index.json'), '{"weight_map": ');
    assert.throws(() => readSafetensorsDir(dir), (e: unknown) => e instanceof FormatError && /index\.json: not valid JSON/.test(e.message));
    writeFileSync(join(dir, 'model.safetensors.index.json'), '{}');
    assert.throws(() => readSafetensorsDir(dir), /no "weight_map"/);

    rmSync(join(dir, 'model.safetensors.index.json'));
    assert.throws(() => readSafetensorsDir(dir), (e: unknown) => e instanceof FormatError && /neither model\.safetensors/.test(e.message));
    writeSafetensors(join(dir, 'model.safetensors'), [{ name: 'w', shape: [1, 1], data: c }]);
    const single = readSafetensorsDir(dir);
    assert.deepEqual(single.names(), ['w']);
    assert.deepEqual(single.shape('w'), [1, 1]);
    assert.deepEqual([...single.tensor('w')], [9]);
    assert.deepEqual(readSafetensorsDir(join(dir, 'model.safetensors')).names(), ['w']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- fuzz: any mutation of a valid file parses (and every tensor reads or is refused) or throws FormatError

function baseFile(): Uint8Array {
  const valid = encodeSafetensors([
    { name: 'w', shape: [3, 2], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
    { name: 'h', shape: [5], data: new Float32Array([0.1, 0.2, 0.3, 0.4, 0.5]), dtype: 'F16' },
    { name: 'b', shape: [2, 2], data: new Float32Array([-1, 1, -2, 2]), dtype: 'BF16' },
    { name: 'e', shape: [0, 3], data: new Float32Array(0) },
  ], { format: 'pt' });
  // add an I64 tensor by hand: the writer only writes floats
  const file = parseSafetensors(valid);
  const header = JSON.parse(new TextDecoder().decode(valid.subarray(8, file.entries.get('w')!.begin)));
  const dataLen = valid.length - file.entries.get('w')!.begin;
  header.ids = { dtype: 'I64', shape: [2], data_offsets: [dataLen, dataLen + 16] };
  const data = new Uint8Array(dataLen + 16);
  data.set(valid.subarray(valid.length - dataLen));
  return rawFile(JSON.stringify(header), data);
}

function parsesOrFormatError(bytes: Uint8Array): void {
  try {
    const file = parseSafetensors(bytes, 'fuzz.safetensors');
    for (const [name, e] of file.entries) {
      assert.ok(e.begin >= 0 && e.begin <= e.end && e.end <= bytes.length);
      try {
        const v = safetensorsTensor(file, name);
        assert.equal(v.length, numel(e.shape));
      } catch (err) {
        if (!(err instanceof FormatError) || !err.message.startsWith('fuzz.safetensors: ')) throw err;
      }
    }
  } catch (err) {
    if (!(err instanceof FormatError) || !err.message.startsWith('fuzz.safetensors: ')) throw err;
  }
}

test('fuzz: byte flips, truncation, rewritten header length and rewritten JSON never escape as anything but FormatError', () => {
  const start = Date.now();
  const base = baseFile();
  parseSafetensors(base); // the starting point is valid
  const headerLen = Number(new DataView(base.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(base.subarray(8, 8 + headerLen)));
  const data = base.subarray(8 + headerLen);
  const names = Object.keys(header).filter((k) => k !== '__metadata__');

  // byte flips anywhere, and denser in the header
  fc.assert(fc.property(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean()), { minLength: 1, maxLength: 6 }), (flips) => {
    const m = base.slice();
    for (const [i, v, inHeader] of flips) m[inHeader ? 8 + (i % headerLen) : i % m.length] = v;
    parsesOrFormatError(m);
  }), { numRuns: 600 });

  // truncation and extension
  fc.assert(fc.property(fc.nat({ max: base.length }), fc.uint8Array({ maxLength: 12 }), (n, extra) => {
    parsesOrFormatError(base.subarray(0, n));
    const m = new Uint8Array(base.length + extra.length);
    m.set(base);
    m.set(extra, base.length);
    parsesOrFormatError(m);
  }), { numRuns: 300 });

  // header length rewritten: near the real one, or any u64
  fc.assert(fc.property(fc.oneof(fc.integer({ min: 0, max: base.length + 16 }).map(BigInt), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })), (len) => {
    const m = base.slice();
    new DataView(m.buffer).setBigUint64(0, len, true);
    parsesOrFormatError(m);
  }), { numRuns: 300 });

  // JSON rewritten: offsets near valid ones, or any JSON value in place of offsets, shape or dtype
  const near = fc.integer({ min: -2, max: data.length + 4 });
  const field = fc.oneof(
    fc.record({ key: fc.constant('data_offsets'), value: fc.oneof(fc.tuple(near, near), fc.jsonValue()) }),
    fc.record({ key: fc.constant('shape'), value: fc.oneof(fc.array(fc.integer({ min: -2, max: 8 }), { maxLength: 3 }), fc.jsonValue()) }),
    fc.record({ key: fc.constant('dtype'), value: fc.oneof(fc.constantFrom('F32', 'F16', 'BF16', 'I64', 'U8', 'F64', 'Q4', ''), fc.jsonValue()) }),
  );
  fc.assert(fc.property(fc.array(fc.tuple(fc.nat(names.length - 1), field), { minLength: 1, maxLength: 3 }), fc.option(fc.jsonValue()), (edits, meta) => {
    const h = structuredClone(header);
    for (const [i, { key, value }] of edits) h[names[i]][key] = value;
    if (meta !== null) h.__metadata__ = meta;
    parsesOrFormatError(rawFile(JSON.stringify(h), data));
  }), { numRuns: 600 });

  assert.ok(Date.now() - start < 10_000, `fuzzing took ${Date.now() - start} ms`);
});

test('the io modules in the browser bundle import nothing from node: (they fetch fs when called)', () => {
  for (const f of ['../ts/io/safetensors.ts', '../ts/io/atomic.ts', '../ts/io/hf-config.ts']) {
    const src = readFileSync(new URL(f, import.meta.url), 'utf8');
    assert.doesNotMatch(src, /^import [^;]*from 'node:/m, f);
  }
});

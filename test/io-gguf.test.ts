// GGUF reader and ggml dequantization: bit-exact parity with gguf-py for every type (fixtures from
// scripts/ggml_fixture.py), a synthetic file written here that must parse back exactly, the real
// default model when present, every validation error, and fuzzed headers that must parse or throw
// a FormatError naming the file.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import fc from 'fast-check';
import { FormatError } from '../ts/errors.js';
import { GGML_TYPES, canDequantizeGgml, dequantizeGgml } from '../ts/io/ggml.js';
import { parseGguf, readGguf, ggufTensor, ggufTensorInfo, type GgufFile, type GgufValue } from '../ts/io/gguf.js';
import { testModelPath } from './model-file.js';

const fixture = (name: string) => readFileSync(new URL(`./fixtures/ggml/${name}`, import.meta.url));
const manifest = JSON.parse(fixture('manifest.json').toString('utf8')) as {
  types: Record<string, { type: number; count: number; bytes: number }>;
};
const refValues = (name: string) => {
  const b = fixture(`${name}.f32`);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};
const typeId = (name: string) => Number(Object.keys(GGML_TYPES).find((k) => GGML_TYPES[Number(k)].name === name));

function assertSameValues(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i])) assert.fail(`${what}: element ${i} is ${got[i]}, gguf-py gives ${want[i]}`);
  }
}

// ---- a test-local GGUF writer -------------------------------------------------------------------

/** A typed metadata value: t is the GGUF value type; arrays carry their element type in `of`. */
type TV = { t: number; v: number | bigint | boolean | string } | { t: 9; of: number; v: TV[] };
const U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STR = 8, ARR = 9, U64 = 10, I64 = 11, F64 = 12;
const arr = (of: number, v: TV[]): TV => ({ t: ARR, of, v });

interface TensorSpec { name: string; ne: (number | bigint)[]; type: number; data: Uint8Array; rel?: number | bigint }
interface FileSpec { version?: number; kvs: [string, TV][]; tensors: TensorSpec[]; alignment?: number }

class Bytes {
  out: number[] = [];
  u8(x: number) { this.out.push(x & 255); }
  u32(x: number) { for (let i = 0; i < 4; i++) this.out.push((x >>> (8 * i)) & 255); }
  u64(x: number | bigint) { const b = BigInt.asUintN(64, BigInt(x)); for (let i = 0n; i < 8n; i++) this.out.push(Number((b >> (8n * i)) & 255n)); }
  raw(b: ArrayLike<number>) { for (let i = 0; i < b.length; i++) this.out.push(b[i]); }
  str(s: string) { const b = new TextEncoder().encode(s); this.u64(b.length); this.raw(b); }
  pad(a: number) { while (this.out.length % a) this.out.push(0); }
  value(tv: TV) {
    const dv = new DataView(new ArrayBuffer(8));
    const put = (n: number) => this.raw(new Uint8Array(dv.buffer, 0, n));
    switch (tv.t) {
      case U8: case I8: case BOOL: this.u8(Number(tv.v)); break;
      case U16: case I16: dv.setUint16(0, Number(tv.v) & 0xffff, true); put(2); break;
      case U32: case I32: this.u32(Number(tv.v)); break;
      case F32: dv.setFloat32(0, tv.v as number, true); put(4); break;
      case F64: dv.setFloat64(0, tv.v as number, true); put(8); break;
      case U64: case I64: this.u64(tv.v as bigint); break;
      case STR: this.str(tv.v as string); break;
      case ARR: {
        const a = tv as { of: number; v: TV[] };
        this.u32(a.of); this.u64(a.v.length); a.v.forEach((e) => this.value(e));
      }
    }
  }
}

function writeGguf(spec: FileSpec): Uint8Array {
  const align = spec.alignment ?? 32;
  const w = new Bytes();
  w.raw([0x47, 0x47, 0x55, 0x46]);
  w.u32(spec.version ?? 3);
  w.u64(spec.tensors.length);
  w.u64(spec.kvs.length);
  for (const [k, tv] of spec.kvs) { w.str(k); w.u32(tv.t); w.value(tv); }
  let rel = 0;
  for (const t of spec.tensors) {
    w.str(t.name); w.u32(t.ne.length); t.ne.forEach((d) => w.u64(d)); w.u32(t.type);
    w.u64(t.rel ?? rel);
    rel += Math.ceil(t.data.length / align) * align;
  }
  w.pad(align);
  // data at the default positions (a test's `rel` override lies about them)
  spec.tensors.forEach((t) => { w.pad(align); w.raw(t.data); });
  return Uint8Array.from(w.out);
}

/**
 * Positions of every u64 field in a valid file (`at`), of those that are not string lengths
 * (`structural`: counts, array lengths, dims, offsets), and where the header ends.
 */
function u64Fields(b: Uint8Array): { at: number[]; structural: number[]; end: number } {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const at: number[] = [8, 16];
  const structural: number[] = [8, 16];
  let p = 24;
  const u64 = (isLength = false) => {
    at.push(p);
    if (!isLength) structural.push(p);
    const v = Number(dv.getBigUint64(p, true));
    p += 8;
    return v;
  };
  const str = () => { const n = u64(true); p += n; };
  const SIZE = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];
  const value = (t: number): void => {
    if (t === STR) str();
    else if (t === ARR) { const of = dv.getUint32(p, true); p += 4; const n = u64(); for (let i = 0; i < n; i++) value(of); }
    else p += SIZE[t];
  };
  const nt = Number(dv.getBigUint64(8, true)), nkv = Number(dv.getBigUint64(16, true));
  for (let i = 0; i < nkv; i++) { str(); const t = dv.getUint32(p, true); p += 4; value(t); }
  for (let i = 0; i < nt; i++) { str(); const n = dv.getUint32(p, true); p += 4; for (let d = 0; d < n; d++) u64(); p += 4; u64(); }
  return { at, structural, end: p };
}

// ---- the synthetic file -------------------------------------------------------------------------

const KVS: [string, TV, GgufValue][] = [
  ['general.architecture', { t: STR, v: 'llama' }, 'llama'],
  ['general.alignment', { t: U32, v: 64 }, 64],
  ['t.u8', { t: U8, v: 200 }, 200],
  ['t.i8', { t: I8, v: -5 }, -5],
  ['t.u16', { t: U16, v: 65000 }, 65000],
  ['t.i16', { t: I16, v: -30000 }, -30000],
  ['t.u32', { t: U32, v: 4e9 }, 4e9],
  ['t.i32', { t: I32, v: -2e9 }, -2e9],
  ['t.f32', { t: F32, v: 1.5 }, 1.5],
  ['t.f32.neg0', { t: F32, v: -0 }, -0],
  ['t.true', { t: BOOL, v: 1 }, true],
  ['t.false', { t: BOOL, v: 0 }, false],
  ['t.str.empty', { t: STR, v: '' }, ''],
  ['t.str.utf8', { t: STR, v: 'héllo ✓ 世界 🦙 and a string longer than thirty-two bytes' }, 'héllo ✓ 世界 🦙 and a string longer than thirty-two bytes'],
  ['t.u64.safe', { t: U64, v: 2n ** 53n - 1n }, 2 ** 53 - 1],
  ['t.u64.big', { t: U64, v: 2n ** 64n - 1n }, 2n ** 64n - 1n],
  ['t.i64.min', { t: I64, v: -(2n ** 63n) }, -(2n ** 63n)],
  ['t.i64.small', { t: I64, v: -42n }, -42],
  ['t.f64', { t: F64, v: Math.PI }, Math.PI],
  ['t.arr.u8', arr(U8, [{ t: U8, v: 1 }, { t: U8, v: 2 }, { t: U8, v: 255 }]), [1, 2, 255]],
  ['t.arr.str', arr(STR, [{ t: STR, v: 'a' }, { t: STR, v: '' }, { t: STR, v: 'ü' }]), ['a', '', 'ü']],
  ['t.arr.empty', arr(F32, []), []],
  ['t.arr.nested', arr(ARR, [arr(I32, [{ t: I32, v: -1 }, { t: I32, v: 7 }]), arr(U8, []), arr(ARR, [arr(STR, [{ t: STR, v: 'deep' }])])]),
    [[-1, 7], [], [['deep']]]],
  ['t.arr.bool', arr(BOOL, [{ t: BOOL, v: 1 }, { t: BOOL, v: 0 }]), [true, false]],
  ['__proto__', { t: STR, v: 'just a key' }, 'just a key'],
];

const fromFixture = (type: string, bytes: number) => new Uint8Array(fixture(`${type}.bin`).subarray(0, bytes));
const TENSORS: (TensorSpec & { fixture: string; shape: number[] })[] = [
  { name: 'a', ne: [5, 3], type: 0, data: fromFixture('F32', 60), fixture: 'F32', shape: [3, 5] },
  { name: 'b', ne: [7], type: 1, data: fromFixture('F16', 14), fixture: 'F16', shape: [7] },
  { name: 'blk.0.c', ne: [64, 2], type: 8, data: fromFixture('Q8_0', 4 * 34), fixture: 'Q8_0', shape: [2, 64] },
  { name: 'blk.0.d', ne: [256, 1, 1], type: 12, data: fromFixture('Q4_K', 144), fixture: 'Q4_K', shape: [1, 1, 256] },
  { name: 'e', ne: [32, 2, 2, 1], type: 3, data: fromFixture('Q4_1', 4 * 20), fixture: 'Q4_1', shape: [1, 2, 2, 32] },
  { name: 'f', ne: [4, 3], type: 30, data: fromFixture('BF16', 24), fixture: 'BF16', shape: [3, 4] },
];

const SYNTH = writeGguf({ kvs: KVS.map(([k, tv]) => [k, tv]), tensors: TENSORS, alignment: 64 });

test('fixtures: our dequantization equals gguf-py bit for bit, for every type', () => {
  for (const [name, m] of Object.entries(manifest.types)) {
    assert.equal(GGML_TYPES[m.type].name, name);
    assert.ok(canDequantizeGgml(m.type), name);
    const raw = fixture(`${name}.bin`);
    assert.equal(raw.length, m.bytes);
    assert.equal(m.bytes, (m.count / GGML_TYPES[m.type].blockSize) * GGML_TYPES[m.type].typeSize, `${name} size`);
    assertSameValues(dequantizeGgml(m.type, new Uint8Array(raw), m.count), refValues(name), name);
    // also from an odd address inside a larger buffer (no alignment assumptions)
    const shifted = new Uint8Array(raw.length + 1);
    shifted.set(raw, 1);
    assertSameValues(dequantizeGgml(m.type, shifted.subarray(1), m.count), refValues(name), `${name} (unaligned)`);
  }
  for (const required of ['F32', 'F16', 'BF16', 'F64', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K']) {
    assert.ok(manifest.types[required], `fixture for ${required}`);
  }
});

test('dequantizeGgml: F32 is a zero-copy view when aligned; bad inputs are FormatErrors naming the type', () => {
  const raw = new Uint8Array(fixture('F32.bin'));
  const v = dequantizeGgml(0, raw, 8);
  assert.equal(v.buffer, raw.buffer);
  const bad: [() => unknown, RegExp][] = [
    [() => dequantizeGgml(99, raw, 1, 'here'), /^here: unknown ggml type 99/],
    [() => dequantizeGgml(16, new Uint8Array(66), 256, 'here'), /IQ2_XXS \(16\) is unsupported/],
    [() => dequantizeGgml(8, new Uint8Array(34), 31, 'here'), /31 elements of Q8_0 are not whole blocks of 32/],
    [() => dequantizeGgml(8, new Uint8Array(33), 32, 'here'), /need 34 bytes, got 33/],
  ];
  for (const [fn, re] of bad) assert.throws(fn, (e: unknown) => e instanceof FormatError && re.test(e.message));
  assert.equal(GGML_TYPES[9].typeSize, 36, 'Q8_1 is 36 bytes in ggml');
});

test('a synthetic file parses back exactly: metadata of every type, tensors of several types', () => {
  const f = parseGguf(SYNTH, 'synth.gguf');
  assert.equal(f.version, 3);
  assert.equal(f.alignment, 64);
  assert.equal(f.dataOffset % 64, 0);
  assert.equal(f.dataOffset, Math.ceil(u64Fields(SYNTH).end / 64) * 64);
  const want: Record<string, GgufValue> = {};
  for (const [k, , v] of KVS) Object.defineProperty(want, k, { value: v, enumerable: true, writable: true, configurable: true });
  assert.deepEqual(Object.keys(f.metadata), KVS.map(([k]) => k));
  assert.deepStrictEqual(f.metadata, want);
  assert.equal(Object.getPrototypeOf(f.metadata), Object.prototype);
  assert.equal(f.tensors.length, TENSORS.length);
  for (const t of TENSORS) {
    const info = ggufTensorInfo(f, t.name);
    assert.deepEqual(info.shape, t.shape);
    assert.equal(info.type, t.type);
    assert.equal(info.typeName, GGML_TYPES[t.type].name);
    assert.equal(info.byteLength, t.data.length);
    assert.equal(info.offset % 64, 0);
    assert.deepEqual(SYNTH.subarray(info.offset, info.offset + info.byteLength), t.data);
    const count = t.shape.reduce((a, b) => a * b, 1);
    assertSameValues(ggufTensor(f, t.name), refValues(t.fixture).subarray(0, count), t.name);
  }
  assert.equal(ggufTensor(f, 'a').buffer, SYNTH.buffer, 'aligned F32 is zero-copy');
  const shifted = new Uint8Array(SYNTH.length + 2);
  shifted.set(SYNTH, 2);
  const g = parseGguf(shifted.subarray(2));
  assert.equal(g.path, '<memory>');
  assertSameValues(ggufTensor(g, 'a'), ggufTensor(f, 'a'), 'unaligned F32');
  assert.notEqual(ggufTensor(g, 'a').buffer, shifted.buffer);
  // version 2 and the default alignment
  const v2 = parseGguf(writeGguf({ version: 2, kvs: [], tensors: [TENSORS[0]] }));
  assert.equal(v2.version, 2);
  assert.equal(v2.alignment, 32);
  assert.equal(v2.dataOffset % 32, 0);
});

/** Runs fn, which must throw a FormatError naming `path` and matching `re`. */
function rejects(fn: () => unknown, re: RegExp, path = 'bad.gguf'): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${e}`);
    assert.ok(e.message.startsWith(`${path}: `), `message names the file: ${e.message}`);
    assert.match(e.message, re);
    return true;
  });
}

test('every malformed header is a FormatError naming the file, the key or tensor, and the offset', () => {
  const base = { kvs: [] as [string, TV][], tensors: [TENSORS[0]] };
  const file = (s: Partial<FileSpec>) => writeGguf({ ...base, ...s });
  const parse = (b: Uint8Array) => () => parseGguf(b, 'bad.gguf');
  const patched = (b: Uint8Array, at: number, bytes: number[]) => { const c = b.slice(); c.set(bytes, at); return c; };
  rejects(parse(new Uint8Array([0x47, 0x47])), /magic \(4 bytes\) runs past the end of the file \(2 bytes\)/);
  rejects(parse(patched(SYNTH, 0, [0x47, 0x47, 0x4d, 0x4c])), /not a GGUF file: magic is 47 47 4d 4c/);
  rejects(parse(file({ version: 1 })), /at byte 4: GGUF version 1 \(32-bit counts\) is not supported/);
  rejects(parse(file({ version: 4 })), /unsupported GGUF version 4, expected 2 or 3$/);
  rejects(parse(patched(file({}), 4, [0, 0, 0, 3])), /big-endian/);
  rejects(parse(patched(SYNTH, 8, [0, 0, 0, 0, 0, 0, 0, 0x10])), /tensor count 1152921504606846976 is too large|tensor count .* needs at least/);
  rejects(parse(patched(SYNTH, 16, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0])), /at byte 16: metadata count \d+ needs at least \d+ bytes but only \d+ remain/);
  rejects(parse(file({ kvs: [['k', { t: STR, v: 'abc' }]], tensors: [] }).subarray(0, 46)), /metadata key 'k' at byte 37: string value of 3 bytes runs past the end of the file \(46 bytes\)/);
  const bigArray = file({ kvs: [['big', arr(U8, [])]] });
  rejects(parse(patched(bigArray, 24 + 8 + 3 + 4 + 4, [0, 0, 0, 0, 0, 0, 0, 0x10])), /metadata key 'big' at byte 43: array length 1152921504606846976 is too large/);
  rejects(parse(patched(bigArray, 24 + 8 + 3 + 4 + 4, [0, 0, 0, 0, 1, 0, 0, 0])), /metadata key 'big' at byte 43: array length 4294967296 needs at least 4294967296 bytes/);
  rejects(parse(patched(file({ kvs: [['s', { t: STR, v: 'x' }]] }), 24 + 8 + 1 + 4, [0, 0, 0, 0, 0, 1, 0, 0])), /metadata key 's' at byte 37: string value of 1099511627776 bytes runs past the end/);
  rejects(parse(file({ kvs: [['b', { t: BOOL, v: 2 }]] })), /metadata key 'b' at byte 37: bool value is 2, expected 0 or 1/);
  rejects(parse(file({ kvs: [['x', { t: 13, v: 0 }]] })), /metadata key 'x' at byte 37: unknown metadata value type 13/);
  rejects(parse(file({ kvs: [['x', arr(13, [])]] })), /metadata key 'x' at byte 37: unknown array element type 13/);
  rejects(parse(file({ kvs: [['k', { t: U8, v: 1 }], ['k', { t: U8, v: 2 }]] })), /metadata key 'k' at byte 38: duplicate key/);
  rejects(parse(file({ kvs: [['general.alignment', { t: U32, v: 48 }]] })), /alignment 48 is not a power of two/);
  rejects(parse(file({ kvs: [['general.alignment', { t: STR, v: '32' }]] })), /alignment 32 is not a power of two/);
  let deep: TV = arr(U8, []);
  for (let i = 0; i < 70; i++) deep = arr(ARR, [deep]);
  rejects(parse(file({ kvs: [['deep', deep]] })), /metadata key 'deep' at byte \d+: arrays nested deeper than 64/);
  const t = (o: Partial<TensorSpec>) => ({ ...TENSORS[0], ...o });
  rejects(parse(file({ tensors: [t({ ne: [] })] })), /tensor 'a' at byte 33: has 0 dimensions, expected 1 to 4/);
  rejects(parse(file({ tensors: [t({ ne: [1, 1, 1, 1, 15] })] })), /tensor 'a' at byte 33: has 5 dimensions/);
  rejects(parse(file({ tensors: [t({ ne: [5, 0] })] })), /tensor 'a' at byte 45: dimension 1 is 0/);
  rejects(parse(file({ tensors: [t({ ne: [2 ** 30, 2 ** 30] })] })), /tensor 'a' at byte 45: element count overflows/);
  rejects(parse(file({ tensors: [t({ type: 99 })] })), /tensor 'a' at byte 53: unknown ggml tensor type 99/);
  rejects(parse(file({ tensors: [t({ type: 8, ne: [30, 2] })] })), /tensor 'a' at byte 33: row length 30 is not a multiple of the Q8_0 block size 32/);
  rejects(parse(file({ tensors: [t({ rel: 4 })] })), /tensor 'a' data \[offset \d+, 60 bytes\] is not aligned to 32 bytes \(relative offset 4\)/);
  rejects(parse(file({ tensors: [t({ rel: 64 })] })), /^bad\.gguf: tensor 'a' data \[offset 160, 60 bytes\] runs past the end of the file \(156 bytes\)$/);
  rejects(parse(file({ tensors: [t({ rel: 2n ** 63n })] })), /tensor 'a' at byte 57: data offset 9223372036854775808 is too large/);
  rejects(parse(file({ tensors: [t({}), t({})] })), /tensor 'a' at byte 65: duplicate tensor name/);
  rejects(parse(file({ tensors: [t({ name: 'x'.repeat(100) })] }).subarray(0, 60)), /tensor #0 at byte 24: tensor name of 100 bytes runs past the end of the file \(60 bytes\)/);
  // lookups and reads
  const ok = parseGguf(file({ tensors: [t({}), t({ name: 'iq', type: 16, ne: [256], data: new Uint8Array(66) })] }), 'bad.gguf');
  rejects(() => ggufTensorInfo(ok, 'nope'), /no tensor named 'nope' \(the file has 2 tensors\)/);
  rejects(() => ggufTensor(ok, 'iq'), /tensor 'iq' \(IQ2_XXS, offset \d+\): ggml type IQ2_XXS \(16\) is unsupported/);
  rejects(() => readGguf('/nonexistent/model.gguf'), /cannot read the file: .*ENOENT/, '/nonexistent/model.gguf');
});

// ---- fuzzing ------------------------------------------------------------------------------------

type Mutation =
  | { kind: 'byte'; at: number; value: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'u64'; field: number; value: bigint }
  | { kind: 'count'; field: number; value: bigint }
  | { kind: 'u32'; at: number; value: number };

const HUGE = [0n, 1n, 2n, 31n, 33n, 255n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 60n, 2n ** 63n, 2n ** 64n - 1n];

function mutations(len: number, fields: number[], structural: number[]): fc.Arbitrary<Mutation[]> {
  const u64 = fc.oneof(fc.constantFrom(...HUGE), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: BigInt(len) * 2n }));
  const m: fc.Arbitrary<Mutation> = fc.oneof(
    fc.record({ kind: fc.constant('byte' as const), at: fc.nat(len - 1), value: fc.nat(255) }),
    fc.record({ kind: fc.constant('truncate' as const), at: fc.nat(len) }),
    fc.record({ kind: fc.constant('u64' as const), field: fc.nat(fields.length - 1), value: u64 }),
    fc.record({ kind: fc.constant('count' as const), field: fc.constantFrom(...structural), value: u64 }),
    fc.record({ kind: fc.constant('u32' as const), at: fc.nat(len - 4), value: fc.oneof(fc.nat(40), fc.nat(0xffffffff)) }),
  );
  return fc.array(m, { minLength: 1, maxLength: 3 });
}

function apply(base: Uint8Array, fields: number[], ms: Mutation[]): Uint8Array {
  let b = base.slice();
  const dv = () => new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (const m of ms) {
    if (m.kind === 'byte' && m.at < b.length) b[m.at] = m.value;
    else if (m.kind === 'truncate') b = b.slice(0, m.at);
    else if (m.kind === 'u64' && fields[m.field] + 8 <= b.length) dv().setBigUint64(fields[m.field], m.value, true);
    else if (m.kind === 'count' && m.field + 8 <= b.length) dv().setBigUint64(m.field, m.value, true);
    else if (m.kind === 'u32' && m.at + 4 <= b.length) dv().setUint32(m.at, m.value, true);
  }
  return b;
}

/** Parses (and dequantizes the small tensors of) a mutated file: success or a FormatError naming the file. */
function parsesOrFormatError(bytes: Uint8Array, path: string): void {
  try {
    const f: GgufFile = parseGguf(bytes, path);
    for (const t of f.tensors) if (t.byteLength < 1 << 16) ggufTensor(f, t.name);
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
    if (!e.message.startsWith(`${path}: `)) throw new Error(`error does not name the file: ${e.message}`);
  }
}

function fuzz(base: Uint8Array, path: string, numRuns: number): void {
  const { at: fields, structural } = u64Fields(base);
  fc.assert(fc.property(mutations(base.length, fields, structural), (ms) => parsesOrFormatError(apply(base, fields, ms), path)), {
    numRuns, seed: 20240607, includeErrorInReport: true,
  });
}

test('fuzz: mutated synthetic files parse or throw FormatError, never anything else', { timeout: 20_000 }, () => {
  parsesOrFormatError(SYNTH, 'synth.gguf');
  fuzz(SYNTH, 'synth.gguf', 3000);
  // every truncation point
  for (let n = 0; n < SYNTH.length; n++) parsesOrFormatError(SYNTH.subarray(0, n), 'synth.gguf');
});

const modelPath = testModelPath();

test('fuzz: mutated headers of the real model parse or throw FormatError', { skip: !modelPath && 'default model not present', timeout: 30_000 }, () => {
  const head = new Uint8Array(2 << 20);   // header and the start of token_embd, whose data runs past the end
  const fd = openSync(modelPath!, 'r');
  try { readSync(fd, head, 0, head.length, 0); } finally { closeSync(fd); }
  fuzz(head, 'head.gguf', 80);
  const metaOnly = head.slice(0, u64Fields(head).end);
  new DataView(metaOnly.buffer).setBigUint64(8, 0n, true);   // no tensors: a valid file of real metadata
  assert.equal(parseGguf(metaOnly).tensors.length, 0);
  fuzz(metaOnly, 'meta.gguf', 80);
});

test('the real default model: 272 llama tensors, shapes and values equal gguf-py', { skip: !modelPath && 'default model not present', timeout: 60_000 }, () => {
  const ref = JSON.parse(fixture('model-ref.json').toString('utf8')) as {
    tensor_count: number; architecture: string;
    tensors: Record<string, { type: string; shape: number[]; sha256: string; samples: [number, number][] }>;
  };
  const f = readGguf(modelPath!);
  assert.equal(f.tensors.length, 272);
  assert.equal(ref.tensor_count, 272);
  assert.equal(f.metadata['general.architecture'], 'llama');
  assert.equal((f.metadata['tokenizer.ggml.tokens'] as string[]).length, 49152);
  assert.deepEqual(new Set(f.tensors.map((t) => t.typeName)), new Set(['Q4_1', 'F32', 'Q8_0']));
  assert.deepEqual(ggufTensorInfo(f, 'token_embd.weight').shape, [49152, 576]);
  for (const t of f.tensors) {
    assert.equal(t.typeName, ref.tensors[t.name].type, t.name);
    assert.deepEqual(t.shape, ref.tensors[t.name].shape, t.name);
  }
  // all tensors with QUANTLORA_GGUF_FULL=1 (about 0.5 GB of f32), else a few of each type
  const names = process.env.QUANTLORA_GGUF_FULL === '1' ? f.tensors.map((t) => t.name)
    : ['token_embd.weight', 'blk.0.attn_q.weight', 'blk.0.ffn_down.weight', 'blk.29.ffn_up.weight', 'blk.0.attn_norm.weight', 'output_norm.weight'];
  for (const name of names) {
    const values = ggufTensor(f, name);
    for (const [i, v] of ref.tensors[name].samples) assert.ok(Object.is(values[i], v), `${name}[${i}] = ${values[i]}, gguf-py gives ${v}`);
    const hash = createHash('sha256').update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength)).digest('hex');
    assert.equal(hash, ref.tensors[name].sha256, `${name}: every value equals gguf-py's`);
  }
  assert.equal(ggufTensor(f, 'output_norm.weight').buffer, f.bytes.buffer, 'F32 tensors are zero-copy views');
});

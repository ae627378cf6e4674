// Atomic file writes: the data goes to a temporary file in the target's directory, is fsynced, and
// is renamed over the target. A reader sees the old file or the whole new one, never a partial
// write; on any error the temporary file is removed and the error rethrown.
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';

/** Appends bytes (or a string, as UTF-8) to the file being written. */
export type WriteFn = (chunk: Uint8Array | string) => void;

const encoder = new TextEncoder();

/** The temporary name used next to `path`: `<path>.tmp-<pid>-<random hex>`. */
export function tempPathFor(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
}

/** writeSync may write fewer bytes than asked: loop until the chunk is out. */
function writeAll(fd: number, chunk: Uint8Array): void {
  let off = 0;
  while (off < chunk.length) {
    // at most 1 GiB per call: writeSync's length is limited to 2^31 - 1
    const n = writeSync(fd, chunk, off, Math.min(chunk.length - off, 1 << 30));
    off += n;
  }
}

/**
 * Creates `path` atomically from what `fill` writes: `fill(write, fd)` runs against a temporary
 * file; when it returns, the file is fsynced and renamed over `path`. If `fill` (or any step)
 * throws, the temporary file is removed, `path` is left as it was, and the error is rethrown.
 */
export function withAtomicFile(path: string, fill: (write: WriteFn, fd: number) => void): void {
  const tmp = tempPathFor(path);
  const fd = openSync(tmp, 'wx');
  let open = true;
  try {
    const write: WriteFn = (chunk) => writeAll(fd, typeof chunk === 'string' ? encoder.encode(chunk) : chunk);
    fill(write, fd);
    fsyncSync(fd);
    open = false;
    closeSync(fd);
    renameSync(tmp, path);
  } catch (e) {
    if (open) {
      try { closeSync(fd); } catch { /* already failing: keep the first error */ }
    }
    try { unlinkSync(tmp); } catch { /* gone already */ }
    throw e;
  }
  syncDir(dirname(path));
}

/** Writes `data` to `path` atomically (see withAtomicFile). */
export function writeFileAtomic(path: string, data: Uint8Array | string): void {
  withAtomicFile(path, (write) => write(data));
}

/** Makes the rename durable where the platform allows fsync on a directory (best effort). */
function syncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // not supported here (Windows, some file systems): the rename itself is still atomic
  } finally {
    if (fd !== undefined) try { closeSync(fd); } catch { /* ignore */ }
  }
}

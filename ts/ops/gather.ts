// Embedding lookup: rows of a table picked by integer ids; the backward scatters rows back.

import { record } from '../autograd.js';
import { ShapeError, ValueError, describeShape } from '../errors.js';
import { knownBounds, type Tensor } from '../tensor.js';
import { backendOf, expectDType, out } from './util.js';

/** table [rows, dim], ids i32 [...] -> [..., dim]. */
export function gather(table: Tensor, ids: Tensor): Tensor {
  const be = backendOf('gather', table, ids);
  expectDType('gather', table, 'f32', 'table');
  expectDType('gather', ids, 'i32', 'ids');
  if (table.rank !== 2) throw new ShapeError(`gather: table must be [rows, dim], got ${describeShape(table.shape)}`);
  const [rows, dim] = table.shape;
  // ids made from host data carry their range: no read back (a GPU would wait) when it fits
  const b = knownBounds(ids);
  const idValues = b && b[0] >= 0 && b[1] < rows ? undefined : ids.backend.readSync?.(ids.handle, 'i32', ids.size);
  if (idValues) {
    for (let i = 0; i < idValues.length; i++) {
      if (idValues[i] < 0 || idValues[i] >= rows) throw new ValueError(`gather: id ${idValues[i]} at position ${i} is outside the table's ${rows} rows`);
    }
  }
  const y = out(be, be.gather(table.handle, rows, dim, ids.handle, ids.size), [...ids.shape, dim]);
  return record('gather', [table, ids], y, (g, { inputs: [, i] }) => [
    out(be, be.scatterAddRows(g.handle, i.size, dim, i.handle, rows), [rows, dim]),
    null,
  ]);
}

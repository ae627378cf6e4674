// Linear algebra: exact small SVD/QR in float64 on the host, truncated SVD of tensors on any backend.

export { matrix64, svdSmall, householderQr } from './dense.js';
export type { Matrix64, Svd64 } from './dense.js';
export { truncatedSvd } from './svd.js';
export type { TruncatedSvd, TruncatedSvdOptions } from './svd.js';

// WGSL kernels: quantize and ICQ's search (not yet written: they run on the host for now).

import type { KernelGroup } from './index.js';

export const quantEncodeKernels: KernelGroup = () => ({});

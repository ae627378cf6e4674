// WGSL kernels: transformer (not yet written: every kernel here runs on the host for now).

import type { KernelGroup } from './index.js';

export const transformerKernels: KernelGroup = () => ({});

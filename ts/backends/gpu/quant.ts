// WGSL kernels: quant (not yet written: every kernel here runs on the host for now).

import type { KernelGroup } from './index.js';

export const quantKernels: KernelGroup = () => ({});

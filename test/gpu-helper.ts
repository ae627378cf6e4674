// The gpu backend for tests: the registry's when it found a real adapter, else a software one
// (lavapipe) opened for the test. `skip` is false when there is one, or where
// QUANTLORA_EXPECT_BACKENDS names gpu (CI: a missing adapter must fail, not skip).

import * as q from '../ts/index.js';
import { gpuOptionsFromEnv, openGpuBackend, type GpuBackend } from '../ts/backends/gpu/index.js';

function open(): GpuBackend | string {
  const reg = q.backends().find((s) => s.name === 'gpu');
  if (reg?.available) return q.backendByName('gpu') as GpuBackend;
  try {
    return openGpuBackend({ ...gpuOptionsFromEnv(), allowSoftware: true });
  } catch (e) {
    return (e as Error).message;
  }
}

const opened = open();
/** QUANTLORA_EXPECT_BACKENDS names gpu. */
export const gpuExpected = (process.env.QUANTLORA_EXPECT_BACKENDS ?? '').split(',').includes('gpu');
/** The backend (typed for tests that run only when `gpuSkip` is false). */
export const testGpu = (typeof opened === 'string' ? undefined : opened) as GpuBackend;
export const gpuSkip: string | false = typeof opened === 'string' ? (gpuExpected ? false : `no GPU adapter: ${opened}`) : false;

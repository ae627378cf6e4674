// The native addon for a test file, or why the file skips: it skips only when the addon is not
// built (or predates a kernel the file needs) and QUANTLORA_EXPECT_BACKENDS does not name 'native';
// when it does, a missing addon or kernel throws instead.

import { loadNativeAddon, type NativeAddon } from '../ts/backends/native/addon.js';

/** The addon (undefined when it did not load) and `skip`: false, or the reason for node:test. */
export function nativeAddonForTests(needs?: keyof NativeAddon): { addon: NativeAddon | undefined; skip: string | false } {
  const expectNative = (process.env.QUANTLORA_EXPECT_BACKENDS ?? '').split(',').includes('native');
  let addon: NativeAddon | undefined;
  let loadError = '';
  try {
    addon = loadNativeAddon();
  } catch (e) {
    loadError = (e as Error).message;
  }
  if (!addon) {
    if (expectNative) throw new Error(`QUANTLORA_EXPECT_BACKENDS names native, but the addon did not load: ${loadError}`);
    return { addon, skip: `native addon not built (bash crates/node/build.sh): ${loadError.split('\n')[0]}` };
  }
  if (needs !== undefined && typeof addon[needs] !== 'function') {
    if (expectNative) throw new Error(`the native addon has no ${needs}: rebuild it (bash crates/node/build.sh)`);
    return { addon, skip: `native addon predates ${needs} (rebuild: bash crates/node/build.sh)` };
  }
  return { addon, skip: false };
}

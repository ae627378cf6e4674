// quantlora: quantize LLM linear layers to 2/3/4 bits and train LoRA adapters that compensate.

import './backends/js/index.js';
import './backends/wasm/index.js';

export * from './errors.js';
export type { DType } from './dtype.js';
export type { Backend, BackendInfo, Handle } from './backend.js';
export { registerBackend, removeBackend, setBackend, getBackend, initBackend, backends, backendByName } from './registry.js';
export type { BackendFactory, BackendStatus } from './registry.js';
export {
  Tensor, tensor, zeros, ones, full, randn, rand, tidy, keep, liveBuffers, gaussianArray, rng,
} from './tensor.js';
export type { TensorLike, TensorContainer } from './tensor.js';
export { backward, grad, noGrad, isGradEnabled } from './autograd.js';
export * from './ops/index.js';
export { formats } from './quant/formats.js';
export type { QuantFormat } from './quant/formats.js';
export { QuantizedTensor, quantize, dequantize, dequantizeMatmul } from './quant/api.js';
export { JsBackend } from './backends/js/index.js';
export { WasmBackend, loadWasmBackend, loadWasmBackendSync } from './backends/wasm/index.js';
export { simdSupported } from './backends/wasm/loader.js';
export type { WasmSource } from './backends/wasm/loader.js';

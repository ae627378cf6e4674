// quantlora: quantize LLM linear layers to 2/3/4 bits and train LoRA adapters that compensate.

import './backends/js/index.js';
import './backends/wasm/index.js';
import './backends/native/index.js';
import './backends/gpu/index.js';

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
export { QuantizedTensor, quantize, dequantize, dequantizeMatmul, dequantizeMatmulLowRank, dequantizeMatmulMany } from './quant/api.js';
export { quantizeIcq, codeEntropy, DEFAULT_ICQ, type IcqParams } from './quant/icq.js';
export * from './ops/async.js';
export { JsBackend } from './backends/js/index.js';
export { WasmBackend, loadWasmBackend, loadWasmBackendSync } from './backends/wasm/index.js';
export { NativeBackend } from './backends/native/index.js';
export { GpuBackend } from './backends/gpu/index.js';
export { simdSupported } from './backends/wasm/loader.js';
export type { WasmSource } from './backends/wasm/loader.js';

// models, in-memory formats and evaluation (no file system: these run in browsers too)
export type { LlamaConfig, LlamaFamily } from './nn/config.js';
export { Linear } from './nn/linear.js';
export type { LinearLayer } from './nn/linear.js';
export { LlamaModel, KvCache, PROJECTIONS } from './nn/llama.js';
export type { LlamaBlock, WeightSource, ProjectionName } from './nn/llama.js';
export { generate, argmax, sample } from './nn/generate.js';
export type { GenerateOptions } from './nn/generate.js';
export { perplexity } from './eval/perplexity.js';
export type { PerplexityOptions, PerplexityResult } from './eval/perplexity.js';
export { Tokenizer } from './io/tokenizer.js';
export { parseGguf, ggufTensor, ggufTensorInfo } from './io/gguf.js';
export type { GgufFile, GgufTensorInfo, GgufValue } from './io/gguf.js';
export { dequantizeGgml, GGML_TYPES } from './io/ggml.js';
export { parseSafetensors, safetensorsTensor, encodeSafetensors } from './io/safetensors.js';
export type { SafetensorsFile, SafetensorsEntry, SafetensorsDType, TensorToWrite, BytesToWrite } from './io/safetensors.js';
export { parseHfConfig, toHfConfig } from './io/hf-config.js';
export { f16ToF32, f32ToF16, bf16ToF32, f32ToBf16 } from './io/half.js';
export { encodePeft, applyPeft, ADAPTER_CONFIG, ADAPTER_WEIGHTS } from './io/adapters.js';
export type { PeftAdapter, PeftExportOptions } from './io/adapters.js';
export { encodePacked, decodePacked, PACKED_VERSION } from './io/packed.js';
export type { PackedLoadOptions } from './io/packed.js';

// quantized layers, adapters and the methods (checkpoint files, PEFT and packed files: quantlora/node)
export { QuantLinear } from './nn/quant-linear.js';
export { Lora, groupMean, groupMeanMatrix } from './nn/lora.js';
export type { LoraOptions, LoraInit } from './nn/lora.js';
export type { DenseWeights } from './nn/linear.js';
export { Lwc, lwcFakeQuant, LWC_EPS, LWC_INIT } from './quant/lwc.js';
export type { LwcOptions } from './quant/lwc.js';
export { truncatedSvd, svdSmall, matrix64, householderQr } from './linalg/index.js';
export type { TruncatedSvd, TruncatedSvdOptions, Matrix64, Svd64 } from './linalg/index.js';
export { AdamW, Adam } from './train/optim.js';
export type { ParamGroup, GroupSettings, Gradients, OptimizerState } from './train/optim.js';
export { constantLr, cosineLr } from './train/schedule.js';
export type { LrAt, ScheduleOptions, CosineOptions } from './train/schedule.js';
export { clipGradNorm, gradNorm } from './train/clip.js';
export { NanGuard } from './train/guard.js';
export type { GuardOptions, GuardState } from './train/guard.js';
export { TrainingDivergedError, CheckpointError } from './train/errors.js';
export type { SkippedStep } from './train/errors.js';
export { parseCheckpoint, restoreTensors } from './train/checkpoint.js';
export type { LoadedCheckpoint, CheckpointContents, NamedTensors } from './train/checkpoint.js';
export { loftqInit } from './methods/loftq.js';
export type { LoftqOptions, LoftqResult } from './methods/loftq.js';
export { quantizeModel, rtnLayers, layerSites, quantLayers, adapterParameters, setTraining } from './methods/quantize-model.js';
export type { LayerFactory, LayerSite, RtnOptions } from './methods/quantize-model.js';
export { apiq } from './methods/apiq.js';
export type { ApiqOptions, ApiqReport } from './methods/apiq.js';
export { rilq, finetune, trainAdapters } from './methods/rilq.js';
export type { RilqOptions, AdapterTrainingOptions, TrainingReport } from './methods/rilq.js';
export { calibrationWindows } from './methods/calibration.js';
export type { CalibrationSet, CalibrationOptions } from './methods/calibration.js';
export { runMethod, methodName, INIT_KINDS } from './methods/pipeline.js';
export type { MethodSpec, MethodReport, InitKind } from './methods/pipeline.js';
export { experimentRows, markdownTable, svgPlot, PRESETS } from './methods/experiment.js';
export type { Preset, Row, RowResult } from './methods/experiment.js';

// The shape of a Llama-family decoder (Llama 1-3, Mistral, Qwen2, SmolLM): everything the model
// needs to know, whichever file it came from (GGUF metadata or a Hugging Face config.json).

export type LlamaFamily = 'llama' | 'mistral' | 'qwen2';

export interface LlamaConfig {
  family: LlamaFamily;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  ropeTheta: number;
  rmsNormEps: number;
  maxPositions: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry biases (Qwen2). */
  attentionBias: boolean;
  bosTokenId?: number;
  eosTokenId?: number;
}

// tandem's public API (the package's main export): load a GGUF model, generate and chat
// with streaming, tokenize; every error is a TandemError with a stable code.
export { loadModel, Model } from './model.js';
export { TandemError, type TandemErrorCode } from '../native/errors.js';
export { loadTokenizer, Tokenizer, StreamingDecoder, type DetokenizeOptions } from '../model/tokenizer/index.js';
export { GgufFile } from '../model/gguf.js';
export { describeModel, type ModelDescription, type ModelHyperparams } from '../model/describe.js';
export type {
  ChatMessage,
  ChatOptions,
  CpuKernelsOption,
  DeviceOption,
  EmbeddingPooling,
  EmbedOptions,
  GenerateOptions,
  Generation,
  GenerationChunk,
  GenerationMetrics,
  GenerationResult,
  LoadModelOptions,
  LogprobToken,
  ModelInfo,
  ModelStats,
  PolicyName,
  PolicyStatsView,
  StepInfo,
  StopReason,
  Strategy,
  TokenizeOptions,
  TokenLogprob,
} from './types.js';

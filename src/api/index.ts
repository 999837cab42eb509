// tandem's public API (the package's main export): load a GGUF model, generate and chat
// with streaming, tokenize; every error is a TandemError with a stable code.
export { loadModel, Model } from './model.js';
export { TandemError, type TandemErrorCode } from '../native/errors.js';
export type {
  ChatMessage,
  ChatOptions,
  GenerateOptions,
  Generation,
  GenerationChunk,
  GenerationMetrics,
  GenerationResult,
  LoadModelOptions,
  ModelInfo,
  ModelStats,
  StopReason,
  TokenizeOptions,
} from './types.js';

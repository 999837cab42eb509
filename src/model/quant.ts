// Quant types as TypeScript sees them: GGUF's block formats (ggml-common.h), quantized
// and dequantized natively by tandem's scalar references, byte-compatible with llama.cpp.
import { native } from '../native/binding.js';
import { asTandemError, TandemError } from '../native/errors.js';

/** The types tandem quantizes, dequantizes and dots with, by ggml name. */
export type QuantType =
  | 'f32' | 'f16' | 'bf16'
  | 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1'
  | 'q2_K' | 'q3_K' | 'q4_K' | 'q5_K' | 'q6_K' | 'q8_K' | 'q8_1' | 'mxfp4' | 'iq4_nl' | 'iq4_xs'
  | 'iq2_xxs' | 'iq2_xs' | 'iq2_s' | 'iq3_xxs' | 'iq3_s';

/** A type by ggml name (case-insensitive, e.g. 'q4_K' or 'Q4_K') or by GGUF type id. */
export type QuantTypeRef = QuantType | string | number;

export interface QuantTypeInfo {
  /** GGUF/ggml type id, as stored in a file's tensor table */
  id: number;
  /** ggml's name, e.g. 'q4_K' */
  name: string;
  /** elements per block */
  blockSize: number;
  /** bytes per block */
  typeSize: number;
  /** tandem can quantize, dequantize and dot with it */
  computable: boolean;
  /** the activation type its dot product takes (null when not computable) */
  vecDotType: QuantType | null;
}

function call<T>(f: () => T): T {
  try {
    return f();
  } catch (err) {
    throw asTandemError(err);
  }
}

/** Geometry of any type ggml defines. Throws TDM_BAD_ARGUMENT for an unknown name or id. */
export function typeInfo(type: QuantTypeRef): QuantTypeInfo {
  return call(() => native().typeInfo(type) as QuantTypeInfo);
}

/** The computable types, in id order. */
export function quantTypes(): QuantType[] {
  return call(() => native().quantTypes() as QuantType[]);
}

/** Bytes n elements take (n a whole number of blocks, else TDM_BAD_ARGUMENT). */
export function rowBytes(type: QuantTypeRef, n: number): number {
  const t = typeInfo(type);
  if (!Number.isSafeInteger(n) || n < 0 || n % t.blockSize !== 0) {
    throw new TandemError('TDM_BAD_ARGUMENT', `${t.name}: ${n} elements is not a whole number of ${t.blockSize}-element blocks`);
  }
  return (n / t.blockSize) * t.typeSize;
}

/**
 * Quantizes src (length a multiple of the block size) the way llama.cpp's reference
 * quantizers do (no importance matrix): same input, same bytes. Blocks quantize
 * independently, so a [rows, cols] tensor can be passed whole when cols fills blocks.
 * Throws TDM_BAD_ARGUMENT for a bad length or a non-finite input to a block type,
 * TDM_UNSUPPORTED for a type tandem cannot compute with.
 */
export function quantize(type: QuantTypeRef, src: Float32Array): Uint8Array {
  return call(() => native().quantize(type, src));
}

/** quantize into dst (exactly rowBytes(type, src.length) long); returns the bytes written. */
export function quantizeInto(type: QuantTypeRef, src: Float32Array, dst: Uint8Array): number {
  return call(() => native().quantizeInto(type, src, dst));
}

/**
 * quantize off the event loop, split over `threads` threads (default: every core); the
 * bytes are the same as quantize's. Do not transfer or detach src until it settles.
 */
export async function quantizeAsync(type: QuantTypeRef, src: Float32Array, options: { threads?: number } = {}): Promise<Uint8Array> {
  try {
    return await native().quantizeAsync(type, src, options.threads);
  } catch (err) {
    throw asTandemError(err);
  }
}

/** n elements from bytes (exactly rowBytes(type, n) long), exactly as llama.cpp dequantizes them. */
export function dequantize(type: QuantTypeRef, bytes: Uint8Array, n: number): Float32Array {
  return call(() => native().dequantize(type, bytes, n));
}

/** Reference dot product of n elements: w in `type`, a in typeInfo(type).vecDotType. */
export function vecDot(type: QuantTypeRef, w: Uint8Array, a: Uint8Array, n: number): number {
  return call(() => native().vecDot(type, w, a, n));
}

/** Dot of w (in `type`) with float activations x, quantized first to the type's vecDotType. */
export function vecDotF32(type: QuantTypeRef, w: Uint8Array, x: Float32Array): number {
  const activation = typeInfo(type).vecDotType;
  if (!activation) throw new TandemError('TDM_UNSUPPORTED', `${typeInfo(type).name}: tandem cannot compute with this type`);
  return vecDot(type, w, quantize(activation, x), x.length);
}

// The only door to the native addon: it loads build/Release/tandem.node and declares,
// in one place, the whole native surface with its types.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { TandemError } from './errors.js';

/** A metadata value as the addon returns it (arrays of numbers come as typed arrays). */
export interface NativeGgufArray {
  elementType: string;
  value: ArrayLike<unknown>;
}

export interface NativeGgufInfo {
  path: string;
  version: number;
  alignment: number;
  dataOffset: number;
  fileSize: number;
  metadata: { key: string; type: string; value: unknown }[];
  tensors: { name: string; typeId: number; type: string; shape: number[]; offset: number; nBytes: number }[];
}

export interface NativeGgufHandle {
  /** Metadata and tensor table, converted to JS values. */
  info(): NativeGgufInfo;
  /** The tensor's bytes, viewed in place over the file's mapping (no copy). */
  tensorData(name: string): Uint8Array;
  /** Drops this handle's reference to the mapping; views already taken stay valid. */
  close(): void;
}

export interface NativeAddon {
  GgufHandle: new (path: string) => NativeGgufHandle;
  /** Quant types: see src/model/quant.ts for the typed wrappers. */
  [name: string]: unknown;
}

const here = path.dirname(fileURLToPath(import.meta.url));
// src/native and dist/native are both two levels below the package root.
const packageRoot = path.resolve(here, '..', '..');

let cached: NativeAddon | undefined;

/** Loads the addon once; a missing build is a clear error, not a crash. */
export function native(): NativeAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const file = path.join(packageRoot, 'build', 'Release', 'tandem.node');
  try {
    cached = require(file) as NativeAddon;
  } catch (err) {
    throw new TandemError(
      'TDM_BACKEND_UNAVAILABLE',
      `cannot load the tandem native addon at ${file}: ${(err as Error).message}. Run \`npm install\` (or \`npx node-gyp rebuild\`) to build it.`,
      { cause: err },
    );
  }
  return cached;
}

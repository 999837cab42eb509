// Paths and small utilities shared by the tests.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { GgufFile } from '../src/model/gguf.js';
import { describeModel, type ModelHyperparams } from '../src/model/describe.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** ../shared/models beside the checkout (TANDEM_SHARED_MODELS overrides). */
export const modelsDir = process.env.TANDEM_SHARED_MODELS ?? path.resolve(repoRoot, '..', 'shared', 'models');
export const modelPath = (name: string): string => path.join(modelsDir, name);

/** Largest |a - b| over logits per step and per sequence (Infinity when shapes differ). */
export function maxAbsDiff(a: Float32Array[][], b: Float32Array[][]): number {
  let m = 0;
  for (let s = 0; s < a.length; s++) {
    for (let q = 0; q < a[s]!.length; q++) {
      const x = a[s]![q]!, y = b[s]![q]!;
      if (x.length !== y.length) return Infinity;
      for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
    }
  }
  return m;
}

/** A GGUF file's hyperparameters, as the native loader takes them. */
export function hparamsOf(file: string): ModelHyperparams {
  const f = GgufFile.open(file);
  try {
    return describeModel(f).hparams;
  } finally {
    f.close();
  }
}

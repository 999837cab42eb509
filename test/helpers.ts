// Paths and small utilities shared by the tests.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** ../shared/models beside the checkout (TANDEM_SHARED_MODELS overrides). */
export const modelsDir = process.env.TANDEM_SHARED_MODELS ?? path.resolve(repoRoot, '..', 'shared', 'models');
export const modelPath = (name: string): string => path.join(modelsDir, name);

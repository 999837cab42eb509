// The systems a bench can compare, by name. Adding a policy is one entry, e.g.
// tandemSystem('tandem:gpu-only', '...', { policy: 'gpu-only' }) once loadModel takes one.
import { TandemError } from '../../native/errors.js';
import { llamaCppSystem } from './llama-cpp.js';
import type { BenchSystem } from './system.js';
import { tandemSystem } from './tandem.js';

export type { BenchSystem, GenerateRequest, LoadedSystem, SystemConfig } from './system.js';
export { tandemSystem } from './tandem.js';
export { llamaCppSystem } from './llama-cpp.js';

export const SYSTEMS: readonly BenchSystem[] = [
  tandemSystem('tandem', 'tandem with its default policy (CPU only where no GPU backend loads)'),
  llamaCppSystem(),
];

/** The default comparison: every system above. */
export const DEFAULT_SYSTEMS: readonly string[] = SYSTEMS.map((s) => s.name);

/** Systems by name, in the order given; TDM_BAD_ARGUMENT naming the known ones for an unknown name. */
export function systemsByName(names: readonly string[], known: readonly BenchSystem[] = SYSTEMS): BenchSystem[] {
  return names.map((name) => {
    const s = known.find((k) => k.name === name);
    if (!s) throw new TandemError('TDM_BAD_ARGUMENT', `unknown system '${name}' (known: ${known.map((k) => k.name).join(', ')})`);
    return s;
  });
}

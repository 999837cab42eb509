// The systems a bench can compare, by name: tandem with its default policy, llama.cpp, and
// tandem pinned to each of its policies (tandem:gpu-only, tandem:auto, ...) so that its
// hybrid policies can be measured against GPU-only on the same device and KV budget.
import { TandemError } from '../../native/errors.js';
import { POLICY_NAMES } from '../../sched/policy.js';
import { llamaCppSystem } from './llama-cpp.js';
import type { BenchSystem } from './system.js';
import { tandemSystem, type TandemExtraOptions } from './tandem.js';

export type { BenchSystem, GenerateRequest, LoadedSystem, SystemConfig } from './system.js';
export { tandemSystem, type TandemExtraOptions } from './tandem.js';
export { llamaCppSystem } from './llama-cpp.js';

const POLICY_ABOUT: Record<(typeof POLICY_NAMES)[number], string> = {
  'gpu-only': 'every sequence on the device; host RAM only as swap space (vLLM)',
  pipeline: 'two sub-batches, CPU attention of host-KV sequences beside the device (NEO)',
  overlap: 'one device batch, CPU attention of host-KV sequences overlapped with it (APEX)',
  auto: 'picks gpu-only, pipeline or overlap each step from predicted times',
};

/**
 * Every system, with `tandem` load options (device, KV budget per tier, ...) applied to each
 * tandem entry. The policy entries need a device (`device` in `tandem`); without one they fail to load.
 */
export function systemRegistry(tandem: TandemExtraOptions = {}): BenchSystem[] {
  return [
    tandemSystem('tandem', 'tandem with its default policy (auto with a device, else the CPU path)', tandem),
    llamaCppSystem(),
    tandemSystem('tandem:draft', `tandem with speculative decoding: up to ${BENCH_DRAFT_TOKENS} tokens a step guessed by prompt lookup and verified (the same tokens; CPU path only)`,
      { ...tandem, draftTokens: BENCH_DRAFT_TOKENS }),
    // GPU-only is what the hybrid policies must beat: the baseline of a policy comparison (ratios are against the first baseline given).
    ...POLICY_NAMES.map((p) => tandemSystem(`tandem:${p}`, `tandem, policy ${p}: ${POLICY_ABOUT[p]}`, { ...tandem, policy: p }, p === 'gpu-only')),
  ];
}

/** draftTokens of the tandem:draft entry. */
const BENCH_DRAFT_TOKENS = 3;

export const SYSTEMS: readonly BenchSystem[] = systemRegistry();

/** The default comparison: tandem against llama.cpp. */
export const DEFAULT_SYSTEMS: readonly string[] = ['tandem', 'llama.cpp'];

/** Systems by name, in the order given; TDM_BAD_ARGUMENT naming the known ones for an unknown name. */
export function systemsByName(names: readonly string[], known: readonly BenchSystem[] = SYSTEMS): BenchSystem[] {
  return names.map((name) => {
    const s = known.find((k) => k.name === name);
    if (!s) throw new TandemError('TDM_BAD_ARGUMENT', `unknown system '${name}' (known: ${known.map((k) => k.name).join(', ')})`);
    return s;
  });
}

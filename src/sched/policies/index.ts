// The policies by name: pure functions from (requests, KV state, cost model) to a step decision.
import type { PolicyInput, PolicyName, StepDecision } from '../policy.js';
import { autoPolicy } from './auto.js';
import { gpuOnlyPolicy } from './gpu-only.js';
import { overlapPolicy } from './overlap.js';
import { pipelinePolicy } from './pipeline.js';

export const POLICIES: Record<PolicyName, (input: PolicyInput) => StepDecision> = {
  'gpu-only': gpuOnlyPolicy,
  pipeline: pipelinePolicy,
  overlap: overlapPolicy,
  auto: autoPolicy,
};

export { autoPolicy, gpuOnlyPolicy, overlapPolicy, pipelinePolicy };
export { loadAwareSplit } from './pipeline.js';
export { hybridMoves } from './overlap.js';

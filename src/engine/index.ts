// The serving engine: request queue, continuous-batching scheduler, two-tier KV block
// accounting with prefix caching, and the memory budget that sizes it.
export { BlockPool } from './block-pool.js';
export { KvBlockManager, otherTier, TIERS, type KvOwner } from './kv-blocks.js';
export { planKvBudget, planTierBudget, type KvBudget, type KvBudgetRequest, type TierBudgetRequest } from './kv-budget.js';
export { blockHash, extendBlockHashes } from './prefix-hash.js';
export { Sequence, type SequenceMetrics, type SequenceParams, type SequenceStatus, type StopReason } from './sequence.js';
export { NgramIndex, NGRAM_MAX, NGRAM_MIN } from './ngram-draft.js';
export {
  checkSchedulerConfig,
  DRAFT_RETRY_TOKENS,
  PreemptionMode,
  Scheduler,
  type SchedulerConfig,
  type SchedulerCounters,
  type SequenceEvent,
} from './scheduler.js';
export { Engine, type EngineOptions, type EnginePolicy, type EngineStats, type SequenceObserver, type StepExecutor, type TierStats } from './engine.js';

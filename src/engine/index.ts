// The serving engine: request queue, continuous-batching scheduler, KV block accounting.
export { BlockPool } from './block-pool.js';
export { KvBlockManager, type KvOwner } from './kv-blocks.js';
export { Sequence, type SequenceParams, type SequenceStatus, type StopReason } from './sequence.js';
export { checkSchedulerConfig, Scheduler, type SchedulerConfig, type SequenceEvent } from './scheduler.js';
export { Engine, type EngineStats, type SequenceObserver, type StepExecutor } from './engine.js';

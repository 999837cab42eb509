// The hybrid scheduler's public pieces: cost model and profiler, step-time predictions, the
// policies, their seam with the engine's Scheduler, hardware profiles and the simulator.
export { costShapeOf, fitTables, observationOf, predictionErrors, prefillProducts, TableCostModel, type CostModel, type CostShape, type CostTablesJson, type Measurement, type ObserveOptions, type PredictionError, type StepObservation } from './cost-model.js';
export { Bilinear, PiecewiseLinear } from './interp.js';
export { DEFAULT_GRID, defaultCacheDir, loadOrProfile, loadProfile, profileFile, profileKey, profileModel, saveProfile, type ProfileGrid, type ProfileKey, type ProfileResult, type ProfileTarget } from './profiler.js';
export { predictStep, pipelineSplit, type SeqWork, type StepTime } from './step-time.js';
export { POLICY_NAMES, type KvView, type PolicyInput, type PolicyName, type PolicyOptions, type RequestView, type StepDecision } from './policy.js';
export { POLICIES } from './policies/index.js';
export { PolicyScheduler, schedulerStrategyFor, type PolicySchedulerOptions, type PolicyStats, type ShapedSequencePlan } from './policy-scheduler.js';
export { HARDWARE, rooflineCostModel, SIM_MODELS, type HardwareProfile, type ModelShapeSpec } from './hardware.js';
export { runSimulate, type SimulateOptions } from './sim/command.js';

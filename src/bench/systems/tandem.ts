// tandem as a bench system, through the public API only (loadModel / generate): what a
// user's service would see. `extra` load options name a policy and a device and its KV
// budget, so that tandem's policies (gpu-only, auto, ...) become one registry entry each.
import { loadModel, type LoadModelOptions } from '../../api/index.js';
import type { BenchSystem, LoadedSystem, SystemConfig } from './system.js';

/** Load options a system entry may add (a policy, a memory budget) on top of the bench's config. */
export type TandemExtraOptions = Omit<LoadModelOptions, 'threads' | 'contextSize' | 'maxSequences' | 'prefillChunkTokens' | 'onProgress'>;

/** `baseline`: ratios in reports are against it (tandem:gpu-only, when policies are compared). */
export function tandemSystem(name: string, about: string, extra: TandemExtraOptions = {}, baseline = false): BenchSystem {
  return {
    name,
    about,
    baseline,
    async load(modelPath: string, config: SystemConfig): Promise<LoadedSystem> {
      const model = await loadModel(modelPath, {
        ...extra,
        threads: config.threads,
        contextSize: config.contextSize,
        maxSequences: config.maxSequences,
        prefillChunkTokens: config.batchTokens,
        ...(config.kvType ? { kvType: config.kvType } : {}),
      });
      const info = model.info;
      // The options as given first; what the model reports it runs on wins (device 'auto' names the GPU found).
      const details: Record<string, string | number | boolean> = {};
      for (const [k, v] of Object.entries(extra)) details[k] = typeof v === 'object' ? JSON.stringify(v) : String(v);
      Object.assign(details, {
        backends: info.backends.join(','),
        cpuKernels: info.cpuKernels,
        kvBlockTokens: info.kvBlockTokens,
        kvType: info.kvType,
        ...(info.draftTokens > 0 ? { draftTokens: info.draftTokens } : {}),
        kvSlidingWindow: info.kvSlidingWindow,
        numKvBlocks: info.numKvBlocks,
        kvBlocksDevice: info.kvBlocks.device,
        kvBlocksHost: info.kvBlocks.host,
        policy: info.policy,
        device: info.device === null ? 'none' : `${info.device}: ${info.deviceName}`,
        weightBytesDevice: info.placement.deviceBytes,
        weightBytesHost: info.placement.hostBytes,
      });
      // With a device: whether the host KV tier is locked, and how much a step may stream.
      if (info.device !== null) Object.assign(details, { kvHostLocked: info.kvHostLocked, kvStreamBlocks: info.kvStreamBlocks });
      // The stand-in runs on the CPU: whatever it measures is never a GPU number.
      if (info.device === 'cpu-standin') details.simulatedDevice = 'cpu-standin (CPU posing as the device; not GPU numbers)';
      if (info.profile) {
        details.profile = info.profile.source;
        for (const e of info.profile.errors) details[`profileError.${e.kind}`] = Number(e.meanAbsRelError.toFixed(3));
      }
      return {
        details,
        backends: model.info.backends,
        async generate(req, onToken) {
          const gen = model.generate(req.prompt, { maxTokens: req.maxTokens, temperature: 0, ignoreEos: true });
          for await (const chunk of gen) {
            const now = performance.now();
            for (let i = 0; i < chunk.tokens.length; i++) onToken(now);
          }
          await gen.result;
        },
        counters: () => {
          const st = model.stats;
          // hostMs: the engine's time around its steps (a device idles through it); per step, the cost of the seam.
          // rounds: forward passes (a decode burst is one step of several).
          const c: Record<string, number> = { steps: st.numSteps, rounds: st.numRounds, moves: st.numMoves, preemptions: st.numPreemptions, stepMs: st.stepUs / 1000, hostMs: st.hostUs / 1000 };
          if (info.draftTokens > 0) Object.assign(c, { draftTokens: st.numDraftTokens, acceptedDrafts: st.numAcceptedDrafts });
          if (st.policy) {
            for (const [strategy, n] of Object.entries(st.policy.strategies)) if (n > 0) c[`steps.${strategy}`] = n;
            c.deferrals = st.policy.deferrals;
            // A run's mean step prediction error is the change of the sum over the change of the count.
            c.predictedSteps = st.policy.predictedSteps;
            c.stepErrorSum = st.policy.predictedSteps > 0 ? st.policy.meanStepError! * st.policy.predictedSteps : 0;
          }
          return c;
        },
        dispose: () => model.dispose(),
      };
    },
  };
}

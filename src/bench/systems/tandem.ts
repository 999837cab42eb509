// tandem as a bench system, through the public API only (loadModel / generate): what a
// user's service would see. `extra` load options name a policy, so that tandem's policies
// (gpu-only, auto, ...) become one registry entry each.
import { loadModel, type LoadModelOptions } from '../../api/index.js';
import type { BenchSystem, LoadedSystem, SystemConfig } from './system.js';

/** Load options a system entry may add (a policy, a memory budget) on top of the bench's config. */
export type TandemExtraOptions = Omit<LoadModelOptions, 'threads' | 'contextSize' | 'maxSequences' | 'prefillChunkTokens' | 'onProgress'>;

export function tandemSystem(name: string, about: string, extra: TandemExtraOptions = {}): BenchSystem {
  return {
    name,
    about,
    baseline: false,
    async load(modelPath: string, config: SystemConfig): Promise<LoadedSystem> {
      const model = await loadModel(modelPath, {
        ...extra,
        threads: config.threads,
        contextSize: config.contextSize,
        maxSequences: config.maxSequences,
        prefillChunkTokens: config.batchTokens,
      });
      const details: Record<string, string | number | boolean> = {
        backends: model.info.backends.join(','),
        kvBlockTokens: model.info.kvBlockTokens,
        numKvBlocks: model.info.numKvBlocks,
      };
      for (const [k, v] of Object.entries(extra)) details[k] = typeof v === 'object' ? JSON.stringify(v) : String(v);
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
        counters: () => ({ steps: model.stats.numSteps }),
        dispose: () => model.dispose(),
      };
    },
  };
}

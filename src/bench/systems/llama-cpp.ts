// The baseline: llama.cpp through node-llama-cpp (3.21.1 is the version the targets name) on
// the CPU, with the same file, threads and number of sequences as tandem. node-llama-cpp is
// a devDependency, never part of the runtime: this file loads it only when the llama.cpp
// system is asked for, and says how to install it where it is missing.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Llama, LlamaContext, LlamaContextSequence, Token } from 'node-llama-cpp';
import { TandemError } from '../../native/errors.js';
import type { BenchSystem, LoadedSystem, SystemConfig } from './system.js';

type NodeLlamaCpp = typeof import('node-llama-cpp');

interface Instance {
  llama: Llama;
  /** node-llama-cpp's package version, for the report. */
  version: string;
}

let llamaInstance: Promise<Instance> | undefined;

/** The installed version of a package, from the package.json above its resolved entry point. */
function packageVersion(name: string): string {
  try {
    let dir = path.dirname(fileURLToPath(import.meta.resolve(name)));
    while (!fs.existsSync(path.join(dir, 'package.json')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
    // dist/ may hold a package.json of its own ({"type": "module"}) without a version.
    if (pkg.version) return pkg.version;
    return JSON.parse(fs.readFileSync(path.join(path.dirname(dir), 'package.json'), 'utf8')).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

async function instance(): Promise<Instance> {
  llamaInstance ??= (async () => {
    let module: NodeLlamaCpp;
    const name = 'node-llama-cpp';
    try {
      // A computed name keeps bundlers from pulling in the baseline with the runtime.
      module = (await import(name)) as NodeLlamaCpp;
    } catch (err) {
      throw new TandemError(
        'TDM_BACKEND_UNAVAILABLE',
        `the llama.cpp baseline needs node-llama-cpp (npm install node-llama-cpp@3.21.1), or leave it out with --systems tandem: ${(err as Error).message}`,
        { cause: err },
      );
    }
    // maxThreads 0: node-llama-cpp then uses exactly the threads a context asks for.
    const llama = await module.getLlama({ gpu: false, build: 'never', logLevel: module.LlamaLogLevel.error, maxThreads: 0 });
    return { llama, version: packageVersion(name) };
  })();
  try {
    return await llamaInstance;
  } catch (err) {
    llamaInstance = undefined;
    throw err;
  }
}

/** A fixed set of sequences handed out in arrival order: llama.cpp has no request queue of its own. */
class SequencePool {
  private readonly free: LlamaContextSequence[];
  private readonly waiting: ((s: LlamaContextSequence) => void)[] = [];

  constructor(sequences: LlamaContextSequence[]) {
    this.free = sequences;
  }

  acquire(): Promise<LlamaContextSequence> {
    const s = this.free.pop();
    return s ? Promise.resolve(s) : new Promise((resolve) => this.waiting.push(resolve));
  }

  release(s: LlamaContextSequence): void {
    const next = this.waiting.shift();
    if (next) next(s);
    else this.free.push(s);
  }
}

export function llamaCppSystem(): BenchSystem {
  return {
    name: 'llama.cpp',
    about: 'llama.cpp through node-llama-cpp (devDependency), CPU only, same file, threads and sequences',
    baseline: true,
    async load(modelPath: string, config: SystemConfig): Promise<LoadedSystem> {
      const { llama, version } = await instance();
      const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
      let context: LlamaContext;
      try {
        context = await model.createContext({
          sequences: config.maxSequences,
          contextSize: config.contextSize,
          batchSize: config.batchTokens,
          threads: { ideal: config.threads, min: config.threads },
          ...(config.kvType === 'q8_0' ? { experimentalKvCacheKeyType: 'Q8_0' as const, experimentalKvCacheValueType: 'Q8_0' as const } : {}),
        });
      } catch (err) {
        await model.dispose();
        throw err;
      }
      const sequences: LlamaContextSequence[] = [];
      for (let i = 0; i < config.maxSequences; i++) sequences.push(context.getSequence());
      const pool = new SequencePool(sequences);
      const release = llama.llamaCppRelease;
      return {
        details: {
          nodeLlamaCpp: version,
          llamaCpp: `${release.repo}@${release.release}`,
          build: llama.buildType,
          gpu: String(llama.gpu),
          flashAttention: context.flashAttention,
          contextSize: context.contextSize,
          batchSize: context.batchSize,
          kvType: config.kvType ?? 'f16',
        },
        backends: ['cpu'],
        async generate(req, onToken) {
          const seq = await pool.acquire();
          try {
            let n = 0;
            if (req.maxTokens > 0) {
              const tokens = req.prompt as Token[];
              for await (const _ of seq.evaluate(tokens, { temperature: 0, yieldEogToken: true })) {
                onToken(performance.now());
                if (++n >= req.maxTokens) break;
              }
            }
          } finally {
            await seq.clearHistory();
            pool.release(seq);
          }
        },
        async dispose() {
          await context.dispose();
          await model.dispose();
        },
      };
    },
  };
}

// What the bench runs: a "system" is one way of serving a model (tandem with a policy,
// llama.cpp through node-llama-cpp, ...). Every system gets the same token ids and
// generates greedily, ignoring end-of-generation, exactly as many tokens as asked.

/** How a system is set up for a group of runs; every system in a comparison gets the same. */
export interface SystemConfig {
  /** CPU threads for compute. */
  threads: number;
  /** Sequences decoded together at most (more requests wait for a free one). */
  maxSequences: number;
  /** Tokens one sequence may hold, prompt and output together. */
  contextSize: number;
  /** Prompt tokens processed in one step (tandem's prefill chunk, llama.cpp's batch size). */
  batchTokens: number;
  /** K and V cache type (default f16; q8_0 is llama.cpp's -ctk q8_0 -ctv q8_0). */
  kvType?: 'f16' | 'q8_0';
}

export interface GenerateRequest {
  /** Prompt token ids (BOS first where the model wants one). */
  prompt: readonly number[];
  /** Tokens to generate, exactly. */
  maxTokens: number;
}

export interface LoadedSystem {
  /** Facts for the report: backends, policy, library versions. */
  readonly details: Record<string, string | number | boolean>;
  /** Backends in use, 'cpu' first (a GPU backend makes the bench sample device memory). */
  readonly backends: readonly string[];
  /**
   * Generates req.maxTokens tokens greedily after req.prompt, ignoring end-of-generation;
   * calls onToken(performance.now()) as each token reaches the caller. Concurrent calls
   * share steps up to maxSequences; more wait in arrival order.
   */
  generate(req: GenerateRequest, onToken: (nowMs: number) => void): Promise<void>;
  /** (optional) Monotonic counters of the system's own, e.g. tandem's engine steps; a run records their change. */
  counters?(): Record<string, number>;
  dispose(): Promise<void>;
}

export interface BenchSystem {
  /** Name in --systems and in reports, e.g. 'tandem', 'llama.cpp', 'tandem:gpu-only'. */
  readonly name: string;
  /** One line for --help. */
  readonly about: string;
  /** Ratios in reports are against the first baseline in the run. */
  readonly baseline: boolean;
  load(modelPath: string, config: SystemConfig): Promise<LoadedSystem>;
}

// llama.cpp as the oracle (node-llama-cpp 3.21.1 on the CPU): greedy continuations and
// teacher-forced next-token probabilities of a GGUF file, for the API tests.
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel, type Token } from 'node-llama-cpp';

let llama: Promise<Llama> | undefined;

function instance(): Promise<Llama> {
  llama ??= getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  return llama;
}

export class LlamaRef {
  private constructor(readonly model: LlamaModel) {}

  static async load(path: string): Promise<LlamaRef> {
    const l = await instance();
    return new LlamaRef(await l.loadModel({ modelPath: path }));
  }

  /** llama.cpp's tokenization of text (BOS added as the vocabulary asks; special tokens parsed). */
  tokenize(text: string): number[] {
    const ids = this.model.tokenize(text, true).map(Number);
    const bos = this.model.tokens.bos;
    return bos !== null && this.model.tokens.shouldPrependBosToken ? [Number(bos), ...ids] : ids;
  }

  /** llama.cpp's embedding of text (its pooling from the file, else the last token's state; not normalized). */
  async embedding(text: string): Promise<Float32Array> {
    const ctx = await this.model.createEmbeddingContext({ contextSize: 512, threads: 1 });
    try {
      return Float32Array.from((await ctx.getEmbeddingFor(text)).vector);
    } finally {
      await ctx.dispose();
    }
  }

  /** Greedy continuation of `tokens`: `n` tokens, or fewer where EOS comes first (EOS included). */
  async greedy(tokens: readonly number[], n: number): Promise<number[]> {
    const ctx = await this.model.createContext({ contextSize: 512, threads: 1, sequences: 1 });
    try {
      const out: number[] = [];
      const eos = this.model.tokens.eos;
      for await (const tok of ctx.getSequence().evaluate(tokens as Token[], { temperature: 0 })) {
        out.push(Number(tok));
        if (out.length >= n || tok === eos) break;
      }
      return out;
    } finally {
      await ctx.dispose();
    }
  }

  /** Next-token probabilities after each of `tokens` (softmax of the raw logits), one row of nVocab per token; kvType 'q8_0' quantizes llama.cpp's K and V cache (-ctk/-ctv q8_0). */
  async probabilities(tokens: readonly number[], nVocab: number, options: { kvType?: 'f16' | 'q8_0' } = {}): Promise<Float64Array[]> {
    const kv = options.kvType === 'q8_0' ? { experimentalKvCacheKeyType: 'Q8_0' as const, experimentalKvCacheValueType: 'Q8_0' as const } : {};
    const ctx = await this.model.createContext({ contextSize: Math.max(256, tokens.length + 1), threads: 1, sequences: 1, batchSize: 512, ...kv });
    try {
      const out = await ctx.getSequence().controlledEvaluate(tokens.map((t) => [t as Token, { generateNext: { probabilities: true } }]));
      return out.map((item, i) => {
        const probs = item?.next.probabilities;
        if (!probs) throw new Error(`llama.cpp returned no probabilities at position ${i}`);
        const row = new Float64Array(nVocab);
        for (const [tok, p] of probs) row[Number(tok)] = p;
        return row;
      });
    } finally {
      await ctx.dispose();
    }
  }

  async dispose(): Promise<void> {
    await this.model.dispose();
  }
}

/** softmax in float64. */
export function softmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  const out = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += out[i] = Math.exp(logits[i]! - max);
  for (let i = 0; i < out.length; i++) out[i]! /= sum;
  return out;
}

/** KL(p || q) in nats; q is floored so that a token llama.cpp gives mass and tandem none stays finite. */
export function klDivergence(p: ArrayLike<number>, q: ArrayLike<number>): number {
  let kl = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i]! > 0) kl += p[i]! * Math.log(p[i]! / Math.max(q[i]!, 1e-30));
  }
  return Math.max(0, kl);
}

export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

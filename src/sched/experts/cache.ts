// The GPU expert cache: a fixed pool of expert-sized slots and the map from (layer, expert)
// to slot index, with a score per expert that decides what stays. It stores ids, never weights
// (SGLang's index-pool idea), so it plans and tests with no GPU memory behind it.
import { TandemError } from '../../native/errors.js';

/** How the cache scores experts (higher stays). */
export enum ExpertScoring {
  /** Sum of router probabilities routed to the expert, decayed by `decay` per step. */
  DecayedProbability = 'decayed-probability',
  /** Frequency-weighted LRU: routed rows / (1 + steps since last use). */
  FrequencyLru = 'frequency-lru',
}

export const EXPERT_SCORINGS: readonly ExpertScoring[] = [ExpertScoring.DecayedProbability, ExpertScoring.FrequencyLru];

/** One expert of one layer, as a single number: layer * nExpert + expert. */
export type ExpertKey = number;

export interface ExpertCacheConfig {
  nLayer: number;
  nExpert: number;
  /** Expert slabs the GPU holds for the cache (0 = no cache). */
  numSlots: number;
  scoring: ExpertScoring;
  /** Per-step decay factor of DecayedProbability, in (0, 1]. Default 0.9. */
  decay?: number;
}

/** What `admit` did. */
export interface Admission {
  /** The slot now holding the expert, or undefined when it was not cached. */
  slot: number | undefined;
  /** The expert it evicted, if any. */
  evicted: ExpertKey | undefined;
}

export class ExpertCache {
  readonly nLayer: number;
  readonly nExpert: number;
  readonly numSlots: number;
  readonly scoring: ExpertScoring;
  readonly decay: number;
  /** Invariant: slotOf and keyOfSlot are inverse maps over the occupied slots. */
  private readonly slotOf = new Map<ExpertKey, number>();
  private readonly keyOfSlot: (ExpertKey | undefined)[];
  /** Per expert (all of them, resident or not): decayed probability mass, routed rows, step of last use. */
  private readonly mass: Float64Array;
  private readonly massStep: Int32Array;
  private readonly uses: Float64Array;
  private readonly lastUse: Int32Array;
  /** The current step (advanced by `tick`). */
  step = 0;

  constructor(cfg: ExpertCacheConfig) {
    const ok = (n: number) => Number.isInteger(n) && n >= 0;
    if (!ok(cfg.nLayer) || !ok(cfg.nExpert) || !ok(cfg.numSlots)) throw new TandemError('TDM_BAD_ARGUMENT', `expert cache needs non-negative integer layers, experts and slots, got ${cfg.nLayer}, ${cfg.nExpert}, ${cfg.numSlots}`);
    const decay = cfg.decay ?? 0.9;
    if (!(decay > 0 && decay <= 1)) throw new TandemError('TDM_BAD_ARGUMENT', `expert cache decay must be in (0, 1], got ${decay}`);
    if (!EXPERT_SCORINGS.includes(cfg.scoring)) throw new TandemError('TDM_BAD_ARGUMENT', `unknown expert scoring '${String(cfg.scoring)}' (${EXPERT_SCORINGS.join(', ')})`);
    this.nLayer = cfg.nLayer;
    this.nExpert = cfg.nExpert;
    this.numSlots = Math.min(cfg.numSlots, cfg.nLayer * cfg.nExpert);
    this.scoring = cfg.scoring;
    this.decay = decay;
    this.keyOfSlot = new Array<ExpertKey | undefined>(this.numSlots).fill(undefined);
    const n = cfg.nLayer * cfg.nExpert;
    this.mass = new Float64Array(n);
    this.massStep = new Int32Array(n);
    this.uses = new Float64Array(n);
    this.lastUse = new Int32Array(n).fill(-1);
  }

  key(layer: number, expert: number): ExpertKey {
    return layer * this.nExpert + expert;
  }

  get numResident(): number {
    return this.slotOf.size;
  }

  /** The slot holding the expert, or undefined. */
  slot(key: ExpertKey): number | undefined {
    return this.slotOf.get(key);
  }

  has(key: ExpertKey): boolean {
    return this.slotOf.has(key);
  }

  /** Resident experts of a layer, by expert index. */
  residentOf(layer: number): number[] {
    const out: number[] = [];
    for (let e = 0; e < this.nExpert; e++) if (this.slotOf.has(this.key(layer, e))) out.push(e);
    return out;
  }

  /** Advances the clock by one decode step. */
  tick(): void {
    this.step++;
  }

  /** Records that `tokens` rows were routed to `key` this step with router probabilities summing to `probability`. */
  record(key: ExpertKey, probability: number, tokens = 1): void {
    this.mass[key] = this.decayedMass(key) + probability;
    this.massStep[key] = this.step;
    this.uses[key]! += tokens;
    this.lastUse[key] = this.step;
  }

  private decayedMass(key: ExpertKey): number {
    return this.mass[key]! * this.decay ** (this.step - this.massStep[key]!);
  }

  /** The expert's score under this cache's scoring now (higher stays). */
  score(key: ExpertKey): number {
    if (this.scoring === ExpertScoring.DecayedProbability) return this.decayedMass(key);
    const last = this.lastUse[key]!;
    return last < 0 ? 0 : this.uses[key]! / (1 + this.step - last);
  }

  /** The resident expert with the lowest score outside `protect` (ties: lowest key), or undefined. */
  victim(protect: ReadonlySet<ExpertKey> = new Set()): ExpertKey | undefined {
    let best: ExpertKey | undefined;
    let bestScore = Infinity;
    for (const k of this.slotOf.keys()) {
      if (protect.has(k)) continue;
      const s = this.score(k);
      if (s < bestScore || (s === bestScore && best !== undefined && k < best)) {
        best = k;
        bestScore = s;
      }
    }
    return best;
  }

  /**
   * Offers a copied expert a slot: a free one if any, else the victim's when the newcomer
   * scores higher (`force` takes it regardless). Experts in `protect` are never evicted.
   */
  admit(key: ExpertKey, protect: ReadonlySet<ExpertKey> = new Set(), force = false): Admission {
    const have = this.slotOf.get(key);
    if (have !== undefined) return { slot: have, evicted: undefined };
    if (this.numSlots === 0) return { slot: undefined, evicted: undefined };
    if (this.slotOf.size < this.numSlots) {
      const slot = this.keyOfSlot.indexOf(undefined);
      this.place(key, slot);
      return { slot, evicted: undefined };
    }
    const v = this.victim(protect);
    if (v === undefined || (!force && this.score(v) >= this.score(key))) return { slot: undefined, evicted: undefined };
    const slot = this.slotOf.get(v)!;
    this.slotOf.delete(v);
    this.place(key, slot);
    return { slot, evicted: v };
  }

  private place(key: ExpertKey, slot: number): void {
    this.slotOf.set(key, slot);
    this.keyOfSlot[slot] = key;
  }
}

// Stop strings over streamed text: text is released only once it cannot be the start of
// a stop string, so nothing from a stop string onward is ever emitted.

export class StopStringMatcher {
  private readonly stops: readonly string[];
  /** Decoded text not yet released: always shorter than the longest stop string. */
  private pending = '';
  private matched = false;

  constructor(stops: readonly string[]) {
    this.stops = stops.filter((s) => s.length > 0);
  }

  /** True once a stop string was seen; later pushes release nothing. */
  get stopped(): boolean {
    return this.matched;
  }

  /** Adds decoded text; returns the text that is now safe to emit. */
  push(text: string): string {
    if (this.matched) return '';
    const all = this.pending + text;
    let cut = -1;
    for (const stop of this.stops) {
      const at = all.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.matched = true;
      this.pending = '';
      return all.slice(0, cut);
    }
    const hold = this.partialMatchLength(all);
    this.pending = all.slice(all.length - hold);
    return all.slice(0, all.length - hold);
  }

  /** At the end of the generation: releases what was held back (it never became a stop string). */
  flush(): string {
    const rest = this.pending;
    this.pending = '';
    return rest;
  }

  /** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
  private partialMatchLength(text: string): number {
    let best = 0;
    for (const stop of this.stops) {
      for (let k = Math.min(stop.length - 1, text.length); k > best; k--) {
        if (text.endsWith(stop.slice(0, k))) {
          best = k;
          break;
        }
      }
    }
    return best;
  }
}

// A one-line progress bar for the terminal (model loading, downloads). It draws only on a
// TTY, only once the work has taken a moment, and redraws only when the picture changes.

export interface ProgressBarOptions {
  /** Text before the bar, e.g. 'loading model.gguf'. */
  label: string;
  /** Where to draw. Default process.stderr. */
  stream?: NodeJS.WriteStream;
  /** Milliseconds to wait before drawing, so that quick work shows nothing. Default 300. */
  delayMs?: number;
  /** Characters of the bar itself. Default 30. */
  width?: number;
}

export interface ProgressBar {
  /** Sets the fraction done, 0 to 1 (values outside are clamped). */
  update(fraction: number): void;
  /** Clears the line (if one was drawn); later updates are ignored. */
  done(): void;
}

export function createProgressBar(options: ProgressBarOptions): ProgressBar {
  const stream = options.stream ?? process.stderr;
  const delayMs = options.delayMs ?? 300;
  const width = options.width ?? 30;
  const started = Date.now();
  let drawn = '';
  let finished = false;

  const draw = (fraction: number) => {
    const f = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
    const filled = Math.round(f * width);
    const line = `${options.label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${Math.floor(f * 100)}%`;
    if (line === drawn) return;
    stream.write(`\r${line}`);
    drawn = line;
  };

  return {
    update(fraction) {
      if (finished || !stream.isTTY || Date.now() - started < delayMs) return;
      draw(fraction);
    },
    done() {
      if (finished) return;
      finished = true;
      if (drawn) stream.write(`\r${' '.repeat(drawn.length)}\r`);
    },
  };
}

// A small SVG writer for the bench's plots: line charts (throughput against latency) and
// grouped bar charts (tokens/s per system), with axes, ticks, legend and titles, as plain
// standalone SVG 1.1 strings that any browser or Markdown viewer shows.

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
const FONT = 'font-family="Helvetica, Arial, sans-serif"';

/** Escapes text for SVG character data and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** Coordinates with at most two decimals keep files small. */
const n = (v: number): string => String(Math.round(v * 100) / 100);

/** Round tick values covering [min, max]: steps of 1, 2 or 5 × 10^k, about `count` of them. */
export function niceTicks(min: number, max: number, count = 5): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
  if (max === min) {
    const pad = max === 0 ? 1 : Math.abs(max) * 0.1;
    min -= pad;
    max += pad;
  }
  const raw = (max - min) / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.floor(min / step) * step; v <= max + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  if (out[out.length - 1]! < max) out.push(Number((out[out.length - 1]! + step).toPrecision(12)));
  return out;
}

/** Short tick labels: 1500 → 1.5k, 0.25 → 0.25. */
export function formatTick(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e6) return `${Number((v / 1e6).toPrecision(3))}M`;
  if (a >= 1e4) return `${Number((v / 1e3).toPrecision(3))}k`;
  return String(Number(v.toPrecision(4)));
}

interface Frame {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

function open(f: Frame, title: string): string[] {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${f.width}" height="${f.height}" viewBox="0 0 ${f.width} ${f.height}">`,
    `<rect x="0" y="0" width="${f.width}" height="${f.height}" fill="#ffffff"/>`,
    `<text x="${n(f.width / 2)}" y="22" text-anchor="middle" font-size="15" font-weight="bold" ${FONT}>${escapeXml(title)}</text>`,
  ];
}

function yAxis(f: Frame, ticks: number[], y: (v: number) => number, label: string): string[] {
  const out: string[] = [];
  for (const t of ticks) {
    out.push(`<line x1="${f.left}" y1="${n(y(t))}" x2="${f.width - f.right}" y2="${n(y(t))}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${f.left - 6}" y="${n(y(t) + 4)}" text-anchor="end" font-size="11" ${FONT}>${escapeXml(formatTick(t))}</text>`);
  }
  const cy = (f.top + f.height - f.bottom) / 2;
  out.push(`<text x="14" y="${n(cy)}" text-anchor="middle" font-size="12" transform="rotate(-90 14 ${n(cy)})" ${FONT}>${escapeXml(label)}</text>`);
  out.push(`<line x1="${f.left}" y1="${f.top}" x2="${f.left}" y2="${f.height - f.bottom}" stroke="#333"/>`);
  out.push(`<line x1="${f.left}" y1="${f.height - f.bottom}" x2="${f.width - f.right}" y2="${f.height - f.bottom}" stroke="#333"/>`);
  return out;
}

function legend(f: Frame, names: string[]): string[] {
  const out: string[] = [];
  let x = f.left;
  const y = f.height - 14;
  names.forEach((name, i) => {
    const color = PALETTE[i % PALETTE.length];
    out.push(`<rect x="${n(x)}" y="${y - 9}" width="12" height="12" fill="${color}"/>`);
    out.push(`<text x="${n(x + 16)}" y="${y + 1}" font-size="12" ${FONT}>${escapeXml(name)}</text>`);
    x += 28 + name.length * 7;
  });
  return out;
}

export interface LineSeries {
  name: string;
  points: { x: number; y: number; label?: string }[];
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: LineSeries[];
  width?: number;
  height?: number;
}

/** Lines with markers, one per series, x and y both linear from 0 (or below, for negative data). */
export function lineChart(o: LineChartOptions): string {
  const f: Frame = { width: o.width ?? 720, height: o.height ?? 440, left: 70, right: 24, top: 40, bottom: 70 };
  const pts = o.series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const xt = niceTicks(Math.min(0, ...pts.map((p) => p.x)), Math.max(0, ...pts.map((p) => p.x)));
  const yt = niceTicks(Math.min(0, ...pts.map((p) => p.y)), Math.max(0, ...pts.map((p) => p.y)));
  const [x0, x1, y0, y1] = [xt[0]!, xt.at(-1)!, yt[0]!, yt.at(-1)!];
  const x = (v: number) => f.left + ((v - x0) / (x1 - x0 || 1)) * (f.width - f.left - f.right);
  const y = (v: number) => f.height - f.bottom - ((v - y0) / (y1 - y0 || 1)) * (f.height - f.top - f.bottom);
  const out = open(f, o.title);
  out.push(...yAxis(f, yt, y, o.yLabel));
  for (const t of xt) {
    out.push(`<text x="${n(x(t))}" y="${f.height - f.bottom + 16}" text-anchor="middle" font-size="11" ${FONT}>${escapeXml(formatTick(t))}</text>`);
  }
  out.push(`<text x="${n((f.left + f.width - f.right) / 2)}" y="${f.height - f.bottom + 34}" text-anchor="middle" font-size="12" ${FONT}>${escapeXml(o.xLabel)}</text>`);
  o.series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    const ok = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
    if (ok.length > 1) {
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${ok.map((p) => `${n(x(p.x))},${n(y(p.y))}`).join(' ')}"/>`);
    }
    for (const p of ok) {
      out.push(`<circle cx="${n(x(p.x))}" cy="${n(y(p.y))}" r="3.5" fill="${color}">${p.label ? `<title>${escapeXml(p.label)}</title>` : ''}</circle>`);
    }
  });
  out.push(...legend(f, o.series.map((s) => s.name)));
  out.push('</svg>');
  return out.join('\n') + '\n';
}

export interface BarChartOptions {
  title: string;
  yLabel: string;
  /** One cluster of bars per group (x axis), e.g. workloads. */
  groups: string[];
  /** One bar per series in every group; undefined or NaN leaves a gap. */
  series: { name: string; values: (number | undefined)[] }[];
  /** Short marks across a group's cluster, e.g. the bandwidth floor. */
  marks?: { name: string; values: (number | undefined)[] };
  width?: number;
  height?: number;
}

/** Grouped vertical bars with value labels, and optional per-group marks (dashed). */
export function barChart(o: BarChartOptions): string {
  const width = o.width ?? Math.max(480, 110 + o.groups.length * (30 + 26 * o.series.length));
  const f: Frame = { width, height: o.height ?? 420, left: 70, right: 24, top: 40, bottom: 80 };
  const values = [...o.series.flatMap((s) => s.values), ...(o.marks?.values ?? [])].filter((v): v is number => v !== undefined && Number.isFinite(v));
  const yt = niceTicks(0, Math.max(0, ...values));
  const y0 = yt[0]!;
  const y1 = yt.at(-1)!;
  const y = (v: number) => f.height - f.bottom - ((v - y0) / (y1 - y0 || 1)) * (f.height - f.top - f.bottom);
  const out = open(f, o.title);
  out.push(...yAxis(f, yt, y, o.yLabel));
  const groupW = (f.width - f.left - f.right) / Math.max(1, o.groups.length);
  const barW = Math.min(40, (groupW - 16) / Math.max(1, o.series.length));
  o.groups.forEach((g, gi) => {
    const gx = f.left + gi * groupW + (groupW - barW * o.series.length) / 2;
    o.series.forEach((s, si) => {
      const v = s.values[gi];
      if (v === undefined || !Number.isFinite(v)) return;
      const bx = gx + si * barW;
      const top = y(v);
      out.push(`<rect x="${n(bx + 1)}" y="${n(top)}" width="${n(barW - 2)}" height="${n(y(y0) - top)}" fill="${PALETTE[si % PALETTE.length]}"><title>${escapeXml(`${s.name} ${g}: ${formatTick(v)}`)}</title></rect>`);
      out.push(`<text x="${n(bx + barW / 2)}" y="${n(top - 3)}" text-anchor="middle" font-size="10" ${FONT}>${escapeXml(formatTick(v))}</text>`);
    });
    const m = o.marks?.values[gi];
    if (m !== undefined && Number.isFinite(m)) {
      out.push(`<line x1="${n(gx - 4)}" y1="${n(y(m))}" x2="${n(gx + barW * o.series.length + 4)}" y2="${n(y(m))}" stroke="#000" stroke-width="1.5" stroke-dasharray="5,3"><title>${escapeXml(`${o.marks!.name} ${g}: ${formatTick(m)}`)}</title></line>`);
    }
    out.push(`<text x="${n(f.left + gi * groupW + groupW / 2)}" y="${f.height - f.bottom + 16}" text-anchor="middle" font-size="11" ${FONT}>${escapeXml(g)}</text>`);
  });
  const names = o.series.map((s) => s.name);
  out.push(...legend(f, names));
  if (o.marks) {
    const lx = f.width - f.right - 150;
    out.push(`<line x1="${lx}" y1="${f.height - 19}" x2="${lx + 20}" y2="${f.height - 19}" stroke="#000" stroke-width="1.5" stroke-dasharray="5,3"/>`);
    out.push(`<text x="${lx + 26}" y="${f.height - 15}" font-size="12" ${FONT}>${escapeXml(o.marks.name)}</text>`);
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

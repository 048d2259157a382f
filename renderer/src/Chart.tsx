/**
 * The throughput chart: upload and download rates over the last minutes, hand-drawn SVG with
 * axes, units and a legend. Hand-drawn because it is two step lines and a few labels: a chart
 * library would multiply the renderer bundle for nothing it needs. The vertical scale follows
 * the samples in the window shown (an old peak that scrolled out does not flatten today's
 * 300 KiB/s), rounded up to a readable value; samples come from the store's one-second tick,
 * so the history outlives a remount and the line drops to zero when transfers end.
 */

import { formatRate } from '../../electron/contract/format';
import type { Sample } from './store';

export const CHART_WINDOW_MS = 5 * 60_000;

/** The smallest of 1, 2, 5 × 10^n × 1024^k at or above `v` (bytes/s), at least 1 KiB/s. */
export function niceCeil(v: number): number {
  let unit = 1024;
  while (v / unit >= 1000) unit *= 1024;
  const m = Math.max(v / unit, 1);
  let step = 1;
  for (;;) {
    for (const f of [1, 2, 5]) if (f * step >= m) return f * step * unit;
    step *= 10;
  }
}

/** The samples shown and the scale: the last `windowMs` (at least one minute of axis), top of the scale. */
export function chartWindow(samples: readonly Sample[], now: number, windowMs = CHART_WINDOW_MS) {
  const shown = samples.filter((s) => now - s.t <= windowMs);
  const spanMs = Math.min(windowMs, Math.max(60_000, now - (shown[0]?.t ?? now)));
  const peak = Math.max(0, ...shown.map((s) => Math.max(s.up, s.down)));
  return { shown, spanMs, top: niceCeil(peak) };
}

export function Chart({ samples, now }: { samples: readonly Sample[]; now: number }) {
  const { shown, spanMs, top } = chartWindow(samples, now);
  const w = 600;
  const h = 150;
  const left = 78;
  const right = 8;
  const topPad = 8;
  const bottom = 22;
  const x = (t: number) => left + Math.max(0, (t - (now - spanMs)) / spanMs) * (w - left - right);
  const y = (v: number) => topPad + (1 - Math.min(v, top) / top) * (h - topPad - bottom);
  const line = (pick: (s: Sample) => number) =>
    shown.map((s, i) => `${x(s.t)},${y(pick(s))} ${x(shown[i + 1]?.t ?? now)},${y(pick(s))}`).join(' ');
  const minutes = Math.round(spanMs / 60_000);
  const xTicks = Array.from({ length: minutes + 1 }, (_, i) => i);
  const last = shown[shown.length - 1];
  return (
    <figure className="chart" data-testid="chart" data-top={top}>
      <svg
        viewBox={`0 0 ${w} ${h}`}
        role="img"
        aria-label={`Throughput over the last ${minutes} minutes: now up ${formatRate(last?.up ?? 0)}, down ${formatRate(last?.down ?? 0)}; scale up to ${formatRate(top)}`}
      >
        {[0, 0.5, 1].map((f) => (
          <g key={f}>
            <line className="grid" x1={left} x2={w - right} y1={y(top * f)} y2={y(top * f)} />
            <text
              className="axis"
              x={left - 6}
              y={y(top * f) + 4}
              textAnchor="end"
              data-testid={f === 1 ? 'chart-top' : undefined}
            >
              {formatRate(top * f)}
            </text>
          </g>
        ))}
        {xTicks.map((i) => (
          <text key={i} className="axis" x={x(now - spanMs + i * 60_000)} y={h - 6} textAnchor="middle">
            {i === minutes ? 'now' : `−${minutes - i} min`}
          </text>
        ))}
        <polyline className="up" points={line((s) => s.up)} />
        <polyline className="down" points={line((s) => s.down)} />
      </svg>
      <figcaption className="legend">
        <span className="key up" /> up <span className="key down" /> down
      </figcaption>
    </figure>
  );
}

/** Durations on the command line: `500ms`, `2s`, `5m`, `1h`, also combined (`1m30s`). */
import { ConfigError } from '../errors/index.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Milliseconds in `text`; `flag` names the option in the error message. */
export function parseDuration(text: string, flag = 'duration'): number {
  const value = text.trim();
  const pattern = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let consumed = 0;
  for (let match = pattern.exec(value); match; match = pattern.exec(value)) {
    total += Number(match[1]) * UNIT_MS[match[2]!]!;
    consumed = pattern.lastIndex;
  }
  if (value === '' || consumed !== value.length) {
    throw new ConfigError(`${flag}: "${text}" is not a duration`, { hint: 'write a number with a unit: 500ms, 2s, 5m, 1h (or combined, e.g. 1m30s)' });
  }
  return Math.round(total);
}

/** `90000` → `1m30s`, for log lines. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  const parts: string[] = [];
  let rest = Math.round(ms / 1000);
  for (const [unit, size] of [['h', 3600], ['m', 60], ['s', 1]] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.join('');
}

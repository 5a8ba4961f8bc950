/**
 * Progress of long work (capture, upload, restore). On a terminal: one line redrawn in place with
 * rows, rows/s and bytes. Elsewhere: a structured log line at most every `intervalMs`, plus one at
 * the end, so a systemd journal shows steady progress without flooding.
 */
import type { Logger } from './logger.js';

export interface ProgressReporter {
  /** Report the running totals (not increments). */
  update(rows: number, bytes?: number): void;
  /** Final line; call exactly once. */
  done(rows: number, bytes?: number): void;
}

export interface ProgressOptions {
  label: string;
  logger: Logger;
  /** Expected total rows, when known (e.g. from pg_class.reltuples), for a percentage. */
  totalRows?: number;
  stream?: NodeJS.WriteStream;
  intervalMs?: number;
}

/** 1536 → "1.5 KB": sizes for people. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function createProgress(options: ProgressOptions): ProgressReporter {
  const stream = options.stream ?? process.stderr;
  const interactive = Boolean(stream.isTTY);
  const intervalMs = options.intervalMs ?? (interactive ? 200 : 10_000);
  const started = Date.now();
  let lastDraw = 0;

  const line = (rows: number, bytes: number | undefined): string => {
    const seconds = Math.max((Date.now() - started) / 1000, 0.001);
    const rate = Math.round(rows / seconds);
    const pct = options.totalRows && options.totalRows > 0 ? ` ${Math.min(100, Math.round((rows / options.totalRows) * 100))}%` : '';
    const size = bytes === undefined ? '' : `, ${formatBytes(bytes)}`;
    return `${options.label}:${pct} ${rows.toLocaleString('en-US')} rows (${rate.toLocaleString('en-US')} rows/s${size})`;
  };

  return {
    update(rows, bytes) {
      const now = Date.now();
      if (now - lastDraw < intervalMs) return;
      lastDraw = now;
      if (interactive) stream.write(`\r\x1b[2K${line(rows, bytes)}`);
      else options.logger.info('progress', { task: options.label, rows, bytes, elapsed_ms: now - started });
    },
    done(rows, bytes) {
      if (interactive) stream.write(`\r\x1b[2K${line(rows, bytes)} done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
      else options.logger.info('done', { task: options.label, rows, bytes, elapsed_ms: Date.now() - started });
    },
  };
}

/**
 * What a scenario reports. Every figure is measured in the same run as its anchor; the ratio is
 * Backstop's median over the anchor's median. A scenario that could not run says why instead of
 * carrying numbers.
 */
import type { RowSize, ScenarioName } from './options.js';
import type { Summary } from './stats.js';

export interface Figure {
  label: string;
  unit: 'ms' | 'MB' | 'count';
  summary: Summary;
}

export interface Target {
  /** The target as written in issue 5, e.g. "≤ 1.0× pg_dump". */
  text: string;
  met: boolean | undefined;
}

export interface ScenarioResult {
  scenario: ScenarioName;
  /** Stable row key for the summary table, e.g. "capture-local@1m". */
  id: string;
  title: string;
  size?: RowSize;
  status: 'measured' | 'partial' | 'not-measured' | 'failed';
  /** Why it is partial, not measured or failed. */
  reason?: string;
  backstop?: Figure;
  anchor?: Figure;
  /** backstop median / anchor median; for paired scenarios (restore), the median of the per-pair ratios. */
  ratio?: number;
  /** Backstop median minus anchor median (used where the target is an absolute overhead). */
  delta?: number;
  target?: Target;
  /** Other figures measured alongside (e.g. pg_dump size, p95, per-run details). */
  extra?: Record<string, unknown>;
}

export function notMeasured(scenario: ScenarioName, id: string, title: string, reason: string, size?: RowSize): ScenarioResult {
  return { scenario, id, title, status: 'not-measured', reason, ...(size ? { size } : {}) };
}

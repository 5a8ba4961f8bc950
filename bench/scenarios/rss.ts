/**
 * Peak RSS rows, read from the Backstop runs of the capture and restore scenarios (each run's
 * process under GNU time). The 5M row compares against the 1M figure of the same run.
 */
import type { RowSize } from '../options.js';
import type { ScenarioResult } from '../results.js';
import type { Summary } from '../stats.js';

const LIMIT_MB = 512;
const GROWTH_LIMIT = 1.2;

function peakRss(result: ScenarioResult | undefined): Summary | undefined {
  return result?.status === 'measured' ? (result.extra?.peakRssMb as Summary | undefined) : undefined;
}

export function rssRows(results: ScenarioResult[]): ScenarioResult[] {
  const rows: ScenarioResult[] = [];
  for (const [operation, prefix] of [['capture', 'capture-local'], ['restore', 'restore']] as const) {
    const oneMillion = peakRss(results.find((result) => result.id === `${prefix}@1m`));
    for (const size of ['1m', '5m'] as RowSize[]) {
      const summary = peakRss(results.find((result) => result.id === `${prefix}@${size}`));
      if (!summary) continue;
      const growth = size === '5m' && oneMillion ? summary.median / oneMillion.median : undefined;
      const withinLimit = summary.max <= LIMIT_MB;
      rows.push({
        scenario: operation === 'capture' ? 'capture' : 'restore',
        id: `rss-${operation}@${size}`,
        title: `peak RSS, ${operation} ${size === '1m' ? '1M' : '5M'}`,
        size,
        status: 'measured',
        backstop: { label: `backstop ${operation === 'capture' ? 'snapshot' : 'restore'} process`, unit: 'MB', summary },
        ...(growth !== undefined && oneMillion ? { anchor: { label: `same, 1M rows`, unit: 'MB' as const, summary: oneMillion }, ratio: growth } : {}),
        target: size === '1m'
          ? { text: `≤ ${LIMIT_MB} MB (max of runs)`, met: withinLimit }
          : { text: `≤ ${LIMIT_MB} MB and ≤ ${GROWTH_LIMIT}× the 1M figure`, met: growth === undefined ? undefined : withinLimit && growth <= GROWTH_LIMIT },
      });
    }
  }
  return rows;
}

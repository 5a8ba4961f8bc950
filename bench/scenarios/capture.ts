/**
 * Capture of a benchmark table to a local folder (Parquet + checksum + manifest) by the Backstop
 * CLI, side by side with `pg_dump -Fc -t` (the target anchor) and `COPY … TO STDOUT` into
 * /dev/null (the physical floor). Peak RSS of each Backstop run is kept for the RSS rows.
 */
import { rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { latestLocalSnapshot } from '../backstop-cli.js';
import { copyToDevNull, pgDump } from '../anchors.js';
import type { ScenarioContext } from '../context.js';
import { BENCH_DATABASE, type BenchTable } from '../dataset.js';
import { newRunStats, processContender, resourceSummary } from '../contenders.js';
import { sideBySide, type Contender } from '../measure.js';
import type { ScenarioResult } from '../results.js';
import { round } from '../stats.js';

const BYTES_PER_MB = 1024 * 1024;

export async function captureLocal(context: ScenarioContext, table: BenchTable): Promise<ScenarioResult[]> {
  const { server, options, workDir, cli, artifacts, log } = context;
  const db = server.urlFor(BENCH_DATABASE);
  const dumpFile = path.join(workDir, `${table.name}.dump`);
  const storageFor = (iteration: number) => path.join(workDir, `local-${table.size}-${iteration}`);
  const lastIteration = options.warmup + options.runs - 1;
  const unavailable = context.buildError ? `the CLI does not build: ${context.buildError}` : await cli.unavailable('snapshot');

  const stats = { backstop: newRunStats(), pgDump: newRunStats(), copy: newRunStats() };
  const contenders: Contender[] = [
    processContender(server, 'pg_dump -Fc -t', () => pgDump(server, BENCH_DATABASE, table.name, dumpFile), stats.pgDump),
    processContender(server, 'COPY TO STDOUT > /dev/null', () => copyToDevNull(server, BENCH_DATABASE, table.name), stats.copy),
  ];
  if (!unavailable) {
    contenders.unshift(
      processContender(server, 'backstop snapshot (local)', (i) => cli.snapshot(db, storageFor(i), table.name), stats.backstop, {
        // Keep only the last run's snapshot: the restore scenario uses it.
        cleanup: async (i) => {
          if (i < lastIteration) await rm(storageFor(i), { recursive: true, force: true });
        },
      }),
    );
  }
  log(`capture ${table.name}: ${contenders.map((c) => c.name).join(' | ')}`);
  const summaries = await sideBySide(contenders, { warmup: options.warmup, runs: options.runs, log });
  artifacts.dumps.set(table.size, dumpFile);

  const dump = summaries.get('pg_dump -Fc -t')!;
  const copy = summaries.get('COPY TO STDOUT > /dev/null')!;
  const dumpBytes = (await stat(dumpFile)).size;
  const common = {
    size: table.size,
    extra: { tableBytes: table.bytes, rows: table.rows, dumpMb: round(dumpBytes / BYTES_PER_MB), pgDump: resourceSummary(stats.pgDump, options.warmup), copy: resourceSummary(stats.copy, options.warmup) },
  };
  const dumpFigure = { label: 'pg_dump -Fc -t', unit: 'ms' as const, summary: dump };
  const copyFigure = { label: 'COPY TO STDOUT > /dev/null (psql)', unit: 'ms' as const, summary: copy };

  if (unavailable) {
    return [
      { scenario: 'capture', id: `capture-local@${table.size}`, title: `capture ${table.name} to a local folder`, status: 'partial', reason: unavailable, anchor: dumpFigure, target: { text: '≤ 1.0× pg_dump (aim 0.5×)', met: undefined }, ...common },
      { scenario: 'capture', id: `capture-floor@${table.size}`, title: `capture ${table.name} vs the physical floor`, status: 'partial', reason: unavailable, anchor: copyFigure, target: { text: 'report the ratio', met: undefined }, ...common },
    ];
  }

  const snapshot = await latestLocalSnapshot(storageFor(lastIteration), `public.${table.name}`);
  if (snapshot) artifacts.localSnapshots.set(table.size, { storageDir: storageFor(lastIteration), snapshotId: snapshot.snapshotId });
  const capture = summaries.get('backstop snapshot (local)')!;
  const captureFigure = { label: 'backstop snapshot → local folder', unit: 'ms' as const, summary: capture };
  const resources = resourceSummary(stats.backstop, options.warmup);
  const extra = { ...common.extra, snapshotMb: snapshot ? round(snapshot.dataBytes / BYTES_PER_MB) : undefined, peakRssMb: resources.peakRssMb, backstop: resources };
  const ratio = capture.median / dump.median;
  return [
    {
      scenario: 'capture', id: `capture-local@${table.size}`, title: `capture ${table.name} to a local folder`, size: table.size,
      status: 'measured', backstop: captureFigure, anchor: dumpFigure, ratio,
      target: { text: '≤ 1.0× pg_dump (aim 0.5×)', met: ratio <= 1.0 }, extra,
    },
    {
      scenario: 'capture', id: `capture-floor@${table.size}`, title: `capture ${table.name} vs the physical floor`, size: table.size,
      status: 'measured', backstop: captureFigure, anchor: copyFigure, ratio: capture.median / copy.median,
      target: { text: 'report the ratio', met: undefined }, extra: { tableBytes: table.bytes, copy: common.extra.copy, backstop: resources },
    },
  ];
}

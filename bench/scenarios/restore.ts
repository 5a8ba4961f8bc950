/**
 * Restore of a captured snapshot (checksum check, table from the captured DDL, bulk load, PK and
 * other indexes, row count and content-hash verification — all inside `backstop restore`) paired
 * with `pg_restore` of the `pg_dump -Fc -t` file of the same table (issue 11 §6). Two pairings:
 *
 * - into a new table: `backstop restore --into` (no ANALYZE, which it leaves to autovacuum as
 *   pg_restore does) against `pg_restore` into a fresh database (table, data, PK);
 * - over an existing table: `backstop restore --replace` (built aside, verified, swapped in, then
 *   ANALYZE) against what a DBA runs to replace a table from a dump with the same atomicity,
 *   `pg_restore --clean --if-exists --single-transaction` into a database that holds the table,
 *   followed by `ANALYZE` on a connection opened beforehand (the statement alone is timed: no
 *   psql start is charged to the anchor).
 *
 * Each pair runs the two back to back, the order alternating, and the figure is the median of
 * the per-pair ratios (bench/measure.ts, `paired`). Database creation, the untimed first copies
 * of the replaced tables, and dropping the restored table happen outside the timed part.
 */
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { BackstopCli, latestLocalSnapshot } from '../backstop-cli.js';
import { analyzeTable, dropDatabase, pgDump, pgRestore, pgRestoreReplace, recreateDatabase } from '../anchors.js';
import type { ScenarioContext } from '../context.js';
import { newRunStats, processContender, resourceSummary, type RunStats } from '../contenders.js';
import { BENCH_DATABASE, type BenchTable } from '../dataset.js';
import { paired, type Contender, type PairedResult } from '../measure.js';
import type { ScenarioResult } from '../results.js';
import type { BenchServer } from '../server.js';
import { round } from '../stats.js';

const ANCHOR_DATABASE = 'bench_pg_restore';
const REPLACE_ANCHOR_DATABASE = 'bench_pg_restore_replace';

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

function dropTable(url: string, table: string): Promise<void> {
  return withClient(url, async (client) => {
    await client.query(`DROP TABLE IF EXISTS ${pg.Client.prototype.escapeIdentifier(table)}`);
  });
}

function tableExists(url: string, table: string): Promise<boolean> {
  return withClient(url, async (client) => {
    const { rows } = await client.query<{ found: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS found`, [pg.Client.prototype.escapeIdentifier(table)]);
    return rows[0]!.found;
  });
}

/** pg_restore (--clean, one transaction) then ANALYZE over a connection opened before the clock starts. */
function replaceAnchor(server: BenchServer, table: string, dumpFile: string, stats: RunStats): Contender {
  const url = server.urlFor(REPLACE_ANCHOR_DATABASE);
  let client: pg.Client | undefined;
  return processContender(
    server,
    'pg_restore --clean -1 + ANALYZE',
    async () => {
      const run = await pgRestoreReplace(server, REPLACE_ANCHOR_DATABASE, dumpFile);
      const analyzeMs = await analyzeTable(client!, table);
      return { ...run, wallMs: run.wallMs + analyzeMs };
    },
    stats,
    {
      prepare: async () => {
        client = new pg.Client({ connectionString: url });
        await client.connect();
      },
      cleanup: async () => {
        await client?.end();
        client = undefined;
      },
    },
  );
}

function pairedExtra(result: PairedResult, baselineDir: string | undefined): Record<string, unknown> {
  return {
    ...(result.baseline && baselineDir
      ? { baseline: { dir: baselineDir, summary: result.baseline.summary, pairRatios: result.baseline.ratios, ratio: result.baseline.ratios.median } }
      : {}),
    pairing: 'back to back, order alternating; ratio = median of per-pair ratios',
    pairRatios: result.ratios,
    ratioOfMedians: result.backstop.median / result.anchor.median,
    pairs: result.pairs.map((pair) => ({ ...pair, ratio: round(pair.ratio, 3) })),
    loadAverage: { min: Math.min(...result.pairs.map((pair) => pair.load1)), max: Math.max(...result.pairs.map((pair) => pair.load1)) },
  };
}

export async function restore(context: ScenarioContext, table: BenchTable): Promise<ScenarioResult[]> {
  const { server, options, workDir, cli, artifacts, log } = context;
  const sizeLabel = table.size === '1m' ? '1M' : '5M';
  const db = server.urlFor(BENCH_DATABASE);
  const unavailable = context.buildError
    ? `the CLI does not build: ${context.buildError}`
    : (await cli.unavailable('restore')) ?? (await cli.unavailable('snapshot'));

  // The inputs: the capture scenario's dump and snapshot when it ran, else made here (untimed).
  let dumpFile = artifacts.dumps.get(table.size);
  if (!dumpFile) {
    dumpFile = path.join(workDir, `${table.name}.dump`);
    log(`  making ${path.basename(dumpFile)} for the pg_restore anchor…`);
    await pgDump(server, BENCH_DATABASE, table.name, dumpFile);
  }
  const dump = dumpFile;
  const newTable = {
    id: `restore@${table.size}`,
    title: `restore ${table.name} into a new table`,
    target: { text: '≤ 1.0× pg_restore (median of paired runs)' },
  };
  const replaceTable = {
    id: `restore-replace@${table.size}`,
    title: `restore ${table.name} (${sizeLabel}) over the existing table (--replace, then ANALYZE) vs pg_restore --clean --single-transaction + ANALYZE`,
    target: { text: '≤ 1.0× pg_restore + ANALYZE (median of paired runs)' },
  };
  if (unavailable) {
    return [newTable, replaceTable].map((row) => ({ scenario: 'restore', id: row.id, title: row.title, size: table.size, status: 'not-measured', reason: unavailable }));
  }
  let snapshot = artifacts.localSnapshots.get(table.size);
  if (!snapshot) {
    const storageDir = path.join(workDir, `restore-src-${table.size}`);
    log(`  capturing ${table.name} to restore it…`);
    await cli.snapshot(db, storageDir, table.name);
    const found = await latestLocalSnapshot(storageDir, `public.${table.name}`);
    if (!found) throw new Error(`backstop snapshot wrote no manifest under ${storageDir}`);
    snapshot = { storageDir, snapshotId: found.snapshotId };
  }
  const source = snapshot;
  const loadAverage = () => os.loadavg()[0]!;
  // --baseline DIR: the same restores by a built checkout of earlier code, in every pair.
  const baselineCli = options.baseline ? new BackstopCli(path.resolve(options.baseline)) : undefined;
  const results: ScenarioResult[] = [];

  // Into a new table.
  {
    const restoredName = `${table.name}_restored`;
    const stats = { backstop: newRunStats(), pgRestore: newRunStats() };
    const backstop = processContender(server, 'backstop restore', () => cli.restore(db, source.storageDir, source.snapshotId, table.name, restoredName), stats.backstop, {
      prepare: () => dropTable(db, restoredName),
      cleanup: () => dropTable(db, restoredName),
    });
    const anchor = processContender(server, 'pg_restore', () => pgRestore(server, ANCHOR_DATABASE, dump), stats.pgRestore, {
      prepare: () => recreateDatabase(server, ANCHOR_DATABASE),
      cleanup: () => dropDatabase(server, ANCHOR_DATABASE),
    });
    const baselineName = `${table.name}_restored_baseline`;
    const baseline = baselineCli
      ? processContender(server, 'baseline restore', () => baselineCli.restore(db, source.storageDir, source.snapshotId, table.name, baselineName), newRunStats(), {
          prepare: () => dropTable(db, baselineName),
          cleanup: () => dropTable(db, baselineName),
        })
      : undefined;
    log(`restore ${table.name} into a new table: backstop restore | pg_restore${baseline ? ' | baseline' : ''}, paired`);
    const measured = await paired(backstop, anchor, { warmup: options.warmup, runs: options.runs, log, loadAverage, ...(baseline ? { baseline } : {}) });
    const ratio = measured.ratios.median;
    results.push({
      scenario: 'restore', id: newTable.id, title: newTable.title, size: table.size, status: 'measured',
      backstop: { label: 'backstop restore --into (verified)', unit: 'ms', summary: measured.backstop },
      anchor: { label: 'pg_restore into a fresh database', unit: 'ms', summary: measured.anchor },
      ratio,
      target: { text: newTable.target.text, met: ratio <= 1.0 },
      extra: {
        ...pairedExtra(measured, options.baseline),
        peakRssMb: resourceSummary(stats.backstop, options.warmup).peakRssMb,
        backstop: resourceSummary(stats.backstop, options.warmup),
        pgRestore: resourceSummary(stats.pgRestore, options.warmup),
        snapshotId: source.snapshotId,
      },
    });
  }

  // Over an existing table.
  {
    const replacedName = `${table.name}_replaced`;
    const stats = { backstop: newRunStats(), pgRestore: newRunStats() };
    const backstop = processContender(server, 'backstop restore --replace', () => cli.restore(db, source.storageDir, source.snapshotId, table.name, replacedName, { replace: true }), stats.backstop, {
      prepare: async () => {
        if (!(await tableExists(db, replacedName))) await cli.restore(db, source.storageDir, source.snapshotId, table.name, replacedName);
      },
    });
    const anchor = replaceAnchor(server, table.name, dump, stats.pgRestore);
    const baselineName = `${table.name}_replaced_baseline`;
    const baseline = baselineCli
      ? processContender(server, 'baseline restore --replace', () => baselineCli.restore(db, source.storageDir, source.snapshotId, table.name, baselineName, { replace: true }), newRunStats(), {
          prepare: async () => {
            if (!(await tableExists(db, baselineName))) await baselineCli.restore(db, source.storageDir, source.snapshotId, table.name, baselineName);
          },
        })
      : undefined;
    log(`restore ${table.name} over the existing table: backstop restore --replace | pg_restore --clean -1 + ANALYZE${baseline ? ' | baseline' : ''}, paired`);
    await recreateDatabase(server, REPLACE_ANCHOR_DATABASE);
    await pgRestore(server, REPLACE_ANCHOR_DATABASE, dump);
    try {
      const measured = await paired(backstop, anchor, { warmup: options.warmup, runs: options.runs, log, loadAverage, ...(baseline ? { baseline } : {}) });
      const ratio = measured.ratios.median;
      results.push({
        scenario: 'restore', id: replaceTable.id, title: replaceTable.title, size: table.size, status: 'measured',
        backstop: { label: 'backstop restore --replace (verified, swapped in, ANALYZE)', unit: 'ms', summary: measured.backstop },
        anchor: { label: 'pg_restore --clean --if-exists --single-transaction, then ANALYZE', unit: 'ms', summary: measured.anchor },
        ratio,
        target: { text: replaceTable.target.text, met: ratio <= 1.0 },
        extra: {
          ...pairedExtra(measured, options.baseline),
          backstop: resourceSummary(stats.backstop, options.warmup),
          pgRestore: resourceSummary(stats.pgRestore, options.warmup),
          snapshotId: source.snapshotId,
        },
      });
    } finally {
      await dropTable(db, replacedName);
      await dropTable(db, baselineName);
      await dropDatabase(server, REPLACE_ANCHOR_DATABASE);
    }
  }
  return results;
}

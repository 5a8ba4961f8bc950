/**
 * Restore of a captured snapshot into a new table (checksum check, table from the captured DDL,
 * bulk load, PK and other indexes, row count and content-hash verification — all inside
 * `backstop restore`) side by side with `pg_restore` of the `pg_dump -Fc -t` file into a fresh
 * database (table, data, PK). Database creation for the anchor and dropping the restored table
 * happen outside the timed part.
 */
import path from 'node:path';
import pg from 'pg';
import { latestLocalSnapshot } from '../backstop-cli.js';
import { dropDatabase, pgDump, pgRestore, recreateDatabase } from '../anchors.js';
import type { ScenarioContext } from '../context.js';
import { BENCH_DATABASE, type BenchTable } from '../dataset.js';
import { sideBySide, type Contender } from '../measure.js';
import type { ScenarioResult } from '../results.js';
import { newRunStats, processContender, resourceSummary } from '../contenders.js';

const ANCHOR_DATABASE = 'bench_pg_restore';

async function dropTable(url: string, table: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`DROP TABLE IF EXISTS ${pg.Client.prototype.escapeIdentifier(table)}`);
  } finally {
    await client.end();
  }
}

export async function restore(context: ScenarioContext, table: BenchTable): Promise<ScenarioResult[]> {
  const { server, options, workDir, cli, artifacts, log } = context;
  const id = `restore@${table.size}`;
  const title = `restore ${table.name} into a new table`;
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
  let snapshot = artifacts.localSnapshots.get(table.size);
  if (!unavailable && !snapshot) {
    const storageDir = path.join(workDir, `restore-src-${table.size}`);
    log(`  capturing ${table.name} to restore it…`);
    await cli.snapshot(db, storageDir, table.name);
    const found = await latestLocalSnapshot(storageDir, `public.${table.name}`);
    if (!found) throw new Error(`backstop snapshot wrote no manifest under ${storageDir}`);
    snapshot = { storageDir, snapshotId: found.snapshotId };
  }

  const restoredName = `${table.name}_restored`;
  const stats = { backstop: newRunStats(), pgRestore: newRunStats() };
  const contenders: Contender[] = [
    processContender(server, 'pg_restore', () => pgRestore(server, ANCHOR_DATABASE, dumpFile), stats.pgRestore, {
      prepare: () => recreateDatabase(server, ANCHOR_DATABASE),
      cleanup: () => dropDatabase(server, ANCHOR_DATABASE),
    }),
  ];
  if (!unavailable && snapshot) {
    const source = snapshot;
    contenders.unshift(
      processContender(server, 'backstop restore', () => cli.restore(db, source.storageDir, source.snapshotId, table.name, restoredName), stats.backstop, {
        prepare: () => dropTable(db, restoredName),
        cleanup: () => dropTable(db, restoredName),
      }),
    );
  }
  log(`restore ${table.name}: ${contenders.map((c) => c.name).join(' | ')}`);
  const summaries = await sideBySide(contenders, { warmup: options.warmup, runs: options.runs, log });
  const anchor = { label: 'pg_restore into a fresh database', unit: 'ms' as const, summary: summaries.get('pg_restore')! };
  if (unavailable) {
    return [{ scenario: 'restore', id, title, size: table.size, status: 'partial', reason: unavailable, anchor, target: { text: '≤ 1.0× pg_restore', met: undefined }, extra: { pgRestore: resourceSummary(stats.pgRestore, options.warmup) } }];
  }
  const restored = summaries.get('backstop restore')!;
  const ratio = restored.median / anchor.summary.median;
  return [{
    scenario: 'restore', id, title, size: table.size, status: 'measured',
    backstop: { label: 'backstop restore --into (verified)', unit: 'ms', summary: restored },
    anchor, ratio,
    target: { text: '≤ 1.0× pg_restore', met: ratio <= 1.0 },
    extra: { peakRssMb: resourceSummary(stats.backstop, options.warmup).peakRssMb, backstop: resourceSummary(stats.backstop, options.warmup), pgRestore: resourceSummary(stats.pgRestore, options.warmup), snapshotId: snapshot!.snapshotId },
  }];
}

/**
 * One continuous-snapshot poll over 1,000 unchanged tables, through the agent's own
 * SnapshotScheduler.pollOnce() in this process: the first poll captures every table (startup,
 * untimed); the measured polls that follow must find nothing changed and capture nothing.
 */
import path from 'node:path';
import pg from 'pg';
import { installBackstop, installedVariant, variantId, variantTitle } from '../install.js';
import { silentLogger } from '../../src/log/logger.js';
import { recreateDatabase, dropDatabase } from '../anchors.js';
import type { ScenarioContext } from '../context.js';
import { notMeasured, type ScenarioResult } from '../results.js';
import { summarize } from '../stats.js';

/** The agent's modules, loaded when the scenario runs so a half-landed agent fails only here. */
async function loadAgentModules() {
  const [{ AgentState }, { createMetrics }, { SnapshotScheduler }, { openStorage }] = await Promise.all([
    import('../../src/agent/state.js'),
    import('../../src/agent/metrics.js'),
    import('../../src/agent/scheduler.js'),
    import('../../src/storage/open.js'),
  ]);
  return { AgentState, createMetrics, SnapshotScheduler, openStorage };
}

const DATABASE = 'bench_poll';
const TABLES = 1000;
const ROWS_PER_TABLE = 10;
const TARGET_MS = 200;
const MEASURED_POLLS = 20;

async function createTables(url: string, context: ScenarioContext): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await installBackstop(client, context);
    // One DO block: 1,000 round trips would make the setup, not the poll, the slow part.
    await client.query(`DO $$
      BEGIN
        FOR i IN 1..${TABLES} LOOP
          EXECUTE format('CREATE TABLE public.%I (id integer PRIMARY KEY, v text)', 'poll_' || i);
          EXECUTE format('INSERT INTO public.%I SELECT g, md5(g::text) FROM generate_series(1, ${ROWS_PER_TABLE}) g', 'poll_' || i);
        END LOOP;
      END $$`);
    // Settle the statistics counters before the first poll reads them.
    await client.query('ANALYZE');
  } finally {
    await client.end();
  }
}

export async function pollUnchanged(context: ScenarioContext): Promise<ScenarioResult[]> {
  const { server, workDir, log } = context;
  let modules: Awaited<ReturnType<typeof loadAgentModules>>;
  try {
    modules = await loadAgentModules();
  } catch (error) {
    return [notMeasured('poll', 'poll', `continuous-snapshot poll over ${TABLES.toLocaleString('en')} unchanged tables`, `the agent's scheduler does not load yet: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`)];
  }
  const { AgentState, createMetrics, SnapshotScheduler, openStorage } = modules;
  await recreateDatabase(server, DATABASE);
  const url = server.urlFor(DATABASE);
  log(`  creating ${TABLES} tables of ${ROWS_PER_TABLE} rows with Backstop installed…`);
  await createTables(url, context);
  const pool = new pg.Pool({ connectionString: url, max: 4, application_name: 'backstop-bench-poll' });
  const state = new AgentState(path.join(workDir, 'poll-state.sqlite'));
  const scheduler = new SnapshotScheduler({
    pool,
    storage: openStorage(path.join(workDir, 'poll-storage')),
    state,
    metrics: createMetrics({ processMetrics: false }),
    logger: silentLogger,
    // The agent's default concurrency (2 was used while four captures at once deadlocked the
    // engine; unchanged polls capture nothing, so it only affects the startup sweep).
    options: { interval: 3_600_000, everyPoll: false, concurrency: 4 },
  });
  try {
    log('  first poll (captures every table; untimed)…');
    const startup = await scheduler.pollOnce();
    log(`  startup poll: ${startup.captured} captured, ${startup.failed} failed in ${(startup.durationMs / 1000).toFixed(1)} s`);
    const wall: number[] = [];
    const reported: number[] = [];
    const captured: number[] = [];
    const warmup = 2;
    for (let i = 0; i < warmup + MEASURED_POLLS; i += 1) {
      const started = performance.now();
      const report = await scheduler.pollOnce();
      const elapsed = performance.now() - started;
      if (i < warmup) continue;
      wall.push(elapsed);
      reported.push(report.durationMs);
      captured.push(report.captured + report.failed);
    }
    const summary = summarize(wall);
    const totalCaptures = captured.reduce((sum, value) => sum + value, 0);
    log(`  poll over ${startup.tablesSeen} tables: p50 ${summary.median.toFixed(1)} ms, p95 ${summary.p95.toFixed(1)} ms, captures ${totalCaptures}`);
    return [{
      scenario: 'poll', id: variantId('poll', context), title: variantTitle(`continuous-snapshot poll over ${TABLES.toLocaleString('en')} unchanged tables`, context),
      status: 'measured',
      backstop: { label: 'SnapshotScheduler.pollOnce()', unit: 'ms', summary },
      target: { text: `≤ ${TARGET_MS} ms, zero captures`, met: summary.median <= TARGET_MS && totalCaptures === 0 },
      extra: { ...installedVariant(context), tablesSeen: startup.tablesSeen, startupCaptured: startup.captured, startupFailed: startup.failed, startupMs: startup.durationMs, capturesDuringMeasuredPolls: totalCaptures, p95: summary.p95, reportedDurationMs: summarize(reported) },
    }];
  } finally {
    await scheduler.stop();
    state.close();
    await pool.end();
    await dropDatabase(server, DATABASE);
  }
}

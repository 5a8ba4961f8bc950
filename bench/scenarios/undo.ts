/**
 * Issue 11: undoing a DROP TABLE of bench_t (1M rows) through `SELECT backstop.undo(id)` — the
 * agent stages the before-image (checksum, load, verification, indexes, what is attached) and
 * the caller's statement adopts it — against `backstop restore` of the same before-image into a
 * new table (the CLI: one process, one transaction). Paired: each round drops bench_t (guarded,
 * auto mode, untimed), then times the undo and the restore back to back, their order alternating
 * from round to round; the ratio is the median of the per-round ratios.
 */
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startAgent, type AgentChild } from '../agent.js';
import { dropDatabase, recreateDatabase } from '../anchors.js';
import type { ScenarioContext } from '../context.js';
import { generatorFor, readGenerator, splitStatements } from '../dataset.js';
import { installBackstop, installedVariant } from '../install.js';
import { notMeasured, type ScenarioResult } from '../results.js';
import { round, summarize } from '../stats.js';

const DATABASE = 'bench_undo';
const ROWS = 1_000_000;
const ROUNDS = 5;
const TARGET_RATIO = 1.1;
const ID = 'undo@1m';
const TITLE = 'undo of DROP TABLE bench_t (1M) through backstop.undo vs backstop restore of the same before-image';
const RESTORED = 'bench_t_restored';

/** DROP TABLE bench_t, approved by the agent (auto mode); returns the request and its before-image. */
async function dropApproved(admin: pg.Client): Promise<{ requestId: string; snapshotId: string }> {
  await admin.query('DROP TABLE public.bench_t');
  const { rows } = await admin.query<{ id: string; snapshot_id: string }>(
    `SELECT id::text, snapshot_ids[1] AS snapshot_id FROM backstop.requests WHERE status = 'consumed' ORDER BY id DESC LIMIT 1`,
  );
  if (!rows[0]?.snapshot_id) throw new Error('the DROP left no consumed request with a before-image');
  return { requestId: rows[0].id, snapshotId: rows[0].snapshot_id };
}

export async function undo(context: ScenarioContext): Promise<ScenarioResult[]> {
  const { server, workDir, cli, log } = context;
  const unavailable = context.buildError ? `the CLI does not build: ${context.buildError}` : (await cli.unavailable('undo')) ?? (await cli.unavailable('restore'));
  if (unavailable) return [notMeasured('undo', ID, TITLE, unavailable)];

  await recreateDatabase(server, DATABASE);
  const url = server.urlFor(DATABASE);
  const admin = new pg.Client({ connectionString: url, application_name: 'backstop-bench-undo' });
  await admin.connect();
  let agent: AgentChild | undefined;
  const storage = path.join(workDir, 'undo-agent-storage');
  try {
    await installBackstop(admin, context);
    log(`  loading bench_t (${ROWS.toLocaleString('en')} rows)…`);
    for (const statement of splitStatements(generatorFor(await readGenerator(), 'public.bench_t', ROWS))) await admin.query(statement);
    await admin.query('VACUUM (ANALYZE) public.bench_t');
    await admin.query('CHECKPOINT');
    // No background snapshots (an empty schema list): only the before-images and the two restores run.
    agent = await startAgent(context, {
      url, storage, state: path.join(workDir, 'undo-agent.sqlite'), concurrency: 2, approval: 'auto', schemas: 'bench_none', waitForStartupSnapshots: false,
    });
    const loadAtStart = os.loadavg().map((value) => round(value, 2));
    const undoMs: number[] = [];
    const restoreMs: number[] = [];
    const ratios: number[] = [];
    for (let round_ = 0; round_ < ROUNDS; round_ += 1) {
      const { requestId, snapshotId } = await dropApproved(admin);
      const timeUndo = async () => {
        const started = performance.now();
        await admin.query('SELECT backstop.undo($1::bigint)', [requestId]);
        return performance.now() - started;
      };
      const timeRestore = async () => {
        const run = await cli.restore(url, storage, snapshotId, 'bench_t', RESTORED);
        return run.wallMs;
      };
      let u: number;
      let r: number;
      if (round_ % 2 === 0) {
        u = await timeUndo();
        r = await timeRestore();
      } else {
        r = await timeRestore();
        u = await timeUndo();
      }
      // A guarded table like any other: the agent approves its DROP (auto mode, untimed).
      await admin.query(`DROP TABLE public.${RESTORED}`);
      undoMs.push(u);
      restoreMs.push(r);
      ratios.push(u / r);
      log(`  round ${round_ + 1}: undo ${Math.round(u)} ms, restore ${Math.round(r)} ms (${round(u / r, 3)}×)`);
    }
    const undone = summarize(undoMs);
    const restored = summarize(restoreMs);
    const ratio = summarize(ratios).median;
    return [{
      scenario: 'undo', id: ID, title: TITLE, size: '1m', status: 'measured',
      backstop: { label: 'SELECT backstop.undo(id) (client wall time)', unit: 'ms', summary: undone },
      anchor: { label: 'backstop restore of the same before-image into a new table', unit: 'ms', summary: restored },
      ratio,
      target: { text: `≤ ${TARGET_RATIO}× backstop restore`, met: ratio <= TARGET_RATIO },
      extra: {
        rounds: ROUNDS, perRoundRatios: ratios.map((value) => round(value, 3)), undoMs: undoMs.map(Math.round), restoreMs: restoreMs.map(Math.round),
        loadAverage: { start: loadAtStart, end: os.loadavg().map((value) => round(value, 2)) }, ...installedVariant(context),
      },
    }];
  } finally {
    await agent?.stop();
    await admin.end().catch(() => undefined);
    await dropDatabase(server, DATABASE).catch(() => undefined);
  }
}

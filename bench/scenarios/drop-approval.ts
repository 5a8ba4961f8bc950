/**
 * DROP TABLE of a 10k-row table in auto mode with the real agent running (`backstop agent` as a
 * child process): the statement's wall time from the client — request filed through the
 * loopback, gate, before-image capture to a local folder, checksum check, decision, and the
 * guard noticing it — against the before-image capture alone (captureTable of an identical
 * table, in this process, to the same kind of storage). The two are interleaved run by run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import pg from 'pg';
import { installBackstop, installedVariant, variantId, variantTitle } from '../install.js';
import { dropDatabase, recreateDatabase } from '../anchors.js';
import type { ScenarioContext } from '../context.js';
import { generatorFor, readGenerator, splitStatements } from '../dataset.js';
import { sideBySide } from '../measure.js';
import { notMeasured, type ScenarioResult } from '../results.js';
import { round, summarize } from '../stats.js';

const DATABASE = 'bench_drop';
const ROWS = 10_000;
const RUNS = 20;
const WARMUP = 2;
const TARGET_OVERHEAD_MS = 150;
const ID = 'drop-approval';
/** The agent's default --concurrency (2 was used while the engine deadlocked at 4; see BENCHMARKS.md). */
const AGENT_CONCURRENCY = 4;
const TITLE = 'DROP TABLE (10k rows) in auto mode vs before-image capture alone';

interface AgentChild {
  child: ChildProcess;
  stderr(): string;
  stop(): Promise<void>;
}

/** Start `backstop agent` and wait until it leads and listens (its JSON log says so). */
async function startAgent(context: ScenarioContext, url: string, storage: string): Promise<AgentChild> {
  const args = ['--openssl-legacy-provider', context.cli.bin, 'agent', '--db', url, '--storage', storage, '--approval', 'auto',
    '--http', 'off', '--interval', '1h', '--state', path.join(context.workDir, 'drop-agent.sqlite'), '--concurrency', String(AGENT_CONCURRENCY)];
  const child = spawn(process.execPath, args, { cwd: context.repoRoot, env: { ...process.env, BACKSTOP_LOG_LEVEL: 'info' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const seen = new Set<string>();
  const wanted = ['this agent is the leader', 'listening', 'snapshot poll done'];
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the agent did not get ready in 120 s: ${stderr.slice(-2000)}`)), 120_000);
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      for (const line of chunk.split('\n')) {
        try {
          const msg = (JSON.parse(line) as { msg?: string }).msg;
          if (msg) seen.add(msg);
        } catch {
          // not a JSON log line
        }
      }
      if (wanted.every((msg) => seen.has(msg))) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the agent exited with ${code}: ${stderr.slice(-2000)}`));
    });
  });
  await ready;
  return {
    child,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

export async function dropApproval(context: ScenarioContext): Promise<ScenarioResult[]> {
  const { server, workDir, log } = context;
  const unavailable = context.buildError ? `the CLI does not build: ${context.buildError}` : await context.cli.unavailable('agent');
  if (unavailable) return [notMeasured('drop-approval', ID, TITLE, unavailable)];
  const [{ captureTable }, { openStorage }, { silentLogger }] = await Promise.all([
    import('../../src/snapshot/capture.js'),
    import('../../src/storage/open.js'),
    import('../../src/log/logger.js'),
  ]);

  await recreateDatabase(server, DATABASE);
  const url = server.urlFor(DATABASE);
  const admin = new pg.Client({ connectionString: url, application_name: 'backstop-bench-drop' });
  await admin.connect();
  let agent: AgentChild | undefined;
  const pool = new pg.Pool({ connectionString: url, max: 2, application_name: 'backstop-bench-anchor' });
  try {
    await installBackstop(admin, context);
    const generator = await readGenerator();
    const total = WARMUP + RUNS;
    log(`  creating ${total} tables of ${ROWS.toLocaleString('en')} rows and the anchor table…`);
    for (const name of [...Array.from({ length: total }, (_, i) => `drop_t_${i}`), 'anchor_t']) {
      for (const statement of splitStatements(generatorFor(generator, name, ROWS))) await admin.query(statement);
    }
    agent = await startAgent(context, url, path.join(workDir, 'drop-agent-storage'));
    log('  agent running (leader, listening, startup snapshots done)');
    const anchorStorage = openStorage(path.join(workDir, 'drop-anchor-storage'));

    // Wall-clock bounds of each DROP, to split its time at the request's own timestamps.
    const bounds: { startMs: number; endMs: number }[] = [];
    const summaries = await sideBySide(
      [
        {
          name: 'DROP TABLE (agent, auto)',
          async run(iteration) {
            const startMs = Date.now();
            const started = performance.now();
            await admin.query(`DROP TABLE ${pg.Client.prototype.escapeIdentifier(`drop_t_${iteration}`)}`);
            const elapsed = performance.now() - started;
            bounds[iteration] = { startMs, endMs: Date.now() };
            return elapsed;
          },
        },
        {
          name: 'before-image capture alone',
          async run() {
            const started = performance.now();
            await captureTable({ pool, storage: anchorStorage, table: { schema: 'public', table: 'anchor_t' }, source: 'before-image', logger: silentLogger });
            return performance.now() - started;
          },
        },
      ],
      { warmup: WARMUP, runs: RUNS, log },
    );

    const { rows: requests } = await admin.query<{ status: string; created_ms: number; decided_ms: number; consumed_ms: number | null; capture_ms: number | null; snapshots: number }>(
      `SELECT r.status,
              extract(epoch FROM r.created_at) * 1000 AS created_ms,
              extract(epoch FROM r.decided_at) * 1000 AS decided_ms,
              extract(epoch FROM r.consumed_at) * 1000 AS consumed_ms,
              (SELECT (s.manifest->>'duration_ms')::float8 FROM backstop.snapshot_catalog s WHERE s.snapshot_id = r.snapshot_ids[1]) AS capture_ms,
              coalesce(array_length(r.snapshot_ids, 1), 0) AS snapshots
         FROM backstop.requests r ORDER BY r.id`,
    );
    // Requests were filed in iteration order, one per DROP.
    const phases = requests.slice(WARMUP).map((request, index) => {
      const bound = bounds[WARMUP + index]!;
      return {
        filing: Number(request.created_ms) - bound.startMs,
        agent: Number(request.decided_ms) - Number(request.created_ms),
        guardNotices: request.consumed_ms === null ? Number.NaN : Number(request.consumed_ms) - Number(request.decided_ms),
        finishing: request.consumed_ms === null ? Number.NaN : bound.endMs - Number(request.consumed_ms),
      };
    });
    const measured = requests.slice(WARMUP);
    const drop = summaries.get('DROP TABLE (agent, auto)')!;
    const alone = summaries.get('before-image capture alone')!;
    const p50Overhead = drop.median - alone.median;
    const p95Overhead = drop.p95 - alone.p95;
    const allConsumed = requests.length === total && requests.every((request) => request.status === 'consumed' && request.snapshots > 0);
    return [{
      scenario: 'drop-approval', id: variantId(ID, context), title: variantTitle(TITLE, context), status: 'measured',
      backstop: { label: 'DROP TABLE, agent in auto mode (client wall time)', unit: 'ms', summary: drop },
      anchor: { label: 'captureTable() of the same table shape alone', unit: 'ms', summary: alone },
      ratio: drop.median / alone.median,
      delta: p50Overhead,
      target: { text: `p50 overhead ≤ ${TARGET_OVERHEAD_MS} ms`, met: p50Overhead <= TARGET_OVERHEAD_MS && allConsumed },
      extra: {
        p50Drop: round(drop.median, 1), p95Drop: round(drop.p95, 1), p50Capture: round(alone.median, 1), p95Capture: round(alone.p95, 1),
        p50Overhead: round(p50Overhead, 1), p95Overhead: round(p95Overhead, 1),
        requests: requests.length, allConsumedWithBeforeImage: allConsumed, agentConcurrency: AGENT_CONCURRENCY, ...installedVariant(context),
        phasesMs: {
          statementStartToRequestFiled: summarize(phases.map((phase) => phase.filing)),
          requestFiledToDecided: summarize(phases.map((phase) => phase.agent)),
          decidedToConsumed: summarize(phases.map((phase) => phase.guardNotices)),
          consumedToStatementEnd: summarize(phases.map((phase) => phase.finishing)),
        },
        agentCaptureMs: measured.every((request) => request.capture_ms !== null) ? summarize(measured.map((request) => Number(request.capture_ms))) : undefined,
      },
    }];
  } finally {
    await agent?.stop();
    await pool.end();
    await admin.end();
    await dropDatabase(server, DATABASE);
  }
}

/**
 * DROP TABLE of a 10k-row table in auto mode with the real agent running (`backstop agent` as a
 * child process): the statement's wall time from the client — request filed through the
 * loopback, gate, before-image capture to a local folder, checksum check, decision, and the
 * guard noticing it — against the before-image capture alone (captureTable of an identical
 * table, in this process, to the same kind of storage). The two are interleaved run by run.
 *
 * With --baseline DIR (a built checkout of earlier code) the same DROP is also measured against
 * that code, installed by its own CLI in a database of its own and answered by its own agent,
 * interleaved with the others: issue 9's "DROP approval latency at most 1.3× today's" then
 * compares two figures of the same run, under the same load.
 */
import { execFile } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { startAgent, type AgentChild } from '../agent.js';
import { installBackstop, installedVariant, variantId, variantTitle } from '../install.js';
import { dropDatabase, recreateDatabase } from '../anchors.js';
import type { ScenarioContext } from '../context.js';
import { generatorFor, readGenerator, splitStatements } from '../dataset.js';
import { sideBySide, type Contender } from '../measure.js';
import { notMeasured, type ScenarioResult } from '../results.js';
import { countBy, round, summarize, type Summary } from '../stats.js';

const exec = promisify(execFile);

const DATABASE = 'bench_drop';
const BASELINE_DATABASE = 'bench_drop_baseline';
/** Issue 9: DROP approval latency (request filed → statement done) at most this times the code before it. */
const TARGET_BASELINE_RATIO = 1.3;
const ROWS = 10_000;
const RUNS = 20;
const WARMUP = 2;
const TARGET_OVERHEAD_MS = 150;
const ID = 'drop-approval';
/** The agent's default --concurrency (2 was used while the engine deadlocked at 4; see BENCHMARKS.md). */
const AGENT_CONCURRENCY = 4;
const TITLE = 'DROP TABLE (10k rows) in auto mode vs before-image capture alone';
const BASELINE_ID = 'drop-approval:filed-to-done vs baseline';

/** The earlier code's CLI, when --baseline is given. */
function baselineBin(context: ScenarioContext): string | undefined {
  return context.options.baseline ? path.resolve(context.options.baseline, 'bin', 'backstop.js') : undefined;
}

/** Install the baseline's Backstop with its own CLI (its migrations, its SQL). */
async function installBaseline(bin: string, url: string): Promise<void> {
  await exec(process.execPath, [bin, 'install', '--db', url], { env: { ...process.env, BACKSTOP_LOG_LEVEL: 'warn' } });
}

/** 22 tables of 10k rows (one per DROP, warm-ups included) and the anchor table. */
async function createDropTables(admin: pg.Client, total: number): Promise<void> {
  const generator = await readGenerator();
  for (const name of [...Array.from({ length: total }, (_, i) => `drop_t_${i}`), 'anchor_t']) {
    for (const statement of splitStatements(generatorFor(generator, name, ROWS))) await admin.query(statement);
  }
}

interface Bound {
  startMs: number;
  endMs: number;
}

/** One DROP per iteration, timed from the client; its wall-clock bounds are kept to split it at the request's timestamps. */
function dropContender(name: string, client: pg.Client, bounds: Bound[]): Contender {
  return {
    name,
    async run(iteration) {
      const startMs = Date.now();
      const started = performance.now();
      await client.query(`DROP TABLE ${pg.Client.prototype.escapeIdentifier(`drop_t_${iteration}`)}`);
      const elapsed = performance.now() - started;
      bounds[iteration] = { startMs, endMs: Date.now() };
      return elapsed;
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
  let baselineAgent: AgentChild | undefined;
  let baselineAdmin: pg.Client | undefined;
  const pool = new pg.Pool({ connectionString: url, max: 2, application_name: 'backstop-bench-anchor' });
  const baseline = baselineBin(context);
  try {
    await installBackstop(admin, context);
    const total = WARMUP + RUNS;
    log(`  creating ${total} tables of ${ROWS.toLocaleString('en')} rows and the anchor table…`);
    await createDropTables(admin, total);
    agent = await startAgent(context, {
      url, storage: path.join(workDir, 'drop-agent-storage'), state: path.join(workDir, 'drop-agent.sqlite'), concurrency: AGENT_CONCURRENCY, approval: 'auto',
    });
    log('  agent running (leader, listening, startup snapshots done)');
    if (baseline) {
      await recreateDatabase(server, BASELINE_DATABASE);
      const baselineUrl = server.urlFor(BASELINE_DATABASE);
      await installBaseline(baseline, baselineUrl);
      baselineAdmin = new pg.Client({ connectionString: baselineUrl, application_name: 'backstop-bench-drop-baseline' });
      await baselineAdmin.connect();
      await createDropTables(baselineAdmin, total);
      baselineAgent = await startAgent(context, {
        url: baselineUrl, storage: path.join(workDir, 'drop-baseline-agent-storage'), state: path.join(workDir, 'drop-baseline-agent.sqlite'),
        concurrency: AGENT_CONCURRENCY, approval: 'auto', bin: baseline,
      });
      log(`  baseline agent running (${baseline})`);
    }
    const anchorStorage = openStorage(path.join(workDir, 'drop-anchor-storage'));

    const bounds: Bound[] = [];
    const baselineBounds: Bound[] = [];
    const loadAtStart = os.loadavg().map((value) => round(value, 2));
    const summaries = await sideBySide(
      [
        dropContender('DROP TABLE (agent, auto)', admin, bounds),
        {
          name: 'before-image capture alone',
          async run() {
            const started = performance.now();
            await captureTable({ pool, storage: anchorStorage, table: { schema: 'public', table: 'anchor_t' }, source: 'before-image', logger: silentLogger });
            return performance.now() - started;
          },
        },
        ...(baselineAdmin ? [dropContender('DROP TABLE, baseline (agent, auto)', baselineAdmin, baselineBounds)] : []),
      ],
      { warmup: WARMUP, runs: RUNS, log },
    );

    const loadAverage = { start: loadAtStart, end: os.loadavg().map((value) => round(value, 2)) };
    // Completion columns: since 0006 an approved DROP locks its table IN EXCLUSIVE MODE and has
    // the agent prove (census) or re-capture its before-image before it goes on.
    const { rows: requests } = await admin.query<{
      status: string; created_ms: number; decided_ms: number; consumed_ms: number | null; capture_ms: number | null; snapshots: number;
      completion_requested_ms: number | null; completion_started_ms: number | null; completion_finished_ms: number | null; how: string | null;
    }>(
      `SELECT r.status,
              extract(epoch FROM r.created_at) * 1000 AS created_ms,
              extract(epoch FROM r.decided_at) * 1000 AS decided_ms,
              extract(epoch FROM r.consumed_at) * 1000 AS consumed_ms,
              (SELECT (s.manifest->>'duration_ms')::float8 FROM backstop.snapshot_catalog s
                WHERE s.request_id = r.id ORDER BY s.created_at LIMIT 1) AS capture_ms,
              coalesce(array_length(r.snapshot_ids, 1), 0) AS snapshots,
              extract(epoch FROM c.requested_at) * 1000 AS completion_requested_ms,
              extract(epoch FROM c.started_at) * 1000 AS completion_started_ms,
              extract(epoch FROM c.finished_at) * 1000 AS completion_finished_ms,
              r.image_completion->0->>'how' AS how
         FROM backstop.requests r
         LEFT JOIN LATERAL (SELECT * FROM backstop.image_completions c WHERE c.request_id = r.id AND c.status = 'done'
                             ORDER BY c.id DESC LIMIT 1) c ON true
        ORDER BY r.id`,
    );
    // Requests were filed in iteration order, one per DROP.
    const ms = (value: number | null): number => (value === null ? Number.NaN : Number(value));
    const phases = requests.slice(WARMUP).map((request, index) => {
      const bound = bounds[WARMUP + index]!;
      return {
        filing: ms(request.created_ms) - bound.startMs,
        agent: ms(request.decided_ms) - ms(request.created_ms),
        lockAndFileCompletion: ms(request.completion_requested_ms) - ms(request.decided_ms),
        agentClaimsCompletion: ms(request.completion_started_ms) - ms(request.completion_requested_ms),
        agentCompletes: ms(request.completion_finished_ms) - ms(request.completion_started_ms),
        guardNotices: ms(request.consumed_ms) - ms(request.completion_finished_ms),
        finishing: bound.endMs - ms(request.consumed_ms),
        filedToDone: bound.endMs - ms(request.created_ms),
        lockHeld: bound.endMs - ms(request.completion_requested_ms),
      };
    });
    const measured = requests.slice(WARMUP);
    const drop = summaries.get('DROP TABLE (agent, auto)')!;
    const alone = summaries.get('before-image capture alone')!;
    const p50Overhead = drop.median - alone.median;
    const p95Overhead = drop.p95 - alone.p95;
    const allConsumed = requests.length === total && requests.every((request) => request.status === 'consumed' && request.snapshots > 0);
    const results: ScenarioResult[] = [{
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
        loadAverage,
        // The issue 9 measure: request filed (its created_at) → statement returned.
        filedToStatementEndMs: summarize(phases.map((phase) => phase.filedToDone)),
        // Completion filed (right after the EXCLUSIVE lock is granted) → statement returned: how
        // long writers to the table would have waited.
        lockHeldMs: summarize(phases.map((phase) => phase.lockHeld)),
        completions: countBy(measured.map((request) => request.how ?? 'none')),
        phasesMs: {
          statementStartToRequestFiled: summarize(phases.map((phase) => phase.filing)),
          requestFiledToDecided: summarize(phases.map((phase) => phase.agent)),
          decidedToCompletionFiled: summarize(phases.map((phase) => phase.lockAndFileCompletion)),
          completionFiledToClaimed: summarize(phases.map((phase) => phase.agentClaimsCompletion)),
          completionClaimedToDone: summarize(phases.map((phase) => phase.agentCompletes)),
          completionDoneToConsumed: summarize(phases.map((phase) => phase.guardNotices)),
          consumedToStatementEnd: summarize(phases.map((phase) => phase.finishing)),
        },
        agentCaptureMs: measured.every((request) => request.capture_ms !== null) ? summarize(measured.map((request) => Number(request.capture_ms))) : undefined,
      },
    }];
    if (baselineAdmin) {
      const comparison = await baselineComparison(context, baselineAdmin, baselineBounds, phases.map((phase) => phase.filedToDone), summaries);
      results.push({ ...comparison, extra: { ...comparison.extra, loadAverage } });
    }
    return results;
  } finally {
    await agent?.stop();
    await baselineAgent?.stop();
    await pool.end();
    await admin.end();
    await baselineAdmin?.end();
    await dropDatabase(server, DATABASE);
    if (baseline) await dropDatabase(server, BASELINE_DATABASE);
  }
}

/**
 * Issue 9's measure, request filed → statement done, for the current code and the baseline in
 * the same run. The baseline's requests are read with the columns every version has.
 */
async function baselineComparison(
  context: ScenarioContext, baselineAdmin: pg.Client, bounds: Bound[], currentFiledToDone: number[], summaries: Map<string, Summary>,
): Promise<ScenarioResult> {
  const { rows } = await baselineAdmin.query<{ status: string; created_ms: number }>(
    'SELECT status, extract(epoch FROM created_at) * 1000 AS created_ms FROM backstop.requests ORDER BY id',
  );
  const baselineFiledToDone = rows.slice(WARMUP).map((request, index) => bounds[WARMUP + index]!.endMs - Number(request.created_ms));
  const current = summarize(currentFiledToDone);
  const before = summarize(baselineFiledToDone);
  const ratio = current.median / before.median;
  const allConsumed = rows.length === WARMUP + RUNS && rows.every((request) => request.status === 'consumed');
  return {
    scenario: 'drop-approval', id: variantId(BASELINE_ID, context),
    title: variantTitle(`DROP approval latency (request filed → statement done), 10k rows, auto mode, vs ${path.basename(path.resolve(context.options.baseline!))}`, context),
    status: 'measured',
    backstop: { label: 'this code (server created_at → client end)', unit: 'ms', summary: current },
    anchor: { label: `baseline ${context.options.baseline} (same run, interleaved)`, unit: 'ms', summary: before },
    ratio,
    delta: current.median - before.median,
    target: { text: `≤ ${TARGET_BASELINE_RATIO}× the baseline at p50`, met: ratio <= TARGET_BASELINE_RATIO && allConsumed },
    extra: {
      baseline: context.options.baseline,
      baselineAllConsumed: allConsumed,
      dropWallMs: { current: summaries.get('DROP TABLE (agent, auto)'), baseline: summaries.get('DROP TABLE, baseline (agent, auto)') },
    },
  };
}

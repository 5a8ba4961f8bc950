/**
 * Issue 9, "writers blocked": how long a steady writer waits on a table that a guarded DROP TABLE
 * is about to drop. Since 0006 the agent reads the bulk before-image while the statement waits
 * (nobody blocked); once the request is approved the waiting session locks the table IN EXCLUSIVE
 * MODE (writers wait, the agent still reads) and the agent either proves with a row-version census
 * that nothing changed since the bulk image, or captures the table again under the lock. Writers
 * are blocked from that lock to the end of the statement, and this scenario measures it the way
 * an application sees it: the longest single INSERT of a writer that inserts one row, autocommit,
 * every WRITE_EVERY_MS on its own connection into the table being dropped (bench_t, 1M rows).
 *
 * Cases:
 *   - auto-quiet (a): auto mode, no writes during the wait. The writer inserts until the DROP
 *     starts, pauses, and resumes the moment the waiting session holds its EXCLUSIVE lock (seen in
 *     pg_locks), so its INSERTs only observe the final step. The census should prove the image.
 *   - auto-writes (b): auto mode, the writer never pauses: about a thousand rows land during the
 *     bulk capture, so the image must be completed with them.
 *   - operator-writes, operator-quiet (c, scenario writers-blocked-operator): operator mode; a
 *     member of backstop_approver approves --human-wait (30 s) after the request reached
 *     awaiting_approval, with the writer writing throughout, or quiet during the wait as in (a).
 *     Blocked time must not grow with the human wait.
 *
 * Each run loads a fresh bench_t (1M rows, a copy of the shared generator's table, vacuumed and
 * checkpointed, untimed) and drops it with the real agent (`backstop agent`) answering. The time
 * of each step comes from the request's and the completion's own server timestamps.
 */
import { rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startAgent, type AgentChild } from '../agent.js';
import { dropDatabase, recreateDatabase } from '../anchors.js';
import type { ScenarioContext } from '../context.js';
import { generatorFor, readGenerator, splitStatements } from '../dataset.js';
import { installBackstop, installedVariant, variantId, variantTitle } from '../install.js';
import type { ScenarioName } from '../options.js';
import { notMeasured, type ScenarioResult } from '../results.js';
import { countBy, round, summarize, type Summary } from '../stats.js';

const DATABASE = 'bench_writers';
const SOURCE = 'bench_source.bench_t';
const TABLE = 'public.bench_t';
const ROWS = 1_000_000;
/** One INSERT started every this many ms ("every few ms", issue 9): about 1,000 rows during a bulk capture of 3–4 s. */
const WRITE_EVERY_MS = 3;
/** The writer inserts this long before the DROP starts. */
const LEAD_IN_MS = 300;
const TARGET_P50_MS = 250;
const AUTO_RUNS = 10;
const AUTO_WARMUP = 1;
const APPROVER = 'bench_approver';

type CaseName = 'auto-quiet' | 'auto-writes' | 'operator-writes' | 'operator-quiet';

interface WriterCase {
  name: CaseName;
  scenario: ScenarioName;
  title: string;
  mode: 'auto' | 'operator';
  /** Does the writer keep writing while the statement waits? */
  writesDuringWait: boolean;
  /** Operator mode: how long the approver takes once the request awaits approval. */
  humanWaitMs?: number;
}

/** One INSERT of the writer, in absolute ms (comparable with the server's timestamps: same host clock). */
interface Insert {
  startMs: number;
  endMs: number;
  ok: boolean;
  code?: string;
  message?: string;
}

/** What one run measured. */
interface RunFacts {
  case: CaseName;
  requestId: string;
  /** The longest INSERT of the run: the issue's measure. */
  longestInsertMs: number;
  /** The INSERT the lock held back (the longest one ending after the completion was filed), if any. */
  blockedInsertMs: number | undefined;
  /** Blocked INSERT's start − completion filed (negative: it was already waiting when the completion was filed). */
  blockedInsertStartLagMs: number | undefined;
  /**
   * Completion filed (the lock is held by then) → DROP returned. The DROP returns a little after
   * it releases its locks: PostgreSQL unlinks a dropped table's files after releasing them
   * (writerUnblockedToStatementEnd in the phases).
   */
  lockHeldMs: number;
  /** proof | recapture, from the manifest that now covers the request (as_of.completion.how). */
  how: string;
  /** backstop.requests.image_completion says the same. */
  howAgrees: boolean;
  reason: string | undefined;
  /** Completions filed for the request (more than one: an attempt failed and the statement filed again). */
  completions: number;
  /** Rows the writer had acknowledged between the DROP's start and the completion being filed. */
  rowsDuringWait: number;
  acknowledged: number;
  imageRows: number;
  /** The completed image holds the table's rows plus every acknowledged insert, and nothing else (by count). */
  imageHoldsEveryAcknowledgedInsert: boolean;
  writerEndCode: string | undefined;
  phasesMs: Record<string, number>;
}

/** The result row's id: the human wait is part of the operator case's name. */
function caseId(kase: WriterCase): string {
  return `writers-blocked:${kase.name}${kase.humanWaitMs !== undefined ? `-${kase.humanWaitMs / 1000}s` : ''}`;
}

const nowMs = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One autocommit INSERT every `everyMs` on its own connection, each timed, until the table is
 * gone (the INSERT the DROP held back fails with 42P01 once the DROP commits) or stop().
 */
class SteadyWriter {
  readonly inserts: Insert[] = [];
  private nextId: number;
  private paused = false;
  private stopped = false;
  private ended = false;
  private resumeWaiter: (() => void) | undefined;
  private markIdle: (() => void) | undefined;

  constructor(private readonly client: pg.Client, firstId: number, private readonly everyMs: number) {
    this.nextId = firstId;
  }

  get acknowledged(): number {
    return this.inserts.filter((insert) => insert.ok).length;
  }

  async run(): Promise<void> {
    let nextStart = nowMs();
    while (!this.stopped) {
      if (this.paused) {
        this.markIdle?.();
        await new Promise<void>((resolve) => { this.resumeWaiter = resolve; });
        nextStart = nowMs();
        continue;
      }
      const startMs = nowMs();
      try {
        await this.client.query({
          name: 'bench-writer-insert',
          text: `INSERT INTO ${TABLE} (id, email, name, created_at, score, active, payload)
                 VALUES ($1::bigint, 'writer' || $1::bigint || '@example.com', 'Writer', clock_timestamp(), 1.5, true, '{"writer": true}')`,
          values: [this.nextId],
        });
        this.inserts.push({ startMs, endMs: nowMs(), ok: true });
        this.nextId += 1;
      } catch (error) {
        this.inserts.push({ startMs, endMs: nowMs(), ok: false, code: (error as { code?: string }).code, message: (error as Error).message });
        this.ended = true;
        this.markIdle?.();
        return;
      }
      nextStart += this.everyMs;
      const wait = nextStart - nowMs();
      if (wait > 0) await sleep(wait);
      else nextStart = nowMs();
    }
    this.ended = true;
    this.markIdle?.();
  }

  /** Why the writer stopped before it was told to (its last INSERT failed), if it did. */
  get failure(): string | undefined {
    const last = this.inserts.at(-1);
    return this.ended && last && !last.ok ? `${last.code ?? ''} ${last.message ?? ''}`.trim() : undefined;
  }

  /** Stop inserting; resolves once no INSERT is in flight. */
  pause(): Promise<void> {
    if (this.ended) return Promise.resolve();
    const idle = new Promise<void>((resolve) => { this.markIdle = resolve; });
    this.paused = true;
    return idle;
  }

  resume(): void {
    this.paused = false;
    this.resumeWaiter?.();
    this.resumeWaiter = undefined;
  }

  /** No new INSERT after the one in flight. */
  stop(): void {
    this.stopped = true;
    this.resume();
  }
}

/**
 * Resolve with the time the DROP's session was first seen holding `relid` IN EXCLUSIVE MODE (the
 * start of the final step), polling pg_locks every 20 ms until the request is approved and every
 * millisecond after; undefined if `signal` aborts first.
 */
async function lockSeen(client: pg.Client, dropPid: number, relid: number, afterRequestId: string, signal: AbortSignal): Promise<number | undefined> {
  while (!signal.aborted) {
    const { rows: [state] } = await client.query<{ locked: boolean; approved: boolean }>(
      `SELECT EXISTS (SELECT FROM pg_catalog.pg_locks l
                       WHERE l.pid = $1 AND l.locktype = 'relation' AND l.relation = $2::oid
                         AND l.mode = 'ExclusiveLock' AND l.granted) AS locked,
              EXISTS (SELECT FROM backstop.request_log r
                       WHERE r.requester_pid = $1 AND r.id > $3::bigint AND r.status = 'approved') AS approved`,
      [dropPid, relid, afterRequestId],
    );
    if (state!.locked) return nowMs();
    await sleep(state!.approved ? 1 : 20);
  }
  return undefined;
}

/** Operator mode: wait until the request awaits approval, let `humanWaitMs` pass, approve it as APPROVER. */
async function approveAfter(admin: pg.Client, approver: pg.Client, dropPid: number, afterRequestId: string, humanWaitMs: number, signal: AbortSignal): Promise<void> {
  let id: string | undefined;
  while (!signal.aborted && id === undefined) {
    const { rows } = await admin.query<{ id: string }>(
      `SELECT id::text FROM backstop.request_log WHERE requester_pid = $1 AND id > $2::bigint AND status = 'awaiting_approval'`,
      [dropPid, afterRequestId],
    );
    id = rows[0]?.id;
    if (id === undefined) await sleep(50);
  }
  if (id === undefined) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, humanWaitMs);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
  if (!signal.aborted) await approver.query('SELECT backstop.approve($1::bigint, $2)', [id, 'bench: approved after the human wait']);
}

/** bench_t as the shared generator makes it, fresh for each run: loaded, keyed, vacuumed, checkpointed (untimed). */
async function prepareTable(admin: pg.Client): Promise<number> {
  await admin.query(`CREATE TABLE ${TABLE} (LIKE ${SOURCE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`);
  await admin.query(`INSERT INTO ${TABLE} SELECT * FROM ${SOURCE}`);
  await admin.query(`ALTER TABLE ${TABLE} ADD PRIMARY KEY (id)`);
  await admin.query(`VACUUM (ANALYZE) ${TABLE}`);
  // A checkpoint now rather than one started by the ~250 MB of WAL of each load in the middle of a measurement.
  await admin.query('CHECKPOINT');
  const { rows: [row] } = await admin.query<{ relid: number }>(`SELECT '${TABLE}'::regclass::oid::integer AS relid`);
  return row!.relid;
}

interface RequestFacts {
  id: string;
  status: string;
  created_ms: number;
  decided_ms: number | null;
  approved_ms: number | null;
  consumed_ms: number | null;
  requested_ms: number | null;
  started_ms: number | null;
  finished_ms: number | null;
  how: string | null;
  request_how: string | null;
  reason: string | null;
  image_rows: string | null;
  bulk_capture_ms: number | null;
  completion_ms: number | null;
  completions: number;
}

async function requestFacts(admin: pg.Client, afterRequestId: string): Promise<RequestFacts[]> {
  const { rows } = await admin.query<RequestFacts>(
    `SELECT r.id::text, r.status,
            extract(epoch FROM r.created_at) * 1000 AS created_ms,
            extract(epoch FROM r.decided_at) * 1000 AS decided_ms,
            extract(epoch FROM r.approved_at) * 1000 AS approved_ms,
            extract(epoch FROM r.consumed_at) * 1000 AS consumed_ms,
            extract(epoch FROM c.requested_at) * 1000 AS requested_ms,
            extract(epoch FROM c.started_at) * 1000 AS started_ms,
            extract(epoch FROM c.finished_at) * 1000 AS finished_ms,
            -- How the image was completed, from the manifest that now covers the request.
            s.manifest->'as_of'->'completion'->>'how' AS how,
            s.manifest->'as_of'->'completion'->>'reason' AS reason,
            r.image_completion->0->>'how' AS request_how,
            s.manifest->>'row_count' AS image_rows,
            (SELECT (b.manifest->>'duration_ms')::float8 FROM backstop.snapshot_catalog b
              WHERE b.request_id = r.id ORDER BY b.created_at LIMIT 1) AS bulk_capture_ms,
            (r.image_completion->0->>'ms')::float8 AS completion_ms,
            (SELECT count(*)::int FROM backstop.image_completions a WHERE a.request_id = r.id) AS completions
       FROM backstop.requests r
       LEFT JOIN LATERAL (SELECT * FROM backstop.image_completions c WHERE c.request_id = r.id ORDER BY c.id DESC LIMIT 1) c ON true
       LEFT JOIN backstop.snapshot_catalog s ON s.snapshot_id = r.snapshot_ids[1]
      WHERE r.id > $1::bigint ORDER BY r.id`,
    [afterRequestId],
  );
  return rows;
}

async function connect(url: string, applicationName: string, user?: string): Promise<pg.Client> {
  const connectionString = new URL(url);
  if (user) connectionString.username = user;
  const client = new pg.Client({ connectionString: connectionString.toString(), application_name: applicationName });
  await client.connect();
  return client;
}

interface Environment {
  context: ScenarioContext;
  url: string;
  admin: pg.Client;
  monitor: pg.Client;
  approver: pg.Client;
  storageDir: string;
}

/** One guarded DROP TABLE of a fresh bench_t with the writer running; throws when the DROP does not go through. */
async function runOnce(env: Environment, kase: WriterCase): Promise<RunFacts> {
  const { admin, monitor, approver, url } = env;
  await admin.query(`UPDATE backstop.settings SET approval_mode = $1`, [kase.mode]);
  const relid = await prepareTable(admin);
  const { rows: [last] } = await admin.query<{ id: string }>('SELECT coalesce(max(id), 0)::text AS id FROM backstop.request_log');
  const afterRequestId = last!.id;
  const writerClient = await connect(url, 'backstop-bench-writer');
  const dropper = await connect(url, 'backstop-bench-dropper');
  const watch = new AbortController();
  try {
    const { rows: [me] } = await dropper.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const dropPid = me!.pid;
    const writer = new SteadyWriter(writerClient, ROWS + 1, WRITE_EVERY_MS);
    const writing = writer.run();
    await sleep(LEAD_IN_MS);
    if (!kase.writesDuringWait) await writer.pause();
    if (writer.failure) throw new Error(`the writer failed before the DROP: ${writer.failure}`);

    const watchers: Promise<unknown>[] = [];
    const dropStartMs = nowMs();
    const drop = dropper.query(`DROP TABLE ${TABLE}`).then(() => undefined, (error: unknown) => error as Error);
    if (!kase.writesDuringWait) {
      watchers.push(lockSeen(monitor, dropPid, relid, afterRequestId, watch.signal).then((seen) => {
        if (seen !== undefined) writer.resume();
      }));
    }
    if (kase.mode === 'operator') watchers.push(approveAfter(admin, approver, dropPid, afterRequestId, kase.humanWaitMs ?? 0, watch.signal));
    const failure = await drop;
    const dropEndMs = nowMs();
    watch.abort();
    writer.stop();
    await Promise.all([...watchers, writing]);
    if (failure) throw new Error(`DROP TABLE failed in case ${kase.name}: ${failure.message}`);

    const requests = await requestFacts(admin, afterRequestId);
    if (requests.length !== 1) throw new Error(`expected one request for the DROP, found ${requests.length}`);
    const request = requests[0]!;
    const ms = (value: number | null): number => (value === null ? Number.NaN : Number(value));
    const requestedMs = ms(request.requested_ms);
    const approvedMs = kase.mode === 'operator' ? ms(request.approved_ms) : ms(request.decided_ms);
    // The INSERT the lock held back: no INSERT can finish between the lock being granted (just
    // before the completion is filed) and the DROP's commit, so it is the longest one ending after
    // the completion was filed (it fails once the table is gone).
    const blocked = writer.inserts
      .filter((insert) => insert.endMs >= requestedMs)
      .reduce<Insert | undefined>((longest, insert) => (!longest || insert.endMs - insert.startMs > longest.endMs - longest.startMs ? insert : longest), undefined);
    const acknowledged = writer.acknowledged;
    const imageRows = Number(request.image_rows);
    return {
      case: kase.name,
      requestId: request.id,
      longestInsertMs: Math.max(...writer.inserts.map((insert) => insert.endMs - insert.startMs)),
      blockedInsertMs: blocked ? blocked.endMs - blocked.startMs : undefined,
      blockedInsertStartLagMs: blocked ? blocked.startMs - requestedMs : undefined,
      lockHeldMs: dropEndMs - requestedMs,
      how: request.how ?? 'none',
      howAgrees: request.how === request.request_how,
      reason: request.reason ?? undefined,
      completions: request.completions,
      rowsDuringWait: writer.inserts.filter((insert) => insert.ok && insert.startMs >= dropStartMs && insert.endMs <= requestedMs).length,
      acknowledged,
      imageRows,
      imageHoldsEveryAcknowledgedInsert: imageRows === ROWS + acknowledged,
      writerEndCode: writer.inserts.at(-1)?.code,
      phasesMs: {
        statementStartToRequestFiled: ms(request.created_ms) - dropStartMs,
        requestFiledToDecided: ms(request.decided_ms) - ms(request.created_ms),
        ...(kase.mode === 'operator' ? { decidedToApproved: ms(request.approved_ms) - ms(request.decided_ms) } : {}),
        approvedToCompletionFiled: requestedMs - approvedMs,
        completionFiledToClaimed: ms(request.started_ms) - requestedMs,
        completionClaimedToDone: ms(request.finished_ms) - ms(request.started_ms),
        completionDoneToConsumed: ms(request.consumed_ms) - ms(request.finished_ms),
        consumedToStatementEnd: dropEndMs - ms(request.consumed_ms),
        writerUnblockedToStatementEnd: blocked ? dropEndMs - blocked.endMs : Number.NaN,
        bulkCapture: ms(request.bulk_capture_ms),
        agentCompletion: ms(request.completion_ms),
      },
    };
  } finally {
    watch.abort();
    await writerClient.end().catch(() => {});
    await dropper.end().catch(() => {});
    // Each run leaves one or two 1M-row images (≈ 50 MB each); nothing reads them again.
    await rm(path.join(env.storageDir, 'snapshots', TABLE), { recursive: true, force: true });
  }
}

/** 1, 5 and 15 minute load averages, rounded: the machine is shared, and the figures depend on it. */
function loadAverage(): number[] {
  return os.loadavg().map((value) => round(value, 2));
}

function summarizeCase(kase: WriterCase, runs: RunFacts[], context: ScenarioContext, load: { start: number[]; end: number[] }): ScenarioResult {
  const longest = summarize(runs.map((run) => run.longestInsertMs));
  const exact = runs.every((run) => run.imageHoldsEveryAcknowledgedInsert);
  const phaseNames = [...new Set(runs.flatMap((run) => Object.keys(run.phasesMs)))];
  const phases: Record<string, Summary> = {};
  // A phase a run could not time (no blocked INSERT seen) is left out of its summary.
  for (const name of phaseNames) phases[name] = summarize(runs.map((run) => run.phasesMs[name] ?? Number.NaN).filter(Number.isFinite));
  const measuredBlocked = runs.filter((run) => run.blockedInsertMs !== undefined);
  return {
    scenario: kase.scenario,
    id: variantId(caseId(kase), context),
    title: variantTitle(kase.title, context),
    status: 'measured',
    backstop: { label: 'longest single INSERT wait of the steady writer, per run', unit: 'ms', summary: longest },
    target: {
      text: `≤ ${TARGET_P50_MS} ms p50`,
      met: longest.median <= TARGET_P50_MS && exact,
    },
    extra: {
      completions: countBy(runs.map((run) => run.how)),
      completionPathRecordedAlike: runs.every((run) => run.howAgrees),
      completionsFiledPerRequest: countBy(runs.map((run) => String(run.completions))),
      recaptureReasons: countBy(runs.filter((run) => run.how === 'recapture').map((run) => run.reason ?? 'none given')),
      lockHeldMs: summarize(runs.map((run) => run.lockHeldMs)),
      blockedInsertMs: summarize(measuredBlocked.map((run) => run.blockedInsertMs!)),
      blockedInsertStartLagMs: summarize(measuredBlocked.map((run) => run.blockedInsertStartLagMs!)),
      runsWithoutBlockedInsert: runs.length - measuredBlocked.length,
      rowsDuringWait: summarize(runs.map((run) => run.rowsDuringWait)),
      imageHoldsEveryAcknowledgedInsert: exact,
      writeEveryMs: WRITE_EVERY_MS,
      loadAverage: load,
      ...(kase.humanWaitMs !== undefined ? { humanWaitMs: kase.humanWaitMs } : {}),
      phasesMs: phases,
      runs: runs.map((run) => ({ ...run, phasesMs: Object.fromEntries(Object.entries(run.phasesMs).map(([name, value]) => [name, round(value, 1)])) })),
      ...installedVariant(context),
    },
  };
}

/** Set up the database, the source table, the approver and the agent; run `cases` interleaved; tear down. */
async function measureCases(context: ScenarioContext, cases: WriterCase[], plan: { runs: number; warmup: number }): Promise<ScenarioResult[]> {
  const { server, workDir, log } = context;
  const unavailable = context.buildError ? `the CLI does not build: ${context.buildError}` : await context.cli.unavailable('agent');
  if (unavailable) return cases.map((kase) => notMeasured(kase.scenario, caseId(kase), kase.title, unavailable));

  await recreateDatabase(server, DATABASE);
  const url = server.urlFor(DATABASE);
  const admin = await connect(url, 'backstop-bench-writers-admin');
  let monitor: pg.Client | undefined;
  let approver: pg.Client | undefined;
  let agent: AgentChild | undefined;
  try {
    await installBackstop(admin, context);
    await admin.query(`DO $$ BEGIN CREATE ROLE ${APPROVER} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    await admin.query(`GRANT backstop_approver TO ${APPROVER}`);
    await admin.query('CREATE SCHEMA bench_source');
    log(`  loading ${SOURCE} (${ROWS.toLocaleString('en')} rows, the shared generator)…`);
    for (const statement of splitStatements(generatorFor(await readGenerator(), SOURCE, ROWS))) await admin.query(statement);
    monitor = await connect(url, 'backstop-bench-lock-monitor');
    approver = await connect(url, 'backstop-bench-approver', APPROVER);
    const storageDir = path.join(workDir, 'writers-agent-storage');
    // Background snapshots only of public (empty at start-up; the poll interval is 1 h): the agent
    // does nothing but answer the DROPs.
    // A state file of its own per scenario: each creates the database anew, and an agent refuses
    // a state file that belongs to another database (even one of the same name).
    agent = await startAgent(context, {
      url, storage: storageDir, state: path.join(workDir, `writers-agent-${cases[0]!.name}.sqlite`), concurrency: 4, schemas: 'public', waitForStartupSnapshots: false,
    });
    log('  agent running (leader, listening)');
    const env: Environment = { context, url, admin, monitor, approver, storageDir };

    const runs = new Map<CaseName, RunFacts[]>(cases.map((kase) => [kase.name, []]));
    const loadAtStart = loadAverage();
    const total = plan.warmup + plan.runs;
    for (let iteration = 0; iteration < total; iteration += 1) {
      const warm = iteration < plan.warmup;
      // Rotate the order so a slow phase of the shared machine hits every case alike.
      const order = cases.map((_, index) => cases[(index + iteration) % cases.length]!);
      for (const kase of order) {
        const facts = await runOnce(env, kase);
        const label = warm ? 'warm-up' : `run ${iteration - plan.warmup + 1}/${plan.runs}`;
        log(`  ${label} ${kase.name}: longest INSERT ${facts.longestInsertMs.toFixed(0)} ms, lock held ${facts.lockHeldMs.toFixed(0)} ms, ${facts.how}`
          + `${facts.reason ? ` (${facts.reason})` : ''}, ${facts.rowsDuringWait} rows during the wait, image ${facts.imageHoldsEveryAcknowledgedInsert ? 'exact' : 'NOT EXACT'}`);
        if (!warm) runs.get(kase.name)!.push(facts);
      }
    }
    const load = { start: loadAtStart, end: loadAverage() };
    log(`  load average ${load.start.join(' ')} at the first run, ${load.end.join(' ')} after the last`);
    return cases.map((kase) => summarizeCase(kase, runs.get(kase.name)!, context, load));
  } finally {
    await agent?.stop();
    await monitor?.end().catch(() => {});
    await approver?.end().catch(() => {});
    await admin.end();
    await dropDatabase(server, DATABASE);
    const cleanup = new pg.Client({ connectionString: server.adminUrl });
    await cleanup.connect();
    await cleanup.query(`DROP ROLE IF EXISTS ${APPROVER}`).catch(() => {});
    await cleanup.end();
  }
}

/** Cases (a) and (b): auto mode, no writes during the wait / about 1,000 rows written during it. */
export function writersBlocked(context: ScenarioContext): Promise<ScenarioResult[]> {
  const cases: WriterCase[] = [
    {
      name: 'auto-quiet', scenario: 'writers-blocked', mode: 'auto', writesDuringWait: false,
      title: 'writers blocked by a guarded DROP TABLE bench_t (1M), auto mode, no writes during the wait',
    },
    {
      name: 'auto-writes', scenario: 'writers-blocked', mode: 'auto', writesDuringWait: true,
      title: 'writers blocked by a guarded DROP TABLE bench_t (1M), auto mode, ~1,000 rows written during the wait',
    },
  ];
  return measureCases(context, cases, { runs: AUTO_RUNS, warmup: AUTO_WARMUP });
}

/**
 * Case (c): operator mode, an approver approves after the human wait. Measured twice, interleaved:
 * with the writer writing throughout (the steady writer of the issue: the image must be completed
 * with thousands of rows) and with it quiet during the wait (as in (a)), so that each can be
 * compared with its auto-mode twin: blocked time must not grow with the human wait.
 */
export function writersBlockedOperator(context: ScenarioContext): Promise<ScenarioResult[]> {
  const humanWaitMs = context.options.humanWaitS * 1000;
  const waited = `approved after ${context.options.humanWaitS} s`;
  const cases: WriterCase[] = [
    {
      name: 'operator-writes', scenario: 'writers-blocked-operator', mode: 'operator', writesDuringWait: true, humanWaitMs,
      title: `writers blocked by a guarded DROP TABLE bench_t (1M), operator mode, ${waited}, writer writing throughout`,
    },
    {
      name: 'operator-quiet', scenario: 'writers-blocked-operator', mode: 'operator', writesDuringWait: false, humanWaitMs,
      title: `writers blocked by a guarded DROP TABLE bench_t (1M), operator mode, ${waited}, no writes during the wait`,
    },
  ];
  return measureCases(context, cases, { runs: context.options.operatorRuns, warmup: 0 });
}

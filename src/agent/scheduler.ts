/**
 * Continuous snapshots. On start every watched table is captured; then each poll reads all
 * tables' change counters in one query and captures those that are new, changed, or due for a
 * retry (every table with --snapshot-every-poll). Captures run with bounded concurrency; one
 * table's failure is retried with backoff and never stops the others. Each poll also checks for
 * drift (tables or columns gone without a consumed request) before anything is captured, so the
 * snapshot from before the drift is the one that gets protected.
 *
 * Two bounds keep the defaults from filling storage or the agent's time: after each background
 * capture the table's retention policy is applied (DEFAULT_RETENTION unless told otherwise), and
 * a changed table is captured again no sooner than `recaptureFactor` times its last capture's
 * duration after that capture started, so one busy table takes at most a tenth of the agent's
 * time by default. What captures cost is remembered in memory: after a restart the startup sweep
 * captures every table anyway and measures them again.
 */
import type pg from 'pg';
import { describeError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import type { Storage } from '../storage/storage.js';
import { captureAndRecord, pruneTable, type CaptureContext } from './capture-step.js';
import { DEFAULT_RECAPTURE_FACTOR, observeTables, planCaptures, type CaptureCost, type CaptureReason, type PlannedCapture } from './change-detection.js';
import { DEFAULT_RETENTION, type RetentionPolicy } from '../snapshot/retention.js';
import { coveredByConsumedRequests, describeDrift, findDriftCandidates, recordAlert, stillExisting, type DriftCandidate } from './drift.js';
import { Limiter, forEachLimited } from './limiter.js';
import type { AgentMetrics } from './metrics.js';
import { pendingSnapshotRequests, serveSnapshotRequest, type OnDemandReport } from './on-demand.js';
import { DEFAULT_BACKOFF, type AgentState, type BackoffOptions } from './state.js';
import { readDatabaseIdentity } from './database-identity.js';

export interface SchedulerOptions {
  /** Milliseconds between polls. */
  interval: number;
  /** Capture every table on every poll, changed or not. */
  everyPoll: boolean;
  /** Background snapshots kept per table after each capture (default DEFAULT_RETENTION); 'keep-all' = never pruned. */
  retention?: RetentionPolicy | 'keep-all';
  /** Shorthand for `retention: { last: keep, hourly: 0, daily: 0 }` (the --keep flag). */
  keep?: number;
  /**
   * A changed table is captured again no sooner than this many times its last capture's duration
   * after that capture started (default 10; 0 = no floor).
   */
  recaptureFactor?: number;
  /** Watched schemas; undefined or empty = every user schema. */
  schemas?: string[];
  /** At most this many captures at once (polls and on-demand together). */
  concurrency: number;
  /**
   * Re-capture unchanged tables whose last snapshot is older than this many ms, so that
   * backstop.readiness (max_snapshot_age) stays green for them too. Undefined = only changed tables.
   */
  refreshAfter?: number;
  /** Retry delays after failed captures (default: 10 s doubling up to 15 min, with jitter). */
  retryBackoff?: BackoffOptions;
  /** How long stop() lets running captures finish before aborting them (default 30 s). */
  stopTimeout?: number;
}

export interface SnapshotSchedulerDeps {
  pool: pg.Pool;
  storage: Storage;
  state: AgentState;
  metrics: AgentMetrics;
  logger: Logger;
  options: SchedulerOptions;
}

export interface PollFailure {
  schema: string;
  table: string;
  error: string;
  failures: number;
  nextAttemptAt: Date;
}

export interface PollReport {
  startedAt: Date;
  tablesSeen: number;
  captured: number;
  skippedUnchanged: number;
  /** Tables that failed before and are waiting for their next attempt. */
  waitingForRetry: number;
  /** Changed tables waiting for their recapture floor (their last capture was too recent for what it cost). */
  deferred: number;
  failed: number;
  failures: PollFailure[];
  alertsRaised: number;
  pruned: number;
  durationMs: number;
}

export class SnapshotScheduler {
  private readonly context: CaptureContext;
  private readonly options: SchedulerOptions;
  private readonly limiter: Limiter;
  /** Aborts running captures; each stop() takes the current one and leaves a fresh one for a later start(). */
  private controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private stopping = false;
  /** The poll in progress; polls never overlap. */
  private currentPoll: Promise<PollReport> | undefined;
  /** On-demand requests being served, by request id (each is started once). */
  private readonly onDemandInFlight = new Map<string, Promise<unknown>>();
  /**
   * Recently served request ids: a sweep that read the pending list just before a request was
   * finished must not start it again. Bounded; the oldest ids are dropped first.
   */
  private readonly onDemandServed = new Set<string>();
  private pollsDone = 0;
  private databaseBound = false;
  private lastReport: PollReport | undefined;
  /** What each table's last background capture cost, by relid (see recaptureFactor). */
  private readonly captureCosts = new Map<number, CaptureCost>();

  constructor(deps: SnapshotSchedulerDeps) {
    this.context = { pool: deps.pool, storage: deps.storage, state: deps.state, metrics: deps.metrics, logger: deps.logger };
    this.options = deps.options;
    this.limiter = new Limiter(deps.options.concurrency);
  }

  /** The report of the last finished poll. */
  get lastPoll(): PollReport | undefined {
    return this.lastReport;
  }

  /**
   * Poll now and then every `interval` ms (measured from the end of a poll) until stop(). May be
   * called again after stop() (leadership regained).
   */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.stopping = false;
    const loop = (): void => {
      this.timer = undefined;
      if (!this.running) return;
      this.pollOnce()
        .catch((error: unknown) => this.context.logger.error('snapshot poll failed', { error: describeError(error) }))
        .finally(() => {
          if (this.running) this.timer = setTimeout(loop, this.options.interval);
        });
    };
    loop();
  }

  /**
   * Stop taking work. Running captures get `stopTimeout` ms to finish; then they are aborted
   * (the engine writes no manifest for an aborted capture). Resolves when nothing runs any more.
   */
  async stop(): Promise<void> {
    this.running = false;
    this.stopping = true;
    // Captures started so far hold this controller's signal; work after a restart gets a new one.
    const controller = this.controller;
    this.controller = new AbortController();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const inFlight = Promise.allSettled([this.currentPoll, ...this.onDemandInFlight.values()].filter((p) => p !== undefined));
    let bound: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      inFlight.then(() => false),
      new Promise<boolean>((resolve) => {
        bound = setTimeout(() => resolve(true), this.options.stopTimeout ?? 30_000);
      }),
    ]);
    clearTimeout(bound);
    if (timedOut) {
      this.context.logger.warn('aborting snapshot captures still running at shutdown; no manifest is written for them');
      controller.abort(new Error('the agent is stopping'));
      await inFlight;
    }
    if (!this.running) this.stopping = false;
  }

  /** One poll (serialised with any running one). */
  pollOnce(): Promise<PollReport> {
    const previous = this.currentPoll ?? Promise.resolve(undefined);
    const next = previous
      .catch(() => undefined)
      .then(() => this.poll());
    this.currentPoll = next;
    void next.finally(() => {
      if (this.currentPoll === next) this.currentPoll = undefined;
    }).catch(() => undefined);
    return next;
  }

  /**
   * Serve pending on-demand snapshot requests (call on NOTIFY backstop_snapshots and on each
   * sweep, from the leader only). Each pending request is started once, however often this is
   * called; captures share the --concurrency bound with polls. By default this returns as soon
   * as the captures are started, so a caller's loop (e.g. the request sweep) never waits for a
   * large table; `{ wait: true }` waits for them and counts the outcomes. `signal` aborts them
   * in addition to stop().
   */
  async handleSnapshotRequests(signal?: AbortSignal, options: { wait?: boolean } = {}): Promise<OnDemandReport> {
    const report: OnDemandReport = { started: 0, handled: 0, failed: 0 };
    if (this.stopping) return report;
    const pending = await pendingSnapshotRequests(this.context);
    const own = this.controller.signal;
    const combined = signal ? AbortSignal.any([signal, own]) : own;
    const started: Array<Promise<'done' | 'failed' | 'abandoned'>> = [];
    for (const request of pending) {
      if (this.onDemandInFlight.has(request.id) || this.onDemandServed.has(request.id)) continue;
      const work = this.limiter.run(() => serveSnapshotRequest(this.context, request, combined));
      const tracked = work.then(
        (outcome) => {
          // An abandoned request stays pending on purpose and may be served again later.
          if (outcome !== 'abandoned') this.rememberServed(request.id);
          return outcome;
        },
      ).finally(() => this.onDemandInFlight.delete(request.id));
      this.onDemandInFlight.set(request.id, tracked);
      started.push(tracked);
    }
    report.started = started.length;
    if (options.wait) {
      for (const outcome of await Promise.all(started)) {
        if (outcome === 'done') report.handled += 1;
        else if (outcome === 'failed') report.failed += 1;
      }
    } else {
      // Outcomes are logged and recorded by serveSnapshotRequest; nothing is left unhandled.
      for (const promise of started) promise.catch((error: unknown) => this.context.logger.error('on-demand snapshot crashed', { error: describeError(error) }));
    }
    return report;
  }

  private rememberServed(id: string): void {
    this.onDemandServed.add(id);
    if (this.onDemandServed.size > 10_000) {
      const oldest = this.onDemandServed.values().next().value;
      if (oldest !== undefined) this.onDemandServed.delete(oldest);
    }
  }

  /**
   * The state belongs to one database (the agent binds it at start; this covers schedulers used
   * on their own). A state file of another database makes every poll fail with the reason.
   */
  private async bindDatabase(): Promise<void> {
    if (this.databaseBound) return;
    const identity = await readDatabaseIdentity(this.context.pool);
    this.context.state.bindDatabase(identity.key, identity.label);
    this.databaseBound = true;
  }

  private async poll(): Promise<PollReport> {
    const started = performance.now();
    const { state, logger } = this.context;
    await this.bindDatabase();
    const observation = await observeTables(this.context.pool, this.options.schemas);
    const report: PollReport = {
      startedAt: observation.observedAt,
      tablesSeen: observation.tables.length,
      captured: 0,
      skippedUnchanged: 0,
      waitingForRetry: 0,
      deferred: 0,
      failed: 0,
      failures: [],
      alertsRaised: 0,
      pruned: 0,
      durationMs: 0,
    };

    const watched = state.watchedTables();
    const unresolved = await this.checkDrift(watched, observation.tables, report);
    // A table whose drift check could not run keeps its recorded columns until the next poll.
    state.observeTables(
      observation.tables.filter((table) => !unresolved.has(table.relid)),
      observation.observedAt,
    );

    const captureAll: CaptureReason | undefined = this.pollsDone === 0 ? 'startup' : this.options.everyPoll ? 'every-poll' : undefined;
    const plan = planCaptures(
      observation.tables,
      new Map(state.watchedTables().map((table) => [table.relid, table])),
      new Map(state.retries().map((retry) => [retry.relid, retry])),
      {
        now: new Date(),
        ...(captureAll ? { captureAll } : {}),
        ...(this.options.refreshAfter !== undefined ? { refreshAfterMs: this.options.refreshAfter } : {}),
        recaptureFactor: this.options.recaptureFactor ?? DEFAULT_RECAPTURE_FACTOR,
        captureCosts: this.captureCosts,
      },
    );
    report.skippedUnchanged = plan.unchanged;
    report.waitingForRetry = plan.waitingForRetry;
    report.deferred = plan.deferred.length;

    await forEachLimited(this.limiter, plan.captures, (planned) => this.captureOne(planned, report));
    await this.confirmUnchanged(plan.unchangedRelids, observation.observedAt);
    this.pollsDone += 1;
    report.durationMs = performance.now() - started;
    this.lastReport = report;
    const level = report.captured > 0 || report.failed > 0 || report.alertsRaised > 0 ? 'info' : 'debug';
    logger[level]('snapshot poll done', {
      tables: report.tablesSeen,
      captured: report.captured,
      unchanged: report.skippedUnchanged,
      failed: report.failed,
      waiting_for_retry: report.waitingForRetry,
      deferred: report.deferred,
      alerts: report.alertsRaised,
      pruned: report.pruned,
      ms: Math.round(report.durationMs),
    });
    return report;
  }

  /**
   * Unchanged tables are not captured again, but their latest snapshot still matches them: say so
   * in the database (one statement for all of them), so backstop.readiness does not report a
   * table as stale only because nothing happened to it.
   */
  private async confirmUnchanged(relids: number[], observedAt: Date): Promise<void> {
    if (relids.length === 0) return;
    try {
      // Only snapshots in this agent's own storage are confirmed: one elsewhere is not what it checked.
      await this.context.pool.query('SELECT backstop.agent_confirm_unchanged($1::oid[], $2, $3)', [relids, observedAt, this.context.storage.url]);
    } catch (error) {
      this.context.logger.warn('could not confirm unchanged tables in backstop.snapshot_catalog', { error: describeError(error), tables: relids.length });
    }
  }

  private async captureOne(planned: PlannedCapture, report: PollReport): Promise<void> {
    const { table } = planned;
    if (this.stopping) return;
    const { state, logger } = this.context;
    const name = { schema: table.schema, table: table.table };
    const { signal } = this.controller;
    const startedAt = new Date();
    try {
      const manifest = await captureAndRecord(this.context, { ...name, source: 'sidecar', signal });
      this.captureCosts.set(table.relid, { startedAt, durationMs: Date.now() - startedAt.getTime() });
      // The counters read before the capture: a change during it shows up as a change next poll.
      state.recordCapture(table.relid, table.counters, manifest.snapshot_id, new Date());
      report.captured += 1;
      logger.debug('snapshot captured', { table: `${table.schema}.${table.table}`, reason: planned.reason, snapshot_id: manifest.snapshot_id });
    } catch (error) {
      // Abandoned at shutdown: not the table's fault, so no retry state.
      if (signal.aborted) return;
      const message = describeError(error);
      const retry = state.recordFailure(table, message, new Date(), this.options.retryBackoff ?? DEFAULT_BACKOFF);
      report.failed += 1;
      report.failures.push({ ...name, error: message, failures: retry.failures, nextAttemptAt: retry.nextAttemptAt });
      logger.warn('snapshot failed; will retry', {
        table: `${table.schema}.${table.table}`,
        error: message,
        failures: retry.failures,
        next_attempt_at: retry.nextAttemptAt.toISOString(),
      });
      return;
    }
    const retention = this.retention();
    if (retention !== 'keep-all') {
      try {
        report.pruned += (await pruneTable(this.context, name, retention)).length;
      } catch (error) {
        logger.warn('pruning old snapshots failed', { table: `${table.schema}.${table.table}`, error: describeError(error) });
      }
    }
  }

  private retention(): RetentionPolicy | 'keep-all' {
    if (this.options.retention !== undefined) return this.options.retention;
    if (this.options.keep !== undefined) return { last: this.options.keep, hourly: 0, daily: 0 };
    return DEFAULT_RETENTION;
  }

  /**
   * Find tables that vanished or lost columns since the last poll. Returns the OIDs whose check
   * could not be completed (the database could not be asked), to be re-checked next poll.
   */
  private async checkDrift(watched: ReturnType<AgentState['watchedTables']>, observed: Parameters<typeof findDriftCandidates>[1], report: PollReport): Promise<Set<number>> {
    const { state, logger, metrics, pool } = this.context;
    let candidates = findDriftCandidates(watched, observed);
    if (candidates.length === 0) return new Set();
    try {
      // Out of view is not gone: a table moved to an unwatched schema still exists.
      const vanished = candidates.filter((c) => c.kind === 'table_vanished').map((c) => c.table.relid);
      const existing = await stillExisting(pool, vanished);
      for (const relid of existing) state.forgetTable(relid);
      candidates = candidates.filter((c) => !(c.kind === 'table_vanished' && existing.has(c.table.relid)));

      const covered = await coveredByConsumedRequests(pool, candidates);
      for (const [index, candidate] of candidates.entries()) {
        if (covered.has(index)) {
          logger.info(candidate.kind === 'table_vanished' ? 'table dropped through an approved request' : 'column dropped through an approved request', {
            table: `${candidate.table.schema}.${candidate.table.table}`,
          });
        } else {
          await this.raiseAlert(candidate);
          report.alertsRaised += 1;
          metrics.alerts.inc({ kind: candidate.kind });
        }
        if (candidate.kind === 'table_vanished') state.forgetTable(candidate.table.relid);
      }
      return new Set();
    } catch (error) {
      logger.error('drift check failed; will check again next poll', { error: describeError(error) });
      return new Set(candidates.map((c) => c.table.relid));
    }
  }

  private async raiseAlert(candidate: DriftCandidate): Promise<void> {
    const { state, logger, pool } = this.context;
    const detail = describeDrift(candidate);
    // The database catalog also knows snapshots taken by a previous leader; the local one is the fallback.
    const { rows } = await pool.query<{ snapshot_id: string }>(
      `SELECT snapshot_id FROM backstop.snapshot_catalog WHERE schema_name = $1 AND table_name = $2 ORDER BY created_at DESC LIMIT 1`,
      [candidate.table.schema, candidate.table.table],
    );
    const lastId = rows[0]?.snapshot_id ?? state.latestSnapshot(candidate.table.schema, candidate.table.table)?.snapshotId;
    const last = lastId === undefined ? undefined : { snapshotId: lastId, schema: candidate.table.schema, table: candidate.table.table };
    if (last) state.protectSnapshot(last, candidate.kind === 'table_vanished' ? 'table vanished without a consumed request' : 'column lost without a consumed request');
    await recordAlert(pool, candidate, last ? `${detail}; last snapshot ${last.snapshotId} is kept` : `${detail}; no snapshot of it was taken`);
    logger.warn('change got around the guard', {
      kind: candidate.kind,
      table: `${candidate.table.schema}.${candidate.table.table}`,
      detail,
      ...(last ? { kept_snapshot_id: last.snapshotId } : {}),
    });
  }
}

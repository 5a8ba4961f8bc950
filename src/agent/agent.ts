/**
 * The long-running agent: wiring and lifecycle.
 *
 * Every agent heartbeats, listens and competes for leadership; only the leader works. Work is
 * driven by wake-ups (NOTIFY, a (re)connect, becoming leader) and a periodic sweep, because a
 * NOTIFY is only a hint: each sweep reads the tables for pending requests, requests to expire,
 * TRUNCATE images to export and on-demand snapshot requests.
 *
 * Shutdown: stop taking work, give running captures a bounded time to finish, then abort them
 * (an aborted capture publishes no manifest), release leadership, close everything.
 */
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { clientConfig, type DatabaseTarget } from '../db/connection.js';
import { DatabaseError, PrivilegeError, describeError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import type { Storage } from '../storage/storage.js';
import type { RetentionPolicy } from '../snapshot/retention.js';
import { findRequest, orphanedRequests, pendingRequests, type RequestRow } from '../decision/agent-api.js';
import { expireAbandonedRequests } from '../decision/expiry.js';
import type { ApprovalMode } from '../gate/settings.js';
import { loadParser } from '../request/statement.js';
import { sleep } from '../retry/backoff.js';
import { Heartbeat } from './heartbeat.js';
import { startHttpServer, type HttpServerHandle } from './http.js';
import { LeaderElection } from './leader.js';
import { CHANNELS, NotificationListener } from './listener.js';
import { createMetrics, type AgentMetrics } from './metrics.js';
import { RequestPipeline, type BeforeImageCapturer } from './pipeline.js';
import { AgentState } from './state.js';

export const AGENT_VERSION = '0.1.0';

export interface AgentOptions {
  target: DatabaseTarget;
  storage: Storage;
  approval?: ApprovalMode;
  /** Continuous snapshot interval. */
  intervalMs: number;
  snapshotEveryPoll: boolean;
  /** Background snapshots kept per table (default DEFAULT_RETENTION); 'keep-all' = never pruned. */
  retention?: RetentionPolicy | 'keep-all';
  /** Floor between two background captures of a table, in multiples of its last capture's duration (default 10). */
  recaptureFactor?: number;
  schemas?: string[];
  concurrency: number;
  statePath: string;
  /** null = HTTP API off. */
  http: { host: string; port: number } | null;
  agentId?: string;
  logger: Logger;
  /** How often the tables are swept even without a NOTIFY. */
  sweepIntervalMs?: number;
  heartbeatIntervalMs?: number;
  /** How long running captures may take to finish at shutdown before they are aborted. */
  shutdownGraceMs?: number;
}

/** Optional parts that other modules provide (continuous snapshots, before-image capture, exports). */
export interface AgentWork {
  capturer: BeforeImageCapturer;
  /** Export committed TRUNCATE images; called on every sweep by the leader. */
  exportTruncateImages?(signal: AbortSignal): Promise<void>;
  /** Serve on-demand snapshot requests (backstop.snapshot()); called on every sweep by the leader. */
  serveSnapshotRequests?(signal: AbortSignal): Promise<void>;
  /** Continuous snapshots; started when this agent becomes leader, stopped when it stops being one. */
  scheduler?: { start(): void; stop(): Promise<void> };
  listSnapshots?(table?: string): Promise<unknown[]>;
}

export class Agent {
  readonly options: AgentOptions;
  readonly agentId: string;
  readonly state: AgentState;
  readonly metrics: AgentMetrics;
  readonly pool: pg.Pool;
  readonly heartbeat: Heartbeat;
  private readonly logger: Logger;
  private readonly leaderElection: LeaderElection;
  private readonly listener: NotificationListener;
  private work: AgentWork | undefined;
  private pipeline: RequestPipeline | undefined;
  private http: HttpServerHandle | undefined;
  private readonly inFlight = new Map<string, Promise<void>>();
  /** Long-running sweep tasks (exports, on-demand snapshots) by name; at most one of each. */
  private readonly background = new Map<string, Promise<void>>();
  private readonly stopping = new AbortController();
  /** Aborted only when the shutdown grace period ran out: running captures then stop. */
  private readonly abortWork = new AbortController();
  private wakeUp: (() => void) | undefined;
  private wakePending = false;
  private sweepLoop: Promise<void> | undefined;
  private readonly startedAt = new Date();
  private readonly stopHooks: Array<() => Promise<void>> = [];

  constructor(options: AgentOptions) {
    this.options = options;
    this.logger = options.logger;
    this.state = new AgentState(options.statePath);
    this.agentId = options.agentId ?? this.state.agentId(() => `${os.hostname()}-${randomBytes(3).toString('hex')}`);
    this.metrics = createMetrics();
    // Requests in flight each need a connection or two; captures open their own.
    this.pool = new pg.Pool({
      ...clientConfig(options.target, `backstop agent ${this.agentId}`),
      max: Math.max(6, options.concurrency + 4),
      // Claims, decisions and heartbeats are short: a server that stops answering must surface
      // as an error (and a retry), never as a sweep that hangs forever.
      connectionTimeoutMillis: 10_000,
      query_timeout: 60_000,
      keepAlive: true,
    });
    this.pool.on('error', (error) => this.logger.warn('idle database connection failed', { error: describeError(error) }));
    this.heartbeat = new Heartbeat({
      pool: this.pool,
      agentId: this.agentId,
      version: AGENT_VERSION,
      storageUrl: options.storage.url,
      intervalMs: options.heartbeatIntervalMs ?? 5_000,
      logger: this.logger.child({ component: 'heartbeat' }),
      checkStorage: () => options.storage.check(),
      status: () => ({ leader: this.leaderElection.leader, listening: this.listener.listening }),
      onBeat: (at, info) => {
        this.state.writeHeartbeat({ agentId: this.agentId, startedAt: this.startedAt, lastBeatAt: at, leader: info.leader });
      },
    });
    this.leaderElection = new LeaderElection({
      target: options.target,
      logger: this.logger.child({ component: 'leader' }),
      onChange: (leader) => this.leadershipChanged(leader),
    });
    this.listener = new NotificationListener({
      target: options.target,
      channels: [CHANNELS.requests, CHANNELS.snapshots],
      logger: this.logger.child({ component: 'listener' }),
      onNotification: (channel, payload) => {
        this.logger.debug('notification', { channel, payload });
        this.wake();
      },
      onConnected: () => this.wake(),
    });
  }

  get leader(): boolean {
    return this.leaderElection.leader;
  }

  get listening(): boolean {
    return this.listener.listening;
  }

  /**
   * Fail fast, with what to do, when the database cannot be used at all: not reachable, Backstop
   * not installed, or this role not allowed to act as an agent. (Later outages are survived.)
   */
  private async checkDatabase(): Promise<void> {
    const where = this.options.target.description;
    type Check = { installed: boolean; role: string; allowed: boolean | null };
    let row: Check | undefined;
    try {
      ({ rows: [row] } = await this.pool.query<Check>(
        `SELECT to_regclass('backstop.request_log') IS NOT NULL AS installed, current_user AS role,
                CASE WHEN to_regprocedure('backstop.agent_claim(bigint, text)') IS NULL THEN NULL
                     ELSE has_function_privilege('backstop.agent_claim(bigint, text)', 'EXECUTE') END AS allowed`,
      ));
    } catch (error) {
      throw new DatabaseError(`cannot reach ${where}: ${describeError(error)}`, {
        cause: error,
        hint: 'check --db (or DATABASE_URL / PGHOST) and that the server is running; under systemd, Restart=on-failure retries',
      });
    }
    if (!row?.installed || row.allowed === null) {
      throw new DatabaseError(`Backstop is not installed in ${where}`, { hint: `run: backstop install --db <url of that database> (as a superuser), then start the agent again` });
    }
    if (!row.allowed) {
      throw new PrivilegeError(`role ${row.role} may not act as the Backstop agent in ${where}`, {
        hint: `as a superuser run: GRANT backstop_agent TO ${row.role};`,
      });
    }
  }

  /** Start everything; resolves once the HTTP API (if any) listens. */
  async start(work: AgentWork): Promise<void> {
    this.work = work;
    await this.checkDatabase();
    await loadParser();
    this.pipeline = new RequestPipeline({
      db: this.pool,
      agentId: this.agentId,
      ...(this.options.approval ? { approvalOverride: this.options.approval } : {}),
      capturer: work.capturer,
      concurrency: this.options.concurrency,
      checkStorage: () => this.heartbeat.checkStorage(),
      metrics: this.metrics,
      logger: this.logger.child({ component: 'requests' }),
    });
    this.logger.info('agent starting', {
      agent_id: this.agentId,
      database: this.options.target.description,
      storage: this.options.storage.url,
      approval: this.options.approval ?? 'from backstop.settings',
    });
    if (this.options.http) {
      this.http = await startHttpServer({
        host: this.options.http.host,
        port: this.options.http.port,
        registry: this.metrics.registry,
        logger: this.logger.child({ component: 'http' }),
        health: () => this.health(),
        listSnapshots: (table) => (this.work?.listSnapshots ? this.work.listSnapshots(table) : Promise.resolve([])),
        listRequests: (status) => this.listRequests(status),
      });
      this.logger.info('HTTP API listening', { url: `http://${this.http.address.host}:${this.http.address.port}/metadata/health`, port: this.http.address.port });
    }
    // A heartbeat first: the guard (and this agent's own gate) refuse everything without one.
    await this.heartbeat.beat();
    this.heartbeat.start(false);
    this.listener.start();
    this.leaderElection.start();
    this.sweepLoop = this.runSweeps();
  }

  health() {
    const last = this.heartbeat.lastBeatAt;
    const lastSnapshot = this.state.lastSnapshotAt();
    return {
      agentId: this.agentId,
      heartbeatAgeSeconds: last ? (Date.now() - last.getTime()) / 1000 : null,
      lastSnapshotAgeSeconds: lastSnapshot ? (Date.now() - lastSnapshot.getTime()) / 1000 : null,
      role: this.leaderElection.leader ? ('leader' as const) : ('standby' as const),
      listening: this.listener.listening,
      storageOk: this.heartbeat.storage.ok,
      storageError: this.heartbeat.storage.error,
      inFlightRequests: this.inFlight.size,
    };
  }

  private async listRequests(status?: string): Promise<unknown[]> {
    const { rows } = status
      ? await this.pool.query('SELECT * FROM backstop.requests WHERE status = $1 ORDER BY id DESC LIMIT 500', [status])
      : await this.pool.query('SELECT * FROM backstop.requests ORDER BY id DESC LIMIT 500');
    return rows;
  }

  private leadershipChanged(leader: boolean): void {
    const scheduler = this.work?.scheduler;
    if (leader) {
      scheduler?.start();
      this.wake();
    } else {
      scheduler?.stop().catch((error) => this.logger.warn('stopping the scheduler failed', { error: describeError(error) }));
    }
    void this.heartbeat.beat();
  }

  /** Ask for a sweep now (NOTIFY, reconnect, leadership). */
  wake(): void {
    this.wakePending = true;
    this.wakeUp?.();
  }

  private async runSweeps(): Promise<void> {
    const interval = this.options.sweepIntervalMs ?? 2_000;
    while (!this.stopping.signal.aborted) {
      this.wakePending = false;
      if (this.leaderElection.leader) {
        try {
          await this.sweep();
        } catch (error) {
          this.logger.warn('sweep failed; retrying at the next one', { error: describeError(error) });
        }
      }
      if (this.wakePending || this.stopping.signal.aborted) continue;
      await new Promise<void>((resolve) => {
        this.wakeUp = resolve;
        void sleep(interval, this.stopping.signal).then(resolve);
      });
      this.wakeUp = undefined;
    }
  }

  private async sweep(): Promise<void> {
    const signal = this.abortWork.signal;
    for (const request of await pendingRequests(this.pool)) {
      if (this.stopping.signal.aborted || !this.leaderElection.leader) return;
      if (this.inFlight.has(request.id)) continue;
      this.dispatch(request, false);
    }
    // Expire before resuming: a request left capturing whose requester is gone is not worth a capture.
    await expireAbandonedRequests(this.pool, { agentId: this.agentId, inFlight: new Set(this.inFlight.keys()), logger: this.logger, metrics: this.metrics });
    for (const request of await orphanedRequests(this.pool, this.agentId)) {
      if (this.stopping.signal.aborted || !this.leaderElection.leader) return;
      if (this.inFlight.has(request.id)) continue;
      this.dispatch(request, true);
    }
    // Exports and on-demand snapshots may take long: they run beside the sweeps, one at a time
    // each, so a big capture never delays the answer to a waiting DROP.
    if (this.work?.exportTruncateImages) this.runInBackground('truncate-export', (s) => this.work!.exportTruncateImages!(s), signal);
    if (this.work?.serveSnapshotRequests) this.runInBackground('on-demand', (s) => this.work!.serveSnapshotRequests!(s), signal);
  }

  private runInBackground(name: string, task: (signal: AbortSignal) => Promise<void>, signal: AbortSignal): void {
    if (this.background.has(name)) return;
    const running = task(signal)
      .catch((error) => this.logger.warn(`${name} failed; retrying at the next sweep`, { error: describeError(error) }))
      .finally(() => this.background.delete(name));
    this.background.set(name, running);
  }

  private dispatch(request: RequestRow, resume: boolean): void {
    const pipeline = this.pipeline!;
    const task = pipeline
      .answer(request, this.abortWork.signal, resume)
      .catch((error) => this.logger.error('request could not be answered; it will be retried or expired', { request_id: request.id, error: describeError(error) }))
      .then(() => undefined)
      .finally(() => {
        this.inFlight.delete(request.id);
      });
    this.inFlight.set(request.id, task);
  }

  /** Run `hook` at the end of stop() (resources the work modules opened). */
  onStop(hook: () => Promise<void>): void {
    this.stopHooks.push(hook);
  }

  /** Answer one request right away (tests and `--once` style callers); false if another agent had it. */
  async answerNow(requestId: string): Promise<boolean> {
    const request = await findRequest(this.pool, requestId);
    if (!request || request.status !== 'pending') return false;
    return this.pipeline!.answer(request, this.abortWork.signal);
  }

  async stop(): Promise<void> {
    if (this.stopping.signal.aborted) return;
    this.stopping.abort();
    this.wakeUp?.();
    this.logger.info('agent stopping', { in_flight: this.inFlight.size });
    await this.sweepLoop;
    await this.listener.stop();
    await this.work?.scheduler?.stop().catch(() => {});
    const grace = this.options.shutdownGraceMs ?? 20_000;
    const running = Promise.all([...this.inFlight.values(), ...this.background.values()]);
    const graceOver = new AbortController();
    const finished = await Promise.race([running.then(() => true), sleep(grace, graceOver.signal).then(() => false)]);
    graceOver.abort();
    if (!finished) {
      this.logger.warn('captures still running at shutdown; aborting them (no manifest is written)', { in_flight: this.inFlight.size });
      this.abortWork.abort();
      await running;
    }
    await this.heartbeat.stop();
    await this.leaderElection.stop();
    await this.http?.close();
    for (const hook of this.stopHooks) await hook().catch(() => {});
    await this.pool.end().catch(() => {});
    this.state.close();
    this.logger.info('agent stopped');
  }
}

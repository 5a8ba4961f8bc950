/**
 * The long-running agent: wiring and lifecycle.
 *
 * Every agent heartbeats, listens and competes for leadership; only the leader works. Work is
 * driven by wake-ups (NOTIFY, a (re)connect, becoming leader) and a periodic sweep, because a
 * NOTIFY is only a hint: each sweep reads the tables for pending requests, requests to expire,
 * TRUNCATE images to export and on-demand snapshot requests.
 *
 * Liveness is read from the server: the leader-election session, kept for the agent's whole
 * life, is registered as its presence (backstop.agent_hello), so a killed agent is seen gone at
 * once by statements waiting for it. Only the leader works, and only while it leads: losing
 * leadership abandons the requests in flight (the new leader takes them over, and the database
 * refuses this agent's decision on them from then on).
 *
 * Shutdown: say goodbye first (new guarded statements are refused at once unless another agent
 * is available), stop taking work, give running captures a bounded time to finish, then abort
 * them (an aborted capture publishes no manifest), release leadership, close everything.
 */
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { clientConfig, type DatabaseTarget } from '../db/connection.js';
import { bypassGrants, connectedRoleGap, someTables } from '../db/row-security.js';
import { DatabaseError, PrivilegeError, SchemaVersionError, describeError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import type { Storage } from '../storage/storage.js';
import type { RetentionPolicy } from '../snapshot/retention.js';
import { findRequest, orphanedRequests, pendingRequests, sayGoodbye, sayHello, type RequestRow } from '../decision/agent-api.js';
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
import { openCompletions, type CompletionRow, type ImageCompleter } from '../capture/completion.js';
import { queryWithin } from './session.js';
import { AgentState } from './state.js';
import type { DatabaseIdentity } from './database-identity.js';
import { BACKSTOP_VERSION } from '../version.js';
import { schemaVersion, type SchemaVersion } from '../install/install.js';

export const AGENT_VERSION = BACKSTOP_VERSION;

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
  /**
   * The database the agent guards (readDatabaseIdentity): the state file is bound to it and
   * claimed for this process, and refused when it belongs to another database or agent.
   */
  databaseIdentity?: DatabaseIdentity;
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
  /** Completes approved requests' before-images under the waiting statement's lock (capture/completion.ts). */
  completer?: ImageCompleter;
  /** Export committed TRUNCATE images; called on every sweep by the leader. */
  exportTruncateImages?(signal: AbortSignal): Promise<void>;
  /** Serve on-demand snapshot requests (backstop.snapshot()); called on every sweep by the leader. */
  serveSnapshotRequests?(signal: AbortSignal): Promise<void>;
  /** Stage undos and restores asked for from psql (backstop.undo()); called on every sweep by the leader. */
  serveRestores?(signal: AbortSignal): Promise<void>;
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
  /** One per leadership term: aborted when this agent stops leading, abandoning its requests in flight. */
  private term = new AbortController();
  private wakeUp: (() => void) | undefined;
  private wakePending = false;
  private sweepLoop: Promise<void> | undefined;
  private readonly startedAt = new Date();
  private readonly stopHooks: Array<() => Promise<void>> = [];

  constructor(options: AgentOptions) {
    this.options = options;
    this.logger = options.logger;
    this.state = new AgentState(options.statePath);
    try {
      if (options.databaseIdentity) this.state.bindDatabase(options.databaseIdentity.key, options.databaseIdentity.label);
      this.state.claim();
    } catch (error) {
      this.state.close();
      throw error;
    }
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
      onSession: async (session) => {
        const withDeadline = { query: <R extends pg.QueryResultRow>(sql: string, values?: unknown[]) => queryWithin<R>(session, sql, values) };
        await sayHello(withDeadline, this.agentId);
        // A session replaced during shutdown must not undo the goodbye.
        if (this.stopping.signal.aborted) await sayGoodbye(withDeadline, this.agentId);
      },
    });
    this.listener = new NotificationListener({
      target: options.target,
      channels: [CHANNELS.requests, CHANNELS.snapshots, CHANNELS.restores],
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
   * not installed (or older than this agent), or this role not allowed to act as an agent. (Later
   * outages are survived.)
   */
  private async checkDatabase(): Promise<void> {
    const where = this.options.target.description;
    type Check = { installed: boolean; current: boolean; role: string; allowed: boolean | null };
    let row: Check | undefined;
    try {
      ({ rows: [row] } = await this.pool.query<Check>(
        `SELECT to_regclass('backstop.request_log') IS NOT NULL AS installed, current_user AS role,
                to_regprocedure('backstop.agent_hello(text)') IS NOT NULL AS current,
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
    // Without agent_hello (migration 0004) this agent could never register its presence.
    if (!row.current) {
      throw new DatabaseError(`Backstop in ${where} is older than this agent`, { hint: 'run: backstop install --db <url of that database> (as a superuser) to apply the newer migrations, then start the agent again' });
    }
    if (!row.allowed) {
      throw new PrivilegeError(`role ${row.role} may not act as the Backstop agent in ${where}`, {
        hint: `as a superuser run: GRANT backstop_agent TO ${row.role};`,
      });
    }
    await this.checkSchemaVersion(where);
    await this.warnAboutRowSecurity();
  }

  /**
   * The agent calls the SQL API its own migrations define: against a schema a newer Backstop
   * installed it could misread what it finds (or call what changed), and against an older one a
   * function it needs may be missing. Either way it stops here, saying which side to upgrade.
   */
  private async checkSchemaVersion(where: string): Promise<void> {
    let version: SchemaVersion;
    try {
      version = await schemaVersion(this.pool);
    } catch (error) {
      // Without pg_read_all_data (PostgreSQL 13) the bookkeeping table may be unreadable: the
      // check is skipped rather than refusing an agent that otherwise works.
      if ((error as { code?: string }).code !== '42501') throw error;
      this.logger.warn('cannot read backstop.migrations: the schema version is not checked', { error: describeError(error) });
      return;
    }
    if (version.unknown.length > 0) {
      throw new SchemaVersionError(
        `the Backstop schema in ${where} has migration(s) this agent (${BACKSTOP_VERSION}) does not know: ${version.unknown.join(', ')}`,
        { hint: 'a newer Backstop installed it: upgrade this agent to that version (the one backstop install ran from), then start it again' },
      );
    }
    if (version.pending.length > 0) {
      throw new SchemaVersionError(`the Backstop schema in ${where} lacks migration(s) this agent needs: ${version.pending.join(', ')}`, {
        hint: 'run backstop install --db <url of that database> (as a superuser) to upgrade it, then start the agent again',
      });
    }
  }

  /**
   * Captures read with row_security = off: a table whose policies apply to this role cannot be
   * captured, so its DROP / ALTER is denied. Not a reason to refuse to start (every other table
   * stays guarded), but said once, with what to grant, at start.
   */
  private async warnAboutRowSecurity(): Promise<void> {
    const gap = await connectedRoleGap(this.pool).catch((error: unknown) => {
      this.logger.debug('could not check row-level security', { error: describeError(error) });
      return null;
    });
    if (!gap) return;
    this.logger.warn(`row-level security stops role ${gap.role} from capturing ${gap.tables.length} table(s): ${someTables(gap.tables)}`, {
      event: 'agent.rows_hidden',
      role: gap.role,
      tables: gap.tables,
      hint: `until then their before-images fail and their DROP / ALTER is denied; as a superuser run: ${bypassGrants([gap])} (BYPASSRLS is a role attribute: membership in backstop_agent does not carry it)`,
    });
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
      this.term = new AbortController();
      scheduler?.start();
      this.wake();
    } else {
      if (this.inFlight.size > 0) {
        this.logger.warn('leadership lost: abandoning the requests in flight to the new leader', { event: 'leader.lost', in_flight: [...this.inFlight.keys()] });
      }
      this.term.abort();
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
    // Completions first: writers wait on the tables while one is open.
    if (this.work?.completer) {
      for (const completion of await openCompletions(this.pool)) {
        if (this.stopping.signal.aborted || !this.leaderElection.leader) return;
        if (this.inFlight.has(`completion:${completion.id}`)) continue;
        this.dispatchCompletion(completion);
      }
    }
    for (const request of await pendingRequests(this.pool)) {
      if (this.stopping.signal.aborted || !this.leaderElection.leader) return;
      if (this.inFlight.has(request.id)) continue;
      this.dispatch(request, false);
    }
    // Expire before resuming: a request left capturing whose requester is gone is not worth a capture.
    await expireAbandonedRequests(this.pool, { agentId: this.agentId, inFlight: new Set(this.inFlight.keys()), logger: this.logger, metrics: this.metrics });
    for (const request of await orphanedRequests(this.pool)) {
      if (this.stopping.signal.aborted || !this.leaderElection.leader) return;
      if (this.inFlight.has(request.id)) continue;
      this.dispatch(request, true);
    }
    // Exports and on-demand snapshots may take long: they run beside the sweeps, one at a time
    // each, so a big capture never delays the answer to a waiting DROP.
    if (this.work?.exportTruncateImages) this.runInBackground('truncate-export', (s) => this.work!.exportTruncateImages!(s), signal);
    if (this.work?.serveSnapshotRequests) this.runInBackground('on-demand', (s) => this.work!.serveSnapshotRequests!(s), signal);
    if (this.work?.serveRestores) this.runInBackground('restores', (s) => this.work!.serveRestores!(s), signal);
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
      .answer(request, this.abortWork.signal, { resume, leadership: this.term.signal })
      .catch((error) => this.logger.error('request could not be answered; it will be retried or expired', { request_id: request.id, error: describeError(error) }))
      .then(() => undefined)
      .finally(() => {
        this.inFlight.delete(request.id);
      });
    this.inFlight.set(request.id, task);
  }

  /**
   * At shutdown, after the requests in flight were decided: their statements lock their tables and
   * file completions right after the approval, and nobody else may be there to answer them. Answer
   * those (and any open completion) until none is expected any more, or `deadline`.
   */
  private async finishCompletions(deadline: number): Promise<void> {
    if (!this.work?.completer) return;
    while (Date.now() < deadline) {
      try {
        for (const completion of await openCompletions(this.pool)) {
          if (!this.inFlight.has(`completion:${completion.id}`)) this.dispatchCompletion(completion);
        }
        const { rows: [expected] } = await this.pool.query<{ waiting: boolean }>(
          `SELECT EXISTS (
             SELECT FROM backstop.request_log r
              WHERE r.decided_by = $1 AND r.status = 'approved' AND NOT r.filed_ahead
                AND r.decided_at > clock_timestamp() - interval '5 s'
                AND r.coverage @> '[{}]' AND EXISTS (SELECT FROM jsonb_array_elements(r.coverage) e WHERE e->>'kind' <> 'truncate')
                AND NOT EXISTS (SELECT FROM backstop.request_consumptions c WHERE c.request_id = r.id)
                AND NOT EXISTS (SELECT FROM backstop.image_completions c WHERE c.request_id = r.id AND c.status IN ('done', 'failed'))) AS waiting`,
          [this.agentId],
        );
        const completing = [...this.inFlight.keys()].some((key) => key.startsWith('completion:'));
        if (!expected?.waiting && !completing) return;
      } catch (error) {
        this.logger.warn('answering image completions at shutdown failed', { error: describeError(error) });
        return;
      }
      await sleep(50);
    }
  }

  private dispatchCompletion(completion: CompletionRow): void {
    const key = `completion:${completion.id}`;
    const task = this.work!.completer!
      .complete(completion, this.abortWork.signal)
      .catch((error) => this.logger.error('image completion could not be answered; it will be retried or given up by its statement', { completion_id: completion.id, error: describeError(error) }))
      .then(() => undefined)
      .finally(() => {
        this.inFlight.delete(key);
      });
    this.inFlight.set(key, task);
  }

  /** Run `hook` at the end of stop() (resources the work modules opened). */
  onStop(hook: () => Promise<void>): void {
    this.stopHooks.push(hook);
  }

  /** Answer one request right away (tests and `--once` style callers); false if another agent had it. */
  async answerNow(requestId: string): Promise<boolean> {
    const request = await findRequest(this.pool, requestId);
    if (!request || request.status !== 'pending') return false;
    return this.pipeline!.answer(request, this.abortWork.signal, { leadership: this.term.signal });
  }

  /**
   * Tell the database this agent is going (backstop.agent_goodbye): a guarded statement started
   * from now on is refused at once (BS001) unless another agent is available, instead of being
   * filed for an agent that will not answer. Requests already claimed are still finished.
   */
  private async sayGoodbye(): Promise<void> {
    const deadline = new AbortController();
    try {
      await Promise.race([
        sayGoodbye(this.pool, this.agentId),
        sleep(5_000, deadline.signal).then(() => Promise.reject(new Error('no answer within 5 s'))),
      ]);
      this.logger.info('said goodbye: new guarded statements are refused unless another agent is available', { event: 'agent.goodbye' });
    } catch (error) {
      this.logger.warn('could not say goodbye to the database; waiting statements notice once this agent has disconnected', { event: 'agent.goodbye_failed', error: describeError(error) });
    } finally {
      deadline.abort();
    }
  }

  async stop(): Promise<void> {
    if (this.stopping.signal.aborted) return;
    this.stopping.abort();
    this.wakeUp?.();
    await this.sayGoodbye();
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
    if (finished) await this.finishCompletions(Date.now() + Math.min(grace, 10_000));
    await this.heartbeat.stop();
    await this.leaderElection.stop();
    await this.http?.close();
    for (const hook of this.stopHooks) await hook().catch(() => {});
    await this.pool.end().catch(() => {});
    this.state.close();
    this.logger.info('agent stopped');
  }
}

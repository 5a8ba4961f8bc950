/**
 * One request, end to end: claim → parse → resolve targets → gate → capture → decide.
 * Whatever happens, a claimed request ends decided (approved, awaiting_approval or denied with
 * a reason): an unexpected failure becomes a denial naming it, never a request left capturing.
 * The one exception: an agent that stops leading abandons the request undecided, because the new
 * leader takes it over (and the database would refuse this agent's decision once it has).
 */
import { describeError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import type { AgentMetrics } from './metrics.js';
import { checkAgentReadiness, checkSnapshotsReady, type TargetSnapshot } from '../gate/gate.js';
import { readSettings, type ApprovalMode } from '../gate/settings.js';
import { claimHolder, claimRequest, decide, setCoverage, setTargets, type Decision, type RequestRow } from '../decision/agent-api.js';
import { captureFailedReason, lockedByRequesterReason, notFoundReason, opaqueReason, unparseableReason } from '../decision/reasons.js';
import { exclusiveLocks } from '../capture/locks.js';
import { parseStatement, StatementParseError, type ParsedStatement } from '../request/statement.js';
import { qualifiedTarget, resolveTargets, type Queryable, type ResolvedTarget } from '../request/targets.js';

export interface BeforeImageCapturer {
  /**
   * Capture one target as a before-image of `request`; throws with a reason on failure (a lock
   * held by the requesting session itself is named as such).
   */
  capture(target: ResolvedTarget, request: { id: string; requesterPid: number | null; commandTag: string | null }, signal: AbortSignal): Promise<TargetSnapshot>;
}

export interface PipelineOptions {
  db: Queryable;
  agentId: string;
  /** --approval: overrides the database's approval_mode for this agent's decisions. */
  approvalOverride?: ApprovalMode;
  capturer: BeforeImageCapturer;
  /** How many targets of one request are captured at once. */
  concurrency: number;
  checkStorage(): Promise<{ ok: boolean; error: string | null }>;
  metrics?: AgentMetrics;
  logger: Logger;
}

export interface AnswerOptions {
  /** The request is already capturing (see orphanedRequests): take it over rather than claim it. */
  resume?: boolean;
  /** Aborted when this agent stops leading: the request is then abandoned to the new leader. */
  leadership?: AbortSignal;
}

interface Outcome {
  decision: Decision;
  reason: string | null;
  snapshotIds: string[];
}

function deny(reason: string, snapshotIds: string[] = []): Outcome {
  return { decision: 'denied', reason, snapshotIds };
}

/** Run `work` over `items` with at most `limit` at a time. */
async function boundedAll<T, R>(items: T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index]!);
    }
  });
  await Promise.all(workers);
  return results;
}

export class RequestPipeline {
  private readonly options: PipelineOptions;

  constructor(options: PipelineOptions) {
    this.options = options;
  }

  /**
   * Claim and answer one request; false when another agent had it, or this agent stopped leading
   * before it was decided. With `resume`, a request already in `capturing` is taken over (the
   * database lets only the leader do that).
   */
  async answer(request: RequestRow, signal: AbortSignal, options: AnswerOptions = {}): Promise<boolean> {
    const { db, agentId, logger } = this.options;
    const resume = options.resume ?? false;
    const leadership = options.leadership ?? new AbortController().signal;
    if (!(await claimRequest(db, request.id, agentId))) return false;
    const log = logger.child({ request_id: request.id });
    log.info(resume ? 'resuming request left capturing' : 'answering request', { command: request.command_tag, requester: request.requester });
    // Once nobody waits for the request any more (the statement timed out, was cancelled, or
    // an approver denied it), its captures stop and give their slots back.
    const settled = new AbortController();
    const watch = setInterval(() => {
      db.query<{ status: string }>('SELECT status FROM backstop.requests WHERE id = $1::bigint', [request.id])
        .then(({ rows }) => {
          const status = rows[0]?.status;
          if (status === undefined || ['approved', 'denied', 'expired', 'consumed'].includes(status)) {
            log.info('request settled elsewhere while it was being answered; stopping its captures', { status });
            settled.abort();
          }
        })
        .catch(() => {});
    }, 2_000);
    let outcome: Outcome;
    try {
      outcome = await this.evaluate(request, AbortSignal.any([signal, settled.signal, leadership]), log);
    } catch (error) {
      log.error('request evaluation failed', { error: describeError(error) });
      outcome = deny(`the agent could not evaluate the request: ${describeError(error)}; run the statement again`);
    } finally {
      clearInterval(watch);
    }
    if (leadership.aborted) {
      log.warn('leadership lost while answering: the request is left to the new leader', { event: 'request.abandoned' });
      return false;
    }
    let status: string;
    try {
      status = await decide(db, request.id, agentId, outcome.decision, outcome.reason, outcome.snapshotIds);
    } catch (error) {
      const holder = await claimHolder(db, request.id).catch(() => null);
      if (holder !== null && holder !== agentId) {
        log.warn('another agent took the request over; it decides', { event: 'request.taken_over', agent_id: holder });
        return false;
      }
      log.error('recording the decision failed', { error: describeError(error) });
      throw error;
    }
    this.options.metrics?.decisions.inc({ outcome: status });
    // Measured on the server's clock (filed and decided both stamped there): no clock skew.
    const { rows: [timing] } = await db.query<{ seconds: number | null }>(
      `SELECT extract(epoch FROM decided_at - created_at)::float8 AS seconds FROM backstop.requests WHERE id = $1::bigint`,
      [request.id],
    );
    if (timing?.seconds != null) this.options.metrics?.decisionLatency.observe(timing.seconds);
    log.info('request decided', {
      status,
      reason: outcome.reason ?? undefined,
      snapshots: outcome.snapshotIds,
      latency_ms: timing?.seconds != null ? Math.round(timing.seconds * 1000) : undefined,
    });
    return true;
  }

  private async evaluate(request: RequestRow, signal: AbortSignal, log: Logger): Promise<Outcome> {
    const { db, agentId } = this.options;
    let parsed: ParsedStatement;
    try {
      parsed = await parseStatement(request.statement);
    } catch (error) {
      if (error instanceof StatementParseError) return deny(unparseableReason(describeError(error.cause ?? error), request.command_tag));
      throw error;
    }
    if (parsed.operations.length === 0) {
      return deny(parsed.opaque.length > 0 ? opaqueReason(parsed.opaque, request.command_tag) : notFoundReason(request.command_tag));
    }

    const resolution = await resolveTargets(db, parsed.operations, { searchPath: request.search_path, requester: request.requester });
    if (resolution.problems.length > 0) return deny(resolution.problems.join('; '));
    await setTargets(db, request.id, resolution.targets.map((target) => target.oid));
    await setCoverage(db, request.id, resolution.coverage);

    const settings = await readSettings(db);
    const readiness = await checkAgentReadiness(db, { agentId, settings, checkStorage: this.options.checkStorage });
    if (!readiness.passed) return deny(readiness.failures.join('; '));

    // Tables only truncated are locked by the truncating transaction: their before-image is the
    // in-session copy the guard made, exported after commit (see capture/truncate-export.ts).
    // A partitioned table's snapshot holds its partitions' rows (and their definitions), so
    // partitions reached through their parent are not captured a second time.
    const readByAgent = new Set(resolution.coverage.filter((item) => item.kind !== 'truncate').map((item) => item.relid));
    const toCapture = resolution.targets.filter((target) => readByAgent.has(target.oid) && !(target.partition && target.origin === 'partition or child'));

    if (request.requester_pid !== null) {
      const locks = await exclusiveLocks(db, toCapture.map((target) => target.oid));
      const own = locks.find((lock) => lock.pid === request.requester_pid);
      if (own) {
        const table = toCapture.find((target) => target.oid === own.oid)!;
        return deny(lockedByRequesterReason(qualifiedTarget(table), request.command_tag));
      }
    }

    const captured = await boundedAll(toCapture, this.options.concurrency, async (target) => {
      try {
        const about = { id: request.id, requesterPid: request.requester_pid, commandTag: request.command_tag };
        return { target, snapshot: await this.options.capturer.capture(target, about, signal) };
      } catch (error) {
        return { target, error: captureFailedReason(qualifiedTarget(target), error) };
      }
    });
    const snapshotIds = captured.flatMap((entry) => (entry.snapshot ? [entry.snapshot.snapshotId] : []));
    if (signal.aborted) return deny('the agent was stopped before every before-image was complete (nothing partial was kept): run the statement again', snapshotIds);
    const failures = captured.flatMap((entry) => (entry.error !== undefined ? [entry.error] : []));
    if (failures.length > 0) return deny(failures.join('; '), snapshotIds);

    const ready = await checkSnapshotsReady(captured.map((entry) => entry.snapshot!), settings);
    if (!ready.passed) return deny(ready.failures.join('; '), snapshotIds);
    log.debug('gate passed', { targets: resolution.targets.length, captured: snapshotIds.length });

    const mode = this.options.approvalOverride ?? settings.approvalMode;
    return { decision: mode === 'operator' ? 'awaiting_approval' : 'approved', reason: null, snapshotIds };
  }
}

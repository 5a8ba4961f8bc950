/**
 * Requests nobody is waiting for any more are expired with a reason, not left open:
 * - past expires_at;
 * - filed by a guarded statement (not ahead with backstop.request()) whose backend is gone, or
 *   is no longer running that statement (cancelled, timed out, or moved on).
 * Requests this agent is answering right now are left alone.
 */
import { describeError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import type { AgentMetrics } from '../agent/metrics.js';
import { expireRequest } from './agent-api.js';
import type { Queryable } from '../request/targets.js';

interface Candidate {
  id: string;
  status: string;
  requester_pid: number | null;
  filed_by_guard: boolean;
  past_expiry: boolean;
  backend_alive: boolean;
  backend_state: string | null;
  backend_query: string | null;
  statement: string;
}

export interface ExpiryContext {
  agentId: string;
  inFlight: Set<string>;
  logger: Logger;
  metrics?: AgentMetrics;
}

/** Why `candidate` should expire, or undefined when someone may still be waiting for it. */
export function expiryReason(candidate: Candidate): string | undefined {
  if (candidate.past_expiry) return 'nobody decided before expires_at';
  if (!candidate.filed_by_guard || candidate.requester_pid === null) return undefined;
  if (!candidate.backend_alive) return `the requesting session (pid ${candidate.requester_pid}) has ended`;
  const query = candidate.backend_query;
  // pg_stat_activity truncates the text (track_activity_query_size) and hides it from roles
  // without pg_read_all_stats; compare only what it shows.
  const comparable = query !== null && query !== '<insufficient privilege>' && query.length > 0;
  if (candidate.backend_state !== 'active' && candidate.backend_state !== null && candidate.backend_state !== '' && comparable) {
    return `the requesting session (pid ${candidate.requester_pid}) is no longer running the statement (it is ${candidate.backend_state})`;
  }
  if (comparable && !candidate.statement.startsWith(query!.slice(0, Math.min(query!.length, 1000)))) {
    return `the requesting session (pid ${candidate.requester_pid}) is running a different statement now`;
  }
  return undefined;
}

export async function expireAbandonedRequests(db: Queryable, context: ExpiryContext): Promise<number> {
  const { rows } = await db.query<Candidate>(
    `SELECT r.id::text AS id, r.status, r.requester_pid, r.statement,
            NOT r.filed_ahead AS filed_by_guard,
            coalesce(r.expires_at < now(), false) AS past_expiry,
            a.pid IS NOT NULL AS backend_alive, a.state AS backend_state, a.query AS backend_query
       FROM backstop.requests r
       LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = r.requester_pid
      WHERE r.status IN ('pending', 'capturing', 'awaiting_approval')`,
  );
  let expired = 0;
  for (const candidate of rows) {
    if (context.inFlight.has(candidate.id)) continue;
    const reason = expiryReason(candidate);
    if (!reason) continue;
    try {
      await expireRequest(db, candidate.id, reason);
      expired += 1;
      context.metrics?.decisions.inc({ outcome: 'expired' });
      context.logger.info('request expired', { request_id: candidate.id, reason });
    } catch (error) {
      context.logger.warn('expiring a request failed', { request_id: candidate.id, error: describeError(error) });
    }
  }
  return expired;
}

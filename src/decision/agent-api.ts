/**
 * The agent's side of the in-database contract: claim, set targets, decide, expire, drop a
 * TRUNCATE image — each one call of a `backstop.agent_*` function (EXECUTE granted to
 * backstop_agent only). The SQL enforces exactly-once and operator approval; this module only
 * calls it and reads the results.
 */
import type { CoverageItem, Queryable } from '../request/targets.js';

export type Decision = 'approved' | 'denied' | 'awaiting_approval';

/** A request row as the agent needs it (from backstop.requests). */
export interface RequestRow {
  id: string;
  created_at: Date;
  requester: string;
  requester_pid: number | null;
  command_tag: string | null;
  statement: string;
  search_path: string | null;
  status: string;
  expires_at: Date | null;
}

const REQUEST_COLUMNS = 'id, created_at, requester, requester_pid, command_tag, statement, search_path, status, expires_at';

/** pending → capturing, exactly once across agents; false when another agent (or nobody: it moved on) has it. */
export async function claimRequest(db: Queryable, requestId: string, agentId: string): Promise<boolean> {
  const { rows } = await db.query<{ claimed: boolean }>('SELECT backstop.agent_claim($1::bigint, $2) AS claimed', [requestId, agentId]);
  return rows[0]?.claimed === true;
}

export async function setTargets(db: Queryable, requestId: string, oids: number[]): Promise<void> {
  await db.query('SELECT backstop.agent_set_targets($1::bigint, $2::oid[]::regclass[])', [requestId, oids]);
}

/** What an approval of the request allows, item by item (must be set before it is decided). */
export async function setCoverage(db: Queryable, requestId: string, coverage: CoverageItem[]): Promise<void> {
  await db.query('SELECT backstop.agent_set_coverage($1::bigint, $2::jsonb)', [requestId, JSON.stringify(coverage)]);
}

/** Returns the resulting status (in operator mode an `approved` decision may stay awaiting_approval). */
export async function decide(db: Queryable, requestId: string, agentId: string, decision: Decision, reason: string | null, snapshotIds: string[]): Promise<string> {
  const { rows } = await db.query<{ status: string }>('SELECT backstop.agent_decide($1::bigint, $2, $3, $4, $5::text[]) AS status', [
    requestId, agentId, decision, reason, snapshotIds,
  ]);
  return rows[0]?.status ?? decision;
}

export async function expireRequest(db: Queryable, requestId: string, reason: string): Promise<void> {
  await db.query('SELECT backstop.agent_expire($1::bigint, $2)', [requestId, reason]);
}

export async function pendingRequests(db: Queryable): Promise<RequestRow[]> {
  const { rows } = await db.query<RequestRow>(`SELECT ${REQUEST_COLUMNS} FROM backstop.requests WHERE status = 'pending' ORDER BY id`);
  return rows;
}

/**
 * Requests stuck in `capturing` with nobody working on them: claimed by this agent in an earlier
 * life (or before a decision could be written), or by an agent whose heartbeat went stale.
 */
export async function orphanedRequests(db: Queryable, agentId: string): Promise<RequestRow[]> {
  const { rows } = await db.query<RequestRow>(
    `SELECT ${REQUEST_COLUMNS} FROM backstop.requests r
      WHERE r.status = 'capturing'
        AND (r.agent_id = $1 OR NOT EXISTS (SELECT FROM backstop.agents a WHERE a.agent_id = r.agent_id AND a.fresh))
      ORDER BY r.id`,
    [agentId],
  );
  return rows;
}

export async function findRequest(db: Queryable, requestId: string): Promise<RequestRow | undefined> {
  const { rows } = await db.query<RequestRow>(`SELECT ${REQUEST_COLUMNS} FROM backstop.requests WHERE id = $1::bigint`, [requestId]);
  return rows[0];
}

/** Requests still waiting for someone: candidates for expiry. */
export async function openRequests(db: Queryable): Promise<RequestRow[]> {
  const { rows } = await db.query<RequestRow>(
    `SELECT ${REQUEST_COLUMNS} FROM backstop.requests WHERE status IN ('pending', 'capturing', 'awaiting_approval') ORDER BY id`,
  );
  return rows;
}

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

/**
 * pending → capturing, exactly once across agents; or, when this agent leads (its presence
 * session holds the leader lock), take over a request left capturing. False when another agent
 * has it, it moved on, or this agent may not take it.
 */
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

/**
 * Returns the resulting status (in operator mode an `approved` decision may stay awaiting_approval).
 * Refused (BS006) when another agent has taken the request over: see claimHolder.
 */
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
 * Requests in `capturing`: for the leader, every one it is not working on right now is orphaned.
 * Only a leader works, so the claimant was a leader that died, lost leadership (and abandons its
 * work), or is this agent in an earlier life. The leader takes them over at once (agent_claim
 * checks that it holds the leader lock; agent_decide then refuses the old claimant).
 */
export async function orphanedRequests(db: Queryable): Promise<RequestRow[]> {
  const { rows } = await db.query<RequestRow>(`SELECT ${REQUEST_COLUMNS} FROM backstop.requests WHERE status = 'capturing' ORDER BY id`);
  return rows;
}

/** The agent holding the claim on a request (null: unclaimed or gone). */
export async function claimHolder(db: Queryable, requestId: string): Promise<string | null> {
  const { rows } = await db.query<{ agent_id: string | null }>('SELECT agent_id FROM backstop.requests WHERE id = $1::bigint', [requestId]);
  return rows[0]?.agent_id ?? null;
}

/**
 * This session is the agent's presence: while it is connected the guard counts the agent as
 * running (backstop.agent_hello). Called on the session the agent keeps for its whole life.
 */
export async function sayHello(db: Queryable, agentId: string): Promise<void> {
  await db.query('SELECT backstop.agent_hello($1)', [agentId]);
}

/** The agent is shutting down: new guarded statements are refused at once unless another agent is available. */
export async function sayGoodbye(db: Queryable, agentId: string): Promise<void> {
  await db.query('SELECT backstop.agent_goodbye($1)', [agentId]);
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

/** Reading requests and decisions from a test's database, polling with generous timeouts. */
import type pg from 'pg';
import { waitUntil } from '../support/agent-process.js';

export interface RequestRecord {
  id: string;
  status: string;
  reason: string | null;
  targets: string[];
  snapshot_ids: string[];
  decided_by: string | null;
  agent_id: string | null;
  command_tag: string;
}

const COLUMNS = 'id::text AS id, status, reason, targets, snapshot_ids, decided_by, agent_id, command_tag';

/** The request with `id` once it left pending/capturing (or the given statuses). */
export async function waitForStatus(client: pg.Client, id: string, statuses: string[], timeoutMs = 90_000): Promise<RequestRecord> {
  return waitUntil(async () => {
    const { rows } = await client.query<RequestRecord>(`SELECT ${COLUMNS} FROM backstop.requests WHERE id = $1::bigint`, [id]);
    return rows[0] && statuses.includes(rows[0].status) ? rows[0] : undefined;
  }, timeoutMs, `request ${id} to become ${statuses.join(' or ')}`);
}

/** The newest request whose statement contains `fragment`, once it exists. */
export async function waitForRequest(client: pg.Client, fragment: string, timeoutMs = 60_000): Promise<RequestRecord> {
  return waitUntil(async () => {
    const { rows } = await client.query<RequestRecord>(
      `SELECT ${COLUMNS} FROM backstop.requests WHERE strpos(statement, $1) > 0 ORDER BY id DESC LIMIT 1`,
      [fragment],
    );
    return rows[0];
  }, timeoutMs, `a request for ${fragment}`);
}

/** Run a statement and capture how it ended, without throwing. */
export async function settle(promise: Promise<unknown>): Promise<{ ok: true } | { ok: false; error: Error & { hint?: string; code?: string } }> {
  try {
    await promise;
    return { ok: true };
  } catch (error) {
    return { ok: false, error: error as Error & { hint?: string; code?: string } };
  }
}

/**
 * Run a guarded statement in a session of its own until the agent approved it and it committed
 * (auto mode); returns the request id.
 */
export async function runApproved(session: () => Promise<pg.Client>, observer: pg.Client, statement: string): Promise<string> {
  const client = await session();
  try {
    const ran = settle(client.query(statement));
    const request = await waitForRequest(observer, statement);
    const outcome = await ran;
    if (!outcome.ok) throw outcome.error;
    await waitForStatus(observer, request.id, ['consumed']);
    return request.id;
  } finally {
    await client.end();
  }
}


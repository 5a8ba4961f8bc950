/**
 * Lock conflicts that make a before-image impossible to read. A reader needs only ACCESS SHARE,
 * which conflicts with ACCESS EXCLUSIVE alone: when the requesting transaction itself holds that
 * (it altered or truncated the table earlier in the same transaction), the agent would wait for
 * a transaction that waits for the agent. That is detected up front and denied with a reason.
 */
import type { Queryable } from '../request/targets.js';

export interface ExclusiveLock {
  oid: number;
  pid: number;
}

/** Targets on which an ACCESS EXCLUSIVE lock is granted to someone, with the holder's pid. */
export async function exclusiveLocks(db: Queryable, oids: number[]): Promise<ExclusiveLock[]> {
  if (oids.length === 0) return [];
  const { rows } = await db.query<ExclusiveLock>(
    `SELECT relation AS oid, pid FROM pg_catalog.pg_locks
      WHERE locktype = 'relation' AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
        AND relation = ANY($1::oid[]) AND mode = 'AccessExclusiveLock' AND granted`,
    [oids],
  );
  return rows;
}

/** SQLSTATE 55P03: lock_not_available (lock_timeout expired). */
export function isLockTimeout(error: unknown): boolean {
  for (let current: unknown = error; current; current = (current as { cause?: unknown }).cause) {
    if ((current as { code?: string }).code === '55P03') return true;
  }
  return false;
}

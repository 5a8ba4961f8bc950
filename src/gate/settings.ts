/** The thresholds and modes in backstop.settings, as the agent uses them. */
import type { Queryable } from '../request/targets.js';

export type ApprovalMode = 'auto' | 'operator';

export interface BackstopSettings {
  maxSnapshotAgeMs: number;
  maxHeartbeatAgeMs: number;
  waitTimeoutMs: number;
  approvalMode: ApprovalMode;
}

export async function readSettings(db: Queryable): Promise<BackstopSettings> {
  const { rows } = await db.query<{ max_snapshot_age: number; max_heartbeat_age: number; wait_timeout: number; approval_mode: string }>(
    `SELECT extract(epoch FROM max_snapshot_age)::float8 * 1000 AS max_snapshot_age,
            extract(epoch FROM max_heartbeat_age)::float8 * 1000 AS max_heartbeat_age,
            extract(epoch FROM wait_timeout)::float8 * 1000 AS wait_timeout,
            approval_mode
       FROM backstop.settings LIMIT 1`,
  );
  const row = rows[0];
  return {
    maxSnapshotAgeMs: row?.max_snapshot_age ?? 300_000,
    maxHeartbeatAgeMs: row?.max_heartbeat_age ?? 120_000,
    waitTimeoutMs: row?.wait_timeout ?? 300_000,
    approvalMode: row?.approval_mode === 'operator' ? 'operator' : 'auto',
  };
}

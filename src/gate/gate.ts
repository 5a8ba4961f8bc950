/**
 * The recovery-readiness gate: a destructive statement may proceed only when it can be undone.
 * Before capture: the storage answers and this agent's heartbeat is fresh (what the guard's
 * fail-closed check reads). After capture: every target has a snapshot no older than
 * max_snapshot_age whose data file matches its manifest checksum — normally the before-image
 * just taken. Each failure is a sentence a DBA can act on; the request is denied with them.
 */
import { describeError } from '../errors/index.js';
import type { Queryable } from '../request/targets.js';
import type { BackstopSettings } from './settings.js';

export interface GateResult {
  passed: boolean;
  failures: string[];
}

function seconds(ms: number): string {
  return `${Math.round(ms / 1000)} s`;
}

export interface AgentReadinessInput {
  agentId: string;
  settings: BackstopSettings;
  /** A fresh reachability check of the storage. */
  checkStorage(): Promise<{ ok: boolean; error: string | null }>;
}

export async function checkAgentReadiness(db: Queryable, input: AgentReadinessInput): Promise<GateResult> {
  const failures: string[] = [];
  const storage = await input.checkStorage();
  if (!storage.ok) failures.push(`storage unreachable: ${storage.error ?? 'unknown error'} (no before-image can be written; fix the storage and run the statement again)`);
  const { rows } = await db.query<{ age_ms: number | null }>(
    `SELECT extract(epoch FROM heartbeat_age)::float8 * 1000 AS age_ms FROM backstop.agents WHERE agent_id = $1`,
    [input.agentId],
  );
  const age = rows[0]?.age_ms;
  if (age === undefined || age === null) failures.push(`agent ${input.agentId} has no heartbeat in backstop.agents yet`);
  else if (age > input.settings.maxHeartbeatAgeMs) {
    failures.push(`the agent's heartbeat is ${seconds(age)} old (max_heartbeat_age ${seconds(input.settings.maxHeartbeatAgeMs)}): the agent cannot write its heartbeat`);
  }
  return { passed: failures.length === 0, failures };
}

export interface TargetSnapshot {
  /** Display name of the table, e.g. public.users. */
  table: string;
  snapshotId: string;
  createdAt: Date;
  /** Throws when the data file does not match the manifest checksum. */
  verify(): Promise<void>;
}

export async function checkSnapshotsReady(snapshots: TargetSnapshot[], settings: BackstopSettings, now = new Date()): Promise<GateResult> {
  const failures: string[] = [];
  await Promise.all(snapshots.map(async (snapshot) => {
    const age = now.getTime() - snapshot.createdAt.getTime();
    if (age > settings.maxSnapshotAgeMs) {
      failures.push(`snapshot ${snapshot.snapshotId} of ${snapshot.table} is ${seconds(age)} old (max_snapshot_age ${seconds(settings.maxSnapshotAgeMs)})`);
      return;
    }
    try {
      await snapshot.verify();
    } catch (error) {
      failures.push(`snapshot ${snapshot.snapshotId} of ${snapshot.table} failed its checksum check: ${describeError(error)}`);
    }
  }));
  return { passed: failures.length === 0, failures };
}

/**
 * Which snapshots a retention policy keeps, in the manner of restic's `forget --keep-last /
 * --keep-hourly / --keep-daily` (and pgBackRest's counted retention): going from the newest
 * snapshot to the oldest, `last` keeps the first N; `hourly` keeps the newest snapshot of each of
 * the N most recent hours that have one, `daily` the same for days (UTC). A snapshot kept by any
 * rule stays. So the number kept per table is bounded (at most last + hourly + daily) however busy
 * the table is, a busy table keeps one snapshot per hour for its last day and one per day for its
 * last week, and a quiet table's hourly and daily slots reach further back.
 *
 * Pure: the caller decides which snapshots are candidates (background snapshots of one table,
 * usable ones) and does the removing.
 */
import { ConfigError } from '../errors/index.js';

export interface RetentionPolicy {
  /** The newest N. */
  last: number;
  /** The newest of each of the N most recent hours (UTC) that have a snapshot. */
  hourly: number;
  /** The newest of each of the N most recent days (UTC) that have a snapshot. */
  daily: number;
}

/** The agent's default: at most 36 background snapshots per table. */
export const DEFAULT_RETENTION: RetentionPolicy = { last: 5, hourly: 24, daily: 7 };

export type RetentionRule = keyof RetentionPolicy;

export interface RetentionCandidate {
  snapshot_id: string;
  created_at: string;
}

export interface RetentionPlan {
  /** Kept snapshot ids, newest first, with the rules that keep each. */
  kept: Array<{ snapshot_id: string; rules: RetentionRule[] }>;
  /** Snapshot ids to remove, newest first. */
  removed: string[];
}

const BUCKETS: Record<RetentionRule, (candidate: RetentionCandidate) => string> = {
  // Every snapshot is its own bucket for `last`.
  last: (candidate) => candidate.snapshot_id,
  hourly: (candidate) => new Date(candidate.created_at).toISOString().slice(0, 13),
  daily: (candidate) => new Date(candidate.created_at).toISOString().slice(0, 10),
};

export function describePolicy(policy: RetentionPolicy): string {
  return `--keep-last ${policy.last} --keep-hourly ${policy.hourly} --keep-daily ${policy.daily}`;
}

/** A policy that keeps something: the newest candidate is then always kept (every rule keeps it). */
export function checkPolicy(policy: RetentionPolicy): RetentionPolicy {
  for (const [rule, count] of Object.entries(policy)) {
    if (!Number.isSafeInteger(count) || count < 0) {
      throw new ConfigError(`--keep-${rule} must be a whole number of 0 or more (got ${count})`, { hint: `for example ${describePolicy(DEFAULT_RETENTION)}` });
    }
  }
  if (policy.last + policy.hourly + policy.daily === 0) {
    throw new ConfigError('a retention policy that keeps nothing would remove every snapshot', {
      hint: `keep at least one, e.g. ${describePolicy(DEFAULT_RETENTION)} (the agent's default); the agent's --keep-all keeps everything`,
    });
  }
  return policy;
}

/** Plan retention over candidates given newest first (sorted again here to be sure). */
export function planRetention(candidates: readonly RetentionCandidate[], policy: RetentionPolicy): RetentionPlan {
  const ordered = [...candidates].sort((a, b) => (a.created_at === b.created_at ? b.snapshot_id.localeCompare(a.snapshot_id) : b.created_at.localeCompare(a.created_at)));
  const left: Record<RetentionRule, number> = { ...policy };
  const lastBucket: Partial<Record<RetentionRule, string>> = {};
  const plan: RetentionPlan = { kept: [], removed: [] };
  for (const candidate of ordered) {
    const rules: RetentionRule[] = [];
    for (const rule of ['last', 'hourly', 'daily'] as const) {
      if (left[rule] === 0) continue;
      const bucket = BUCKETS[rule](candidate);
      if (bucket === lastBucket[rule]) continue;
      lastBucket[rule] = bucket;
      left[rule] -= 1;
      rules.push(rule);
    }
    if (rules.length > 0) plan.kept.push({ snapshot_id: candidate.snapshot_id, rules });
    else plan.removed.push(candidate.snapshot_id);
  }
  return plan;
}

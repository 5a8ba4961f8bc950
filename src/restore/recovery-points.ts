/**
 * Recovery points of a table: its snapshots, newest first, each re-verified against its
 * manifest (size and SHA-256 of the data file) before it is offered. A snapshot that fails is
 * never offered; it is reported so the operator knows it exists and is damaged.
 */
import { displayName, type QualifiedName } from '../db/identifiers.js';
import { listManifests } from '../snapshot/list.js';
import { sourceForPeople, type Manifest } from '../snapshot/manifest.js';
import { checkSnapshot } from '../snapshot/verify.js';
import type { Storage } from '../storage/storage.js';

export interface RecoveryPoint {
  manifest: Manifest;
  /** Seconds between capture and now. */
  ageSeconds: number;
}

export interface RejectedSnapshot {
  manifest: Manifest;
  problem: string;
}

export interface RecoveryPoints {
  table: QualifiedName;
  points: RecoveryPoint[];
  rejected: RejectedSnapshot[];
}

export interface ListRecoveryPointsOptions {
  /** Stop after this many verified points (each verification reads the whole data file). Default 10. */
  limit?: number;
  now?: Date;
}

export async function listRecoveryPoints(storage: Storage, table: QualifiedName, options: ListRecoveryPointsOptions = {}): Promise<RecoveryPoints> {
  const limit = options.limit ?? 10;
  const now = (options.now ?? new Date()).getTime();
  const points: RecoveryPoint[] = [];
  const rejected: RejectedSnapshot[] = [];
  for (const manifest of await listManifests(storage, { table })) {
    if (points.length >= limit) break;
    const check = await checkSnapshot(storage, manifest);
    if (!check.ok) {
      rejected.push({ manifest, problem: check.problem ?? 'failed verification' });
      continue;
    }
    points.push({ manifest, ageSeconds: Math.max(0, Math.round((now - Date.parse(manifest.created_at)) / 1000)) });
  }
  return { table, points, rejected };
}

export function formatAge(seconds: number): string {
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 36 * 3600) return `${(seconds / 3600).toFixed(1)} h ago`;
  return `${(seconds / 86400).toFixed(1)} days ago`;
}

function describeSource(manifest: Manifest): string {
  const parts: string[] = [sourceForPeople(manifest.source)];
  if (manifest.request_id !== null) parts.push(`request ${manifest.request_id}`);
  if (manifest.label) parts.push(`label "${manifest.label}"`);
  if (manifest.group) parts.push(`group "${manifest.group.name}"`);
  return parts.join(', ');
}

/** The numbered listing shown to the operator. */
export function formatRecoveryPoints(list: RecoveryPoints): string {
  const lines: string[] = [];
  if (list.points.length === 0) {
    lines.push(`No verified recovery points for ${displayName(list.table)}.`);
  } else {
    lines.push(`Verified recovery points for ${displayName(list.table)} (newest first):`);
    list.points.forEach((point, index) => {
      const m = point.manifest;
      lines.push(
        `  ${String(index + 1).padStart(2)}) ${m.snapshot_id}  ${m.created_at}  (${formatAge(point.ageSeconds)})  ${m.row_count.toLocaleString('en-US')} rows  source: ${describeSource(m)}`,
      );
    });
  }
  for (const reject of list.rejected) {
    lines.push(`  not offered: ${reject.manifest.snapshot_id} (${reject.manifest.created_at}) failed verification: ${reject.problem}`);
  }
  return `${lines.join('\n')}\n`;
}

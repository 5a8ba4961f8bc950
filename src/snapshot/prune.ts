/**
 * Retention: keep at most N verified snapshots per table, never the newest verified one, and
 * collect orphaned data files (no manifest: an interrupted capture) once they are older than a
 * grace period, so a capture still in flight is left alone.
 *
 * Per table, newest first: snapshots are verified until N pass; one that fails verification is
 * reported and left in place (not counted). Every snapshot older than the N-th verified one is
 * removed (manifest first, so it stops being a snapshot at once, then its data file) unless
 * protected. With fewer than N verified snapshots nothing is removed.
 */
import type { QualifiedName } from '../db/identifiers.js';
import { ConfigError, describeError } from '../errors/index.js';
import { silentLogger, type Logger } from '../log/logger.js';
import type { Storage } from '../storage/storage.js';
import { SNAPSHOTS_PREFIX, isManifestKey, manifestKeyForData, tableFolder } from './layout.js';
import { listManifests } from './list.js';
import type { Manifest } from './manifest.js';
import { checkSnapshot } from './verify.js';

export interface PruneOptions {
  /** Verified snapshots to keep per table; at least 1. */
  keep: number;
  /** Only this table (and orphans in its folder). */
  table?: QualifiedName;
  /** Snapshots never removed: a predicate, or a list of snapshot ids. */
  protect?: ((manifest: Manifest) => boolean) | readonly string[];
  /** Orphaned files younger than this are left alone (default 1 hour). */
  orphanGraceMs?: number;
  /** 'sha256' re-reads each kept snapshot (default); 'size' only compares stored sizes. */
  verification?: 'sha256' | 'size';
  /** Report what would be removed without removing it. */
  dryRun?: boolean;
  now?: Date;
  logger?: Logger;
}

export interface PruneReport {
  /** Snapshots removed (or that would be, with dryRun). */
  removed: Manifest[];
  /** Orphaned keys removed. */
  orphans: string[];
  /** Snapshots kept, newest first per table. */
  kept: string[];
  /** Snapshots that failed verification and were left in place. */
  corrupt: Array<{ snapshot_id: string; problem: string }>;
}

export const DEFAULT_ORPHAN_GRACE_MS = 60 * 60 * 1000;

function isProtected(protect: PruneOptions['protect'], manifest: Manifest): boolean {
  if (!protect) return false;
  return typeof protect === 'function' ? protect(manifest) : protect.includes(manifest.snapshot_id);
}

async function passes(storage: Storage, manifest: Manifest, verification: 'sha256' | 'size'): Promise<string | undefined> {
  if (verification === 'size') {
    const head = await storage.head(manifest.parquet_path);
    if (!head) return `data file ${manifest.parquet_path} is missing`;
    return head.size === manifest.size_bytes ? undefined : `data file is ${head.size} bytes, the manifest says ${manifest.size_bytes}`;
  }
  return (await checkSnapshot(storage, manifest)).problem;
}

export async function pruneWithReport(storage: Storage, options: PruneOptions): Promise<PruneReport> {
  if (!Number.isInteger(options.keep) || options.keep < 1) {
    throw new ConfigError(`--keep must be a whole number of at least 1 (got ${options.keep})`, { hint: 'the newest verified snapshot of a table is never removed; use --keep 1 or more' });
  }
  const logger = options.logger ?? silentLogger;
  const verification = options.verification ?? 'sha256';
  const report: PruneReport = { removed: [], orphans: [], kept: [], corrupt: [] };
  const prefix = options.table ? tableFolder(options.table) : SNAPSHOTS_PREFIX;
  const objects = await storage.list(prefix);
  const manifests = await listManifests(storage, options.table ? { table: options.table } : {});

  const byTable = new Map<string, Manifest[]>();
  for (const manifest of manifests) {
    const key = JSON.stringify([manifest.schema, manifest.table]);
    byTable.set(key, [...(byTable.get(key) ?? []), manifest]);
  }
  for (const snapshots of byTable.values()) {
    let verified = 0;
    for (const manifest of snapshots) {
      if (verified < options.keep) {
        const problem = await passes(storage, manifest, verification);
        if (problem) report.corrupt.push({ snapshot_id: manifest.snapshot_id, problem });
        else {
          verified += 1;
          report.kept.push(manifest.snapshot_id);
        }
        continue;
      }
      if (isProtected(options.protect, manifest)) {
        report.kept.push(manifest.snapshot_id);
        continue;
      }
      if (!options.dryRun) {
        const manifestKey = manifestKeyForData(manifest.parquet_path);
        if (manifestKey) await storage.delete(manifestKey);
        await storage.delete(manifest.parquet_path);
      }
      report.removed.push(manifest);
      logger.info(options.dryRun ? 'snapshot would be pruned (dry run)' : 'snapshot pruned', { snapshot_id: manifest.snapshot_id, table: `${manifest.schema}.${manifest.table}`, created_at: manifest.created_at });
    }
  }

  const keys = new Set(objects.map((object) => object.key));
  const cutoff = (options.now ?? new Date()).getTime() - (options.orphanGraceMs ?? DEFAULT_ORPHAN_GRACE_MS);
  for (const object of objects) {
    if (isManifestKey(object.key)) continue;
    const partner = manifestKeyForData(object.key);
    if (partner && keys.has(partner)) continue;
    if (report.removed.some((m) => m.parquet_path === object.key)) continue;
    if (object.modified.getTime() > cutoff) continue;
    try {
      if (!options.dryRun) await storage.delete(object.key);
      report.orphans.push(object.key);
      logger.info(options.dryRun ? 'orphaned file would be removed (dry run)' : 'orphaned file removed', { key: object.key, modified: object.modified.toISOString() });
    } catch (error) {
      logger.warn('cannot remove orphaned file', { key: object.key, error: describeError(error) });
    }
  }
  return report;
}

/** Prune and return the snapshots removed (see pruneWithReport for the full report). */
export async function prune(storage: Storage, options: PruneOptions): Promise<Manifest[]> {
  return (await pruneWithReport(storage, options)).removed;
}

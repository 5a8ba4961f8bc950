/**
 * Prune: apply a retention policy (retention.ts) to each table's snapshots, never removing the
 * newest usable one, and collect orphaned data files (no manifest: an interrupted capture) once
 * they are older than a grace period, so a capture still in flight is left alone.
 *
 * Per table: the candidates are its snapshots minus the protected ones (those are kept and fill
 * no slot of the policy). Only where the plan removes something are the snapshots it keeps
 * verified: a kept snapshot that fails is reported, left in place and fills no slot, and the plan
 * is made again without it — so nothing is removed on the strength of a damaged snapshot, and a
 * table with nothing to remove costs no reads. Removal takes the manifest first (it stops being a
 * snapshot at once), then the data file.
 *
 * Everything comes from one listing and the catalog index (list.ts): prune reads manifests only
 * for snapshots the index does not know, and for the snapshots it verifies.
 */
import type { QualifiedName } from '../db/identifiers.js';
import { ConfigError, NotFoundError, describeError } from '../errors/index.js';
import { silentLogger, type Logger } from '../log/logger.js';
import { digestOf } from '../storage/digest.js';
import type { Storage } from '../storage/storage.js';
import { INDEX_PREFIX, folderOfKey, indexKey, type SnapshotEntry } from './catalog-index.js';
import { isManifestKey, manifestKeyForData } from './layout.js';
import { snapshotCatalog } from './list.js';
import type { SnapshotSource } from './manifest.js';
import { checkPolicy, planRetention, type RetentionPolicy } from './retention.js';

export interface PruneOptions {
  /** The retention policy (retention.ts). */
  policy?: RetentionPolicy;
  /** Shorthand for `{ last: keep, hourly: 0, daily: 0 }`: the newest N per table. */
  keep?: number;
  /** Only this table (and orphans in its folder). */
  table?: QualifiedName;
  /** Snapshots never removed: a predicate, or a list of snapshot ids. */
  protect?: ((snapshot: SnapshotEntry) => boolean) | readonly string[];
  /** Only snapshots of these sources are subject to the policy; the others are protected (default: all). */
  sources?: readonly SnapshotSource[];
  /** Orphaned files younger than this are left alone (default 1 hour). */
  orphanGraceMs?: number;
  /** 'sha256' re-reads each snapshot kept where something is removed (default); 'size' compares listed sizes. */
  verification?: 'sha256' | 'size';
  /** Report what would be removed without removing it. */
  dryRun?: boolean;
  now?: Date;
  logger?: Logger;
}

export interface PruneReport {
  /** Snapshots removed (or that would be, with dryRun). */
  removed: SnapshotEntry[];
  /** Orphaned keys removed (or that would be). */
  orphans: string[];
  /** Snapshots kept, newest first per table. */
  kept: string[];
  /** Snapshots that failed verification and were left in place. */
  corrupt: Array<{ snapshot_id: string; problem: string }>;
}

export const DEFAULT_ORPHAN_GRACE_MS = 60 * 60 * 1000;
/** Tables planned at once (each verifies its kept snapshots one after another). */
const PLAN_CONCURRENCY = 8;

function policyOf(options: PruneOptions): RetentionPolicy {
  if (options.policy && options.keep !== undefined) {
    throw new ConfigError('give either --keep or a retention policy (--keep-last, --keep-hourly, --keep-daily), not both', { hint: '--keep N is the same as --keep-last N' });
  }
  if (options.keep !== undefined) {
    if (!Number.isInteger(options.keep) || options.keep < 1) {
      throw new ConfigError(`--keep must be a whole number of at least 1 (got ${options.keep})`, { hint: 'the newest verified snapshot of a table is never removed; use --keep 1 or more' });
    }
    return { last: options.keep, hourly: 0, daily: 0 };
  }
  if (!options.policy) throw new ConfigError('prune needs a retention policy', { hint: 'pass --keep N, or --keep-last / --keep-hourly / --keep-daily' });
  return checkPolicy(options.policy);
}

function isProtected(options: PruneOptions, snapshot: SnapshotEntry): boolean {
  if (options.sources && !options.sources.includes(snapshot.source)) return true;
  const { protect } = options;
  if (!protect) return false;
  return typeof protect === 'function' ? protect(snapshot) : protect.includes(snapshot.snapshot_id);
}

/**
 * Why a kept snapshot cannot be relied on, or undefined when it verifies. The size comes from the
 * listing and the checksum from the catalog entry, so 'sha256' costs one read of the data file
 * and nothing else (verify.ts would read the manifest and ask for the size first: three requests
 * a snapshot, which made pruning 10,000 snapshots on S3 no faster than reading every manifest).
 */
async function problemOf(storage: Storage, snapshot: SnapshotEntry, verification: 'sha256' | 'size', listedSizes: ReadonlyMap<string, number>): Promise<string | undefined> {
  // The main data file, then any parts (rows added when a before-image was completed).
  for (const data of [snapshot, ...(snapshot.parts ?? [])]) {
    const problem = await dataFileProblem(storage, data, verification, listedSizes);
    if (problem) return problem;
  }
  return undefined;
}

async function dataFileProblem(
  storage: Storage,
  snapshot: { parquet_path: string; size_bytes: number; checksum: string },
  verification: 'sha256' | 'size',
  listedSizes: ReadonlyMap<string, number>,
): Promise<string | undefined> {
  const file = snapshot.parquet_path;
  const size = listedSizes.get(file);
  if (size === undefined) return `data file ${file} is missing`;
  if (size !== snapshot.size_bytes) return `data file ${file} is ${size} bytes, the manifest says ${snapshot.size_bytes} (truncated or replaced)`;
  if (verification === 'size') return undefined;
  let actual;
  try {
    actual = await digestOf(await storage.get(file));
  } catch (error) {
    if (error instanceof NotFoundError) return `data file ${file} is missing`;
    throw error;
  }
  // The manifest's checksum is the hex digest, possibly written as "sha256:<hex>".
  const expected = snapshot.checksum.replace(/^sha256:/, '');
  if (actual.size !== snapshot.size_bytes) return `data file ${file} is ${actual.size} bytes, the manifest says ${snapshot.size_bytes} (truncated or replaced)`;
  if (actual.sha256 !== expected) return `data file ${file} has SHA-256 ${actual.sha256}, the manifest says ${expected} (the file was altered)`;
  return undefined;
}

interface TablePlan {
  kept: SnapshotEntry[];
  removed: SnapshotEntry[];
  corrupt: Array<{ snapshot_id: string; problem: string }>;
}

/** One table's plan: re-planned without each kept snapshot that fails verification. */
async function planTable(storage: Storage, snapshots: SnapshotEntry[], policy: RetentionPolicy, options: PruneOptions, listedSizes: ReadonlyMap<string, number>): Promise<TablePlan> {
  const verification = options.verification ?? 'sha256';
  const protectedOnes = snapshots.filter((s) => isProtected(options, s));
  let candidates = snapshots.filter((s) => !isProtected(options, s));
  const verified = new Set<string>();
  const corrupt: TablePlan['corrupt'] = [];
  for (;;) {
    const plan = planRetention(candidates, policy);
    const byId = new Map(candidates.map((s) => [s.snapshot_id, s]));
    const kept = plan.kept.map((k) => byId.get(k.snapshot_id)!);
    const removed = plan.removed.map((id) => byId.get(id)!);
    if (removed.length === 0) return { kept: [...kept, ...protectedOnes], removed, corrupt };
    const failed = new Set<string>();
    for (const snapshot of kept) {
      if (verified.has(snapshot.snapshot_id)) continue;
      const problem = await problemOf(storage, snapshot, verification, listedSizes);
      if (problem) {
        corrupt.push({ snapshot_id: snapshot.snapshot_id, problem });
        failed.add(snapshot.snapshot_id);
      } else verified.add(snapshot.snapshot_id);
    }
    if (failed.size === 0) return { kept: [...kept, ...protectedOnes], removed, corrupt };
    candidates = candidates.filter((s) => !failed.has(s.snapshot_id));
  }
}

export async function pruneWithReport(storage: Storage, options: PruneOptions): Promise<PruneReport> {
  const policy = policyOf(options);
  const logger = options.logger ?? silentLogger;
  const report: PruneReport = { removed: [], orphans: [], kept: [], corrupt: [] };
  // A dry run writes nothing, not even the catalog index.
  const { snapshots, objects } = await snapshotCatalog(storage, { ...(options.table ? { table: options.table } : {}), logger, updateIndex: !options.dryRun });
  const listedSizes = new Map(objects.map((object) => [object.key, object.size]));

  const byTable = new Map<string, SnapshotEntry[]>();
  for (const snapshot of snapshots) {
    const key = JSON.stringify([snapshot.schema, snapshot.table]);
    byTable.set(key, [...(byTable.get(key) ?? []), snapshot]);
  }
  // Tables are planned (and their kept snapshots verified) several at once; removal follows in order.
  const tables = [...byTable.values()];
  const plans: TablePlan[] = new Array(tables.length);
  let next = 0;
  const planner = async () => {
    while (next < tables.length) {
      const index = next++;
      plans[index] = await planTable(storage, tables[index]!, policy, options, listedSizes);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PLAN_CONCURRENCY, tables.length) }, planner));
  for (const plan of plans) {
    report.kept.push(...plan.kept.map((s) => s.snapshot_id));
    report.corrupt.push(...plan.corrupt);
    for (const snapshot of plan.removed) {
      const fields = { snapshot_id: snapshot.snapshot_id, table: `${snapshot.schema}.${snapshot.table}`, created_at: snapshot.created_at };
      if (options.dryRun) {
        logger.info('snapshot would be pruned (dry run)', fields);
      } else {
        await storage.delete(snapshot.manifest_key);
        await storage.delete(snapshot.parquet_path);
        for (const part of snapshot.parts ?? []) await storage.delete(part.parquet_path);
        logger.info('snapshot pruned', fields);
      }
      report.removed.push(snapshot);
    }
  }
  // The index of a folder that lost snapshots is brought up to date by the next listing, from
  // its own entries (no manifest is read for that).

  const keys = new Set(objects.map((object) => object.key));
  const removedData = new Set(report.removed.flatMap((s) => [s.parquet_path, ...(s.parts ?? []).map((part) => part.parquet_path)]));
  const cutoff = (options.now ?? new Date()).getTime() - (options.orphanGraceMs ?? DEFAULT_ORPHAN_GRACE_MS);
  for (const object of objects) {
    if (isManifestKey(object.key)) continue;
    const partner = manifestKeyForData(object.key);
    if (partner && keys.has(partner)) continue;
    if (removedData.has(object.key)) continue;
    if (object.modified.getTime() > cutoff) continue;
    try {
      if (options.dryRun) logger.info('orphaned file would be removed (dry run)', { key: object.key, modified: object.modified.toISOString() });
      else {
        await storage.delete(object.key);
        logger.info('orphaned file removed', { key: object.key, modified: object.modified.toISOString() });
      }
      report.orphans.push(object.key);
    } catch (error) {
      logger.warn('cannot remove orphaned file', { key: object.key, error: describeError(error) });
    }
  }
  if (!options.table && !options.dryRun) await removeStaleIndexes(storage, new Set(snapshots.map((s) => folderOfKey(s.manifest_key))), logger);
  return report;
}

/** Indexes of table folders that hold no snapshot any more (every snapshot of the table pruned). */
async function removeStaleIndexes(storage: Storage, liveFolders: ReadonlySet<string>, logger: Logger): Promise<void> {
  for (const object of await storage.list(INDEX_PREFIX)) {
    const folder = object.key.slice(INDEX_PREFIX.length).replace(/\.json$/, '');
    if (liveFolders.has(folder) || object.key !== indexKey(folder)) continue;
    await storage.delete(object.key).catch((error: unknown) => logger.debug('stale catalog index not removed', { key: object.key, error: describeError(error) }));
  }
}

/** Prune and return the snapshots removed (see pruneWithReport for the full report). */
export async function prune(storage: Storage, options: PruneOptions): Promise<SnapshotEntry[]> {
  return (await pruneWithReport(storage, options)).removed;
}

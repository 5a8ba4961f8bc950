/**
 * One background or on-demand capture, start to finish: capture the table with the snapshot
 * engine, record the manifest in the database (backstop.snapshots, backstop.readiness) and in the
 * local catalog, count it in the metrics; and the table's retention, applied after each
 * background capture.
 */
import type pg from 'pg';
import { recordCapturedSnapshot } from '../capture/record.js';
import { describeError } from '../errors/index.js';
import { verifyStoredChecksum } from '../gate/checksum.js';
import type { Logger } from '../log/logger.js';
import { captureTable } from '../snapshot/capture.js';
import type { Manifest, SnapshotSource } from '../snapshot/manifest.js';
import { prune } from '../snapshot/prune.js';
import type { RetentionPolicy } from '../snapshot/retention.js';
import type { Storage } from '../storage/storage.js';
import type { AgentMetrics } from './metrics.js';
import type { AgentState } from './state.js';

export interface CaptureContext {
  pool: pg.Pool;
  storage: Storage;
  state: AgentState;
  metrics: AgentMetrics;
  logger: Logger;
}

export interface CaptureRequest {
  schema: string;
  table: string;
  source: SnapshotSource;
  label?: string;
  requestId?: number;
  signal: AbortSignal;
}

/**
 * Capture, check, record and count one snapshot. The stored data file is read back and checked
 * against the manifest's checksum (what backstop.readiness calls "checksum verified"); a snapshot
 * that fails the check is recorded as unverified and the capture counts as failed, to be retried.
 */
export async function captureAndRecord(context: CaptureContext, request: CaptureRequest): Promise<Manifest> {
  const started = performance.now();
  try {
    const manifest = await captureTable({
      pool: context.pool,
      storage: context.storage,
      table: { schema: request.schema, table: request.table },
      source: request.source,
      ...(request.label !== undefined ? { label: request.label } : {}),
      ...(request.requestId !== undefined ? { requestId: request.requestId } : {}),
      logger: context.logger,
      signal: request.signal,
    });
    let checksumError: unknown;
    try {
      await verifyStoredChecksum(context.storage, manifest);
    } catch (error) {
      checksumError = error;
    }
    await recordCapturedSnapshot(context.pool, context.state, manifest, checksumError === undefined);
    if (checksumError !== undefined) throw checksumError;
    context.metrics.snapshotDuration.observe({ source: request.source }, (performance.now() - started) / 1000);
    context.metrics.snapshotBytes.inc({ source: request.source }, manifest.size_bytes);
    return manifest;
  } catch (error) {
    if (!request.signal.aborted) context.metrics.snapshotFailures.inc({ source: request.source });
    throw error;
  }
}

/**
 * Apply the retention policy to one table's background snapshots. Never removed, and filling no
 * slot of the policy: before-images of requests and on-demand snapshots (someone asked for those
 * on purpose; `backstop prune` removes them when told to), and snapshots protected because their
 * table drifted. Returns the ids removed.
 */
export async function pruneTable(context: CaptureContext, table: { schema: string; table: string }, policy: RetentionPolicy): Promise<string[]> {
  const protect = new Set(context.state.protectedSnapshots(table).map((p) => p.snapshotId));
  // Also what any agent protected: the newest snapshot taken before each alert on this table.
  const { rows } = await context.pool.query<{ snapshot_id: string }>(
    `SELECT DISTINCT ON (a.id) s.snapshot_id
       FROM backstop.alerts a
       JOIN backstop.snapshot_catalog s ON s.schema_name = a.schema_name AND s.table_name = a.table_name AND s.created_at <= a.created_at
      WHERE a.schema_name = $1 AND a.table_name = $2
      ORDER BY a.id, s.created_at DESC`,
    [table.schema, table.table],
  );
  for (const row of rows) protect.add(row.snapshot_id);
  // 'size' instead of re-reading every kept file on each capture: the newest one was just checked.
  const removed = await prune(context.storage, { table, policy, sources: ['sidecar'], protect: [...protect], verification: 'size', logger: context.logger });
  const ids = removed.map((snapshot) => snapshot.snapshot_id);
  for (const id of ids) {
    try {
      await context.pool.query('SELECT backstop.agent_forget_snapshot($1)', [id]);
    } catch (error) {
      context.logger.warn('pruned snapshot still listed in backstop.snapshots', { snapshot_id: id, error: describeError(error) });
    }
    context.state.forgetSnapshot(id);
  }
  return ids;
}

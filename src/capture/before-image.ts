/**
 * Before-images for DROP TABLE / DROP SCHEMA / DROP COLUMN / ALTER COLUMN TYPE: the agent reads
 * each target itself while the guarded statement waits at ddl_command_start (no lock held yet).
 * Captures run on their own connections with a lock_timeout: a table someone else holds ACCESS
 * EXCLUSIVE would otherwise stall the request until the statement's wait_timeout; instead the
 * request is denied naming the holder.
 */
import pg from 'pg';
import { clientConfig, type DatabaseTarget } from '../db/connection.js';
import { SnapshotError, describeError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import type { TargetSnapshot } from '../gate/gate.js';
import type { BeforeImageCapturer } from '../agent/pipeline.js';
import { qualifiedTarget, type ResolvedTarget } from '../request/targets.js';
import { captureTable } from '../snapshot/capture.js';
import type { Manifest } from '../snapshot/manifest.js';
import { verifyStoredChecksum } from '../gate/checksum.js';
import type { Storage } from '../storage/storage.js';
import { exclusiveLocks, isLockTimeout } from './locks.js';
import type { CaptureSlots } from './slots.js';
import { lockedByRequesterReason } from '../decision/reasons.js';

export const CAPTURE_LOCK_TIMEOUT_MS = 15_000;

interface RequestInfo {
  id: string;
  requesterPid: number | null;
  commandTag: string | null;
}

/** A pool for captures: every session gets lock_timeout so a lock wait ends with a reason. */
export function createCapturePool(target: DatabaseTarget, max: number, applicationName: string): pg.Pool {
  return new pg.Pool({
    ...clientConfig(target, applicationName),
    max,
    options: `-c lock_timeout=${CAPTURE_LOCK_TIMEOUT_MS}`,
    connectionTimeoutMillis: 10_000,
    keepAlive: true,
  });
}

export interface BeforeImageOptions {
  pool: pg.Pool;
  storage: Storage;
  logger: Logger;
  /** Shared with the TRUNCATE exporter: captures running at once, across all requests. */
  slots: CaptureSlots;
  /** Records the manifest where a DBA sees it (backstop.snapshots) and in the local catalog. */
  record(manifest: Manifest, verified: boolean): Promise<void>;
  /** Count a capture (metrics). */
  observe?(outcome: { manifest?: Manifest; seconds: number; failed: boolean }): void;
}

export class BeforeImages implements BeforeImageCapturer {
  private readonly options: BeforeImageOptions;
  private readonly slots: CaptureSlots;

  constructor(options: BeforeImageOptions) {
    this.options = options;
    this.slots = options.slots;
  }

  capture(target: ResolvedTarget, request: RequestInfo, signal: AbortSignal): Promise<TargetSnapshot> {
    return this.slots.run(() => this.captureNow(target, request, signal));
  }

  private async captureNow(target: ResolvedTarget, request: RequestInfo, signal: AbortSignal): Promise<TargetSnapshot> {
    const requestId = request.id;
    const { pool, storage, logger } = this.options;
    const started = performance.now();
    let manifest: Manifest;
    try {
      manifest = await captureTable({
        database: pool,
        storage,
        table: { schema: target.schema, table: target.table },
        source: 'before-image',
        requestId: Number(requestId),
        label: `before-image of request ${requestId}`,
        // Recorded with the image so that, under the waiting statement's lock, a census proves
        // whether anything changed since (capture/completion.ts).
        census: true,
        logger: logger.child({ request_id: requestId, table: `${target.schema}.${target.table}` }),
        signal,
      });
    } catch (error) {
      this.options.observe?.({ seconds: (performance.now() - started) / 1000, failed: !signal.aborted });
      if (isLockTimeout(error)) {
        const holders = await exclusiveLocks(pool, [target.oid]).catch(() => []);
        if (request.requesterPid !== null && holders.some((holder) => holder.pid === request.requesterPid)) {
          throw new SnapshotError(lockedByRequesterReason(qualifiedTarget(target), request.commandTag), { cause: error });
        }
        const who = holders.length > 0 ? `session pid ${holders.map((h) => h.pid).join(', ')}` : 'another session';
        throw new SnapshotError(`${qualifiedTarget(target)} is locked by ${who} (waited ${CAPTURE_LOCK_TIMEOUT_MS / 1000} s); run the statement again once that transaction has ended`, { cause: error });
      }
      throw error;
    }
    // The gate's checksum check, done once here so the catalog row says whether it passed.
    let checksumError: unknown;
    try {
      await verifyStoredChecksum(storage, manifest);
    } catch (error) {
      checksumError = error;
    }
    await this.options.record(manifest, checksumError === undefined);
    this.options.observe?.({ manifest, seconds: (performance.now() - started) / 1000, failed: false });
    logger.info('before-image captured', { request_id: requestId, table: `${target.schema}.${target.table}`, snapshot_id: manifest.snapshot_id, rows: manifest.row_count });
    return {
      table: qualifiedTarget(target),
      snapshotId: manifest.snapshot_id,
      createdAt: new Date(manifest.created_at),
      verify: async () => {
        if (checksumError !== undefined) throw new SnapshotError(describeError(checksumError), { cause: checksumError });
      },
    };
  }
}

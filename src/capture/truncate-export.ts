/**
 * TRUNCATE before-images. The guard copies each truncated table inside the truncating
 * transaction (into schema backstop_images, with a row in backstop.truncate_images); both exist
 * only if that transaction commits. The agent exports every committed copy to storage as a
 * before-image of the request, then removes it with agent_drop_truncate_image. A copy whose
 * export fails stays in place and is retried with backoff.
 */
import type pg from 'pg';
import { describeError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import { IMAGES_SCHEMA, captureTable } from '../snapshot/capture.js';
import type { Manifest } from '../snapshot/manifest.js';
import type { Storage } from '../storage/storage.js';
import { verifyStoredChecksum } from '../gate/checksum.js';
import type { CaptureSlots } from './slots.js';
import { backoffDelay, type BackoffOptions } from '../retry/backoff.js';

/** Retrying a failed TRUNCATE export: 2 s, doubling, at most 5 min. */
const EXPORT_RETRY_BACKOFF: BackoffOptions = { baseMs: 2_000, maxMs: 300_000 };

interface ImageRow {
  request_id: string;
  relid: number;
  schema_name: string;
  table_name: string;
  image_table: string;
  row_count: string;
}

export interface TruncateExportOptions {
  pool: pg.Pool;
  storage: Storage;
  logger: Logger;
  record(manifest: Manifest, verified: boolean): Promise<void>;
  /** Shared with before-image capture (see slots.ts). */
  slots: CaptureSlots;
}

export class TruncateExporter {
  private readonly options: TruncateExportOptions;
  private readonly failures = new Map<string, { count: number; nextAt: number }>();

  constructor(options: TruncateExportOptions) {
    this.options = options;
  }

  /** Export every committed TRUNCATE image not waiting for a retry. Returns the snapshot ids written. */
  async exportPending(signal: AbortSignal): Promise<string[]> {
    const { pool, storage, logger } = this.options;
    const { rows } = await pool.query<ImageRow>(
      `SELECT request_id::text, relid, schema_name, table_name, image_table, row_count::text FROM backstop.truncate_images ORDER BY created_at`,
    );
    const exported: string[] = [];
    for (const image of rows) {
      if (signal.aborted) break;
      const key = `${image.request_id}/${image.relid}`;
      const failure = this.failures.get(key);
      if (failure && failure.nextAt > Date.now()) continue;
      try {
        const manifest = await this.options.slots.run(() => captureTable({
          database: pool,
          storage,
          table: { schema: image.schema_name, table: image.table_name },
          readFrom: { schema: IMAGES_SCHEMA, table: image.image_table },
          source: 'before-image',
          requestId: Number(image.request_id),
          label: `before-image of request ${image.request_id} (TRUNCATE)`,
          logger: logger.child({ request_id: image.request_id }),
          signal,
        }));
        await verifyStoredChecksum(storage, manifest);
        await this.options.record(manifest, true);
        await pool.query('SELECT backstop.agent_drop_truncate_image($1::bigint, $2::oid)', [image.request_id, image.relid]);
        this.failures.delete(key);
        exported.push(manifest.snapshot_id);
        logger.info('TRUNCATE before-image exported', {
          request_id: image.request_id, table: `${image.schema_name}.${image.table_name}`, snapshot_id: manifest.snapshot_id, rows: manifest.row_count,
        });
      } catch (error) {
        if (signal.aborted) break;
        const count = (failure?.count ?? 0) + 1;
        const delay = backoffDelay(count, EXPORT_RETRY_BACKOFF);
        this.failures.set(key, { count, nextAt: Date.now() + delay });
        logger.warn('exporting a TRUNCATE before-image failed; it stays in the database and is retried', {
          request_id: image.request_id, table: `${image.schema_name}.${image.table_name}`, error: describeError(error), retry_in_ms: delay,
        });
      }
    }
    return exported;
  }
}

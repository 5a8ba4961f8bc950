/**
 * On-demand snapshots: `SELECT backstop.snapshot('t'::regclass, 'before-migration')` files a row
 * in backstop.snapshot_requests and NOTIFYs backstop_snapshots. The agent (the leader only, so no
 * two agents take the same row) captures each pending one with source `on-demand` and the label,
 * then finishes it with backstop.agent_finish_snapshot_request(id, snapshot_id, error).
 * The table is found by OID, so a rename after the request does not lose it.
 */
import { describeError } from '../errors/index.js';
import { captureAndRecord, type CaptureContext } from './capture-step.js';
import { forEachLimited, type Limiter } from './limiter.js';

export interface OnDemandReport {
  handled: number;
  failed: number;
}

interface PendingRequest {
  id: string;
  label: string | null;
  schema_name: string | null;
  table_name: string | null;
  requested_schema: string;
  requested_table: string;
}

export async function handleSnapshotRequests(
  context: CaptureContext,
  options: { limiter: Limiter; signal: AbortSignal },
): Promise<OnDemandReport> {
  const { pool, logger } = context;
  const { rows } = await pool.query<PendingRequest>(
    `SELECT r.id::text AS id, r.label, n.nspname AS schema_name, c.relname AS table_name,
            r.schema_name AS requested_schema, r.table_name AS requested_table
       FROM backstop.snapshot_requests r
       LEFT JOIN pg_catalog.pg_class c ON c.oid = r.relid
       LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE r.status = 'pending'
      ORDER BY r.id`,
  );
  const report: OnDemandReport = { handled: 0, failed: 0 };
  const finish = async (id: string, snapshotId: string | null, error: string | null): Promise<void> => {
    await pool.query('SELECT backstop.agent_finish_snapshot_request($1, $2, $3)', [id, snapshotId, error]);
  };

  await forEachLimited(options.limiter, rows, async (request) => {
    if (options.signal.aborted) return;
    const requested = `${request.requested_schema}.${request.requested_table}`;
    try {
      if (request.schema_name === null || request.table_name === null) {
        report.failed += 1;
        await finish(request.id, null, `table ${requested} no longer exists`);
        logger.warn('on-demand snapshot impossible: the table is gone', { request_id: request.id, table: requested });
        return;
      }
      const manifest = await captureAndRecord(context, {
        schema: request.schema_name,
        table: request.table_name,
        source: 'on-demand',
        ...(request.label !== null ? { label: request.label } : {}),
        signal: options.signal,
      });
      await finish(request.id, manifest.snapshot_id, null);
      report.handled += 1;
      logger.info('on-demand snapshot captured', { request_id: request.id, table: `${request.schema_name}.${request.table_name}`, label: request.label, snapshot_id: manifest.snapshot_id });
    } catch (error) {
      // Aborted at shutdown: leave the request pending for the next agent or the next start.
      if (options.signal.aborted) return;
      report.failed += 1;
      const message = describeError(error);
      logger.warn('on-demand snapshot failed', { request_id: request.id, table: requested, error: message });
      await finish(request.id, null, message).catch((finishError: unknown) =>
        logger.error('could not record the failure of an on-demand snapshot', { request_id: request.id, error: describeError(finishError) }),
      );
    }
  });
  return report;
}

/**
 * On-demand snapshots: `SELECT backstop.snapshot('t'::regclass, 'before-migration')` files a row
 * in backstop.snapshot_requests and NOTIFYs backstop_snapshots. The agent (the leader only, so no
 * two agents take the same row) captures each pending one with source `on-demand` and the label,
 * then finishes it with backstop.agent_finish_snapshot_request(id, snapshot_id, error).
 * The table is found by OID, so a rename after the request does not lose it.
 *
 * Before capturing, the agent asks backstop._snapshot_refusal again whether the role that filed
 * the request may have the table exported (it must read every row; never Backstop's own tables
 * or the system catalogs): a request filed before that check existed, or a table whose grants,
 * policies or owner changed since, is refused with the reason instead of exported.
 */
import { describeError } from '../errors/index.js';
import { captureAndRecord, type CaptureContext } from './capture-step.js';

export interface OnDemandReport {
  /** Pending requests this call started (requests already being served are skipped). */
  started: number;
  /** Of those, captured and finished as done (only counted when the call waited). */
  handled: number;
  /** Of those, finished as failed (only counted when the call waited). */
  failed: number;
}

export interface SnapshotRequest {
  id: string;
  label: string | null;
  /** The role that filed the request (session_user of backstop.snapshot()). */
  requested_by: string;
  relid: string;
  /** Where the table is now (found by OID); null when it no longer exists. */
  schema_name: string | null;
  table_name: string | null;
  requested_schema: string;
  requested_table: string;
}

/** Pending on-demand requests, oldest first. */
export async function pendingSnapshotRequests(context: CaptureContext): Promise<SnapshotRequest[]> {
  const { rows } = await context.pool.query<SnapshotRequest>(
    `SELECT r.id::text AS id, r.label, r.requested_by, r.relid::text AS relid, n.nspname AS schema_name, c.relname AS table_name,
            r.schema_name AS requested_schema, r.table_name AS requested_table
       FROM backstop.snapshot_requests r
       LEFT JOIN pg_catalog.pg_class c ON c.oid = r.relid
       LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE r.status = 'pending'
      ORDER BY r.id`,
  );
  return rows;
}

/** Why the request must not be served (reason and hint), or null when it may. */
async function refusalOf(context: CaptureContext, request: SnapshotRequest): Promise<string | null> {
  try {
    const { rows } = await context.pool.query<{ reason: string | null; hint: string | null }>(
      'SELECT reason, hint FROM backstop._snapshot_refusal($1, $2::oid)',
      [request.requested_by, request.relid],
    );
    const refusal = rows[0];
    return refusal?.reason ? `${refusal.reason}${refusal.hint ? ` (${refusal.hint})` : ''}` : null;
  } catch (error) {
    // Fail closed: without the check nothing is exported on request.
    if ((error as { code?: unknown }).code === '42883') {
      return 'Backstop in this database cannot check who may export what (backstop._snapshot_refusal is missing): run backstop install --db … to upgrade';
    }
    throw error;
  }
}

/**
 * Capture one requested snapshot and finish the request. Resolves with the outcome; `abandoned`
 * when aborted at shutdown (the request stays pending for the next start or the next leader).
 */
export async function serveSnapshotRequest(context: CaptureContext, request: SnapshotRequest, signal: AbortSignal): Promise<'done' | 'failed' | 'abandoned'> {
  const { pool, logger } = context;
  const finish = async (snapshotId: string | null, error: string | null): Promise<void> => {
    await pool.query('SELECT backstop.agent_finish_snapshot_request($1, $2, $3)', [request.id, snapshotId, error]);
  };
  const requested = `${request.requested_schema}.${request.requested_table}`;
  if (signal.aborted) return 'abandoned';
  try {
    if (request.schema_name === null || request.table_name === null) {
      await finish(null, `table ${requested} no longer exists`);
      logger.warn('on-demand snapshot impossible: the table is gone', { request_id: request.id, table: requested });
      return 'failed';
    }
    const refusal = await refusalOf(context, request);
    if (refusal !== null) {
      await finish(null, refusal);
      logger.warn('on-demand snapshot refused', { request_id: request.id, table: requested, requested_by: request.requested_by, reason: refusal });
      return 'failed';
    }
    const manifest = await captureAndRecord(context, {
      schema: request.schema_name,
      table: request.table_name,
      source: 'on-demand',
      ...(request.label !== null ? { label: request.label } : {}),
      signal,
    });
    await finish(manifest.snapshot_id, null);
    logger.info('on-demand snapshot captured', { request_id: request.id, table: `${request.schema_name}.${request.table_name}`, label: request.label, snapshot_id: manifest.snapshot_id });
    return 'done';
  } catch (error) {
    if (signal.aborted) return 'abandoned';
    const message = describeError(error);
    logger.warn('on-demand snapshot failed', { request_id: request.id, table: requested, error: message });
    await finish(null, message).catch((finishError: unknown) =>
      logger.error('could not record the failure of an on-demand snapshot', { request_id: request.id, error: describeError(finishError) }),
    );
    return 'failed';
  }
}

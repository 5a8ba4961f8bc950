/**
 * Undos and restores asked for from psql (`backstop.undo(42)`, `backstop.restore(...)`): the
 * leader claims each pending one, stages it on a connection of its own (src/restore/stage.ts)
 * and reports a failure with its reason and hint, which the waiting psql session raises. One
 * at a time: a restore loads a whole table and competes with nothing else the agent does.
 *
 * Also drops the staging schemas nobody will adopt (failed restores, and staged ones whose
 * session rolled back or went away): backstop.agent_discard_stagings.
 */
import type pg from 'pg';
import { connect, type DatabaseTarget } from '../db/connection.js';
import { BackstopError, describeError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import { stageRestore, type ClaimedRestore } from '../restore/stage.js';
import type { Storage } from '../storage/storage.js';

export interface RestoreServerOptions {
  pool: pg.Pool;
  target: DatabaseTarget;
  storage: Storage;
  agentId: string;
  logger: Logger;
}

export class RestoreServer {
  constructor(private readonly options: RestoreServerOptions) {}

  /** Stage every restore that waits for an agent (or whose agent is gone), then return. */
  async serve(signal: AbortSignal): Promise<void> {
    const { pool, agentId, logger } = this.options;
    // Never in the way of staging what waits: a schema that cannot be dropped now is retried at the next sweep.
    try {
      const discarded = await pool.query<{ n: number }>('SELECT backstop.agent_discard_stagings() AS n');
      if (discarded.rows[0]!.n > 0) logger.info('staging schemas discarded', { event: 'restore.discarded', count: discarded.rows[0]!.n });
    } catch (error) {
      logger.warn('staging schemas could not be discarded; retrying at the next sweep', { event: 'restore.discard_failed', error: describeError(error) });
    }
    const tried = new Set<string>();
    while (!signal.aborted) {
      const { rows } = await pool.query<{ id: string }>(
        `SELECT l.id::text AS id FROM backstop.restore_log l
          WHERE l.status = 'pending'
             OR (l.status = 'staging' AND (l.agent_id = $1
                                           OR NOT EXISTS (SELECT FROM backstop.agents a WHERE a.agent_id = l.agent_id AND a.connected)))
          ORDER BY l.id`,
        [agentId],
      );
      const next = rows.find((row) => !tried.has(row.id));
      if (!next) return;
      tried.add(next.id);
      let claim: ClaimedRestore | null | undefined;
      try {
        claim = (await pool.query<{ claim: ClaimedRestore | null }>('SELECT backstop.agent_claim_restore($1, $2) AS claim', [next.id, agentId])).rows[0]?.claim;
      } catch (error) {
        // The waiting session hears of it at once instead of waiting out wait_timeout.
        logger.warn('restore could not be claimed', { event: 'restore.failed', restore_id: next.id, error: describeError(error) });
        await pool.query('SELECT backstop.agent_fail_restore($1, $2, $3, $4)', [next.id, agentId, `the agent could not take it: ${describeError(error)}`, null]);
        continue;
      }
      if (!claim) continue;
      await this.stage(claim, signal);
    }
  }

  private async stage(claim: ClaimedRestore, signal: AbortSignal): Promise<void> {
    const { pool, agentId, storage } = this.options;
    const logger = this.options.logger.child({ restore_id: claim.restore.id, kind: claim.restore.kind });
    logger.info('staging restore', { event: 'restore.staging', request_id: claim.restore.request_id, snapshot_id: claim.restore.snapshot_id });
    let client: pg.Client | undefined;
    const abandon = () => void client?.end().catch(() => undefined);
    signal.addEventListener('abort', abandon, { once: true });
    try {
      client = await connect(this.options.target, `backstop agent ${agentId} restore`);
      await stageRestore({ client, pool, storage, agentId, logger }, claim);
    } catch (error) {
      if (signal.aborted) {
        logger.info('staging abandoned at shutdown; the next agent start stages it again', { event: 'restore.abandoned' });
        return;
      }
      const hint = error instanceof BackstopError ? error.hint ?? null : null;
      logger.warn('restore could not be staged', { event: 'restore.failed', error: describeError(error) });
      await pool.query('SELECT backstop.agent_fail_restore($1, $2, $3, $4)', [claim.restore.id, agentId, describeError(error), hint]);
    } finally {
      signal.removeEventListener('abort', abandon);
      await client?.end().catch(() => undefined);
    }
  }
}

/**
 * `backstop undo 42`: the CLI twin of `SELECT backstop.undo(42);`. It runs that very function
 * (sql/0007_undo.sql), so the engine, the checks and the words are the same as in psql: the agent
 * stages the before-images, this session adopts them with the connecting role's own rights. The
 * server's NOTICEs (rows loaded, verified) are handed to `onNotice` as they arrive.
 */
import type pg from 'pg';
import { BackstopError, DatabaseError, describeError, type BackstopErrorOptions } from '../errors/index.js';

export interface UndoOutcome {
  requestId: number;
  /** The one-line summary backstop.undo returned. */
  summary: string;
  /** The row of backstop.restores it left. */
  restore: Record<string, unknown> | null;
}

/** The undo was refused or failed; message and hint are the server's. */
export class UndoError extends BackstopError {
  readonly sqlstate: string | undefined;

  constructor(message: string, sqlstate: string | undefined, options: BackstopErrorOptions = {}) {
    // BS006: refused (who asks, or what): the invocation must change.
    super('undo', message, { exitCode: sqlstate === 'BS006' ? 2 : 1, ...options });
    this.sqlstate = sqlstate;
  }
}

export async function undoRequest(client: pg.ClientBase, requestId: number, onNotice: (message: string) => void = () => {}): Promise<UndoOutcome> {
  const listener = (notice: { message?: string }) => onNotice(notice.message ?? '');
  client.on('notice', listener);
  try {
    const { rows } = await client.query<{ summary: string }>('SELECT backstop.undo($1::bigint) AS summary', [requestId]);
    const restore = await client.query(`SELECT * FROM backstop.restores WHERE request_id = $1::bigint ORDER BY id DESC LIMIT 1`, [requestId]);
    return { requestId, summary: rows[0]!.summary, restore: restore.rows[0] ?? null };
  } catch (error) {
    const server = error as { code?: string; hint?: string; message?: string };
    if (server.code === '42883') {
      throw new DatabaseError('Backstop in this database cannot undo yet (backstop.undo is missing)', { cause: error, hint: 'upgrade it: backstop install --db …' });
    }
    if (typeof server.code === 'string' && (server.code.startsWith('BS') || server.code === '42501')) {
      throw new UndoError(server.message ?? describeError(error), server.code, { cause: error, ...(server.hint ? { hint: server.hint } : {}) });
    }
    throw new DatabaseError(`undo of request ${requestId} failed: ${describeError(error)}`, { cause: error, hint: 'nothing was restored; SELECT * FROM backstop.restores ORDER BY id DESC;' });
  } finally {
    client.off('notice', listener);
  }
}

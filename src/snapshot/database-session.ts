/**
 * A read-only REPEATABLE READ transaction for capture: one snapshot of the database that every
 * table of a capture is read in. `importSnapshot` joins a snapshot exported by another session
 * (pg_export_snapshot), which is how parallel workers of a group read the identical data.
 */
import pg from 'pg';
import { connect, type DatabaseTarget } from '../db/connection.js';
import { DatabaseError, describeError } from '../errors/index.js';
import { setCanonicalSettingsLocal, setEveryRowSettingsLocal } from './session-settings.js';

export type DatabaseSource = DatabaseTarget | pg.Pool;

interface Lease {
  client: pg.ClientBase;
  /** Give the client back; `broken` closes it instead (e.g. after an interrupted COPY). */
  release(broken: boolean): Promise<void>;
}

async function lease(database: DatabaseSource): Promise<Lease> {
  if (database instanceof pg.Pool) {
    let client: pg.PoolClient;
    try {
      client = await database.connect();
    } catch (error) {
      throw new DatabaseError(`cannot connect to the database: ${describeError(error)}`, { cause: error, hint: 'check --db and that the server is running' });
    }
    return {
      client,
      release: async (broken) => client.release(broken ? new Error('capture connection discarded') : undefined),
    };
  }
  const client = await connect(database, 'backstop snapshot');
  return { client, release: async () => client.end().catch(() => {}) };
}

/** Best effort: ask the server to cancel what a backend is running (from a separate connection). */
async function cancelBackend(database: DatabaseSource, pid: number): Promise<void> {
  try {
    if (database instanceof pg.Pool) {
      await database.query('SELECT pg_catalog.pg_cancel_backend($1)', [pid]);
      return;
    }
    const canceller = await connect(database, 'backstop snapshot cancel');
    try {
      await canceller.query('SELECT pg_catalog.pg_cancel_backend($1)', [pid]);
    } finally {
      await canceller.end().catch(() => {});
    }
  } catch {
    // The connection is closed next anyway; the server ends the backend when it notices.
  }
}

/** SET TRANSACTION SNAPSHOT takes no parameters; snapshot ids look like `00000003-0000001B-1`. */
function snapshotLiteral(id: string): string {
  if (!/^[0-9A-Fa-f-]+$/.test(id)) throw new DatabaseError(`"${id}" is not an exported snapshot id`, { hint: 'pass the value pg_export_snapshot() returned' });
  return `'${id}'`;
}

/**
 * Run `work` inside a read-only REPEATABLE READ transaction with the canonical session settings
 * and row_security = off (a table row-level security would filter cannot be read at all).
 * Commits on success; on failure the connection is discarded (it may be in the middle of a COPY).
 */
export async function inSnapshotTransaction<T>(
  database: DatabaseSource,
  importSnapshot: string | undefined,
  work: (client: pg.ClientBase) => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  signal?.throwIfAborted();
  const { client, release } = await lease(database);
  // A terminated backend makes the client emit 'error' besides failing the running query; the
  // query's failure is what we report, so the event must not become an uncaught exception.
  const onError = () => {};
  client.on('error', onError);
  let ok = false;
  // A query waiting on a lock (or scanning a huge table) does not read its socket: cancel it on
  // the server, then close the connection.
  let pid: number | undefined;
  const onAbort = () => {
    const cancelled = pid === undefined ? Promise.resolve() : cancelBackend(database, pid);
    void cancelled.finally(() => (client as pg.Client).end().catch(() => {}));
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    pid = (await client.query<{ pid: number }>('SELECT pg_catalog.pg_backend_pid() AS pid')).rows[0]!.pid;
    signal?.throwIfAborted();
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    if (importSnapshot) {
      try {
        await client.query(`SET TRANSACTION SNAPSHOT ${snapshotLiteral(importSnapshot)}`);
      } catch (error) {
        throw new DatabaseError(`cannot join exported snapshot ${importSnapshot}: ${describeError(error)}`, {
          cause: error,
          hint: 'the exporting transaction must still be open, and on the same database',
        });
      }
    }
    // A long capture must not be cut off by the role's defaults; the caller's signal stops it.
    await client.query(`SELECT pg_catalog.set_config('statement_timeout', '0', true), pg_catalog.set_config('idle_in_transaction_session_timeout', '0', true)`);
    await setCanonicalSettingsLocal(client);
    // Every row or an error: a policy that would hide rows from this role makes the read fail.
    await setEveryRowSettingsLocal(client);
    const result = await work(client);
    await client.query('COMMIT');
    ok = true;
    return result;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await release(!ok);
    client.off('error', onError);
  }
}

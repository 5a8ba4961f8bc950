/**
 * A fresh database per test file, cloned from the template that has Backstop installed.
 * Usage: `const db = await createTestDatabase();` in beforeAll, `await db.drop()` in afterAll.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';

export interface TestDatabase {
  name: string;
  /** URL as the superuser that installed Backstop. */
  url: string;
  /** URL of the same database as another login role (no password: the test servers trust local connections). */
  urlAs(role: string): string;
  /** A connected superuser client; closed by drop(). */
  client(): Promise<pg.Client>;
  drop(): Promise<void>;
}

export function serverInfo() {
  return inject('pg');
}

function withDatabase(adminUrl: string, database: string, user?: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${encodeURIComponent(database)}`;
  if (user) {
    url.username = encodeURIComponent(user);
    url.password = '';
  }
  return url.toString();
}

export async function createTestDatabase(options: { template?: string } = {}): Promise<TestDatabase> {
  const server = inject('pg');
  const name = `test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: server.adminUrl });
  await admin.connect();
  try {
    const template = options.template ?? server.templateDatabase;
    await admin.query(`CREATE DATABASE ${name} TEMPLATE ${pg.Client.prototype.escapeIdentifier(template)}`);
  } finally {
    await admin.end();
  }
  const clients: pg.Client[] = [];
  return {
    name,
    url: withDatabase(server.adminUrl, name),
    urlAs: (role) => withDatabase(server.adminUrl, name, role),
    async client() {
      const client = new pg.Client({ connectionString: withDatabase(server.adminUrl, name) });
      await client.connect();
      clients.push(client);
      return client;
    },
    async drop() {
      await Promise.all(clients.map((c) => c.end().catch(() => {})));
      const dropper = new pg.Client({ connectionString: server.adminUrl });
      await dropper.connect();
      try {
        await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await dropper.end();
      }
    },
  };
}

/** Drop cluster-wide roles a test created (after its database is dropped: they may own nothing then). */
export async function dropServerRoles(roles: Iterable<string>): Promise<void> {
  const dropper = new pg.Client({ connectionString: inject('pg').adminUrl });
  await dropper.connect();
  try {
    for (const role of roles) await dropper.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(role)}`).catch(() => {});
  } finally {
    await dropper.end();
  }
}

/**
 * Shared set-up for the guard tests: a fresh database (Backstop installed), short waits, an
 * agent double connected as a login role granted backstop_agent, and helpers to open more
 * sessions and to catch PostgreSQL errors.
 */
import pg from 'pg';
import { expect } from 'vitest';
import { AgentDouble, createLoginRoles, type LoginRoles } from '../support/agent-double.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

export interface GuardFixture {
  db: TestDatabase;
  /** Superuser session. */
  admin: pg.Client;
  agent: AgentDouble;
  roles: LoginRoles;
  /** A new session, as the superuser or as one of the fixture's roles. */
  session(role?: string): Promise<pg.Client>;
  close(): Promise<void>;
}

export interface FixtureOptions {
  /** Extra login roles: logical name → roles granted. `agent` always exists. */
  roles?: Record<string, string[]>;
  /** settings.wait_timeout for this database (default 20 s). */
  waitTimeout?: string;
}

export async function guardFixture(options: FixtureOptions = {}): Promise<GuardFixture> {
  const db = await createTestDatabase();
  const admin = await db.client();
  await admin.query(`UPDATE backstop.settings SET wait_timeout = $1`, [options.waitTimeout ?? '20 s']);
  const grants = { agent: ['backstop_agent'], ...(options.roles ?? {}) };
  const { roles, dropRoles } = await createLoginRoles(db, Object.keys(grants), grants);
  const agent = await AgentDouble.connect(db.urlAs(roles.agent!));
  const sessions: pg.Client[] = [];
  return {
    db,
    admin,
    agent,
    roles,
    async session(role?: string) {
      const client = new pg.Client({ connectionString: role ? db.urlAs(roles[role] ?? role) : db.url });
      await client.connect();
      // A waiting statement's NOTICEs would otherwise be printed by pg.
      client.on('notice', () => {});
      sessions.push(client);
      return client;
    },
    async close() {
      await agent.close();
      await Promise.all(sessions.map((client) => client.end().catch(() => {})));
      await db.drop();
      await dropRoles();
    },
  };
}

export interface PgError extends Error {
  code?: string;
  hint?: string;
  detail?: string;
}

/** The PostgreSQL error a promise rejects with (fails the test if it resolves). */
export async function pgError(promise: Promise<unknown>): Promise<PgError> {
  try {
    await promise;
  } catch (error) {
    return error as PgError;
  }
  expect.fail('expected the statement to be refused, but it succeeded');
}

export async function tableExists(client: pg.Client, name: string): Promise<boolean> {
  const { rows } = await client.query<{ exists: boolean }>('SELECT to_regclass($1) IS NOT NULL AS exists', [name]);
  return rows[0]!.exists;
}

export async function requestRows(client: pg.Client): Promise<Array<{ id: string; status: string; reason: string | null; statement: string; requester: string; targets: string[] }>> {
  const { rows } = await client.query('SELECT id::text, status, reason, statement, requester, targets FROM backstop.requests ORDER BY id');
  return rows;
}

/**
 * A session of the fixture's `owner` role as the usual application owner: not a superuser, with
 * CREATE on the database and on schema public (the role the guard is played against).
 */
export async function tableOwnerSession(f: GuardFixture): Promise<pg.Client> {
  await f.admin.query(`GRANT CREATE ON DATABASE ${pg.escapeIdentifier(f.db.name)} TO ${pg.escapeIdentifier(f.roles.owner!)};
                       GRANT CREATE ON SCHEMA public TO ${pg.escapeIdentifier(f.roles.owner!)}`);
  return f.session('owner');
}

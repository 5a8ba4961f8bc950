/**
 * A capture sees every row or fails: captures (and restore's read-back) read with
 * row_security = off, so a table whose policies would hide rows from the reading role is never
 * captured short. The reading role here is an ordinary login role in backstop_agent (which holds
 * pg_read_all_data, which does not bypass row-level security); the table belongs to a
 * non-superuser owner. Backstop's own tables are never exported, whoever asks.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveDatabase } from '../../src/db/connection.js';
import { BackstopError, PrivilegeError, RowSecurityError } from '../../src/errors/index.js';
import { captureTable } from '../../src/snapshot/capture.js';
import { contentHash } from '../../src/snapshot/content-hash.js';
import { LocalStorage } from '../../src/storage/local.js';
import { createLoginRoles } from '../support/agent-double.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

describe('captures and row-level security', () => {
  let db: TestDatabase;
  let admin: pg.Client;
  let folder: string;
  let roles: Record<string, string>;
  let dropRoles: () => Promise<void>;
  const TABLE = { schema: 'public', table: 'ledger' };

  beforeAll(async () => {
    db = await createTestDatabase();
    admin = await db.client();
    folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-rls-'));
    ({ roles, dropRoles } = await createLoginRoles(db, ['owner', 'agent', 'bypassing'], { agent: ['backstop_agent'], bypassing: ['backstop_agent'] }));
    await admin.query(`ALTER ROLE ${roles.bypassing} BYPASSRLS; GRANT CREATE ON SCHEMA public TO ${roles.owner}`);
    const owner = new pg.Client({ connectionString: db.urlAs(roles.owner!) });
    await owner.connect();
    try {
      await owner.query(`CREATE TABLE public.ledger (id int PRIMARY KEY, note text);
                         INSERT INTO public.ledger SELECT g, 'row ' || g FROM generate_series(1, 300) g;
                         ALTER TABLE public.ledger ENABLE ROW LEVEL SECURITY;
                         CREATE POLICY first_hundred ON public.ledger USING (id <= 100)`);
    } finally {
      await owner.end();
    }
  });
  afterAll(async () => {
    await db?.drop();
    await dropRoles?.();
    if (folder) await rm(folder, { recursive: true, force: true });
  });

  async function leftovers(storage: LocalStorage): Promise<string[]> {
    return (await storage.list('')).map((object) => object.key);
  }

  it('fails with RowSecurityError naming the table and the ALTER ROLE to run, and publishes nothing', async () => {
    const storage = new LocalStorage(path.join(folder, 'filtered'));
    const error = await captureTable({ database: resolveDatabase(db.urlAs(roles.agent!)), storage, table: TABLE }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RowSecurityError);
    expect(error).toMatchObject({ code: 'row_security', table: 'public.ledger', role: roles.agent });
    expect((error as BackstopError).hint).toContain(`ALTER ROLE ${roles.agent} BYPASSRLS`);
    expect(await leftovers(storage)).toEqual([]);
  });

  it('captures all 300 rows as a role with BYPASSRLS', async () => {
    const storage = new LocalStorage(path.join(folder, 'bypassing'));
    const manifest = await captureTable({ database: resolveDatabase(db.urlAs(roles.bypassing!)), storage, table: TABLE });
    expect(manifest.row_count).toBe(300);
    expect(manifest.session_settings).not.toHaveProperty('row_security');
  });

  it('a read-back (restore verification) raises instead of hashing fewer rows', async () => {
    const reader = new pg.Client({ connectionString: db.urlAs(roles.agent!) });
    await reader.connect();
    try {
      const error = await contentHash(reader, TABLE).catch((e: unknown) => e);
      expect((error as { code?: string }).code).toBe('42501');
      // The session's own setting is given back afterwards.
      expect((await reader.query(`SELECT current_setting('row_security') AS v`)).rows[0].v).toBe('on');
    } finally {
      await reader.end();
    }
  });

  it("never exports Backstop's own tables, even for a superuser", async () => {
    const storage = new LocalStorage(path.join(folder, 'own'));
    for (const table of [{ schema: 'backstop', table: 'settings' }, { schema: 'backstop', table: 'loopback_secret' }, { schema: 'pg_catalog', table: 'pg_authid' }]) {
      const error = await captureTable({ database: resolveDatabase(db.url), storage, table }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(PrivilegeError);
      expect((error as Error).message).toMatch(/never exported/);
    }
    expect(await leftovers(storage)).toEqual([]);
  });
});

/**
 * Issue 11: a before-image captures, and a restore recreates, what `pg_dump -s -t` shows for a
 * table — owner, privileges (grant options and grantors included), comments, triggers in their
 * enabled states, row-level security and policies, storage parameters, column settings, replica
 * identity — so that a table dropped and restored is the table it was. Checked with pg_dump
 * itself where the server is PostgreSQL 15 (the pg_dump here is 15), and with a catalog query of
 * the same facts on every server.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveDatabase } from '../../src/db/connection.js';
import { quoteIdent, quoteQualified, type QualifiedName } from '../../src/db/identifiers.js';
import { MissingTriggerFunctionError } from '../../src/errors/index.js';
import { restoreItems } from '../../src/restore/restore.js';
import { captureTable } from '../../src/snapshot/capture.js';
import { manifestKeyForData } from '../../src/snapshot/layout.js';
import { findManifest } from '../../src/snapshot/list.js';
import { openStorage } from '../../src/storage/open.js';
import type { Storage } from '../../src/storage/storage.js';
import { createTestDatabase, serverInfo, type TestDatabase } from '../support/database.js';
import { tableFingerprint } from '../support/type-torture.js';
import { withoutGuard } from './guard.js';

const PG_DUMP_15 = '/usr/lib/postgresql/15/bin/pg_dump';
const run = promisify(execFile);

/** Cluster-wide role names, unique to this run (the test server is shared by every test file). */
const tag = randomBytes(3).toString('hex');
const roles = {
  owner: `people_owner_${tag}`,
  app: `people_app_${tag}`,
  auditor: `people "auditor" ✓ ${tag}`,
  reader: `people_reader_${tag}`,
  ghost: `people_ghost_${tag}`,
  gone: `people_gone_owner_${tag}`,
  stager: `people_stager_${tag}`,
};
const q = Object.fromEntries(Object.entries(roles).map(([k, v]) => [k, quoteIdent(v)])) as Record<keyof typeof roles, string>;

/** The same facts pg_dump -s shows, read straight from the catalogs (the restored table keeps its names). */
async function catalogFacts(client: pg.ClientBase, table: QualifiedName): Promise<unknown> {
  const { rows } = await client.query(
    `WITH c AS (SELECT * FROM pg_class WHERE oid = to_regclass($1))
     SELECT (SELECT json_build_object('owner', pg_get_userbyid(c.relowner), 'acl', c.relacl::text, 'options', c.reloptions,
                                      'toast', (SELECT reloptions FROM pg_class t WHERE t.oid = c.reltoastrelid),
                                      'rls', c.relrowsecurity, 'forced', c.relforcerowsecurity, 'replident', c.relreplident,
                                      'comment', obj_description(c.oid, 'pg_class')) FROM c) AS "table",
            (SELECT json_agg(json_build_object('name', a.attname, 'acl', a.attacl::text, 'comment', col_description(a.attrelid, a.attnum),
                                               'statistics', a.attstattarget, 'storage', a.attstorage) ORDER BY a.attnum)
               FROM pg_attribute a, c WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
            (SELECT json_agg(json_build_object('def', pg_get_triggerdef(t.oid), 'enabled', t.tgenabled, 'comment', obj_description(t.oid, 'pg_trigger')) ORDER BY t.tgname)
               FROM pg_trigger t, c WHERE t.tgrelid = c.oid AND NOT t.tgisinternal) AS triggers,
            (SELECT json_agg(json_build_object('policy', p.*, 'comment', obj_description(pol.oid, 'pg_policy')) ORDER BY p.policyname)
               FROM pg_policies p JOIN pg_policy pol ON pol.polname = p.policyname, c
              WHERE pol.polrelid = c.oid AND p.schemaname = $2 AND p.tablename = $3) AS policies,
            (SELECT json_agg(json_build_object('name', con.conname, 'def', pg_get_constraintdef(con.oid), 'comment', obj_description(con.oid, 'pg_constraint')) ORDER BY con.conname)
               FROM pg_constraint con, c WHERE con.conrelid = c.oid) AS constraints,
            (SELECT json_agg(json_build_object('def', pg_get_indexdef(i.indexrelid), 'comment', obj_description(i.indexrelid, 'pg_class'),
                                               'replident', i.indisreplident, 'clustered', i.indisclustered) ORDER BY i.indexrelid::regclass::text)
               FROM pg_index i, c WHERE i.indrelid = c.oid) AS indexes,
            (SELECT json_agg(json_build_object('name', s.relname, 'owner', pg_get_userbyid(s.relowner), 'acl', s.relacl::text,
                                               'comment', obj_description(s.oid, 'pg_class'), 'options', to_jsonb(seq) - 'seqrelid') ORDER BY s.relname)
               FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_sequence seq ON seq.seqrelid = s.oid, c
              WHERE d.refobjid = c.oid AND d.deptype IN ('a', 'i')) AS sequences`,
    [quoteQualified(table), table.schema, table.table],
  );
  return rows[0];
}

async function sequenceState(client: pg.ClientBase, sequence: QualifiedName): Promise<unknown> {
  return (await client.query(`SELECT last_value, is_called FROM ${quoteQualified(sequence)}`)).rows[0];
}

describe('restore recreates what is attached to a table', () => {
  let db: TestDatabase;
  let client: pg.Client;
  let folder: string;
  let storage: Storage;
  const createdRoles: string[] = [];

  const connectAs = async (role: string) => {
    const c = new pg.Client({ connectionString: db.urlAs(role) });
    await c.connect();
    return c;
  };
  const createRole = async (role: string, attributes = '') => {
    await client.query(`CREATE ROLE ${quoteIdent(role)} ${attributes}`);
    createdRoles.push(role);
  };

  async function pgDumpSchema(table: QualifiedName): Promise<string[]> {
    const { stdout } = await run(PG_DUMP_15, ['--schema-only', '--table', quoteQualified(table), '--dbname', db.url], { maxBuffer: 16 << 20 });
    // \restrict keys are random per run (pg_dump 15.14 on).
    return stdout.split('\n').filter((line) => !/^\\(un)?restrict /.test(line));
  }

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-attachments-'));
    storage = openStorage(folder);
    await createRole(roles.owner);
    await createRole(roles.app, 'LOGIN');
    await createRole(roles.auditor);
    await createRole(roles.reader);
    await client.query(`GRANT CREATE ON SCHEMA public TO ${q.owner}`);
  });
  afterAll(async () => {
    await db?.drop();
    if (folder) await rm(folder, { recursive: true, force: true });
    const admin = new pg.Client({ connectionString: serverInfo().adminUrl });
    await admin.connect();
    try {
      for (const role of createdRoles) await admin.query(`DROP ROLE IF EXISTS ${quoteIdent(role)}`);
    } finally {
      await admin.end();
    }
  });

  it('restores people as pg_dump -s showed it: owner, grants, comments, triggers, RLS, policies, storage, replica identity', async () => {
    const people = { schema: 'public', table: 'people' };
    await client.query(`
      CREATE FUNCTION public.people_touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.updated_at := now(); RETURN NEW; END$$;
      CREATE FUNCTION public.people_check() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
      SET ROLE ${q.owner};
      CREATE TABLE public.people (
        id int GENERATED ALWAYS AS IDENTITY (START WITH 100 INCREMENT BY 5) PRIMARY KEY,
        name text NOT NULL,
        email text,
        tenant name NOT NULL DEFAULT current_user,
        updated_at timestamptz,
        CONSTRAINT people_name_present CHECK (name <> '')
      ) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.05);
      ALTER TABLE people SET (toast.autovacuum_enabled = false);
      CREATE UNIQUE INDEX people_email_lower ON people (lower(email)) WHERE email IS NOT NULL;
      ALTER TABLE people ALTER COLUMN email SET STATISTICS 500, ALTER COLUMN name SET STORAGE MAIN;
      COMMENT ON TABLE people IS 'People — one row each, O''Brien included';
      COMMENT ON COLUMN people.email IS 'Contact address \\ (may be null)';
      COMMENT ON CONSTRAINT people_name_present ON people IS 'a name is required';
      COMMENT ON CONSTRAINT people_pkey ON people IS 'the key';
      COMMENT ON INDEX people_email_lower IS 'one person per address';
      REVOKE TRUNCATE ON people FROM ${q.owner};
      GRANT SELECT, INSERT ON people TO ${q.app};
      GRANT SELECT ON people TO ${q.auditor} WITH GRANT OPTION;
      GRANT UPDATE (email), SELECT (name) ON people TO ${q.app};
      CREATE TRIGGER people_touch BEFORE UPDATE ON people FOR EACH ROW EXECUTE FUNCTION public.people_touch();
      COMMENT ON TRIGGER people_touch ON people IS 'keeps updated_at';
      CREATE TRIGGER people_disabled AFTER INSERT ON people FOR EACH ROW EXECUTE FUNCTION public.people_check();
      ALTER TABLE people DISABLE TRIGGER people_disabled;
      CREATE TRIGGER people_replica BEFORE INSERT ON people FOR EACH ROW EXECUTE FUNCTION public.people_check();
      ALTER TABLE people ENABLE REPLICA TRIGGER people_replica;
      CREATE TRIGGER people_always BEFORE INSERT OR UPDATE OF email, name ON people FOR EACH ROW
        WHEN (NEW.email IS NOT NULL) EXECUTE FUNCTION public.people_check('x', 'it''s');
      ALTER TABLE people ENABLE ALWAYS TRIGGER people_always;
      ALTER TABLE people ENABLE ROW LEVEL SECURITY;
      ALTER TABLE people FORCE ROW LEVEL SECURITY;
      CREATE POLICY people_tenant ON people TO ${q.app} USING (tenant = current_user) WITH CHECK (tenant = current_user);
      COMMENT ON POLICY people_tenant ON people IS 'each tenant sees its own';
      CREATE POLICY people_audit ON people FOR SELECT TO ${q.auditor}, ${q.reader} USING (true);
      CREATE POLICY people_no_robots ON people AS RESTRICTIVE FOR INSERT TO ${q.app} WITH CHECK (name !~ 'robot');
      ALTER TABLE people REPLICA IDENTITY USING INDEX people_pkey;
      RESET ROLE;
      -- A grant by a grantor other than the owner (the auditor holds the grant option).
      SET ROLE ${q.auditor};
      GRANT SELECT ON people TO ${q.reader};
      RESET ROLE;
      INSERT INTO people (name, email, tenant)
        SELECT 'person ' || g, CASE WHEN g % 3 <> 0 THEN 'p' || g || '@example.com' END, CASE WHEN g % 2 = 0 THEN '${roles.app}' ELSE 'other' END
          FROM generate_series(1, 40) g;
    `);
    const dumpBefore = serverInfo().major === 15 && existsSync(PG_DUMP_15) ? await pgDumpSchema(people) : null;
    const factsBefore = await catalogFacts(client, people);
    const rowsBefore = await tableFingerprint(client, people);
    const sequenceBefore = await sequenceState(client, { schema: 'public', table: 'people_id_seq' });

    const manifest = await captureTable({ database: resolveDatabase(db.url), storage, table: people });
    await withoutGuard(client, () => client.query(`DROP TABLE people`));
    const result = await restoreItems(client, storage, [{ manifest, target: people }]);
    expect(result.tables[0]!.skippedAttachments).toEqual([]);

    if (dumpBefore) expect(await pgDumpSchema(people)).toEqual(dumpBefore);
    expect(await catalogFacts(client, people)).toEqual(factsBefore);
    expect(await tableFingerprint(client, people)).toEqual(rowsBefore);
    expect(await sequenceState(client, { schema: 'public', table: 'people_id_seq' })).toEqual(sequenceBefore);

    // The application role reads and writes under row-level security as before.
    const app = await connectAs(roles.app);
    try {
      expect((await app.query(`SELECT count(*)::int AS n FROM people`)).rows[0].n).toBe(20);
      const inserted = await app.query(`INSERT INTO people (name, email) VALUES ('new person', 'new@example.com') RETURNING id, tenant`);
      expect(inserted.rows[0]).toEqual({ id: 300, tenant: roles.app });
      await expect(app.query(`INSERT INTO people (name, tenant) VALUES ('elsewhere', 'other')`)).rejects.toMatchObject({ code: '42501' });
      await expect(app.query(`INSERT INTO people (name) VALUES ('a robot')`)).rejects.toMatchObject({ code: '42501' });
      await expect(app.query(`UPDATE people SET name = 'renamed'`)).rejects.toMatchObject({ code: '42501' });
    } finally {
      await app.end();
    }
  });
});

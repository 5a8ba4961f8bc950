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
import { createTestDatabase, dropServerRoles, serverInfo, type TestDatabase } from '../support/database.js';
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
    await dropServerRoles(createdRoles);
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
      ALTER TABLE people ALTER COLUMN email SET STATISTICS 500, ALTER COLUMN name SET STORAGE MAIN, ALTER COLUMN email SET COMPRESSION pglz,
        ALTER COLUMN tenant SET (n_distinct = -0.5);
      COMMENT ON SEQUENCE people_id_seq IS 'ids, by fives';
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
      CREATE CONSTRAINT TRIGGER people_deferred AFTER INSERT ON people DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION public.people_check();
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

  it('gives a table restored under another name its attachments, by its new names (quotes, spaces, unicode)', async () => {
    const schema = 'Ünï "schema"';
    const source = { schema, table: 'Odd "People" ✓' };
    const into = { schema, table: 'Recovered "People" ✓' };
    const t = quoteQualified(source);
    // A column whose quoted name holds " ON " and a table-like text: the trigger is rendered by position.
    const mail = quoteIdent('mail ON "s".t');
    await client.query(`
      CREATE SCHEMA ${quoteIdent(schema)};
      GRANT USAGE, CREATE ON SCHEMA ${quoteIdent(schema)} TO ${q.owner};
      CREATE FUNCTION ${quoteIdent(schema)}.${quoteIdent('touch "it" ✓')}() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
      CREATE TABLE ${t} (id serial PRIMARY KEY, ${mail} text, note text);
      CREATE INDEX ${quoteIdent('Odd "People" ✓ by mail')} ON ${t} (${mail});
      COMMENT ON INDEX ${quoteQualified({ schema, table: 'Odd "People" ✓ by mail' })} IS 'by mail';
      CREATE TRIGGER ${quoteIdent('Touch "it" ✓')} BEFORE UPDATE OF ${mail}, note ON ${t} FOR EACH ROW
        WHEN (OLD.${mail} IS DISTINCT FROM NEW.${mail}) EXECUTE FUNCTION ${quoteIdent(schema)}.${quoteIdent('touch "it" ✓')}();
      ALTER TABLE ${t} DISABLE TRIGGER ${quoteIdent('Touch "it" ✓')};
      ALTER TABLE ${t} ENABLE ROW LEVEL SECURITY;
      CREATE POLICY ${quoteIdent('Only mine "really" ✓')} ON ${t} FOR UPDATE TO ${q.app} USING (note IS NOT NULL);
      GRANT SELECT ON ${t} TO ${q.app};
      GRANT USAGE ON SEQUENCE ${quoteQualified({ schema, table: 'Odd "People" ✓_id_seq' })} TO ${q.app};
      COMMENT ON SEQUENCE ${quoteQualified({ schema, table: 'Odd "People" ✓_id_seq' })} IS 'ids';
      ALTER TABLE ${t} REPLICA IDENTITY FULL;
      ALTER TABLE ${t} CLUSTER ON ${quoteIdent('Odd "People" ✓ by mail')};
      ALTER TABLE ${t} OWNER TO ${q.owner};
      INSERT INTO ${t} (${mail}, note) SELECT 'm' || g, 'n' || g FROM generate_series(1, 10) g;
    `);
    const manifest = await captureTable({ database: resolveDatabase(db.url), storage, table: source });

    // --dry-run prints the attachments and creates nothing.
    const dry = await restoreItems(client, storage, [{ manifest, target: into }], { dryRun: true });
    expect(dry.tables[0]!.script).toContain(`CREATE POLICY ${quoteIdent('Only mine "really" ✓')} ON ${quoteQualified(into)}`);
    expect(dry.tables[0]!.script).toContain(`ALTER TABLE ${quoteQualified(into)} OWNER TO ${q.owner};`);
    expect((await client.query(`SELECT to_regclass($1) AS t`, [quoteQualified(into)])).rows[0].t).toBeNull();

    await restoreItems(client, storage, [{ manifest, target: into }]);
    const renamed = (facts: unknown) => {
      const json = (text: string) => JSON.stringify(text).slice(1, -1);
      let text = JSON.stringify(facts);
      for (const [from, to] of [[source.table, into.table], [source.table.replaceAll('"', '""'), into.table.replaceAll('"', '""')]] as const) {
        text = text.replaceAll(json(from), json(to));
      }
      return JSON.parse(text) as unknown;
    };
    expect(await catalogFacts(client, into)).toEqual(renamed(await catalogFacts(client, source)));
  });

  it('refuses a trigger whose function is missing, naming it, and leaves nothing behind', async () => {
    const fn = `public.${quoteIdent('gone fn ✓')}()`;
    await client.query(`
      CREATE FUNCTION ${fn} RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
      CREATE TABLE fine_first (id serial PRIMARY KEY);
      INSERT INTO fine_first DEFAULT VALUES;
      CREATE TABLE audited (id serial PRIMARY KEY, v text);
      CREATE TRIGGER audited_check BEFORE INSERT ON audited FOR EACH ROW EXECUTE FUNCTION ${fn};
      INSERT INTO audited (v) VALUES ('a'), ('b');
    `);
    const manifests = [
      await captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table: 'fine_first' } }),
      await captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table: 'audited' } }),
    ];
    await withoutGuard(client, () => client.query(`DROP TABLE audited; DROP TABLE fine_first; DROP FUNCTION ${fn}`));
    const relations = async () => (await client.query(`SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1`)).rows;
    const before = await relations();

    const error = await restoreItems(client, storage, manifests.map((manifest) => ({ manifest, target: { schema: 'public', table: manifest.table } }))).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MissingTriggerFunctionError);
    expect(error).toMatchObject({ code: 'not_found', functionName: 'public."gone fn ✓"()', trigger: 'audited_check' });
    expect((error as MissingTriggerFunctionError).hint).toMatch(/create the function public\."gone fn ✓"\(\)/);
    expect(await relations()).toEqual(before);
  });

  it('skips and reports grants, policy roles and an owner that no longer exist', async () => {
    await createRole(roles.ghost);
    await createRole(roles.gone);
    await client.query(`
      GRANT CREATE ON SCHEMA public TO ${q.gone};
      SET ROLE ${q.gone};
      CREATE TABLE haunted (id int PRIMARY KEY, v text);
      GRANT SELECT ON haunted TO ${q.ghost}, ${q.app};
      GRANT UPDATE (v) ON haunted TO ${q.ghost};
      ALTER TABLE haunted ENABLE ROW LEVEL SECURITY;
      CREATE POLICY both_roles ON haunted TO ${q.ghost}, ${q.app} USING (true);
      CREATE POLICY ghost_only ON haunted TO ${q.ghost} USING (true);
      RESET ROLE;
      INSERT INTO haunted VALUES (1, 'boo');
    `);
    const manifest = await captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table: 'haunted' } });
    await withoutGuard(client, () => client.query(`DROP TABLE haunted; REVOKE CREATE ON SCHEMA public FROM ${q.gone}; DROP ROLE ${q.ghost}; DROP ROLE ${q.gone}`));

    const result = await restoreItems(client, storage, [{ manifest, target: { schema: 'public', table: 'haunted' } }]);
    const skipped = result.tables[0]!.skippedAttachments;
    expect(skipped.map((s) => s.what).sort()).toEqual(
      [
        `ALTER TABLE "public"."haunted" OWNER TO ${q.gone}`,
        `GRANT SELECT ON TABLE "public"."haunted" TO ${q.ghost}`,
        `GRANT UPDATE ("v") ON TABLE "public"."haunted" TO ${q.ghost}`,
        `POLICY "both_roles" ON "public"."haunted" TO "${roles.ghost}"`,
        `POLICY "ghost_only" ON "public"."haunted"`,
      ].sort(),
    );
    for (const s of skipped) expect(s.reason).toMatch(new RegExp(`"(${roles.ghost}|${roles.gone})"`));
    const { rows } = await client.query(
      `SELECT pg_get_userbyid(c.relowner) = current_user AS restorer_owns, has_table_privilege($1, c.oid, 'SELECT') AS app_reads,
              (SELECT json_agg(json_build_object('name', policyname, 'roles', roles) ORDER BY policyname) FROM pg_policies WHERE tablename = 'haunted') AS policies
         FROM pg_class c WHERE c.oid = 'public.haunted'::regclass`,
      [roles.app],
    );
    expect(rows[0]).toEqual({ restorer_owns: true, app_reads: true, policies: [{ name: 'both_roles', roles: [roles.app] }] });
  });

  it('restores a manifest written before attachments were captured exactly as before', async () => {
    await client.query(`
      CREATE TABLE plain_old (id int PRIMARY KEY, v text);
      COMMENT ON TABLE plain_old IS 'not in old manifests';
      GRANT SELECT ON plain_old TO ${q.app};
      ALTER TABLE plain_old OWNER TO ${q.owner};
      INSERT INTO plain_old VALUES (1, 'one'), (2, 'two');
    `);
    const captured = await captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table: 'plain_old' } });
    const file = path.join(folder, manifestKeyForData(captured.parquet_path)!);
    const stored = JSON.parse(await readFile(file, 'utf8')) as { definition: Record<string, unknown> };
    delete stored.definition.attachments;
    await writeFile(file, JSON.stringify(stored, null, 2));
    const manifest = await findManifest(storage, captured.snapshot_id);
    expect(manifest.definition.attachments).toBeUndefined();
    await withoutGuard(client, () => client.query(`DROP TABLE plain_old`));

    const result = await restoreItems(client, storage, [{ manifest, target: { schema: 'public', table: 'plain_old' } }]);
    const plan = result.tables[0]!.plan;
    expect({ attach: plan.attach, owner: plan.owner, skipped: plan.skippedAttachments }).toEqual({ attach: [], owner: null, skipped: [] });
    expect(result.tables[0]!.script).not.toMatch(/COMMENT|GRANT|OWNER/);
    const { rows } = await client.query(
      `SELECT pg_get_userbyid(relowner) = current_user AS restorer_owns, relacl, obj_description(oid, 'pg_class') AS comment FROM pg_class WHERE oid = 'public.plain_old'::regclass`,
    );
    expect(rows[0]).toEqual({ restorer_owns: true, relacl: null, comment: null });
    expect(await tableFingerprint(client, { schema: 'public', table: 'plain_old' })).toMatchObject({ rows: 2 });
  });

  it('attaches as a non-superuser owner into a private schema, leaving the owner transfer to the caller', async () => {
    await createRole(roles.stager, 'LOGIN');
    const staging = `backstop_restore_${tag}`;
    await client.query(`
      CREATE SCHEMA ${quoteIdent(staging)} AUTHORIZATION ${q.stager};
      CREATE FUNCTION public.staged_check() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
      CREATE TABLE staged (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text) WITH (fillfactor = 80);
      COMMENT ON TABLE staged IS 'staged';
      CREATE TRIGGER staged_check BEFORE INSERT ON staged FOR EACH ROW EXECUTE FUNCTION public.staged_check();
      ALTER TABLE staged ENABLE ROW LEVEL SECURITY;
      CREATE POLICY staged_read ON staged FOR SELECT TO ${q.app} USING (v IS NOT NULL);
      GRANT SELECT ON staged TO ${q.app};
      GRANT SELECT ON staged TO ${q.auditor} WITH GRANT OPTION;
      ALTER TABLE staged OWNER TO ${q.owner};
      SET ROLE ${q.auditor};
      GRANT SELECT ON staged TO ${q.reader};
      RESET ROLE;
      INSERT INTO staged (v) VALUES ('a'), (NULL);
    `);
    const manifest = await captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table: 'staged' } });
    const target = { schema: staging, table: 'staged' };
    const stager = await connectAs(roles.stager);
    let result;
    let kept;
    try {
      result = await restoreItems(stager, storage, [{ manifest, target }], { transferOwnership: false });
      // Left to give the table away itself, a role that may not (no member of the owner) keeps it, and says so.
      kept = await restoreItems(stager, storage, [{ manifest, target: { schema: staging, table: 'kept' } }]);
    } finally {
      await stager.end();
    }
    expect(kept.tables[0]!.skippedAttachments.map((s) => s.what)).toContain(`ALTER TABLE ${quoteQualified({ schema: staging, table: 'kept' })} OWNER TO ${q.owner}`);
    expect((await client.query(`SELECT pg_get_userbyid(relowner) AS owner FROM pg_class WHERE oid = to_regclass($1)`, [quoteQualified({ schema: staging, table: 'kept' })])).rows[0].owner).toBe(roles.stager);
    expect(result.tables[0]!.plan.owner).toBe(roles.owner);
    expect(result.tables[0]!.script).not.toMatch(/OWNER TO/);
    // The stager cannot act as the auditor: that grant is made by the owner instead, and reported.
    expect(result.tables[0]!.skippedAttachments).toEqual([
      { what: `GRANT SELECT ON TABLE ${quoteQualified(target)} TO ${q.reader} (granted by "${roles.auditor}")`, reason: expect.stringMatching(/cannot act as .*granted by the owner instead/) },
    ]);
    const facts = async (table: QualifiedName) =>
      (
        await client.query(
          `SELECT pg_get_userbyid(c.relowner) AS owner, c.relacl::text AS acl, c.reloptions, obj_description(c.oid, 'pg_class') AS comment,
                  (SELECT array_agg(tgname ORDER BY tgname)::text[] FROM pg_trigger WHERE tgrelid = c.oid AND NOT tgisinternal AND tgname <> 'backstop_truncate_guard') AS triggers,
                  (SELECT array_agg(polname)::text[] FROM pg_policy WHERE polrelid = c.oid) AS policies, c.relrowsecurity AS rls
             FROM pg_class c WHERE c.oid = to_regclass($1)`,
          [quoteQualified(table)],
        )
      ).rows[0];
    expect(await facts(target)).toMatchObject({ owner: roles.stager, reloptions: ['fillfactor=80'], comment: 'staged', triggers: ['staged_check'], policies: ['staged_read'], rls: true });

    // What the caller's owner transfer does: the stager's entries become the owner's.
    await client.query(`ALTER TABLE ${quoteQualified(target)} OWNER TO ${q.owner}`);
    const original = await facts({ schema: 'public', table: 'staged' });
    expect({ ...(await facts(target)), acl: null }).toEqual({ ...original, acl: null });
    const grants = async (table: QualifiedName) =>
      (
        await client.query(
          `SELECT pg_get_userbyid(x.grantor) AS grantor, pg_get_userbyid(x.grantee) AS grantee, x.privilege_type, x.is_grantable
             FROM pg_class c, aclexplode(c.relacl) x WHERE c.oid = to_regclass($1) ORDER BY 2, 3`,
          [quoteQualified(table)],
        )
      ).rows;
    const expected = (await grants({ schema: 'public', table: 'staged' })).map((g) => (g.grantee === roles.reader ? { ...g, grantor: roles.owner } : g));
    expect(await grants(target)).toEqual(expected);
  });

  it("does not let the restoring role's default privileges add grants the table never had", async () => {
    await client.query(`
      CREATE SCHEMA defaults_s;
      GRANT USAGE, CREATE ON SCHEMA defaults_s TO ${q.owner};
      ALTER DEFAULT PRIVILEGES IN SCHEMA defaults_s GRANT SELECT ON TABLES TO ${q.reader};
      ALTER DEFAULT PRIVILEGES IN SCHEMA defaults_s GRANT USAGE ON SEQUENCES TO ${q.reader};
      ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC;
      SET ROLE ${q.owner};
      CREATE TABLE defaults_s.private (id serial PRIMARY KEY, secret text);
      RESET ROLE;
      INSERT INTO defaults_s.private (secret) VALUES ('s');
    `);
    const table = { schema: 'defaults_s', table: 'private' };
    try {
      const dumpBefore = serverInfo().major === 15 && existsSync(PG_DUMP_15) ? await pgDumpSchema(table) : null;
      const manifest = await captureTable({ database: resolveDatabase(db.url), storage, table });
      await withoutGuard(client, () => client.query(`DROP TABLE defaults_s.private`));
      await restoreItems(client, storage, [{ manifest, target: table }]);
      const { rows } = await client.query(
        `SELECT has_table_privilege($1, 'defaults_s.private', 'SELECT') AS reader_reads, has_table_privilege('public', 'defaults_s.private', 'SELECT') AS public_reads,
                has_sequence_privilege($1, 'defaults_s.private_id_seq', 'USAGE') AS reader_uses_sequence`,
        [roles.reader],
      );
      expect(rows[0]).toEqual({ reader_reads: false, public_reads: false, reader_uses_sequence: false });
      if (dumpBefore) expect(await pgDumpSchema(table)).toEqual(dumpBefore);
    } finally {
      await client.query(`ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM PUBLIC`);
    }
  });

  it("recreates the attachments of a table replaced in place (--replace), by its final names, and a foreign key's comment", async () => {
    await client.query(`
      CREATE TABLE parents (id int PRIMARY KEY);
      INSERT INTO parents VALUES (1), (2);
      CREATE TABLE children (id int PRIMARY KEY, parent int CONSTRAINT children_parent_fk REFERENCES parents(id), v text);
      CREATE INDEX children_v ON children (v);
      COMMENT ON INDEX children_v IS 'by v';
      COMMENT ON CONSTRAINT children_parent_fk ON children IS 'each child has a parent';
      ALTER TABLE children ENABLE ROW LEVEL SECURITY;
      CREATE POLICY children_all ON children TO ${q.app} USING (true);
      ALTER TABLE children REPLICA IDENTITY USING INDEX children_pkey;
      INSERT INTO children VALUES (1, 1, 'a'), (2, 2, 'b');
    `);
    const children = { schema: 'public', table: 'children' };
    const before = await catalogFacts(client, children);
    const manifest = await captureTable({ database: resolveDatabase(db.url), storage, table: children });
    await client.query(`DROP POLICY children_all ON children; COMMENT ON INDEX children_v IS NULL; COMMENT ON CONSTRAINT children_parent_fk ON children IS NULL; INSERT INTO children VALUES (3, 1, 'c')`);

    const result = await withoutGuard(client, () => restoreItems(client, storage, [{ manifest, target: children }], { replace: true }));
    expect(result.tables[0]!.replaced).toBe(true);
    // (withoutGuard kept Backstop from attaching its TRUNCATE guard to the build: compare without it.)
    const withoutBackstop = (facts: unknown) => ({ ...(facts as Record<string, unknown>), triggers: ((facts as { triggers: Array<{ def: string }> | null }).triggers ?? []).filter((t) => !t.def.includes('backstop.')) });
    expect(withoutBackstop(await catalogFacts(client, children))).toEqual(withoutBackstop(before));
  });
});

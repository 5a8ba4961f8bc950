/**
 * Issue 11's scenario through `SELECT backstop.undo(id)` with a real agent: what the DROP …
 * CASCADE took comes back as `pg_dump -s` showed it before the DROP (PostgreSQL 15, whose
 * pg_dump is installed here; on 17 the same facts from the catalogs), the rows are equal, and the
 * application role reads and writes its table again.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contentHash } from '../../src/snapshot/content-hash.js';
import { createTestDatabase, dropServerRoles, serverInfo, type TestDatabase } from '../support/database.js';
import { startAgent, tempDir, type AgentProcess } from '../support/agent-process.js';
import { runApproved as runApprovedIn, settle } from './requests.js';

const run = promisify(execFile);
const PG_DUMP_15 = '/usr/lib/postgresql/15/bin/pg_dump';

describe('backstop.undo brings back what pg_dump -s showed', () => {
  let db: TestDatabase;
  let folder: string;
  let admin: pg.Client;
  let agent: AgentProcess | undefined;
  const roles: string[] = [];
  const canDump = () => serverInfo().major === 15 && existsSync(PG_DUMP_15);

  async function dump(args: string[]): Promise<string[]> {
    const { stdout } = await run(PG_DUMP_15, ['--schema-only', ...args, '--dbname', db.url], { maxBuffer: 16 << 20 });
    return stdout.split('\n').filter((line) => !/^\\(un)?restrict /.test(line));
  }

  /** The catalog facts pg_dump -s prints for the relations of a schema, for servers whose pg_dump is not here. */
  async function facts(schema: string): Promise<unknown[]> {
    const { rows } = await admin.query(
      `SELECT c.relname, c.relkind, pg_get_userbyid(c.relowner) AS owner, c.relacl::text, c.relrowsecurity, c.relforcerowsecurity,
              c.reloptions, c.relreplident, obj_description(c.oid, 'pg_class') AS comment,
              CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END AS view,
              ARRAY(SELECT a.attname || ':' || format_type(a.atttypid, a.atttypmod) || ':' || coalesce(a.attacl::text, '') || ':' || coalesce(col_description(c.oid, a.attnum), '')
                      FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) AS columns,
              ARRAY(SELECT pg_get_triggerdef(t.oid) || ':' || t.tgenabled::text FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal ORDER BY t.tgname) AS triggers,
              ARRAY(SELECT p.polname || ':' || coalesce(pg_get_expr(p.polqual, p.polrelid), '') FROM pg_policy p WHERE p.polrelid = c.oid ORDER BY p.polname) AS policies,
              ARRAY(SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = c.oid ORDER BY 1) AS indexes,
              ARRAY(SELECT k.conname || ':' || pg_get_constraintdef(k.oid) FROM pg_constraint k WHERE k.conrelid = c.oid ORDER BY k.conname) AS constraints
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY c.relname`,
      [schema],
    );
    return rows;
  }

  beforeAll(async () => {
    folder = await tempDir('backstop-undo-fidelity-');
    db = await createTestDatabase();
    admin = await db.client();
    // The agent as it runs in production: a plain login role in backstop_agent (BYPASSRLS: the
    // table uses row-level security), never a superuser.
    const agentRole = await role('agent', 'LOGIN BYPASSRLS IN ROLE backstop_agent');
    agent = await startAgent({ db: db.urlAs(agentRole), storage: folder, args: ['--interval', '1h'] });
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await db?.drop();
    if (folder) await rm(folder, { recursive: true, force: true });
    await dropServerRoles(roles);
  });

  async function role(suffix: string, options = ''): Promise<string> {
    const name = `${db.name}_${suffix}`;
    await admin.query(`CREATE ROLE ${name} ${options}`);
    roles.push(name);
    return name;
  }

  const runApproved = (statement: string) => runApprovedIn(() => db.client(), admin, statement);

  it('DROP TABLE people CASCADE: owner, grants, comments, trigger, RLS and policy, index, identity, the view and the foreign key come back', async () => {
    const owner = await role('owner');
    const app = await role('app', 'LOGIN');
    const auditor = await role('auditor');
    await admin.query(`
      GRANT CREATE, USAGE ON SCHEMA public TO ${owner};
      CREATE FUNCTION public.people_touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.updated_at := now(); RETURN NEW; END$$;
      SET ROLE ${owner};
      CREATE TABLE people (
        id int GENERATED ALWAYS AS IDENTITY (START WITH 10) PRIMARY KEY,
        name text NOT NULL CONSTRAINT "name present" CHECK (name <> ''),
        email text,
        tenant name NOT NULL DEFAULT current_user,
        updated_at timestamptz);
      CREATE INDEX people_email_lower ON people (lower(email)) WHERE email IS NOT NULL;
      COMMENT ON TABLE people IS 'people, one row each';
      COMMENT ON COLUMN people.email IS 'contact address';
      COMMENT ON CONSTRAINT "name present" ON people IS 'a name is required';
      COMMENT ON INDEX people_email_lower IS 'lookup by address';
      GRANT SELECT, INSERT ON people TO ${app};
      GRANT SELECT ON people TO ${auditor} WITH GRANT OPTION;
      GRANT UPDATE (email) ON people TO ${app};
      CREATE TRIGGER people_touch BEFORE UPDATE ON people FOR EACH ROW EXECUTE FUNCTION public.people_touch();
      ALTER TABLE people ENABLE ROW LEVEL SECURITY;
      CREATE POLICY people_tenant ON people TO ${app} USING (tenant = current_user) WITH CHECK (tenant = current_user);
      CREATE VIEW people_v WITH (security_barrier) AS SELECT id, name FROM people WHERE email IS NOT NULL;
      COMMENT ON VIEW people_v IS 'people with an address';
      GRANT SELECT ON people_v TO ${app};
      CREATE TABLE orders (id int PRIMARY KEY, person int CONSTRAINT orders_person_fk REFERENCES people (id) ON DELETE CASCADE);
      RESET ROLE;
      INSERT INTO people (name, email, tenant)
        SELECT 'person ' || g, CASE WHEN g % 3 <> 0 THEN 'p' || g || '@example.com' END, CASE WHEN g % 2 = 0 THEN '${app}' ELSE 'other' END
          FROM generate_series(1, 300) AS g;
      INSERT INTO orders SELECT g, 10 + g FROM generate_series(1, 50) AS g;
    `);
    const tables = ['--table', 'public.people', '--table', 'public.people_v', '--table', 'public.orders'];
    const dumpBefore = canDump() ? await dump(tables) : null;
    const factsBefore = await facts('public');
    const rowsBefore = await contentHash(admin, { schema: 'public', table: 'people' });

    const requestId = await runApproved('DROP TABLE people CASCADE');
    expect((await admin.query(`SELECT to_regclass('people_v') AS v`)).rows[0].v).toBeNull();
    const { rows: [undo] } = await admin.query('SELECT backstop.undo($1::bigint) AS undo', [requestId]);
    expect(undo.undo).toMatch(/table public\.people restored.*view public\.people_v restored.*foreign key orders_person_fk of public\.orders restored/);

    if (dumpBefore) expect(await dump(tables)).toEqual(dumpBefore);
    expect(await facts('public')).toEqual(factsBefore);
    expect(await contentHash(admin, { schema: 'public', table: 'people' })).toEqual(rowsBefore);

    const appClient = new pg.Client({ connectionString: db.urlAs(app) });
    await appClient.connect();
    try {
      expect((await appClient.query('SELECT count(*)::int AS n FROM people')).rows[0].n).toBe(150);
      await appClient.query(`INSERT INTO people (name, email) VALUES ('new person', 'new@example.com')`);
      expect((await appClient.query(`SELECT count(*)::int AS n FROM people_v WHERE name = 'new person'`)).rows[0].n).toBe(1);
    } finally {
      await appClient.end();
    }
  });

  it('DROP SCHEMA … CASCADE: the schema, its types, the table that needs them and the view come back', async () => {
    const owner = await role('schema_owner');
    const reader = await role('schema_reader');
    await admin.query(`
      CREATE SCHEMA "Shop Ünï" AUTHORIZATION ${owner};
      COMMENT ON SCHEMA "Shop Ünï" IS 'the shop';
      GRANT USAGE ON SCHEMA "Shop Ünï" TO ${reader};
      SET ROLE ${owner};
      CREATE TYPE "Shop Ünï".mood AS ENUM ('sad', 'ok', 'happy');
      CREATE DOMAIN "Shop Ünï".price AS numeric(10,2) CHECK (VALUE >= 0);
      CREATE TABLE "Shop Ünï".items (id int PRIMARY KEY, name text, mood "Shop Ünï".mood DEFAULT 'ok', cost "Shop Ünï".price, moods "Shop Ünï".mood[]);
      CREATE VIEW "Shop Ünï".happy_items AS SELECT id, name FROM "Shop Ünï".items WHERE mood = 'happy';
      GRANT SELECT ON "Shop Ünï".happy_items TO ${reader};
      RESET ROLE;
      INSERT INTO "Shop Ünï".items SELECT g, 'item ' || g, (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::"Shop Ünï".mood, g * 1.5,
                                          ARRAY['ok', 'happy']::"Shop Ünï".mood[] FROM generate_series(1, 100) AS g;
    `);
    const dumpBefore = canDump() ? await dump(['--schema', '"Shop Ünï"']) : null;
    const factsBefore = await facts('Shop Ünï');
    const rowsBefore = await contentHash(admin, { schema: 'Shop Ünï', table: 'items' });

    const requestId = await runApproved('DROP SCHEMA "Shop Ünï" CASCADE');
    const { rows: [undo] } = await admin.query('SELECT backstop.undo($1::bigint) AS undo', [requestId]);
    expect(undo.undo).toMatch(/schema "Shop Ünï" restored/);

    if (dumpBefore) expect(await dump(['--schema', '"Shop Ünï"'])).toEqual(dumpBefore);
    expect(await facts('Shop Ünï')).toEqual(factsBefore);
    expect(await contentHash(admin, { schema: 'Shop Ünï', table: 'items' })).toEqual(rowsBefore);
    const { rows: [guard] } = await admin.query(`SELECT tgenabled FROM pg_trigger WHERE tgrelid = '"Shop Ünï".items'::regclass AND tgname = 'backstop_truncate_guard'`);
    expect(guard.tgenabled).toBe('A');
  });
});

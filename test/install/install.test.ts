import { execFile } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrivilegeError } from '../../src/errors/index.js';
import { install, installScript, listMigrations, uninstall } from '../../src/install/install.js';
import { createLoginRoles } from '../support/agent-double.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { BACKSTOP_BIN, REPO_ROOT } from '../support/agent-process.js';

const run = promisify(execFile);

/** `npm run build` when dist/ is older than the sources the CLI install command uses. */
async function ensureBuilt(): Promise<void> {
  const built = path.join(REPO_ROOT, 'dist', 'install', 'install.js');
  const sources = ['src/install/install.ts', 'src/install/privileges.ts', 'src/cli/commands/install.ts', 'src/cli/main.ts', 'src/cli/program.ts'];
  const newest = Math.max(...sources.map((file) => statSync(path.join(REPO_ROOT, file)).mtimeMs));
  if (existsSync(built) && statSync(built).mtimeMs >= newest) return;
  // tsc emits even when another part of the tree does not typecheck yet; the typecheck is its own step.
  await run(process.execPath, [path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: REPO_ROOT }).catch(() => {});
}

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BACKSTOP_BIN, ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, BACKSTOP_LOG_LEVEL: 'info' },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

/** What Backstop has in a database: a fingerprint to compare before and after. */
async function backstopObjects(client: pg.Client) {
  const { rows } = await client.query(`
    SELECT (SELECT count(*)::int FROM pg_namespace WHERE nspname IN ('backstop', 'backstop_images')) AS schemas,
           (SELECT count(*)::int FROM pg_event_trigger WHERE evtname LIKE 'backstop%') AS event_triggers,
           (SELECT count(*)::int FROM pg_event_trigger WHERE evtname LIKE 'backstop%' AND evtenabled = 'A') AS event_triggers_always,
           (SELECT count(*)::int FROM pg_trigger WHERE tgname = 'backstop_truncate_guard') AS truncate_guards,
           (SELECT count(*)::int FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'backstop') AS functions`);
  return rows[0] as { schemas: number; event_triggers: number; event_triggers_always: number; truncate_guards: number; functions: number };
}

describe('backstop install / uninstall', () => {
  let db: TestDatabase;
  let empty: TestDatabase;
  let dropRoles: () => Promise<void>;
  let plainRole: string;
  beforeAll(async () => {
    db = await createTestDatabase();
    empty = await createTestDatabase({ template: 'template0' });
    const created = await createLoginRoles(empty, ['installer']);
    dropRoles = created.dropRoles;
    plainRole = created.roles.installer!;
    await ensureBuilt();
  });
  afterAll(async () => {
    await db?.drop();
    await empty?.drop();
    await dropRoles?.();
  });

  it('installs everything ENABLE ALWAYS, and a second install is a no-op', async () => {
    const client = await db.client();
    const before = await backstopObjects(client);
    expect(before).toMatchObject({ schemas: 2, event_triggers: 4, event_triggers_always: 4 });
    expect(await install(client)).toMatchObject({ applied: [], dblink: true });
    expect(await backstopObjects(client)).toEqual(before);
    const again = await cli(['install', '--db', db.url]);
    expect(again.code).toBe(0);
    expect(again.stdout + again.stderr).toMatch(/already installed/);
    expect(await backstopObjects(client)).toEqual(before);
  });

  it("says what the agent's login role needs when tables use row-level security", async () => {
    const client = await db.client();
    const { roles, dropRoles: dropAgent } = await createLoginRoles(db, ['agent'], { agent: ['backstop_agent'] });
    try {
      await client.query(`CREATE TABLE public.tenants (id int); ALTER TABLE public.tenants ENABLE ROW LEVEL SECURITY`);
      const result = await install(client);
      expect(result.rowSecurity.tables).toEqual(['public.tenants']);
      // Roles are cluster-wide: other files' agent roles may be listed too.
      expect(result.rowSecurity.agentLoginGaps).toContainEqual({ role: roles.agent, tables: ['public.tenants'] });
      const again = await cli(['install', '--db', db.url]);
      expect(again.stdout + again.stderr).toContain(`ALTER ROLE ${roles.agent} BYPASSRLS;`);
      await client.query(`ALTER ROLE ${roles.agent} BYPASSRLS`);
      expect((await install(client)).rowSecurity.agentLoginGaps.map((gap) => gap.role)).not.toContain(roles.agent);
    } finally {
      await client.query(`ALTER TABLE IF EXISTS public.tenants DISABLE ROW LEVEL SECURITY`);
      await dropAgent();
    }
  });

  it('install as a non-superuser fails with one clear line and changes nothing', async () => {
    const asPlain = new pg.Client({ connectionString: empty.urlAs(plainRole) });
    await asPlain.connect();
    try {
      await expect(install(asPlain)).rejects.toBeInstanceOf(PrivilegeError);
    } finally {
      await asPlain.end();
    }
    const result = await cli(['install', '--db', empty.urlAs(plainRole)]);
    expect(result.code).not.toBe(0);
    const lines = result.stderr.trim().split('\n');
    expect(lines[0]).toMatch(new RegExp(`^error: role "${plainRole}" cannot create event triggers`));
    expect(lines[1]).toMatch(/^hint: run backstop install as a superuser/);
    expect(lines).toHaveLength(2);
    const admin = await empty.client();
    expect(await backstopObjects(admin)).toMatchObject({ schemas: 0, event_triggers: 0, functions: 0 });
  });

  it('install --dry-run prints the SQL and changes nothing; the printed SQL installs Backstop', async () => {
    const admin = await empty.client();
    const result = await cli(['install', '--dry-run', '--db', empty.url]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/CREATE EVENT TRIGGER backstop_guard_statement/);
    expect(result.stdout).toMatch(/-- migration 0002_guard/);
    expect(await backstopObjects(admin)).toMatchObject({ schemas: 0, event_triggers: 0 });

    await admin.query(result.stdout);
    expect(await backstopObjects(admin)).toMatchObject({ schemas: 2, event_triggers: 4, event_triggers_always: 4 });
    expect(await install(admin)).toMatchObject({ applied: [] });
    expect(await installScript(admin)).toMatch(/nothing to run/);
  });

  it('uninstall removes every Backstop object and leaves user tables and data', async () => {
    const client = await db.client();
    // An undo being staged (its schema recorded in the restore log) goes; a schema merely named
    // like one is the user's and stays.
    await client.query(`CREATE SCHEMA backstop_restore_1_deadbeef; CREATE TABLE backstop_restore_1_deadbeef.staged (id int);
                        CREATE SCHEMA backstop_restore_2_cafecafe; CREATE TABLE backstop_restore_2_cafecafe.mine (id int)`);
    await client.query(`INSERT INTO backstop.restore_log (kind, request_id, requested_by, requester_pid, requester_xact, status, staging_schema, staging_oid)
                        VALUES ('undo', 1, current_user, pg_backend_pid(), now(), 'staging', 'backstop_restore_1_deadbeef',
                                'backstop_restore_1_deadbeef'::regnamespace)`);
    await client.query(`CREATE SCHEMA app; CREATE TABLE app.users (id int PRIMARY KEY, name text);
                        INSERT INTO app.users SELECT g, 'u' || g FROM generate_series(1, 10) g;
                        CREATE TABLE "Mixed ""Case""" (id int); INSERT INTO "Mixed ""Case""" VALUES (7)`);
    expect((await backstopObjects(client)).truncate_guards).toBeGreaterThanOrEqual(2);
    const result = await cli(['uninstall', '--db', db.url]);
    expect(result.code).toBe(0);
    expect(result.stdout + result.stderr).toMatch(/left in place/);
    expect(await backstopObjects(client)).toEqual({ schemas: 0, event_triggers: 0, event_triggers_always: 0, truncate_guards: 0, functions: 0 });
    expect((await client.query('SELECT count(*)::int AS n FROM app.users')).rows[0].n).toBe(10);
    expect((await client.query(`SELECT id FROM "Mixed ""Case"""`)).rows).toEqual([{ id: 7 }]);
    const { rows: staging } = await client.query(`SELECT nspname FROM pg_namespace WHERE nspname LIKE 'backstop\_restore\_%' ORDER BY 1`);
    expect(staging).toEqual([{ nspname: 'backstop_restore_2_cafecafe' }]);
    await client.query('DROP SCHEMA backstop_restore_2_cafecafe CASCADE');
    const { rows } = await client.query(`SELECT count(*)::int AS n FROM pg_roles WHERE rolname IN ('backstop_agent', 'backstop_approver')`);
    expect(rows[0].n).toBe(2);

    // Reinstalling guards the existing tables again.
    expect((await install(client)).applied).toEqual(await listMigrations());
    const { rows: guarded } = await client.query(`SELECT tgenabled FROM pg_trigger WHERE tgrelid = 'app.users'::regclass AND tgname = 'backstop_truncate_guard'`);
    expect(guarded).toEqual([{ tgenabled: 'A' }]);
    await uninstall(client);
    await client.query('DROP TABLE app.users');
  });
});

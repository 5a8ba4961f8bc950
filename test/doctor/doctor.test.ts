import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDoctor } from '../../src/doctor/checks.js';
import { openStorage } from '../../src/storage/open.js';
import { createLoginRoles } from '../support/agent-double.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

const run = promisify(execFile);

describe('backstop doctor', () => {
  let db: TestDatabase;
  let folder: string;
  beforeAll(async () => {
    db = await createTestDatabase();
    folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-doctor-'));
    const client = await db.client();
    await client.query(`CREATE TABLE public."Doctor's table" (id int primary key)`);
  });
  afterAll(async () => {
    await db?.drop();
    await rm(folder, { recursive: true, force: true });
  });

  it('reports an armed guard, a working loopback, no agent, and reachable storage', async () => {
    const client = await db.client();
    const results = await runDoctor(client, openStorage(folder));
    const byCheck = Object.fromEntries(results.map((r) => [r.check, r]));
    expect(byCheck['install']?.status).toBe('ok');
    expect(byCheck['event triggers']?.status).toBe('ok');
    expect(byCheck['truncate guards']?.status).toBe('ok');
    expect(byCheck['dblink']?.status).toBe('ok');
    expect(byCheck['agent']).toMatchObject({ status: 'fail', detail: 'no agent has ever sent a heartbeat' });
    expect(byCheck['storage']?.status).toBe('ok');
  });

  it('fails when a superuser disabled an event trigger, and the CLI exits non-zero with a hint', async () => {
    const client = await db.client();
    await client.query('ALTER EVENT TRIGGER backstop_guard_dropped DISABLE');
    try {
      const results = await runDoctor(client);
      expect(results.find((r) => r.check === 'event triggers')).toMatchObject({ status: 'fail', detail: expect.stringContaining('backstop_guard_dropped is disabled') });
      const failure = await run(process.execPath, ['bin/backstop.js', 'doctor', '--db', db.url]).then(() => null, (error: { code: number; stdout: string }) => error);
      expect(failure?.code).toBe(1);
      expect(failure?.stdout).toMatch(/FAIL\s+event triggers/);
      expect(failure?.stdout).toMatch(/hint: destructive statements are NOT guarded/);
    } finally {
      await client.query('ALTER EVENT TRIGGER backstop_guard_dropped ENABLE ALWAYS');
    }
  });

  it('says Backstop is not installed in a database without it', async () => {
    const bare = await createTestDatabase({ template: 'template0' });
    try {
      const results = await runDoctor(await bare.client());
      expect(results.find((r) => r.check === 'install')).toMatchObject({ status: 'fail', hint: expect.stringContaining('backstop install') });
    } finally {
      await bare.drop();
    }
  });
});

describe("backstop doctor's hints, followed", () => {
  let db: TestDatabase;
  let roles: Record<string, string>;
  let dropRoles: () => Promise<void>;
  beforeAll(async () => {
    db = await createTestDatabase();
    ({ roles, dropRoles } = await createLoginRoles(db, ['agent', 'owner'], { agent: ['backstop_agent'] }));
  });
  afterAll(async () => {
    await db?.drop();
    await dropRoles?.();
  });

  async function check(name: string, client?: pg.Client) {
    const results = await runDoctor(client ?? (await db.client()));
    return results.find((result) => result.check === name)!;
  }

  async function installAgain(): Promise<string> {
    const { stdout, stderr } = await run(process.execPath, ['bin/backstop.js', 'install', '--db', db.url], { env: { ...process.env, BACKSTOP_LOG_LEVEL: 'info' } });
    return stdout + stderr;
  }

  it('a table without its TRUNCATE guard: install attaches it', async () => {
    const client = await db.client();
    await client.query(`CREATE TABLE public.unguarded (id int); CREATE TABLE public.renamed (id int);
                        DROP TRIGGER backstop_truncate_guard ON public.unguarded;
                        ALTER TRIGGER backstop_truncate_guard ON public.renamed RENAME TO something_else`);
    expect(await check('truncate guards')).toMatchObject({
      status: 'fail',
      detail: expect.stringMatching(/public\.renamed: trigger\(s\) something_else stand in.*public\.unguarded: no TRUNCATE guard/),
      hint: expect.stringContaining('backstop install'),
    });
    expect(await installAgain()).toMatch(/put back parts of the guard/);
    expect(await check('truncate guards')).toMatchObject({ status: 'ok' });
    const { rows } = await client.query(`SELECT tgrelid::regclass::text AS t, tgname, tgenabled FROM pg_trigger
                                          WHERE tgrelid IN ('public.unguarded'::regclass, 'public.renamed'::regclass) ORDER BY 1`);
    expect(rows).toEqual([
      { t: 'renamed', tgname: 'backstop_truncate_guard', tgenabled: 'A' },
      { t: 'unguarded', tgname: 'backstop_truncate_guard', tgenabled: 'A' },
    ]);
  });

  it('a dropped or disabled event trigger: install re-creates and re-arms it', async () => {
    const client = await db.client();
    await client.query(`DROP EVENT TRIGGER backstop_guard_rewrite; ALTER EVENT TRIGGER backstop_guard_statement DISABLE`);
    expect(await check('event triggers')).toMatchObject({
      status: 'fail',
      detail: 'event trigger backstop_guard_statement is disabled; event trigger backstop_guard_rewrite is missing',
    });
    // --dry-run shows what install would run.
    const { stdout: script } = await run(process.execPath, ['bin/backstop.js', 'install', '--dry-run', '--db', db.url]);
    expect(script).toContain('CREATE EVENT TRIGGER backstop_guard_rewrite ON table_rewrite');
    expect(script).toContain('ALTER EVENT TRIGGER "backstop_guard_statement" ENABLE ALWAYS;');
    await installAgain();
    expect(await check('event triggers')).toMatchObject({ status: 'ok' });
    const { rows } = await client.query(`SELECT evtname, evtenabled, evtfoid::regproc::text AS fn FROM pg_event_trigger WHERE evtname IN ('backstop_guard_rewrite', 'backstop_guard_statement') ORDER BY 1`);
    expect(rows).toEqual([
      { evtname: 'backstop_guard_rewrite', evtenabled: 'A', fn: 'backstop.guard_rewrite' },
      { evtname: 'backstop_guard_statement', evtenabled: 'A', fn: 'backstop.guard_statement' },
    ]);
  });

  it('dblink missing: install creates it, and the loopback works', async () => {
    const client = await db.client();
    await client.query('DROP EXTENSION dblink');
    expect(await check('dblink')).toMatchObject({ status: 'warn', hint: expect.stringContaining('backstop install') });
    await installAgain();
    expect(await check('dblink')).toMatchObject({ status: 'ok' });
  });

  it('an agent login role that row-level security would stop: the ALTER ROLE in the hint fixes it', async () => {
    const client = await db.client();
    await client.query(`CREATE TABLE public.tenants (id int); ALTER TABLE public.tenants OWNER TO ${roles.owner};
                        ALTER TABLE public.tenants ENABLE ROW LEVEL SECURITY`);
    const found = await check('row-level security');
    expect(found).toMatchObject({ status: 'fail', detail: expect.stringContaining(`role ${roles.agent} cannot capture public.tenants`) });
    expect(found.hint).toContain(`ALTER ROLE ${roles.agent} BYPASSRLS;`);
    // Run as the agent's own role, doctor names it too.
    const asAgent = new pg.Client({ connectionString: db.urlAs(roles.agent!) });
    await asAgent.connect();
    try {
      expect((await check('row-level security', asAgent)).detail).toContain(`role ${roles.agent} cannot capture`);
      await client.query(`ALTER ROLE ${roles.agent} BYPASSRLS`);
      // (Other tests' agent roles share the cluster: only this one's line must be gone.)
      expect((await check('row-level security', asAgent)).detail ?? '').not.toContain(`role ${roles.agent} `);
      expect((await check('row-level security')).detail ?? '').not.toContain(`role ${roles.agent} `);
    } finally {
      await asAgent.end();
    }
  });
});

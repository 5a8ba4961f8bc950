/**
 * No secret Backstop stores is readable by PUBLIC, pg_read_all_data, backstop_agent or
 * backstop_approver, and backstop.snapshot() exports only what its caller can read in full.
 * Roles here are ordinary login roles; the table owner is not a superuser.
 */
import { runner } from 'node-pg-migrate';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { install, listMigrations, MIGRATIONS_SCHEMA, MIGRATIONS_TABLE } from '../../src/install/install.js';
import { migrationsDir } from '../../src/install/paths.js';
import { createTestDatabase } from '../support/database.js';
import { guardFixture, pgError, type GuardFixture } from './fixture.js';

const PASSWORD = 'loopback-password-hunter2';

describe('secrets and on-demand snapshots', () => {
  let f: GuardFixture;
  beforeAll(async () => {
    f = await guardFixture({
      roles: { plain: [], reader: ['pg_read_all_data'], approver: ['backstop_approver'], owner: [], bypassing: [], nousage: [] },
    });
    await f.admin.query(`GRANT CREATE ON SCHEMA public TO ${f.roles.owner}; ALTER ROLE ${f.roles.bypassing} BYPASSRLS`);
    const owner = await f.session('owner');
    await owner.query(`CREATE TABLE public.ledger (id int PRIMARY KEY, note text);
                       INSERT INTO public.ledger SELECT g, 'row ' || g FROM generate_series(1, 300) g;
                       ALTER TABLE public.ledger ENABLE ROW LEVEL SECURITY;
                       CREATE POLICY first_hundred ON public.ledger USING (id <= 100);
                       GRANT SELECT ON public.ledger TO ${f.roles.reader}, ${f.roles.approver}, ${f.roles.bypassing}, ${f.roles.nousage};
                       CREATE VIEW public.ledger_view AS SELECT * FROM public.ledger;
                       GRANT SELECT ON public.ledger_view TO ${f.roles.approver}`);
    await f.admin.query(`CREATE SCHEMA hidden; CREATE TABLE hidden.plain_t (id int); GRANT SELECT ON hidden.plain_t TO ${f.roles.nousage}`);
  });
  afterAll(async () => {
    await f?.close();
  });

  async function loopbackSetting(): Promise<{ marker: string | null; stored: string | null; used: string }> {
    const { rows } = await f.admin.query(`SELECT s.loopback_conninfo AS marker, (SELECT conninfo FROM backstop.loopback_secret) AS stored,
                                                 backstop._loopback_conninfo() AS used FROM backstop.settings s`);
    return rows[0];
  }

  it("keeps a loopback connection string set through settings out of the settings row ('(set)' there)", async () => {
    const conninfo = `host=127.0.0.1 dbname=${f.db.name} user=postgres password=${PASSWORD}`;
    await f.admin.query(`UPDATE backstop.settings SET loopback_conninfo = $1`, [conninfo]);
    expect(await loopbackSetting()).toEqual({ marker: '(set)', stored: conninfo, used: conninfo });
    // Other settings change without touching it.
    await f.admin.query(`UPDATE backstop.settings SET wait_timeout = '21 s'`);
    expect(await loopbackSetting()).toMatchObject({ marker: '(set)', stored: conninfo });
    // Replication mode does not switch the trigger off.
    await f.admin.query(`SET session_replication_role = replica`);
    await f.admin.query(`UPDATE backstop.settings SET loopback_conninfo = $1`, [`${conninfo} connect_timeout=5`]);
    await f.admin.query(`RESET session_replication_role`);
    expect(await loopbackSetting()).toMatchObject({ marker: '(set)', stored: `${conninfo} connect_timeout=5` });
    await f.admin.query(`UPDATE backstop.settings SET loopback_conninfo = NULL`);
    expect(await loopbackSetting()).toMatchObject({ marker: null, stored: null, used: expect.stringContaining('application_name=backstop_loopback') });
    const error = await pgError(f.admin.query(`UPDATE backstop.settings SET loopback_conninfo = '(set)'`));
    expect(error.code).toBe('BS006');
  });

  it('moves a connection string set before the upgrade into the secret table', async () => {
    const db = await createTestDatabase({ template: 'template0' });
    try {
      const client = await db.client();
      const before = (await listMigrations()).indexOf('0005_secrets');
      await runner({
        dbClient: client, dir: migrationsDir, direction: 'up', count: before, migrationsSchema: MIGRATIONS_SCHEMA,
        migrationsTable: MIGRATIONS_TABLE, createMigrationsSchema: true, singleTransaction: true, checkOrder: true, log: () => {},
      });
      await client.query(`UPDATE backstop.settings SET loopback_conninfo = $1`, [`password=${PASSWORD}`]);
      await install(client);
      const { rows } = await client.query(`SELECT s.loopback_conninfo AS marker, (SELECT conninfo FROM backstop.loopback_secret) AS stored FROM backstop.settings s`);
      expect(rows[0]).toEqual({ marker: '(set)', stored: `password=${PASSWORD}` });
    } finally {
      await db.drop();
    }
  });

  it('a copy of a truncated table with row-level security holds every row, and keeps row-level security', async () => {
    const owner = await f.session('owner');
    await owner.query(`CREATE TABLE public.journal (id int, note text);
                       INSERT INTO public.journal SELECT g, 'row ' || g FROM generate_series(1, 300) g;
                       ALTER TABLE public.journal ENABLE ROW LEVEL SECURITY;
                       CREATE POLICY none_at_all ON public.journal USING (false)`);
    await f.agent.heartbeat();
    const truncate = owner.query('TRUNCATE public.journal');
    await f.agent.approveNext({ statement: 'TRUNCATE public.journal' });
    await truncate;
    const { rows: [image] } = await f.admin.query(`SELECT i.image_table, i.row_count::int, c.relrowsecurity
                                                     FROM backstop.truncate_images i JOIN pg_class c ON c.relname = i.image_table
                                                    WHERE i.table_name = 'journal'`);
    expect(image).toMatchObject({ row_count: 300, relrowsecurity: true });
    expect((await f.admin.query(`SELECT count(*)::int AS n FROM backstop_images.${image.image_table}`)).rows[0].n).toBe(300);
    // pg_read_all_data alone does not read the rows through the copy (it could not read them in the table).
    const reader = await f.session('reader');
    expect((await reader.query(`SELECT count(*)::int AS n FROM backstop_images.${image.image_table}`)).rows[0].n).toBe(0);
  });

  it('no table Backstop creates shows a secret to PUBLIC, pg_read_all_data, backstop_agent or backstop_approver', async () => {
    await f.admin.query(`UPDATE backstop.settings SET loopback_conninfo = $1`, [`host=127.0.0.1 password=${PASSWORD}`]);
    const secrets = [PASSWORD, (await f.admin.query(`SELECT secret FROM backstop.attach_secret`)).rows[0].secret as string];
    const { rows: tables } = await f.admin.query<{ name: string }>(
      `SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('backstop', 'backstop_images') AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY 1`,
    );
    expect(tables.map((t) => t.name)).toEqual(expect.arrayContaining(['backstop.settings', 'backstop.loopback_secret', 'backstop.attach_secret']));
    const sessions = { plain: await f.session('plain'), reader: await f.session('reader'), approver: await f.session('approver'), agent: f.agent.client };
    for (const [who, session] of Object.entries(sessions)) {
      for (const { name } of tables) {
        const seen = await session.query<{ row: string }>(`SELECT t::text AS row FROM ${name} t`).then(
          ({ rows }) => rows.map((row) => row.row).join('\n'),
          (error: { code?: string }) => `refused ${error.code}`,
        );
        for (const secret of secrets) expect({ who, name, leaks: seen.includes(secret) }).toEqual({ who, name, leaks: false });
      }
    }
    // What pg_read_all_data does see in the settings row is the marker.
    expect((await sessions.reader.query(`SELECT loopback_conninfo FROM backstop.settings`)).rows[0].loopback_conninfo).toBe('(set)');
    await f.admin.query(`UPDATE backstop.settings SET loopback_conninfo = NULL`);
  });

  async function snapshotOf(role: string, table: string): Promise<{ code?: string; message: string; hint?: string } | 'filed'> {
    const session = await f.session(role);
    return session.query(`SELECT backstop.snapshot($1::regclass)`, [table]).then(() => 'filed' as const, (error) => error);
  }

  it("backstop.snapshot() refuses Backstop's own tables and system catalogs to everyone, approvers and superusers included", async () => {
    for (const role of ['approver', 'postgres']) {
      for (const table of ['backstop.settings', 'backstop.loopback_secret', 'backstop.request_log', 'pg_catalog.pg_authid']) {
        const outcome = role === 'postgres'
          ? await f.admin.query(`SELECT backstop.snapshot($1::regclass)`, [table]).then(() => 'filed' as const, (error) => error)
          : await snapshotOf(role, table);
        expect({ role, table, outcome }).toEqual({ role, table, outcome: expect.objectContaining({ code: 'BS006', message: expect.stringMatching(/never exported/) }) });
      }
    }
    expect((await f.admin.query(`SELECT count(*)::int AS n FROM backstop.snapshot_requests`)).rows[0].n).toBe(0);
  });

  it('backstop.snapshot() needs the caller to read every row: SELECT, USAGE on the schema, and past row-level security', async () => {
    expect(await snapshotOf('approver', 'public.ledger')).toMatchObject({ code: 'BS006', message: expect.stringMatching(/row-level security/), hint: expect.stringMatching(/BYPASSRLS/) });
    expect(await snapshotOf('reader', 'public.ledger')).toMatchObject({ code: 'BS006', message: expect.stringMatching(/row-level security/) });
    expect(await snapshotOf('plain', 'public.ledger')).toMatchObject({ code: 'BS006', message: expect.stringMatching(/cannot read public\.ledger/) });
    expect(await snapshotOf('approver', 'public.ledger_view')).toMatchObject({ code: 'BS006', message: expect.stringMatching(/is not a table/) });
    const hiddenOid = (await f.admin.query(`SELECT 'hidden.plain_t'::regclass::oid AS oid`)).rows[0].oid as number;
    expect(await snapshotOf('nousage', String(hiddenOid))).toMatchObject({ code: 'BS006', message: expect.stringMatching(/cannot read hidden\.plain_t/) });
    expect(await snapshotOf('owner', 'public.ledger')).toBe('filed');
    expect(await snapshotOf('bypassing', 'public.ledger')).toBe('filed');
    await f.admin.query(`ALTER TABLE public.ledger FORCE ROW LEVEL SECURITY`);
    try {
      expect(await snapshotOf('owner', 'public.ledger')).toMatchObject({ code: 'BS006', message: expect.stringMatching(/row-level security/) });
    } finally {
      await f.admin.query(`ALTER TABLE public.ledger NO FORCE ROW LEVEL SECURITY`);
    }
    // The agent asks the same question again, as of now, before it serves a request.
    const { rows } = await f.agent.client.query(`SELECT reason FROM backstop._snapshot_refusal($1, 'public.ledger'::regclass)`, [f.roles.approver]);
    expect(rows[0].reason).toMatch(/row-level security/);
  });
});

/**
 * Attacks on the approval model and exact before-images of sql/0006_exact_scope.sql, played by a
 * hostile non-superuser table owner (CREATE on the database) and by a careless DBA. Each `it` is
 * one hole, written as the behaviour that must hold: while the hole is open the test fails.
 * docs/attacks.md (in this branch) has the write-up: the attack, what is lost, the proposed fix.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { guardFixture, pgError, tableOwnerSession, type GuardFixture } from './fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startAgent, tempDir, type AgentProcess } from '../support/agent-process.js';
import { settle, waitForRequest, waitForStatus } from '../agent/requests.js';

describe('attacks as a table owner, with no agent running (fail-closed)', () => {
  let f: GuardFixture;
  let owner: pg.Client;

  beforeEach(async () => {
    f = await guardFixture({ roles: { owner: [] } });
    owner = await tableOwnerSession(f);
  });
  afterEach(async () => {
    await f?.close();
  });

  it('leaves no superuser loopback connection open in the session of a table owner who dropped a column added in the same transaction (dblink installed in public)', async () => {
    // "An existing dblink in another schema is used where it is" (docs/guard.md): as on many
    // databases, dblink is in public with its default privileges.
    await f.admin.query('DROP EXTENSION dblink; CREATE EXTENSION dblink SCHEMA public');
    await owner.query('CREATE TABLE notes (id int)');
    await owner.query('BEGIN');
    await owner.query('ALTER TABLE notes ADD COLUMN scratch int');
    // Free by design (no committed data) — but _column_added_in_this_transaction asked the
    // loopback, and nothing gave the connection back.
    await owner.query('ALTER TABLE notes DROP COLUMN scratch');
    await owner.query('COMMIT');
    // What the owner can do with a connection left open: run anything as the installing
    // superuser (ALTER ROLE ... SUPERUSER, ALTER EVENT TRIGGER ... DISABLE, UPDATE backstop.request_log ...).
    const through = await settle(owner.query<{ who: string }>(
      `SELECT who FROM public.dblink('backstop_loopback', 'SELECT current_user || '' superuser='' || rolsuper FROM pg_roles WHERE rolname = current_user') AS t(who text)`));
    expect(through.ok ? 'the owner ran SQL through the loopback' : 'refused').toBe('refused');
    const { rows: [open] } = await owner.query<{ names: string[] | null }>('SELECT public.dblink_get_connections() AS names');
    expect(open!.names ?? []).not.toContain('backstop_loopback');
  });

  it('refuses ALTER TYPE ... DROP ATTRIBUTE of a composite type stored inside a multirange column', async () => {
    await owner.query(`CREATE TYPE money_t AS (amount int, currency text);
      CREATE TYPE money_range AS RANGE (subtype = money_t, multirange_type_name = money_bands);
      CREATE TABLE bands (id int, band money_bands);
      INSERT INTO bands VALUES (1, money_bands(money_range(ROW(1, 'EUR')::money_t, ROW(9, 'EUR')::money_t)))`);
    const error = await pgError(owner.query('ALTER TYPE money_t DROP ATTRIBUTE currency'));
    expect(error.code).toBe('BS005');
    expect((await f.admin.query(`SELECT band::text AS band FROM bands`)).rows[0].band).toContain('EUR');
  });

  it('refuses ALTER TYPE ... DROP ATTRIBUTE of a composite type stored in a column whose type is a view\'s row type', async () => {
    await owner.query(`CREATE TYPE price_t AS (amount int, currency text);
      CREATE VIEW price_row AS SELECT ROW(1, 'EUR')::price_t AS price;
      CREATE TABLE orders (id int, line price_row);
      INSERT INTO orders VALUES (1, ROW(ROW(10, 'EUR')::price_t)::price_row)`);
    const error = await pgError(owner.query('ALTER TYPE price_t DROP ATTRIBUTE currency'));
    expect(error.code).toBe('BS005');
    expect((await f.admin.query(`SELECT line::text AS line FROM orders`)).rows[0].line).toContain('EUR');
  });

  it('refuses dropping a committed column when loopback_conninfo points at another database', async () => {
    // A careless DBA copies the loopback setting from another database of the same server.
    const url = new URL(f.db.url);
    const conninfo = `host=${url.hostname} port=${url.port} dbname=postgres user=${decodeURIComponent(url.username)}`
      + (url.password ? ` password=${decodeURIComponent(url.password)}` : '');
    await f.admin.query('UPDATE backstop.settings SET loopback_conninfo = $1', [conninfo]);
    await owner.query(`CREATE TABLE ledger (id int, amount numeric); INSERT INTO ledger VALUES (1, 100), (2, 200)`);
    // The committed column must not look "added in this transaction" because the other
    // database has no such attnum: the loopback is refused for reaching the wrong database.
    const error = await pgError(owner.query('ALTER TABLE ledger DROP COLUMN amount'));
    expect(error.code).toBe('BS004');
    expect(error.message).toMatch(/does not reach this database/);
    expect((await f.admin.query(`SELECT amount FROM ledger ORDER BY id`)).rows.map((row) => Number(row.amount))).toEqual([100, 200]);
  });
});

describe('approval scope as a table owner, with an agent double', () => {
  let f: GuardFixture;
  let owner: pg.Client;

  beforeEach(async () => {
    f = await guardFixture({ roles: { owner: [] } });
    owner = await tableOwnerSession(f);
    await f.agent.heartbeat();
  });
  afterEach(async () => {
    await f?.close();
  });

  it('a TRUNCATE in a REPEATABLE READ transaction is refused, since its in-session image would miss rows committed after the transaction began', async () => {
    await owner.query(`CREATE TABLE ledger (id int); INSERT INTO ledger SELECT generate_series(1, 10)`);
    await owner.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await owner.query('SELECT count(*) FROM ledger');  // the transaction snapshot is taken here
    // The application keeps writing (committed, acknowledged).
    await f.admin.query('INSERT INTO ledger SELECT generate_series(11, 15)');
    const error = await pgError(owner.query('TRUNCATE ledger'));
    await owner.query('ROLLBACK');
    expect(error.code).toBe('BS004');
    expect(error.hint).toMatch(/READ COMMITTED/);
    expect((await f.admin.query('SELECT count(*)::int AS n FROM ledger')).rows[0].n).toBe(15);
  });

  it('an approved type change of one column does not cover a type change of another column of the same table run by a function in the same string', async () => {
    await owner.query(`CREATE TABLE people (id int, age int, name text);
      INSERT INTO people VALUES (1, 30, 'Alexandra'), (2, 40, 'Bartholomew');
      CREATE FUNCTION tidy() RETURNS void LANGUAGE plpgsql AS $$
      BEGIN ALTER TABLE people ALTER COLUMN name TYPE varchar(1) USING left(name, 1); END $$`);
    const statement = 'ALTER TABLE people ALTER COLUMN age TYPE bigint; SELECT tidy();';
    const running = settle(owner.query(statement));
    // The approver approved widening age (coverage: alter column type of people.age).
    await f.agent.approveNext({ statement: 'ALTER TABLE people ALTER COLUMN age' });
    const outcome = await running;
    // The function's rewrite of people.name was never approved: it must be refused (BS005).
    expect(outcome.ok ? 'passed' : outcome.error.code).toBe('BS005');
    expect((await f.admin.query(`SELECT name FROM people ORDER BY id`)).rows.map((row) => row.name)).toEqual(['Alexandra', 'Bartholomew']);
  });

  it('an approved DROP TABLE whose name then resolves to a temporary table does not let a function drop a column of the real table', async () => {
    await owner.query(`CREATE TABLE scratchpad (id int); CREATE TABLE accounts (id int, secret text);
      INSERT INTO accounts VALUES (1, 's3cr3t');
      CREATE FUNCTION strip() RETURNS void LANGUAGE plpgsql AS $$ BEGIN ALTER TABLE public.accounts DROP COLUMN secret; END $$`);
    // The agent resolves "accounts" to public.accounts: coverage {drop table scratchpad, drop table
    // public.accounts}. At run time the temporary table shadows the name, so public.accounts is
    // never dropped — but its "drop table" item still covers dropping its columns.
    const statement = 'DROP TABLE scratchpad; CREATE TEMP TABLE accounts (id int); DROP TABLE accounts; SELECT strip();';
    const running = settle(owner.query(statement));
    await f.agent.approveNext({ statement: 'DROP TABLE scratchpad' });
    const outcome = await running;
    expect(outcome.ok ? 'passed' : outcome.error.code).toBe('BS005');
    const { rows } = await f.admin.query(`SELECT count(*)::int AS n FROM pg_attribute WHERE attrelid = 'public.accounts'::regclass AND attname = 'secret' AND NOT attisdropped`);
    expect(rows[0].n).toBe(1);
  });
});

describe('exact before-images with a real agent (careless DBA)', () => {
  let db: TestDatabase;
  let admin: pg.Client;
  let agent: AgentProcess | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    admin = await db.client();
    await admin.query(`UPDATE backstop.settings SET approval_mode = 'operator', allow_self_approval = true`);
    const storageDir = await tempDir('backstop-storage-');
    agent = await startAgent({ db: db.url, storage: storageDir, args: ['--interval', '1h', '--schemas', 'nothing_here'] });
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await db?.drop();
  });

  it('DROP TABLE of a partitioned table and a partition detached during the wait keeps the detached partition\'s rows in an image the request names', async () => {
    await admin.query(`CREATE TABLE public.events (id int, v text) PARTITION BY RANGE (id);
      CREATE TABLE public.events_old PARTITION OF public.events FOR VALUES FROM (0) TO (1000);
      CREATE TABLE public.events_new PARTITION OF public.events FOR VALUES FROM (1000) TO (2000);
      INSERT INTO public.events SELECT i, 'v' || i FROM generate_series(0, 1999, 10) i`);
    const statement = 'DROP TABLE public.events, public.events_old';
    const requester = await db.client();
    const outcome = settle(requester.query(statement));
    const request = await waitForRequest(admin, statement);
    expect((await waitForStatus(admin, request.id, ['awaiting_approval', 'denied', 'expired'])).status).toBe('awaiting_approval');
    // While the approver decides, someone archives the old partition and keeps writing to it.
    await admin.query(`ALTER TABLE public.events DETACH PARTITION public.events_old;
      INSERT INTO public.events_old SELECT i, 'archived later' FROM generate_series(1, 999, 10) i`);
    const { rows: [before] } = await admin.query<{ n: number }>(
      'SELECT (SELECT count(*) FROM public.events) + (SELECT count(*) FROM public.events_old) AS n');
    await admin.query('SELECT backstop.approve($1::bigint)', [request.id]);
    expect(await outcome).toEqual({ ok: true });
    // Both tables are gone; the images the request names must hold every row they held.
    const { rows: [named] } = await admin.query<{ n: number }>(
      `SELECT coalesce(sum((c.manifest->>'row_count')::int), 0)::int AS n
         FROM backstop.requests r JOIN backstop.snapshot_catalog c ON c.snapshot_id = ANY (r.snapshot_ids) WHERE r.id = $1::bigint`,
      [request.id]);
    expect(named!.n).toBe(Number(before!.n));
  });
});

/**
 * Issue 10: an approval covers exactly the statement it was given for — its kind and the objects
 * it resolved to when filed, never text — and every catalog change that destroys committed data
 * is paused or refused, whatever route it takes. Played by a non-superuser table owner (CREATE on
 * the database), against an agent double that resolves requests with the agent's own parser and
 * resolver, and with no agent at all (fail-closed).
 */
import type pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { guardFixture, pgError, tableOwnerSession, requestRows, tableExists, type GuardFixture } from './fixture.js';

describe('an approval covers exactly its statement', () => {
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

  async function count(table: string): Promise<number> {
    return (await f.admin.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n;
  }

  it('an approved DROP COLUMN does not cover a TRUNCATE or DROP TABLE later in the same transaction', async () => {
    await owner.query(`CREATE TABLE accounts (id int PRIMARY KEY, note text); INSERT INTO accounts SELECT i, 'n' FROM generate_series(1, 10) i`);
    await owner.query('BEGIN');
    const altered = owner.query('ALTER TABLE accounts DROP COLUMN note');
    await f.agent.approveNext({ statement: 'DROP COLUMN note' });
    await altered;
    const before = (await requestRows(f.admin)).length;
    const truncated = pgError(owner.query('TRUNCATE accounts'));
    // The TRUNCATE files a request of its own and waits for it.
    await f.agent.denyNext('one destructive statement per approval', { statement: 'TRUNCATE accounts' });
    expect((await truncated).code).toBe('BS002');
    await owner.query('ROLLBACK');
    expect((await requestRows(f.admin)).length).toBe(before + 1);

    // Rolled back, the ALTER's approval is unused: the same statement uses it again.
    await owner.query('BEGIN');
    await owner.query('ALTER TABLE accounts DROP COLUMN note');
    // The table is held exclusively by this transaction now: a DROP cannot get an exact image.
    const dropped = await pgError(owner.query('DROP TABLE accounts'));
    expect(dropped.code).toBe('BS004');
    await owner.query('ROLLBACK');
    expect(await count('accounts')).toBe(10);
  });

  it('an approved TRUNCATE ONLY parent does not cover dropping an inheritance child', async () => {
    await owner.query(`CREATE TABLE parent_t (id int); CREATE TABLE child_t () INHERITS (parent_t);
      INSERT INTO parent_t VALUES (1); INSERT INTO child_t VALUES (2)`);
    await owner.query('BEGIN');
    const truncated = owner.query('TRUNCATE ONLY parent_t');
    await f.agent.approveNext({ statement: 'TRUNCATE ONLY parent_t' });
    await truncated;
    const dropped = pgError(owner.query('DROP TABLE child_t'));
    await f.agent.denyNext('not approved', { statement: 'DROP TABLE child_t' });
    expect((await dropped).code).toBe('BS002');
    await owner.query('ROLLBACK');
    expect(await tableExists(f.admin, 'child_t')).toBe(true);
    expect(await count('child_t')).toBe(1);
  });

  it('a second TRUNCATE in the same transaction needs its own request', async () => {
    await owner.query(`CREATE TABLE twice (id int); INSERT INTO twice VALUES (1)`);
    await owner.query('BEGIN');
    const first = owner.query('TRUNCATE twice');
    await f.agent.approveNext({ statement: 'TRUNCATE twice' });
    await first;
    await owner.query('INSERT INTO twice VALUES (2)');
    const second = pgError(owner.query('TRUNCATE twice'));
    await f.agent.denyNext('asked twice', { statement: 'TRUNCATE twice' });
    expect((await second).code).toBe('BS002');
    await owner.query('ROLLBACK');
    expect(await count('twice')).toBe(1);
  });

  it('a TRUNCATE approved under one search_path does not cover the same text under another', async () => {
    await f.admin.query(`CREATE SCHEMA mallory_s AUTHORIZATION ${f.roles.owner}`);
    await owner.query(`CREATE TABLE mallory_s.ledger2 (id int); CREATE TABLE public.ledger2 (id int); INSERT INTO public.ledger2 VALUES (1), (2)`);
    await owner.query('SET search_path = mallory_s, public');
    const waited = owner.query(`SELECT backstop.wait(backstop.request('TRUNCATE ledger2'), '20 s') AS status`);
    await f.agent.approveNext({ statement: 'TRUNCATE ledger2' });
    expect((await waited).rows[0].status).toBe('approved');
    await owner.query('SET search_path = public');
    const truncated = pgError(owner.query('TRUNCATE ledger2'));
    // Not the approved request: a new one, for public.ledger2.
    await f.agent.denyNext('that is the real ledger', { statement: 'TRUNCATE ledger2' });
    expect((await truncated).code).toBe('BS002');
    expect(await count('public.ledger2')).toBe(2);
  });

  it('a function call inside the approved string cannot truncate a table the request never named', async () => {
    await owner.query(`CREATE TABLE named_t (id int); CREATE TABLE other_t (id int); INSERT INTO other_t VALUES (1);
      CREATE FUNCTION sneaky() RETURNS void LANGUAGE sql AS 'TRUNCATE other_t'`);
    const statement = 'TRUNCATE named_t; SELECT sneaky();';
    const running = pgError(owner.query(statement));
    await f.agent.approveNext({ statement: 'TRUNCATE named_t' });
    // The function's TRUNCATE asks again; the agent resolves the same string: other_t is not in it.
    await f.agent.approveNext({ statement: 'TRUNCATE named_t' });
    const error = await running;
    expect(error.code).toBe('BS005');
    expect(error.message).toMatch(/does not cover truncating public\.other_t/);
    expect(await count('other_t')).toBe(1);
  });

  it('refuses a coverage item for a column that does not name the column (it would cover every column)', async () => {
    await owner.query(`CREATE TABLE wide (id int, a text, b text)`);
    const id = (await owner.query(`SELECT backstop.request('ALTER TABLE wide DROP COLUMN a') AS id`)).rows[0].id;
    await f.agent.claim(id);
    const relid = Number((await f.admin.query(`SELECT 'wide'::regclass::oid::bigint AS relid`)).rows[0].relid);
    for (const item of [{ kind: 'drop column', relid }, { kind: 'alter column type', relid, attnum: null }, { kind: 'drop table', relid, attnum: 2 }]) {
      const error = await pgError(f.agent.client.query('SELECT backstop.agent_set_coverage($1, $2::jsonb)', [id, JSON.stringify([item])]));
      expect({ item, code: error.code }).toEqual({ item, code: 'BS006' });
    }
    await f.agent.setCoverage(id, [{ kind: 'drop column', relid, attnum: 2 }]);
  });

  it('a statement rolled back to a savepoint leaves its approval for the same statement again', async () => {
    await owner.query(`CREATE TABLE saved (id int); INSERT INTO saved VALUES (1)`);
    await owner.query('BEGIN');
    await owner.query('SAVEPOINT s');
    const first = owner.query('DROP TABLE saved');
    const request = await f.agent.approveNext({ statement: 'DROP TABLE saved' });
    await first;
    await owner.query('ROLLBACK TO SAVEPOINT s');
    const before = (await requestRows(f.admin)).length;
    await owner.query('DROP TABLE saved');
    await owner.query('COMMIT');
    expect((await requestRows(f.admin)).length).toBe(before);
    expect((await requestRows(f.admin)).find((row) => row.id === request.id)!.status).toBe('consumed');
    expect(await tableExists(f.admin, 'saved')).toBe(false);
  });
});

describe('catalog changes that destroy data, and lossless ones, with no agent running', () => {
  let f: GuardFixture;
  let owner: pg.Client;

  beforeEach(async () => {
    f = await guardFixture({ roles: { owner: [] } });
    owner = await tableOwnerSession(f);
  });
  afterEach(async () => {
    await f?.close();
  });

  it('refuses ALTER TYPE ... DROP ATTRIBUTE of a composite type stored in a table, naming the column', async () => {
    await owner.query(`CREATE TYPE price_t AS (amount numeric, currency text); CREATE TABLE prod (id int, price price_t);
      INSERT INTO prod VALUES (1, (10, 'EUR'))`);
    const error = await pgError(owner.query('ALTER TYPE price_t DROP ATTRIBUTE currency'));
    expect(error.code).toBe('BS005');
    expect(error.message).toMatch(/public\.prod\.price/);
    // Nested: a composite inside an array inside another composite.
    await owner.query(`CREATE TYPE basket_t AS (items price_t[]); CREATE TABLE baskets (b basket_t)`);
    await owner.query(`DELETE FROM prod`);
    expect((await pgError(owner.query('ALTER TYPE price_t DROP ATTRIBUTE currency'))).message).toMatch(/public\.baskets\.b/);
    expect((await f.admin.query(`SELECT (price).currency FROM prod UNION ALL SELECT 'x'`)).rowCount).toBe(1);
    // Not stored anywhere: free.
    await owner.query(`CREATE TYPE loose_t AS (a int, b int); ALTER TYPE loose_t DROP ATTRIBUTE b`);
  });

  it('gives tables of CREATE SCHEMA ... CREATE TABLE the TRUNCATE guard', async () => {
    await owner.query(`CREATE SCHEMA s1 CREATE TABLE t1 (a int) CREATE TABLE t2 (b int)`);
    await owner.query(`INSERT INTO s1.t1 VALUES (1)`);
    const error = await pgError(owner.query('TRUNCATE s1.t1'));
    expect(error.code).toBe('BS001');
    const { rows } = await f.admin.query(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = 'backstop_truncate_guard' AND tgrelid IN ('s1.t1'::regclass, 's1.t2'::regclass) AND tgenabled = 'A'`);
    expect(rows[0].n).toBe(2);
  });

  it('lets lossless column type changes through without an agent, and pauses lossy ones', async () => {
    await owner.query(`CREATE TABLE widths (id int, v varchar(10), n numeric(10,2), ts timestamp(3), c varchar(10), u text);
      INSERT INTO widths VALUES (1, 'abc', 1.25, now(), 'c', 'u')`);
    for (const change of [
      'ALTER COLUMN v TYPE varchar(20)',
      'ALTER COLUMN v SET DATA TYPE varchar(20)',
      'ALTER COLUMN v TYPE character varying',
      'ALTER COLUMN n TYPE numeric(12, 2)',
      'ALTER COLUMN n TYPE numeric',
      'ALTER COLUMN ts TYPE timestamp(6)',
      'ALTER COLUMN c TYPE text',
      'ALTER COLUMN u TYPE text COLLATE "C"',
      'ALTER id TYPE integer',
    ]) {
      await owner.query(`ALTER TABLE widths ${change}`);
    }
    for (const change of [
      'ALTER COLUMN v TYPE varchar(2)',
      'ALTER COLUMN id TYPE bigint',
      'ALTER COLUMN u TYPE varchar(3)',
      'ALTER COLUMN u TYPE text USING upper(u)',
      'ALTER COLUMN n TYPE numeric(12, 1)',
      'ALTER COLUMN id TYPE int, ALTER COLUMN v TYPE varchar(1)',
    ]) {
      const error = await pgError(owner.query(`ALTER TABLE widths ${change}`));
      expect({ change, code: error.code }).toEqual({ change, code: 'BS001' });
    }
    expect((await f.admin.query(`SELECT u, v FROM widths`)).rows).toEqual([{ u: 'u', v: 'abc' }]);
  });

  it('lets a transaction drop a column it added itself, and pauses dropping one that was committed', async () => {
    await owner.query(`CREATE TABLE cols (id int, kept text); INSERT INTO cols VALUES (1, 'k')`);
    await owner.query('BEGIN');
    await owner.query('ALTER TABLE cols ADD COLUMN scratch int');
    await owner.query('UPDATE cols SET scratch = 1');
    await owner.query('ALTER TABLE cols DROP COLUMN scratch');
    await owner.query('COMMIT');
    expect((await pgError(owner.query('ALTER TABLE cols DROP COLUMN kept'))).code).toBe('BS001');
    // A column added and committed earlier is committed data.
    await owner.query('ALTER TABLE cols ADD COLUMN later int');
    expect((await pgError(owner.query('ALTER TABLE cols DROP COLUMN later'))).code).toBe('BS001');
  });

  it('refuses a table owner every way of removing or disarming the guard', async () => {
    await owner.query(`CREATE TABLE armed (id int); INSERT INTO armed VALUES (1)`);
    for (const sql of [
      'DROP TRIGGER backstop_truncate_guard ON armed',
      'ALTER TABLE armed DISABLE TRIGGER ALL',
      'ALTER TABLE armed DISABLE TRIGGER backstop_truncate_guard',
      'ALTER TABLE armed ENABLE REPLICA TRIGGER backstop_truncate_guard',
      'ALTER TRIGGER backstop_truncate_guard ON armed RENAME TO gone',
      'ALTER EVENT TRIGGER backstop_guard_dropped DISABLE',
      'DROP EVENT TRIGGER backstop_guard_statement',
      `CREATE OR REPLACE FUNCTION backstop.guard_truncate() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'`,
      'DROP SCHEMA backstop CASCADE',
      'DROP EXTENSION dblink',
      `UPDATE backstop.request_log SET status = 'approved'`,
      'SET session_replication_role = replica; TRUNCATE armed',
    ]) {
      const error = await pgError(owner.query(sql));
      expect({ sql, refused: Boolean(error.code) }).toEqual({ sql, refused: true });
    }
    expect((await f.admin.query('SELECT count(*)::int AS n FROM armed')).rows[0].n).toBe(1);
  });
});

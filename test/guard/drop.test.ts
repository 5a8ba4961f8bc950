import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardFixture, pgError, requestRows, tableExists, type GuardFixture } from './fixture.js';

describe('DROP TABLE / DROP SCHEMA guard', () => {
  let f: GuardFixture;
  beforeAll(async () => {
    f = await guardFixture();
  });
  afterAll(async () => {
    await f?.close();
  });

  it('refuses at once when no agent is running, says so, and leaves the table and no request', async () => {
    await f.admin.query(`CREATE TABLE no_agent (id int); INSERT INTO no_agent VALUES (1)`);
    // A long wait_timeout: the refusal must not wait for it.
    await f.admin.query(`UPDATE backstop.settings SET wait_timeout = '10 min'`);
    try {
      const session = await f.session();
      const error = await pgError(session.query('DROP TABLE no_agent'));
      expect(error.code).toBe('BS001');
      expect(error.message).toMatch(/Backstop refused DROP TABLE: the Backstop agent is not running/);
      expect(error.hint).toMatch(/backstop agent/);
      expect(error.hint).toMatch(/backstop\.agents/);
    } finally {
      await f.admin.query(`UPDATE backstop.settings SET wait_timeout = '20 s'`);
    }
    expect(await tableExists(f.admin, 'no_agent')).toBe(true);
    expect((await f.admin.query('SELECT count(*)::int AS n FROM no_agent')).rows[0].n).toBe(1);
    expect(await requestRows(f.admin)).toEqual([]);
  });

  it('treats a stale heartbeat like no agent', async () => {
    await f.agent.heartbeat();
    await f.admin.query(`UPDATE backstop.agent_heartbeats SET last_seen = now() - interval '1 hour'`);
    const session = await f.session();
    const error = await pgError(session.query('DROP TABLE no_agent'));
    expect(error.code).toBe('BS001');
    expect(await tableExists(f.admin, 'no_agent')).toBe(true);
  });

  it('pauses DROP TABLE until the agent approves, then drops and marks the request consumed', async () => {
    await f.agent.heartbeat();
    await f.admin.query(`CREATE TABLE users (id int); INSERT INTO users VALUES (1), (2)`);
    const session = await f.session();
    const drop = session.query('DROP TABLE users;');
    const request = await f.agent.waitForRequest({ statement: 'DROP TABLE users' });
    expect(request.command_tag).toBe('DROP TABLE');
    expect(request.search_path).toMatch(/public/);
    // Still there while the request is pending.
    expect(await tableExists(f.admin, 'users')).toBe(true);
    await f.agent.claim(request.id);
    await f.agent.setTargets(request.id, ['public.users']);
    expect(await f.agent.decide(request.id, 'approved', 'captured', ['s-1'])).toBe('approved');
    await drop;
    expect(await tableExists(f.admin, 'users')).toBe(false);
    const row = (await requestRows(f.admin)).find((r) => r.id === request.id)!;
    expect(row.status).toBe('consumed');
    expect(row.targets).toEqual(['public.users']);
  });

  it('fails the waiting DROP with the reason when the agent denies', async () => {
    await f.admin.query(`CREATE TABLE orders (id int)`);
    const session = await f.session();
    const drop = pgError(session.query('DROP TABLE orders'));
    await f.agent.denyNext('storage is unreachable: no before-image', { statement: 'DROP TABLE orders' });
    const error = await drop;
    expect(error.code).toBe('BS002');
    expect(error.message).toMatch(/was denied: storage is unreachable: no before-image/);
    expect(error.hint).toMatch(/backstop\.requests/);
    expect(await tableExists(f.admin, 'orders')).toBe(true);
  });

  it('refuses a drop the approval does not cover (approved without targets)', async () => {
    const session = await f.session();
    const drop = pgError(session.query('DROP TABLE orders'));
    await f.agent.approveNext({ statement: 'DROP TABLE orders', coverage: [] });
    const error = await drop;
    expect(error.code).toBe('BS005');
    expect(error.message).toMatch(/table public\.orders would be dropped without an approved request covering it/);
    expect(await tableExists(f.admin, 'orders')).toBe(true);
  });

  it('refuses DROP SCHEMA ... CASCADE that reaches a table the approval does not cover, naming it', async () => {
    await f.admin.query(`CREATE SCHEMA shop; CREATE TABLE shop.carts (id int); CREATE TABLE shop.items (id int)`);
    const session = await f.session();
    const drop = pgError(session.query('DROP SCHEMA shop CASCADE'));
    await f.agent.approveNext({ statement: 'DROP SCHEMA shop', targets: ['shop.carts'] });
    const error = await drop;
    expect(error.code).toBe('BS005');
    expect(error.message).toMatch(/shop\.items/);
    expect(await tableExists(f.admin, 'shop.carts')).toBe(true);
    expect(await tableExists(f.admin, 'shop.items')).toBe(true);
  });

  it('drops a schema once every table in it is covered', async () => {
    const session = await f.session();
    const drop = session.query('DROP SCHEMA shop CASCADE');
    await f.agent.approveNext({ statement: 'DROP SCHEMA shop', targets: ['shop.carts', 'shop.items'] });
    await drop;
    expect((await f.admin.query(`SELECT to_regnamespace('shop') AS ns`)).rows[0].ns).toBeNull();
  });

  it('lets DROP SCHEMA of a schema without tables, temp tables and everything else pass with no request', async () => {
    const before = (await requestRows(f.admin)).length;
    const session = await f.session();
    await session.query(`CREATE SCHEMA empty_one; CREATE VIEW empty_one.v AS SELECT 1 AS x; DROP SCHEMA empty_one CASCADE`);
    await session.query(`CREATE TEMP TABLE scratch (id int); DROP TABLE scratch`);
    await session.query(`DROP TABLE IF EXISTS does_not_exist`);
    await session.query(`CREATE TABLE keep (id int); CREATE INDEX keep_idx ON keep (id); DROP INDEX keep_idx; ALTER TABLE keep ADD COLUMN note text`);
    expect((await requestRows(f.admin)).length).toBe(before);
  });

  it('refuses a DROP hidden from the statement text (inside DO) instead of letting it through', async () => {
    await f.admin.query(`CREATE TABLE hidden (id int)`);
    const session = await f.session();
    const error = await pgError(session.query(`DO $$ BEGIN EXECUTE 'DROP TABLE hidden'; END $$`));
    expect(error.code).toBe('BS005');
    expect(error.message).toMatch(/public\.hidden/);
    expect(await tableExists(f.admin, 'hidden')).toBe(true);
  });

  it('refuses a column lost through DROP TYPE ... CASCADE', async () => {
    await f.admin.query(`CREATE TYPE mood AS ENUM ('ok'); CREATE TABLE moods (id int, m mood)`);
    const session = await f.session();
    const error = await pgError(session.query('DROP TYPE mood CASCADE'));
    expect(error.code).toBe('BS005');
    expect(error.message).toMatch(/table column public\.moods\.m/);
  });

  it('asks once for several DROPs in one client string', async () => {
    await f.admin.query(`CREATE TABLE a1 (id int); CREATE TABLE a2 (id int)`);
    const before = (await requestRows(f.admin)).length;
    const session = await f.session();
    const drop = session.query('DROP TABLE a1; DROP TABLE a2;');
    await f.agent.approveNext({ statement: 'DROP TABLE a1', targets: ['a1', 'a2'] });
    await drop;
    expect(await tableExists(f.admin, 'a1')).toBe(false);
    expect(await tableExists(f.admin, 'a2')).toBe(false);
    expect((await requestRows(f.admin)).length).toBe(before + 1);
  });

  it('refuses inside a transaction that already locked the table, even with a request filed ahead: its image could not be completed', async () => {
    await f.admin.query(`CREATE TABLE locked_early (id int)`);
    const session = await f.session();
    await session.query('BEGIN');
    await session.query('ALTER TABLE locked_early ADD COLUMN note text');
    const error = await pgError(session.query('DROP TABLE locked_early'));
    await session.query('ROLLBACK');
    expect(error.code).toBe('BS004');
    expect(error.message).toMatch(/already locks public\.locked_early exclusively/);
    expect(error.hint).toMatch(/transaction of its own/);

    const other = await f.session();
    const waited = other.query(`SELECT backstop.wait(backstop.request($$DROP TABLE locked_early$$), '20 s') AS status`);
    await f.agent.approveNext({ statement: 'DROP TABLE locked_early', targets: ['locked_early'] });
    expect((await waited).rows[0].status).toBe('approved');
    await session.query('BEGIN');
    await session.query('ALTER TABLE locked_early ADD COLUMN note text');
    const again = await pgError(session.query('DROP TABLE locked_early'));
    await session.query('ROLLBACK');
    expect(again.code).toBe('BS004');
    // In a transaction of its own, the request filed ahead is used.
    await session.query('DROP TABLE locked_early');
    expect(await tableExists(f.admin, 'locked_early')).toBe(false);
  });

  it('covers the partitions of a dropped partitioned table', async () => {
    await f.admin.query(`CREATE TABLE events (at int) PARTITION BY RANGE (at);
                         CREATE TABLE events_0 PARTITION OF events FOR VALUES FROM (0) TO (10)`);
    const session = await f.session();
    const drop = session.query('DROP TABLE events');
    await f.agent.approveNext({ statement: 'DROP TABLE events', targets: ['events'] });
    await drop;
    expect(await tableExists(f.admin, 'events_0')).toBe(false);
  });
});

describe('tables created by the same transaction', () => {
  let f: GuardFixture;
  beforeAll(async () => {
    f = await guardFixture();
  });
  afterAll(async () => {
    await f?.close();
  });

  it('need no approval (and no agent) to be altered, truncated or dropped before commit', async () => {
    await f.admin.query(`CREATE TABLE existing (id int)`);
    const session = await f.session();
    await session.query('BEGIN');
    await session.query(`CREATE TABLE work (id int, v text); INSERT INTO work VALUES (1, '1')`);
    await session.query(`ALTER TABLE work ALTER COLUMN v TYPE int USING v::int`);
    await session.query(`ALTER TABLE work DROP COLUMN v`);
    await session.query(`TRUNCATE work`);
    await session.query(`DROP TABLE work`);
    await session.query(`CREATE SCHEMA scratch_space; CREATE TABLE scratch_space.t (id int); DROP SCHEMA scratch_space CASCADE`);
    // A table that existed before is still guarded in the same transaction (no agent: refused).
    const error = await pgError(session.query('DROP TABLE existing'));
    expect(error.code).toBe('BS001');
    await session.query('ROLLBACK');
    expect(await requestRows(f.admin)).toEqual([]);
    // Once committed, the table is guarded like any other.
    await session.query(`CREATE TABLE committed_work (id int)`);
    expect((await pgError(session.query('DROP TABLE committed_work'))).code).toBe('BS001');
    expect((await pgError(session.query('TRUNCATE committed_work'))).code).toBe('BS001');
  });
});

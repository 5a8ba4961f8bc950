import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardFixture, pgError, requestRows, tableExists, type GuardFixture } from './fixture.js';

describe('guarded statements in unusual sessions', () => {
  let f: GuardFixture;
  beforeAll(async () => {
    f = await guardFixture();
    await f.agent.heartbeat();
  });
  afterAll(async () => {
    await f?.close();
  });

  it('works in a REPEATABLE READ transaction whose snapshot predates the request and the decision; a TRUNCATE there is refused', async () => {
    await f.admin.query(`CREATE TABLE rr_drop (id int); CREATE TABLE rr_trunc (id int); INSERT INTO rr_trunc VALUES (1)`);
    const session = await f.session();
    await session.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await session.query('SELECT count(*) FROM rr_trunc');
    const drop = session.query('DROP TABLE rr_drop');
    await f.agent.approveNext({ statement: 'DROP TABLE rr_drop', targets: ['rr_drop'] });
    await drop;
    await session.query('SAVEPOINT before_truncate');
    // Its in-session copy would be read with the transaction's old snapshot.
    const refused = await pgError(session.query('TRUNCATE rr_trunc'));
    expect(refused.code).toBe('BS004');
    await session.query('ROLLBACK TO SAVEPOINT before_truncate');
    await session.query('COMMIT');
    expect(await tableExists(f.admin, 'rr_drop')).toBe(false);
    const statuses = (await requestRows(f.admin)).filter((r) => r.statement.includes('rr_')).map((r) => r.status);
    expect(statuses).toEqual(['consumed']);
  });

  it('works under SERIALIZABLE too', async () => {
    await f.admin.query(`CREATE TABLE ser_drop (id int)`);
    const session = await f.session();
    await session.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
    await session.query('SELECT 1');
    const drop = session.query('DROP TABLE ser_drop');
    await f.agent.approveNext({ statement: 'DROP TABLE ser_drop', targets: ['ser_drop'] });
    await drop;
    await session.query('COMMIT');
    expect(await tableExists(f.admin, 'ser_drop')).toBe(false);
  });

  it('statement_timeout ends a wait cleanly: the statement fails, the request expires, the session goes on', async () => {
    await f.admin.query(`CREATE TABLE slow (id int)`);
    const session = await f.session();
    await session.query(`SET statement_timeout = '1s'`);
    const error = await pgError(session.query('DROP TABLE slow'));
    expect(error.code).toBe('57014');
    expect(await tableExists(f.admin, 'slow')).toBe(true);
    const request = (await requestRows(f.admin)).find((r) => r.statement === 'DROP TABLE slow')!;
    expect(request.status).toBe('expired');
    expect(request.reason).toMatch(/cancelled/);
    await session.query(`RESET statement_timeout`);
    expect((await session.query('SELECT 1 AS ok')).rows[0].ok).toBe(1);
  });

  it('pg_cancel_backend ends a wait cleanly', async () => {
    const session = await f.session();
    const pid = (await session.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const drop = pgError(session.query('DROP TABLE slow'));
    await f.agent.waitForRequest({ statement: 'DROP TABLE slow' });
    await f.admin.query('SELECT pg_cancel_backend($1)', [pid]);
    expect((await drop).code).toBe('57014');
    expect(await tableExists(f.admin, 'slow')).toBe(true);
  });

  it('a wait that reaches wait_timeout expires the request and says so', async () => {
    await f.admin.query(`UPDATE backstop.settings SET wait_timeout = '1 s'`);
    try {
      const session = await f.session();
      const error = await pgError(session.query('DROP TABLE  slow'));
      expect(error.code).toBe('BS003');
      expect(error.message).toMatch(/was not approved \(expired\): no decision within 1 s/);
    } finally {
      await f.admin.query(`UPDATE backstop.settings SET wait_timeout = '20 s'`);
    }
    expect(await tableExists(f.admin, 'slow')).toBe(true);
  });

  it('says what to do when the loopback connection cannot be opened', async () => {
    await f.admin.query(`UPDATE backstop.settings SET loopback_conninfo = 'host=127.0.0.1 port=1 dbname=nowhere connect_timeout=2'`);
    try {
      const session = await f.session();
      const error = await pgError(session.query('DROP TABLE slow'));
      expect(error.code).toBe('BS004');
      expect(error.message).toMatch(/could not open its loopback connection/);
      expect(error.hint).toMatch(/loopback_conninfo/);
    } finally {
      await f.admin.query(`UPDATE backstop.settings SET loopback_conninfo = NULL`);
    }
    expect(await tableExists(f.admin, 'slow')).toBe(true);
  });

  it('session_replication_role = replica does not switch the guard off', async () => {
    await f.admin.query(`CREATE TABLE replica_t (id int); INSERT INTO replica_t VALUES (1)`);
    const session = await f.session();
    await session.query(`SET session_replication_role = replica`);
    const drop = pgError(session.query('DROP TABLE replica_t'));
    await f.agent.denyNext('replica test', { statement: 'DROP TABLE replica_t' });
    expect((await drop).code).toBe('BS002');
    const truncate = pgError(session.query('TRUNCATE replica_t'));
    await f.agent.denyNext('replica test', { statement: 'TRUNCATE replica_t' });
    expect((await truncate).code).toBe('BS002');
    await session.query(`CREATE TABLE replica_new (id int)`);
    const { rows } = await f.admin.query(`SELECT tgenabled FROM pg_trigger WHERE tgrelid = 'replica_new'::regclass`);
    expect(rows).toEqual([{ tgenabled: 'A' }]);
    expect((await f.admin.query('SELECT count(*)::int AS n FROM replica_t')).rows[0].n).toBe(1);
  });

  it('handles quoted, mixed-case and unicode schema and table names', async () => {
    const schema = 'Ünïcödé "Schéma"';
    const table = 'Tâble Ñame';
    const qualified = `"Ünïcödé ""Schéma"""."Tâble Ñame"`;
    await f.admin.query(`CREATE SCHEMA "Ünïcödé ""Schéma"""; CREATE TABLE ${qualified} (id int); INSERT INTO ${qualified} VALUES (1), (2)`);
    const session = await f.session();

    const truncate = session.query(`TRUNCATE ${qualified}`);
    const truncated = await f.agent.approveNext({ statement: 'TRUNCATE' });
    await truncate;
    const { rows: images } = await f.admin.query(`SELECT schema_name, table_name, row_count::int FROM backstop.truncate_images WHERE request_id = $1`, [truncated.id]);
    expect(images).toEqual([{ schema_name: schema, table_name: table, row_count: 2 }]);

    // Unqualified, resolved with the caller's search_path.
    await session.query(`SET search_path = "Ünïcödé ""Schéma""", public`);
    const drop = session.query(`DROP TABLE "Tâble Ñame"`);
    const request = await f.agent.waitForRequest({ statement: 'DROP TABLE "Tâble Ñame"' });
    expect(request.search_path).toBe('"Ünïcödé ""Schéma""", public');
    await f.agent.claim(request.id);
    await f.agent.setTargets(request.id, [qualified]);
    await f.agent.decide(request.id, 'approved');
    await drop;
    expect(await tableExists(f.admin, qualified)).toBe(false);
    expect((await requestRows(f.admin)).find((r) => r.id === request.id)!.targets).toEqual([qualified]);
  });
});

describe('dblink installed in another schema', () => {
  let f: GuardFixture;
  beforeAll(async () => {
    f = await guardFixture();
    await f.agent.heartbeat();
    await f.admin.query(`DROP EXTENSION dblink; CREATE SCHEMA tools; CREATE EXTENSION dblink SCHEMA tools`);
  });
  afterAll(async () => {
    await f?.close();
  });

  it('is used where it is, and the superuser loopback is not left open in the session', async () => {
    await f.admin.query(`CREATE TABLE elsewhere (id int)`);
    const session = await f.session();
    const drop = session.query('DROP TABLE elsewhere');
    await f.agent.approveNext({ statement: 'DROP TABLE elsewhere', targets: ['elsewhere'] });
    await drop;
    expect(await tableExists(f.admin, 'elsewhere')).toBe(false);
    const { rows } = await session.query('SELECT tools.dblink_get_connections() AS open');
    expect(rows[0].open).toBeNull();
  });
});

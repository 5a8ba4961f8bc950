import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardFixture, pgError, requestRows, type GuardFixture } from './fixture.js';

async function count(f: GuardFixture, table: string): Promise<number> {
  return (await f.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).rows[0]!.n;
}

async function images(f: GuardFixture, requestId: string) {
  const { rows } = await f.admin.query<{ schema_name: string; table_name: string; image_table: string; row_count: string }>(
    `SELECT schema_name, table_name, image_table, row_count::text FROM backstop.truncate_images
      WHERE request_id = $1 ORDER BY table_name`,
    [requestId],
  );
  return rows;
}

describe('TRUNCATE guard', () => {
  let f: GuardFixture;
  beforeAll(async () => {
    f = await guardFixture();
    await f.admin.query(`CREATE TABLE customers (id int PRIMARY KEY, name text);
                         CREATE TABLE invoices (id int, customer_id int REFERENCES customers);
                         INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 50) g;
                         INSERT INTO invoices SELECT g, 1 + g % 50 FROM generate_series(1, 120) g;`);
  });
  afterAll(async () => {
    await f?.close();
  });

  it('refuses TRUNCATE at once without an agent', async () => {
    const session = await f.session();
    const error = await pgError(session.query('TRUNCATE invoices'));
    expect(error.code).toBe('BS001');
    expect(await count(f, 'invoices')).toBe(120);
  });

  it('TRUNCATE ... CASCADE waits, then keeps an in-session before-image of every table it empties', async () => {
    await f.agent.heartbeat();
    const session = await f.session();
    const truncate = session.query('TRUNCATE customers CASCADE');
    const request = await f.agent.approveNext({ statement: 'TRUNCATE customers' });
    expect(request.command_tag).toBe('TRUNCATE TABLE');
    await truncate;
    expect(await count(f, 'customers')).toBe(0);
    expect(await count(f, 'invoices')).toBe(0);
    const taken = await images(f, request.id);
    expect(taken.map((i) => [i.table_name, i.row_count])).toEqual([['customers', '50'], ['invoices', '120']]);
    for (const image of taken) {
      expect(await count(f, `backstop_images.${image.image_table}`)).toBe(Number(image.row_count));
    }
    // The agent (a backstop_agent member) can read the image to export it, then drop it.
    const { rows } = await f.agent.client.query(`SELECT count(*)::int AS n FROM backstop_images.${taken[0]!.image_table}`);
    expect(rows[0].n).toBe(50);
    await f.agent.client.query(`SELECT backstop.agent_drop_truncate_image($1, $2::regclass)`, [request.id, 'customers']);
    expect((await images(f, request.id)).map((i) => i.table_name)).toEqual(['invoices']);
    expect((await requestRows(f.admin)).find((r) => r.id === request.id)!.status).toBe('consumed');
  });

  it('a denied TRUNCATE leaves the rows and no image', async () => {
    await f.admin.query(`INSERT INTO customers VALUES (1, 'back')`);
    const session = await f.session();
    const truncate = pgError(session.query('TRUNCATE customers CASCADE'));
    const request = await f.agent.denyNext('gate failed: snapshot too old', { statement: 'TRUNCATE customers' });
    const error = await truncate;
    expect(error.message).toMatch(/gate failed: snapshot too old/);
    expect(await count(f, 'customers')).toBe(1);
    expect(await images(f, request.id)).toEqual([]);
  });

  it('guards a partitioned table and each partition', async () => {
    await f.admin.query(`CREATE TABLE metrics (at int, v int) PARTITION BY RANGE (at);
                         CREATE TABLE metrics_a PARTITION OF metrics FOR VALUES FROM (0) TO (100);
                         CREATE TABLE metrics_b PARTITION OF metrics FOR VALUES FROM (100) TO (200);
                         INSERT INTO metrics SELECT g, g FROM generate_series(0, 199) g;`);
    const session = await f.session();
    const truncate = session.query('TRUNCATE metrics');
    const request = await f.agent.approveNext({ statement: 'TRUNCATE metrics' });
    await truncate;
    expect(await count(f, 'metrics')).toBe(0);
    expect((await images(f, request.id)).map((i) => [i.table_name, i.row_count])).toEqual([['metrics_a', '100'], ['metrics_b', '100']]);

    await f.admin.query(`INSERT INTO metrics VALUES (1, 1)`);
    const direct = pgError(session.query('TRUNCATE metrics_a'));
    await f.agent.denyNext('no', { statement: 'TRUNCATE metrics_a' });
    expect((await direct).code).toBe('BS002');
    expect(await count(f, 'metrics')).toBe(1);
  });

  it('guards tables created after install: CREATE TABLE, CREATE TABLE AS, SELECT INTO, partitions', async () => {
    const session = await f.session();
    await session.query(`CREATE TABLE later (id int); INSERT INTO later VALUES (1);
                         CREATE TABLE later_copy AS SELECT * FROM later;
                         SELECT * INTO later_into FROM later;
                         CREATE UNLOGGED TABLE later_unlogged (id int);
                         CREATE TEMP TABLE later_temp (id int);
                         CREATE TABLE metrics_c PARTITION OF metrics FOR VALUES FROM (200) TO (300);`);
    const { rows } = await f.admin.query<{ table: string; enabled: string }>(
      `SELECT c.relname AS table, t.tgenabled AS enabled FROM pg_class c
         LEFT JOIN pg_trigger t ON t.tgrelid = c.oid AND t.tgname = 'backstop_truncate_guard'
        WHERE c.relname LIKE 'later%' OR c.relname = 'metrics_c' ORDER BY c.relname`,
    );
    expect(rows).toEqual([
      { table: 'later', enabled: 'A' },
      { table: 'later_copy', enabled: 'A' },
      { table: 'later_into', enabled: 'A' },
      { table: 'later_temp', enabled: null },
      { table: 'later_unlogged', enabled: 'A' },
      { table: 'metrics_c', enabled: 'A' },
    ]);
    const truncate = pgError(session.query('TRUNCATE later_copy'));
    await f.agent.denyNext('keep it', { statement: 'TRUNCATE later_copy' });
    expect((await truncate).code).toBe('BS002');
    expect(await count(f, 'later_copy')).toBe(1);
    await session.query('TRUNCATE later_temp');
  });

  it('a TRUNCATE that rolls back leaves the approval unused, and the same statement reuses it', async () => {
    await f.admin.query(`CREATE TABLE retry (id int); INSERT INTO retry VALUES (1), (2)`);
    const session = await f.session();
    await session.query('BEGIN');
    const truncate = session.query('TRUNCATE retry');
    const request = await f.agent.approveNext({ statement: 'TRUNCATE retry' });
    await truncate;
    await session.query('ROLLBACK');
    expect(await count(f, 'retry')).toBe(2);
    expect((await requestRows(f.admin)).find((r) => r.id === request.id)!.status).toBe('approved');
    expect(await images(f, request.id)).toEqual([]);
    await session.query('TRUNCATE retry');
    expect(await count(f, 'retry')).toBe(0);
    expect((await requestRows(f.admin)).find((r) => r.id === request.id)!.status).toBe('consumed');
    expect((await images(f, request.id)).map((i) => i.row_count)).toEqual(['2']);
  });
});

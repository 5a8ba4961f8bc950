/**
 * A real node-pg-migrate migration containing a DROP, run with node-pg-migrate's own runner
 * against the test database: it pauses, and completes once approved from another connection,
 * or fails cleanly with the reason when denied (nothing of the migration stays behind).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runner } from 'node-pg-migrate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardFixture, pgError, tableExists, type GuardFixture } from './fixture.js';

const MIGRATION = `
exports.up = (pgm) => {
  pgm.createTable('customers_v2', { id: 'integer', name: 'text' });
  pgm.sql('INSERT INTO customers_v2 SELECT id, name FROM customers_v1');
  pgm.dropTable('customers_v1');
};
`;

describe('a node-pg-migrate migration that drops a table', () => {
  let f: GuardFixture;
  let dir: string;
  beforeAll(async () => {
    f = await guardFixture();
    await f.agent.heartbeat();
    await f.admin.query(`CREATE TABLE customers_v1 (id int, name text); INSERT INTO customers_v1 VALUES (1, 'ada'), (2, 'grace')`);
    dir = await mkdtemp(path.join(os.tmpdir(), 'backstop-migration-'));
    await writeFile(path.join(dir, '1700000000000_replace-customers.js'), MIGRATION);
  });
  afterAll(async () => {
    await f?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** node-pg-migrate releases its advisory lock after reporting a failure: wait for that. */
  async function lockReleased(): Promise<void> {
    for (let attempt = 0; attempt < 300; attempt += 1) {
      const { rows } = await f.admin.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
      );
      if (rows[0]!.n === 0) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error('node-pg-migrate kept its advisory lock');
  }

  function migrate() {
    return runner({
      databaseUrl: f.db.url,
      dir,
      direction: 'up',
      migrationsTable: 'pgmigrations',
      log: () => {},
      noLock: false,
    });
  }

  async function applied(): Promise<string[]> {
    const { rows } = await f.admin.query<{ name: string }>(`SELECT name FROM pgmigrations ORDER BY id`).catch(() => ({ rows: [] as Array<{ name: string }> }));
    return rows.map((row) => row.name);
  }

  it('fails cleanly with the reason when denied: nothing half-applied', async () => {
    const run = pgError(migrate());
    const request = await f.agent.denyNext('no verified snapshot of public.customers_v1', { statement: 'DROP TABLE "customers_v1"' });
    expect(request.statement).toMatch(/DROP TABLE "customers_v1"/);
    const error = await run;
    expect(error.message).toMatch(/denied: no verified snapshot of public\.customers_v1/);
    expect(await tableExists(f.admin, 'customers_v2')).toBe(false);
    expect(await tableExists(f.admin, 'customers_v1')).toBe(true);
    expect((await f.admin.query('SELECT count(*)::int AS n FROM customers_v1')).rows[0].n).toBe(2);
    expect(await applied()).toEqual([]);
  });

  it('pauses, and completes once approved from another connection', async () => {
    await lockReleased();
    const run = migrate();
    const request = await f.agent.waitForRequest({ statement: 'DROP TABLE "customers_v1"' });
    // Paused inside the migration's transaction: nothing visible yet.
    expect(await tableExists(f.admin, 'customers_v2')).toBe(false);
    await f.agent.claim(request.id);
    await f.agent.setTargets(request.id, ['public.customers_v1']);
    await f.agent.decide(request.id, 'approved', 'before-image captured');
    await run;
    expect(await tableExists(f.admin, 'customers_v1')).toBe(false);
    expect((await f.admin.query('SELECT count(*)::int AS n FROM customers_v2')).rows[0].n).toBe(2);
    expect(await applied()).toEqual(['1700000000000_replace-customers']);
    const { rows } = await f.admin.query('SELECT status FROM backstop.requests WHERE id = $1', [request.id]);
    expect(rows[0].status).toBe('consumed');
  });
});

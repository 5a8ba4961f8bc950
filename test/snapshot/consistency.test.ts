/**
 * A group capture reads every table in one database snapshot: rows committed after it began are
 * absent from every file. Also: joining a snapshot exported by another session.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveDatabase } from '../../src/db/connection.js';
import { captureGroup } from '../../src/snapshot/capture.js';
import { openStorage } from '../../src/storage/open.js';
import type { Storage } from '../../src/storage/storage.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { downloadDataFile, duckdbQuery } from './parquet-files.js';

let db: TestDatabase;
let client: pg.Client;
let folder: string;
let storage: Storage;

async function parquetCount(manifestStorage: Storage, manifest: Parameters<typeof downloadDataFile>[1]): Promise<number> {
  const [row] = await duckdbQuery(await downloadDataFile(manifestStorage, manifest), 'SELECT count(*)::INTEGER AS n FROM p');
  return Number(row!.n);
}

async function waitFor(check: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 600; i += 1) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  db = await createTestDatabase();
  client = await db.client();
  folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-group-'));
  storage = openStorage(folder);
  await client.query(`
    CREATE TABLE customers (id int PRIMARY KEY, name text);
    CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, total numeric(10,2));
    INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 100) g;
    INSERT INTO orders SELECT g, 1 + g % 100, g FROM generate_series(1, 500) g;
  `);
});

afterAll(async () => {
  await db?.drop();
  if (folder) await rm(folder, { recursive: true, force: true });
});

describe('group capture', () => {
  it('leaves out rows committed after the snapshot began, in every table', async () => {
    const blocker = await db.client();
    const writer = await db.client();
    // Hold orders locked so the capture is certainly inside its snapshot, waiting, when we write.
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE orders IN ACCESS EXCLUSIVE MODE');
    const pool = new pg.Pool({ connectionString: db.url, max: 4 });
    try {
      const capture = captureGroup({ database: pool, storage, group: 'shop', tables: [{ table: { schema: 'public', table: 'customers' } }, { table: { schema: 'public', table: 'orders' } }], concurrency: 2 });
      await waitFor(async () => {
        const { rows } = await writer.query(`SELECT count(*)::int AS n FROM pg_locks WHERE relation = 'orders'::regclass AND NOT granted`);
        return rows[0].n > 0;
      }, 'the capture to wait for the lock on orders');
      await writer.query(`INSERT INTO customers VALUES (101, 'late')`);
      await blocker.query(`INSERT INTO orders VALUES (501, 101, 1)`);
      await blocker.query('COMMIT');
      const manifests = await capture;
      const byTable = Object.fromEntries(manifests.map((m) => [m.table, m]));
      expect(byTable.customers!.row_count).toBe(100);
      expect(byTable.orders!.row_count).toBe(500);
      expect(await parquetCount(storage, byTable.customers!)).toBe(100);
      expect(await parquetCount(storage, byTable.orders!)).toBe(500);
      const groups = manifests.map((m) => m.group);
      expect(groups[0]).toEqual({ name: 'shop', id: expect.stringMatching(/^g[0-9a-f]{12}$/), tables: [{ schema: 'public', table: 'customers' }, { schema: 'public', table: 'orders' }] });
      expect(groups[1]).toEqual(groups[0]);
      expect(manifests[0]!.created_at).toBe(manifests[1]!.created_at);
    } finally {
      await blocker.query('ROLLBACK').catch(() => {});
      await pool.end();
    }
  });

  it('joins a snapshot exported by another session', async () => {
    const exporter = await db.client();
    await exporter.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    const { rows } = await exporter.query<{ id: string }>('SELECT pg_export_snapshot() AS id');
    const { rows: before } = await client.query<{ c: number; o: number }>(`SELECT (SELECT count(*) FROM customers)::int AS c, (SELECT count(*) FROM orders)::int AS o`);
    await client.query(`INSERT INTO customers VALUES (202, 'after export'); INSERT INTO orders VALUES (602, 202, 5)`);
    try {
      const manifests = await captureGroup({
        database: resolveDatabase(db.url),
        storage,
        group: 'exported',
        snapshot: rows[0]!.id,
        tables: [{ table: { schema: 'public', table: 'customers' } }, { table: { schema: 'public', table: 'orders' } }],
      });
      expect(manifests.map((m) => m.row_count)).toEqual([before[0]!.c, before[0]!.o]);
    } finally {
      await exporter.query('COMMIT');
    }
  });
});

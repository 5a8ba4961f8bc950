/**
 * Fidelity: capture → restore into another name → the restored rows are identical, checked with
 * the test's own order-independent hash of `t::text` (test/support/type-torture.ts), not with
 * Backstop's content hash.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveDatabase } from '../../src/db/connection.js';
import { describeTable } from '../../src/db/catalog.js';
import { quoteIdent, quoteQualified, type QualifiedName } from '../../src/db/identifiers.js';
import { restoreItems } from '../../src/restore/restore.js';
import { captureGroup, captureTable } from '../../src/snapshot/capture.js';
import { openStorage } from '../../src/storage/open.js';
import type { Storage } from '../../src/storage/storage.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { withoutGuard } from './guard.js';
import { TORTURE_TABLE, createTypeTortureTable, tableFingerprint } from '../support/type-torture.js';

describe('restore fidelity', () => {
  let db: TestDatabase;
  let client: pg.Client;
  let folder: string;
  let storage: Storage;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-fidelity-'));
    storage = openStorage(folder);
  });
  afterAll(async () => {
    await db?.drop();
    if (folder) await rm(folder, { recursive: true, force: true });
  });

  async function roundTrip(table: QualifiedName, into: QualifiedName) {
    const manifest = await captureTable({ database: resolveDatabase(db.url), storage, table });
    const result = await restoreItems(client, storage, [{ manifest, target: into }]);
    return { manifest, result, before: await tableFingerprint(client, table), after: await tableFingerprint(client, into) };
  }

  it('restores the type-torture table into another name with identical rows', async () => {
    const torture = await createTypeTortureTable(client);
    expect(torture.columnCount).toBeGreaterThanOrEqual(40);
    const into = { schema: TORTURE_TABLE.schema, table: 'Réstored "Torture" ✓' };
    const { before, after, result } = await roundTrip(torture.table, into);
    expect(before.rows).toBe(5);
    expect(after).toEqual(before);
    expect(result.tables[0]!.rows).toBe(5);

    // Identity kept and continuing after the restored values; generated column recomputed.
    const original = await describeTable(client, torture.table);
    const restored = await describeTable(client, into);
    expect(restored.columns.map((c) => [c.name, c.type, c.identity, c.generated])).toEqual(original.columns.map((c) => [c.name, c.type, c.identity, c.generated]));
    const { rows } = await client.query(`INSERT INTO ${quoteQualified(into)} (c_integer) VALUES (21) RETURNING "Ïd" AS id, c_generated`);
    expect(rows[0]).toEqual({ id: '1005', c_generated: '42' });
  });

  it('restores an empty table, a one-column table and a 200-column table', async () => {
    await client.query(`CREATE TABLE empty_t (id int PRIMARY KEY, note text)`);
    await client.query(`CREATE TABLE one_col (v text)`);
    await client.query(`INSERT INTO one_col SELECT 'row ' || g FROM generate_series(1, 1000) g`);
    const wide = Array.from({ length: 200 }, (_, i) => `c${i} ${['int', 'text', 'numeric', 'timestamptz', 'jsonb'][i % 5]}`);
    await client.query(`CREATE TABLE wide_t (${wide.join(', ')})`);
    const values = Array.from({ length: 200 }, (_, i) => [`g + ${i}`, `'text ' || g`, `g * 1.5`, `'2024-01-01'::timestamptz + g * interval '1 second'`, `jsonb_build_object('g', g)`][i % 5]);
    await client.query(`INSERT INTO wide_t SELECT ${values.join(', ')} FROM generate_series(1, 50) g`);
    await client.query(`INSERT INTO wide_t DEFAULT VALUES`);

    for (const [name, rows] of [['empty_t', 0], ['one_col', 1000], ['wide_t', 51]] as const) {
      const { before, after } = await roundTrip({ schema: 'public', table: name }, { schema: 'public', table: `${name}_restored` });
      expect(before.rows).toBe(rows);
      expect(after).toEqual(before);
    }
    const restored = await describeTable(client, { schema: 'public', table: 'empty_t_restored' });
    expect(restored.constraints.map((c) => [c.name, c.type])).toEqual([['empty_t_restored_pkey', 'p']]);
  });

  it('restores an unlogged table as unlogged', async () => {
    await client.query(`CREATE UNLOGGED TABLE scratch_u (id int PRIMARY KEY, v text); INSERT INTO scratch_u VALUES (1, 'a'), (2, NULL)`);
    const { before, after } = await roundTrip({ schema: 'public', table: 'scratch_u' }, { schema: 'public', table: 'scratch_u_restored' });
    expect(before.rows).toBe(2);
    expect(after).toEqual(before);
    expect((await describeTable(client, { schema: 'public', table: 'scratch_u_restored' })).persistence).toBe('unlogged');
  });

  it('restores a row wider than 1 MB', async () => {
    await client.query(`CREATE TABLE wide_row (id int, big text, blob bytea)`);
    await client.query(`INSERT INTO wide_row SELECT 1, repeat(md5(random()::text), 40000), decode(repeat('00ff5c0a09', 300000), 'hex')`);
    const { before, after } = await roundTrip({ schema: 'public', table: 'wide_row' }, { schema: 'public', table: 'wide_row_restored' });
    expect(before.rows).toBe(1);
    expect(after).toEqual(before);
  });

  it('restores a partitioned table with its partitions, indexes and constraints', async () => {
    await client.query(`
      CREATE TABLE events (id bigserial, at date NOT NULL, payload jsonb, PRIMARY KEY (id, at), CHECK (id > 0)) PARTITION BY RANGE (at);
      CREATE TABLE events_2023 PARTITION OF events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
      CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY RANGE (at);
      CREATE TABLE events_2024_q PARTITION OF events_2024 DEFAULT;
      CREATE TABLE events_other PARTITION OF events DEFAULT;
      CREATE INDEX events_payload ON events USING gin (payload);
      INSERT INTO events (at, payload) SELECT date '2023-06-01' + g, jsonb_build_object('g', g) FROM generate_series(1, 600) g;
    `);
    const into = { schema: 'public', table: 'events_back' };
    const { before, after } = await roundTrip({ schema: 'public', table: 'events' }, into);
    expect(before.rows).toBe(600);
    expect(after).toEqual(before);
    const restored = await describeTable(client, into);
    expect(restored.relkind).toBe('partitioned');
    expect(restored.partitions.map((p) => p.table).sort()).toEqual(['events_back_2023', 'events_back_2024', 'events_back_other']);
    expect(restored.partitions.find((p) => p.table === 'events_back_2024')!.partitions.map((p) => p.table)).toEqual(['events_back_2024_q']);
    const { rows } = await client.query(`SELECT count(*)::int AS n FROM ONLY events_back_2023`);
    expect(rows[0].n).toBeGreaterThan(0);
    expect(restored.indexes.map((i) => i.name).sort()).toEqual(['events_back_payload', 'events_back_pkey']);
    // The serial sequence is the restored table's own and continues after the restored ids.
    const next = await client.query(`INSERT INTO events_back (at) VALUES ('2024-05-05') RETURNING id`);
    expect(next.rows[0].id).toBe('601');
  });

  it('restores a recovery group of FK-linked tables in FK order', async () => {
    await client.query(`
      CREATE SCHEMA "Shop ✓";
      CREATE TABLE "Shop ✓"."Customers" (id int PRIMARY KEY, name text UNIQUE);
      CREATE TABLE "Shop ✓".orders (id int PRIMARY KEY, customer int NOT NULL REFERENCES "Shop ✓"."Customers"(id), parent int REFERENCES "Shop ✓".orders(id));
      INSERT INTO "Shop ✓"."Customers" SELECT g, 'c' || g FROM generate_series(1, 20) g;
      INSERT INTO "Shop ✓".orders SELECT g, 1 + g % 20, CASE WHEN g > 1 THEN g - 1 END FROM generate_series(1, 100) g;
    `);
    const customers = { schema: 'Shop ✓', table: 'Customers' };
    const orders = { schema: 'Shop ✓', table: 'orders' };
    // Capture order puts the referencing table first: restore must reorder.
    const manifests = await captureGroup({ database: resolveDatabase(db.url), storage, group: 'shop', tables: [{ table: orders }, { table: customers }] });
    const before = [await tableFingerprint(client, customers), await tableFingerprint(client, orders)];
    await client.query(`CREATE SCHEMA "Shop restored"`);
    const result = await restoreItems(
      client,
      storage,
      manifests.map((manifest) => ({ manifest, target: { schema: 'Shop restored', table: manifest.table } })),
    );
    expect(result.tables.map((t) => t.target.table)).toEqual(['Customers', 'orders']);
    expect(result.tables.flatMap((t) => t.skippedForeignKeys)).toEqual([]);
    expect([await tableFingerprint(client, { schema: 'Shop restored', table: 'Customers' }), await tableFingerprint(client, { schema: 'Shop restored', table: 'orders' })]).toEqual(before);
    const restored = await describeTable(client, { schema: 'Shop restored', table: 'orders' });
    const fks = restored.constraints.filter((c) => c.type === 'f').map((c) => `${c.references!.schema}.${c.references!.table}`);
    expect(fks.sort()).toEqual(['Shop restored.Customers', 'Shop restored.orders']);
    await expect(client.query(`INSERT INTO "Shop restored".orders VALUES (1000, 999, NULL)`)).rejects.toThrow(/foreign key/);
  });

  it('reports a foreign key whose referenced table does not exist, and restores the rest', async () => {
    await client.query(`
      CREATE TABLE parent_gone (id int PRIMARY KEY);
      CREATE TABLE child_left (id int, p int REFERENCES parent_gone(id));
      INSERT INTO parent_gone VALUES (1); INSERT INTO child_left VALUES (1, 1);
    `);
    const manifest = await captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table: 'child_left' } });
    await withoutGuard(client, () => client.query(`DROP TABLE child_left; DROP TABLE parent_gone`));
    const result = await restoreItems(client, storage, [{ manifest, target: { schema: 'public', table: 'child_left' } }]);
    expect(result.tables[0]!.skippedForeignKeys).toEqual([
      { name: 'child_left_p_fkey', references: { schema: 'public', table: 'parent_gone' }, reason: `the referenced table ${quoteIdent('public')}.${quoteIdent('parent_gone')} does not exist` },
    ]);
    const { rows } = await client.query(`SELECT * FROM child_left`);
    expect(rows).toEqual([{ id: 1, p: 1 }]);
  });
});

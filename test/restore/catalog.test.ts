import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createTableSql, describeTable, listUserTables } from '../../src/db/catalog.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

describe('catalog', () => {
  let db: TestDatabase;
  let client: pg.Client;
  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    await client.query(`
      CREATE SCHEMA "Sché ma";
      CREATE TYPE "Sché ma".mood AS ENUM ('sad', 'ok');
      CREATE TABLE "Sché ma"."Parent ""P""" (id int PRIMARY KEY, code text UNIQUE);
      CREATE TABLE "Sché ma"."Chïld" (
        id bigint GENERATED ALWAYS AS IDENTITY (START WITH 10 INCREMENT BY 5) PRIMARY KEY,
        serial_no serial,
        parent int REFERENCES "Sché ma"."Parent ""P"""(id) ON DELETE CASCADE,
        "Mixed Case" text COLLATE "C" DEFAULT 'x' NOT NULL,
        m "Sché ma".mood DEFAULT 'ok',
        doubled int GENERATED ALWAYS AS (parent * 2) STORED,
        CHECK (length("Mixed Case") < 100)
      );
      CREATE INDEX "chïld lower" ON "Sché ma"."Chïld" (lower("Mixed Case")) WHERE parent IS NOT NULL;
      INSERT INTO "Sché ma"."Chïld" ("Mixed Case") VALUES ('a'), ('b');
      CREATE TABLE events (at date NOT NULL, v int) PARTITION BY RANGE (at);
      CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
      CREATE INDEX ON events (v);
      CREATE TEMP TABLE scratch (a int);
    `);
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('lists user tables outside system schemas', async () => {
    const tables = await listUserTables(client);
    const names = tables.map((t) => `${t.schema}.${t.table}`);
    expect([...names].sort()).toEqual(['public.events', 'public.events_2024', 'Sché ma.Chïld', 'Sché ma.Parent "P"'].sort());
    expect(tables.find((t) => t.table === 'events')).toMatchObject({ relkind: 'partitioned', isPartition: false });
    expect(tables.find((t) => t.table === 'events_2024')).toMatchObject({ relkind: 'table', isPartition: true });
    expect((await listUserTables(client, { schemas: ['Sché ma'] })).length).toBe(2);
  });

  it('describes columns, identity, generated, indexes, constraints and sequences', async () => {
    const def = await describeTable(client, { schema: 'Sché ma', table: 'Chïld' });
    expect(JSON.parse(JSON.stringify(def))).toEqual(def);
    expect(def.columns.map((c) => c.name)).toEqual(['id', 'serial_no', 'parent', 'Mixed Case', 'm', 'doubled']);
    const byName = Object.fromEntries(def.columns.map((c) => [c.name, c]));
    expect(byName.id).toMatchObject({ identity: 'a', type: 'bigint', notNull: true, category: 'N' });
    expect(byName['Mixed Case']).toMatchObject({ collation: 'pg_catalog."C"', default: `'x'::text`, notNull: true });
    expect(byName.m).toMatchObject({ type: '"Sché ma".mood', typeSchema: 'Sché ma', category: 'E', default: `'ok'::"Sché ma".mood` });
    expect(byName.doubled).toMatchObject({ generated: 's', generationExpression: '(parent * 2)', default: null });

    const index = def.indexes.find((i) => i.name === 'chïld lower')!;
    expect(index.usingClause).toBe(`btree (lower("Mixed Case")) WHERE (parent IS NOT NULL)`);
    expect(def.indexes.find((i) => i.primary)).toMatchObject({ constraintName: 'Chïld_pkey' });

    expect(def.constraints.map((c) => c.type)).toEqual(['p', 'c', 'f']);
    const fk = def.constraints.find((c) => c.type === 'f')!;
    expect(fk.references).toEqual({
      schema: 'Sché ma',
      table: 'Parent "P"',
      columns: ['parent'],
      referencedColumns: ['id'],
      actions: ' ON DELETE CASCADE',
    });

    const identity = def.sequences.find((s) => s.identity)!;
    expect(identity).toMatchObject({ column: 'id', start: '10', increment: '5', lastValue: '15', isCalled: true });
    const serial = def.sequences.find((s) => !s.identity)!;
    expect(serial).toMatchObject({ column: 'serial_no', lastValue: '2', isCalled: true, dataType: 'integer' });
    expect(byName.serial_no!.default).toBe(`nextval(${serial.regclassLiteral}::regclass)`);
  });

  it('renders CREATE TABLE for another name that PostgreSQL accepts', async () => {
    const def = await describeTable(client, { schema: 'Sché ma', table: 'Chïld' });
    expect(def.ddl).toContain('CREATE TABLE "Sché ma"."Chïld"');
    await client.query('BEGIN');
    try {
      await client.query(createTableSql(def, { schema: 'public', table: 'Copy "1"' }, { defaults: false }));
      const copy = await describeTable(client, { schema: 'public', table: 'Copy "1"' });
      expect(copy.columns.map(({ name, type, identity, generated, notNull, collation }) => ({ name, type, identity, generated, notNull, collation }))).toEqual(
        def.columns.map(({ name, type, identity, generated, notNull, collation }) => ({ name, type, identity, generated, notNull, collation })),
      );
    } finally {
      await client.query('ROLLBACK');
    }
  });

  it('describes partitioned tables and their partitions', async () => {
    const def = await describeTable(client, { schema: 'public', table: 'events' });
    expect(def.relkind).toBe('partitioned');
    expect(def.partitionKey).toBe('RANGE (at)');
    expect(def.partitions).toEqual([
      { schema: 'public', table: 'events_2024', bound: `FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')`, partitionKey: null, partitions: [] },
    ]);
    expect(def.indexes[0]!.usingClause).toBe('btree (v)');
    expect(def.ddl).toMatch(/PARTITION BY RANGE \(at\)$/);
    const part = await describeTable(client, { schema: 'public', table: 'events_2024' });
    expect(part.partitionOf).toMatchObject({ schema: 'public', table: 'events' });
  });

  it('refuses a table that does not exist', async () => {
    await expect(describeTable(client, { schema: 'public', table: 'nope' })).rejects.toThrow(/does not exist/);
    const { rows } = await client.query(`SELECT current_setting('search_path') AS p`);
    expect(rows[0].p).toBe('"$user", public');
  });
});

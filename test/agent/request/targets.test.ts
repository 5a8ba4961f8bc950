import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseStatement } from '../../../src/request/statement.js';
import { resolveTargets } from '../../../src/request/targets.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';

describe('resolveTargets', () => {
  let db: TestDatabase;
  let client: pg.Client;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    await client.query(`
      CREATE SCHEMA app;
      CREATE SCHEMA "Odd Schema";
      CREATE TABLE public.users (id int PRIMARY KEY);
      CREATE TABLE app.users (id int PRIMARY KEY);
      CREATE TABLE "Odd Schema"."Ünï Table" (id int);
      CREATE TABLE app.orders (id int PRIMARY KEY, user_id int REFERENCES app.users (id));
      CREATE TABLE app.order_lines (order_id int REFERENCES app.orders (id));
      CREATE TABLE app.events (at date) PARTITION BY RANGE (at);
      CREATE TABLE app.events_2026 PARTITION OF app.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
      CREATE TABLE app.parent (id int);
      CREATE TABLE app.child () INHERITS (app.parent);
      CREATE VIEW app.user_view AS SELECT * FROM app.users;
    `);
  });
  afterAll(async () => {
    await db?.drop();
  });

  async function resolve(sql: string, searchPath = '"$user", public', requester = 'postgres') {
    const parsed = await parseStatement(sql);
    const resolution = await resolveTargets(client, parsed.operations, { searchPath, requester });
    return { names: resolution.targets.map((t) => `${t.schema}.${t.table}`).sort(), problems: resolution.problems };
  }

  it('resolves unqualified names through the requester search_path', async () => {
    expect((await resolve('DROP TABLE users', 'app, public')).names).toEqual(['app.users']);
    expect((await resolve('DROP TABLE users', 'public, app')).names).toEqual(['public.users']);
    expect((await resolve('DROP TABLE users', '"$user", public', 'app')).names).toEqual(['app.users']);
  });

  it('resolves quoted unicode names', async () => {
    expect((await resolve('DROP TABLE "Odd Schema"."Ünï Table"')).names).toEqual(['Odd Schema.Ünï Table']);
    expect((await resolve('DROP TABLE "Ünï Table"', '"Odd Schema"')).names).toEqual(['Odd Schema.Ünï Table']);
  });

  it('includes partitions and inheritance children', async () => {
    expect((await resolve('DROP TABLE app.events')).names).toEqual(['app.events', 'app.events_2026']);
    expect((await resolve('ALTER TABLE app.parent DROP COLUMN id')).names).toEqual(['app.child', 'app.parent']);
    expect((await resolve('ALTER TABLE ONLY app.parent DROP COLUMN id')).names).toEqual(['app.parent']);
  });

  it('follows foreign keys for TRUNCATE … CASCADE only', async () => {
    expect((await resolve('TRUNCATE app.users CASCADE')).names).toEqual(['app.order_lines', 'app.orders', 'app.users']);
    expect((await resolve('TRUNCATE app.users')).names).toEqual(['app.users']);
  });

  it('lists every table of a dropped schema', async () => {
    expect((await resolve('DROP SCHEMA app CASCADE')).names).toEqual(
      ['app.child', 'app.events', 'app.events_2026', 'app.order_lines', 'app.orders', 'app.parent', 'app.users'],
    );
  });

  it('says when a target is missing or not a table, unless IF EXISTS', async () => {
    expect((await resolve('DROP TABLE app.nope')).problems).toEqual(['table app.nope does not exist (searched its schema)']);
    expect(await resolve('DROP TABLE IF EXISTS app.nope')).toEqual({ names: [], problems: [] });
    expect((await resolve('ALTER TABLE app.user_view DROP COLUMN id')).problems).toEqual(['app.user_view is a view, not a table']);
  });
});

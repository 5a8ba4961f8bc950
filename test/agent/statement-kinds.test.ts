/**
 * Every guarded statement kind answered by the real agent: DROP SCHEMA (every table in it),
 * ALTER TABLE … DROP COLUMN and ALTER COLUMN … TYPE (before-image restores the old shape),
 * a partitioned table (one snapshot holding every partition), and a multi-statement string.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contentHash } from '../../src/snapshot/content-hash.js';
import { findManifest } from '../../src/snapshot/list.js';
import { restoreItems } from '../../src/restore/restore.js';
import { openStorage } from '../../src/storage/open.js';
import type { Storage } from '../../src/storage/storage.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startAgent, tempDir, type AgentProcess } from '../support/agent-process.js';
import { settle, waitForRequest, waitForStatus } from './requests.js';

describe('guarded statement kinds through the real agent', () => {
  let db: TestDatabase;
  let admin: pg.Client;
  let agent: AgentProcess | undefined;
  let storage: Storage;

  beforeAll(async () => {
    db = await createTestDatabase();
    admin = await db.client();
    await admin.query(`
      CREATE SCHEMA "App Ünï";
      CREATE TABLE "App Ünï".users (id int PRIMARY KEY, name text);
      CREATE TABLE "App Ünï"."Orders" (id int PRIMARY KEY, user_id int REFERENCES "App Ünï".users (id));
      INSERT INTO "App Ünï".users SELECT i, 'u' || i FROM generate_series(1, 30) i;
      INSERT INTO "App Ünï"."Orders" SELECT i, 1 + i % 30 FROM generate_series(1, 60) i;
      CREATE TABLE public.profiles (id int PRIMARY KEY, bio text, score int);
      INSERT INTO public.profiles SELECT i, 'bio ' || i, i * 2 FROM generate_series(1, 80) i;
      CREATE TABLE public.events (at date NOT NULL, what text) PARTITION BY RANGE (at);
      CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
      CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
      INSERT INTO public.events SELECT date '2025-06-01' + i, 'e' || i FROM generate_series(0, 399) i;
      CREATE TABLE public.first_half (id int); CREATE TABLE public.second_half (id int);
      INSERT INTO public.first_half VALUES (1), (2); INSERT INTO public.second_half VALUES (3);
    `);
    const folder = await tempDir('backstop-storage-');
    storage = openStorage(folder);
    agent = await startAgent({ db: db.url, storage: folder, args: ['--interval', '1h'] });
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await db?.drop();
  });

  async function restore(snapshotId: string, target: { schema: string; table: string }): Promise<void> {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      await restoreItems(client, storage, [{ manifest: await findManifest(storage, snapshotId), target }]);
    } finally {
      await client.end();
    }
  }

  it('DROP SCHEMA … CASCADE captures every table in the schema', async () => {
    const requester = await db.client();
    expect(await settle(requester.query('DROP SCHEMA "App Ünï" CASCADE'))).toEqual({ ok: true });
    const request = await waitForStatus(admin, (await waitForRequest(admin, 'DROP SCHEMA "App Ünï"')).id, ['consumed']);
    expect([...request.targets].sort()).toEqual(['"App Ünï"."Orders"', '"App Ünï".users']);
    expect(request.snapshot_ids).toHaveLength(2);
  });

  it('ALTER TABLE … DROP COLUMN keeps a before-image with the column', async () => {
    const before = await contentHash(admin, { schema: 'public', table: 'profiles' });
    const requester = await db.client();
    expect(await settle(requester.query('ALTER TABLE profiles DROP COLUMN bio'))).toEqual({ ok: true });
    const request = await waitForStatus(admin, (await waitForRequest(admin, 'DROP COLUMN bio')).id, ['consumed']);
    expect(request.snapshot_ids).toHaveLength(1);
    await restore(request.snapshot_ids[0]!, { schema: 'public', table: 'profiles_before' });
    expect(await contentHash(admin, { schema: 'public', table: 'profiles_before' })).toEqual(before);
  });

  it('ALTER COLUMN … TYPE is paused and captured too', async () => {
    const requester = await db.client();
    expect(await settle(requester.query('ALTER TABLE public.profiles ALTER COLUMN score TYPE bigint'))).toEqual({ ok: true });
    const request = await waitForStatus(admin, (await waitForRequest(admin, 'ALTER COLUMN score TYPE bigint')).id, ['consumed']);
    expect(request.snapshot_ids).toHaveLength(1);
    expect((await findManifest(storage, request.snapshot_ids[0]!)).columns.find((c) => c.name === 'score')?.pg_type).toBe('integer');
  });

  it('a partitioned table is captured once, with every partition\'s rows', async () => {
    const requester = await db.client();
    expect(await settle(requester.query('DROP TABLE public.events'))).toEqual({ ok: true });
    const request = await waitForStatus(admin, (await waitForRequest(admin, 'DROP TABLE public.events')).id, ['consumed']);
    expect([...request.targets].sort()).toEqual(['public.events', 'public.events_2025', 'public.events_2026']);
    expect(request.snapshot_ids).toHaveLength(1);
    expect(await findManifest(storage, request.snapshot_ids[0]!)).toMatchObject({ table: 'events', row_count: 400 });
  });

  it('a table another session keeps locked is denied after the capture lock_timeout, naming the holder', async () => {
    await admin.query(`CREATE TABLE public.busy (id int); INSERT INTO public.busy VALUES (1)`);
    const locker = await db.client();
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE public.busy IN ACCESS EXCLUSIVE MODE');
    const { rows: [{ pid }] } = await locker.query('SELECT pg_backend_pid() AS pid');
    const { rows: [filed] } = await admin.query(`SELECT backstop.request($$DROP TABLE public.busy$$)::text AS id`);
    const denied = await waitForStatus(admin, filed.id, ['denied'], 120_000);
    await locker.query('ROLLBACK');
    expect(denied.reason).toContain(`public.busy is locked by session pid ${pid}`);
  });

  it('a multi-statement string is one request covering every statement', async () => {
    const requester = await db.client();
    expect(await settle(requester.query('DROP TABLE public.first_half; DROP TABLE public.second_half;'))).toEqual({ ok: true });
    const request = await waitForStatus(admin, (await waitForRequest(admin, 'DROP TABLE public.first_half; DROP TABLE public.second_half')).id, ['consumed']);
    expect([...request.targets].sort()).toEqual(['public.first_half', 'public.second_half']);
    expect(request.snapshot_ids).toHaveLength(2);
    const { rows } = await admin.query(`SELECT count(*)::int AS n FROM backstop.requests WHERE statement LIKE '%first_half%'`);
    expect(rows[0].n).toBe(1);
  });
});

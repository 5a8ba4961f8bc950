/**
 * The real agent answering the real guard, auto mode, snapshots in a real S3 server: a DROP
 * pauses, a before-image is captured, the DROP completes, and restoring the before-image gives
 * the identical content hash. TRUNCATE's in-session image is exported after commit. Twenty
 * concurrent DROPs are each decided exactly once.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contentHash } from '../../src/snapshot/content-hash.js';
import { findManifest } from '../../src/snapshot/list.js';
import { restoreItems } from '../../src/restore/restore.js';
import { openStorage } from '../../src/storage/open.js';
import type { Storage } from '../../src/storage/storage.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestS3, type TestS3 } from '../support/s3.js';
import { startAgent, waitUntil, type AgentProcess } from '../support/agent-process.js';
import { settle, waitForRequest, waitForStatus } from './requests.js';

describe('guarded operations answered by the agent (auto mode, S3)', () => {
  let db: TestDatabase;
  let s3: TestS3;
  let storage: Storage;
  let admin: pg.Client;
  let agent: AgentProcess | undefined;

  beforeAll(async () => {
    s3 = await startTestS3();
    storage = openStorage(s3.url('guarded'));
    db = await createTestDatabase();
    admin = await db.client();
    await admin.query(`
      CREATE SCHEMA "Sales Ünï";
      CREATE TABLE "Sales Ünï"."Order Items" (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        sku text NOT NULL, qty int, price numeric(12, 2), placed timestamptz, tags text[], meta jsonb);
      INSERT INTO "Sales Ünï"."Order Items" (sku, qty, price, placed, tags, meta)
      SELECT 'SKU-' || i, i % 7, i * 1.25, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute',
             ARRAY['a', 'b' || i], jsonb_build_object('i', i, 'odd', i % 2 = 1)
        FROM generate_series(1, 2000) AS i;
      UPDATE "Sales Ünï"."Order Items" SET qty = NULL WHERE id % 50 = 0;
      CREATE TABLE public.ledger (id int PRIMARY KEY, amount numeric, note text);
      INSERT INTO public.ledger SELECT i, i * 3.5, 'entry ' || i FROM generate_series(1, 500) AS i;
    `);
    agent = await startAgent({ db: db.url, storage: s3.url('guarded'), args: ['--interval', '1h', '--concurrency', '4'] });
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await db?.drop();
    await s3?.stop();
  });

  async function session(): Promise<pg.Client> {
    return db.client();
  }

  it('DROP TABLE pauses, gets a before-image, completes; the before-image restores to the identical content hash', async () => {
    const table = { schema: 'Sales Ünï', table: 'Order Items' };
    const before = await contentHash(admin, table);
    const requester = await session();
    await requester.query(`SET search_path = "Sales Ünï", public`);
    const dropped = settle(requester.query(`DROP TABLE "Order Items"`));
    const request = await waitForRequest(admin, 'DROP TABLE "Order Items"');
    const outcome = await dropped;
    expect(outcome).toEqual({ ok: true });
    const consumed = await waitForStatus(admin, request.id, ['consumed']);
    expect(consumed.targets).toEqual(['"Sales Ünï"."Order Items"']);
    expect(consumed.snapshot_ids).toHaveLength(1);
    expect((await admin.query(`SELECT to_regclass('"Sales Ünï"."Order Items"') AS t`)).rows[0].t).toBeNull();

    const { rows: [latency] } = await admin.query(`SELECT round(extract(epoch FROM decided_at - created_at) * 1000) AS ms FROM backstop.request_log WHERE id = $1::bigint`, [request.id]);
    console.log(`DROP of a 2000-row table: request filed → decided (before-image in S3, checksum verified) in ${latency.ms} ms`);
    const manifest = await findManifest(storage, consumed.snapshot_ids[0]!);
    expect(manifest).toMatchObject({ source: 'before-image', request_id: Number(request.id), schema: 'Sales Ünï', table: 'Order Items', row_count: 2000 });
    const { rows: [catalog] } = await admin.query(`SELECT verified, source FROM backstop.snapshots WHERE snapshot_id = $1`, [manifest.snapshot_id]);
    expect(catalog).toEqual({ verified: true, source: 'before-image' });

    const restorer = new pg.Client({ connectionString: db.url });
    await restorer.connect();
    try {
      await restoreItems(restorer, storage, [{ manifest, target: table }]);
    } finally {
      await restorer.end();
    }
    expect(await contentHash(admin, table)).toEqual(before);
  });

  it('TRUNCATE: the in-session before-image is exported after commit, removed, and restorable; a rolled-back one leaves nothing', async () => {
    const before = await contentHash(admin, { schema: 'public', table: 'ledger' });
    const requester = await session();
    expect(await settle(requester.query('TRUNCATE public.ledger'))).toEqual({ ok: true });
    const request = await waitForRequest(admin, 'TRUNCATE public.ledger');
    await waitForStatus(admin, request.id, ['consumed']);
    const exported = await waitUntil(async () => {
      const { rows } = await admin.query(`SELECT snapshot_id FROM backstop.snapshots WHERE request_id = $1::bigint`, [request.id]);
      const { rows: images } = await admin.query(`SELECT 1 FROM backstop.truncate_images WHERE request_id = $1::bigint`, [request.id]);
      return rows.length === 1 && images.length === 0 ? rows[0].snapshot_id as string : undefined;
    }, 90_000, 'the TRUNCATE image to be exported and removed');
    expect((await admin.query(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'backstop_images'`)).rows[0].n).toBe(0);

    const manifest = await findManifest(storage, exported);
    expect(manifest).toMatchObject({ source: 'before-image', request_id: Number(request.id), table: 'ledger', row_count: 500 });
    const restorer = new pg.Client({ connectionString: db.url });
    await restorer.connect();
    try {
      await restoreItems(restorer, storage, [{ manifest, target: { schema: 'public', table: 'ledger_restored' } }]);
    } finally {
      await restorer.end();
    }
    expect(await contentHash(admin, { schema: 'public', table: 'ledger_restored' })).toEqual(before);

    // Rolled back: the copy never existed.
    await requester.query(`INSERT INTO public.ledger VALUES (1, 1, 'one')`);
    await requester.query('BEGIN');
    await requester.query('TRUNCATE TABLE public.ledger');
    await requester.query('ROLLBACK');
    const rolledBack = await waitForRequest(admin, 'TRUNCATE TABLE public.ledger');
    expect(rolledBack.status).toBe('approved');
    expect((await admin.query(`SELECT count(*)::int AS n FROM backstop.truncate_images WHERE request_id = $1::bigint`, [rolledBack.id])).rows[0].n).toBe(0);
    expect((await admin.query(`SELECT count(*)::int AS n FROM public.ledger`)).rows[0].n).toBe(1);
  });

  it('decides each of 20 concurrent DROPs on different tables exactly once', async () => {
    const names = Array.from({ length: 20 }, (_, i) => `burst_${i}`);
    for (const name of names) await admin.query(`CREATE TABLE public.${name} AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200) g`);
    const sessions = await Promise.all(names.map(() => session()));
    const started = Date.now();
    const outcomes = await Promise.all(names.map((name, i) => settle(sessions[i]!.query(`DROP TABLE public.${name}`))));
    const elapsedMs = Date.now() - started;
    expect(outcomes.filter((outcome) => !outcome.ok)).toEqual([]);
    const { rows } = await admin.query(
      `SELECT id::text, status, decided_by, cardinality(snapshot_ids) AS snapshots FROM backstop.requests WHERE statement LIKE 'DROP TABLE public.burst_%'`,
    );
    expect(rows).toHaveLength(20);
    expect(rows.every((row) => row.status === 'consumed' && row.decided_by === agent!.agentId && row.snapshots === 1)).toBe(true);
    const decidedLines = agent!.lines.filter((line) => line.msg === 'request decided' && rows.some((row) => row.id === String(line.request_id)));
    expect(decidedLines).toHaveLength(20);
    const { rows: [spread] } = await admin.query(
      `SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - created_at)) * 1000) AS p50,
              round(max(extract(epoch FROM decided_at - created_at)) * 1000) AS max
         FROM backstop.request_log WHERE statement LIKE 'DROP TABLE public.burst_%'`,
    );
    console.log(`20 concurrent guarded DROPs (200 rows each) completed in ${elapsedMs} ms; filed → decided p50 ${spread.p50} ms, max ${spread.max} ms`);
  });
});

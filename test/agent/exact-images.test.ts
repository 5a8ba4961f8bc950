/**
 * Issue 9: the before-image a request names holds exactly what its statement destroyed — every
 * write committed before the statement took effect, nothing after — for every guarded kind, in
 * operator and auto mode, for requests filed ahead, for partitioned tables and every table of a
 * dropped schema. A real agent, a real server; each image is restored and compared row by row
 * with the table as it was at the last instant before the statement.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { restoreSnapshot } from '../../src/restore/restore.js';
import { openStorage } from '../../src/storage/open.js';
import { checkSnapshot } from '../../src/snapshot/verify.js';
import type { Manifest } from '../../src/snapshot/manifest.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startAgent, tempDir, waitUntil, type AgentProcess } from '../support/agent-process.js';
import { settle, waitForRequest, waitForStatus } from './requests.js';

interface Fingerprint {
  rows: number;
  md5: string;
}

/** Every row of `from` (or just `columns`), as text, in a stable order. */
async function fingerprint(client: pg.Client, from: string, columns = 't::text'): Promise<Fingerprint> {
  const { rows } = await client.query<{ rows: number; md5: string }>(
    `SELECT count(*)::int AS rows, md5(coalesce(string_agg(r, '|' ORDER BY r), '')) AS md5 FROM (SELECT ${columns} AS r FROM ${from} AS t) s`,
  );
  return rows[0]!;
}

describe('exact before-images', () => {
  let db: TestDatabase;
  let admin: pg.Client;
  let agent: AgentProcess | undefined;
  let storageDir: string;
  let restored = 0;

  beforeAll(async () => {
    db = await createTestDatabase();
    admin = await db.client();
    await admin.query(`UPDATE backstop.settings SET approval_mode = 'operator', allow_self_approval = true`);
    storageDir = await tempDir('backstop-storage-');
    agent = await startAgent({ db: db.url, storage: storageDir, args: ['--interval', '1h', '--schemas', 'nothing_here'] });
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await db?.drop();
  });

  async function imagesOf(requestId: string): Promise<Array<{ snapshot_id: string; manifest: Manifest }>> {
    const { rows: [request] } = await admin.query<{ snapshot_ids: string[] }>('SELECT snapshot_ids FROM backstop.requests WHERE id = $1', [requestId]);
    const { rows } = await admin.query<{ snapshot_id: string; manifest: Manifest }>(
      'SELECT snapshot_id, manifest FROM backstop.snapshot_catalog WHERE snapshot_id = ANY($1::text[])', [request!.snapshot_ids]);
    return request!.snapshot_ids.map((id) => rows.find((row) => row.snapshot_id === id)!);
  }

  /** Restore `snapshotId` beside everything else and fingerprint what came back. */
  async function restoredFingerprint(snapshotId: string, columns?: string): Promise<Fingerprint> {
    const into = `restored_${++restored}`;
    const client = await db.client();
    await restoreSnapshot({ client, storage: openStorage(storageDir), snapshotId, into: { schema: 'public', table: into } });
    return fingerprint(admin, `public.${into}`, columns);
  }

  /** Start `statement`, wait until its bulk image is taken and it waits for an approver. */
  async function waitingForApproval(statement: string): Promise<{ id: string; outcome: ReturnType<typeof settle> }> {
    const requester = await db.client();
    const outcome = settle(requester.query(statement));
    const request = await waitForRequest(admin, statement);
    const waiting = await waitForStatus(admin, request.id, ['awaiting_approval', 'denied', 'expired']);
    expect(waiting.status).toBe('awaiting_approval');
    return { id: request.id, outcome };
  }

  async function approve(id: string): Promise<void> {
    await admin.query('SELECT backstop.approve($1::bigint)', [id]);
  }

  it('operator mode: DROP TABLE holds the inserts, updates and deletes committed while the approver decided', async () => {
    await admin.query(`CREATE TABLE public.acct (id int PRIMARY KEY, balance numeric, note text);
      INSERT INTO public.acct SELECT i, i * 10, 'n' || i FROM generate_series(1, 1000) i`);
    const { id, outcome } = await waitingForApproval('DROP TABLE public.acct');
    const bulk = (await imagesOf(id))[0]!;
    expect(bulk.manifest.row_count).toBe(1000);
    await admin.query(`INSERT INTO public.acct SELECT i, i, 'late' FROM generate_series(1001, 1100) i`);
    await admin.query(`UPDATE public.acct SET balance = -1 WHERE id <= 10`);
    await admin.query(`DELETE FROM public.acct WHERE id BETWEEN 500 AND 504`);
    const expected = await fingerprint(admin, 'public.acct');
    await approve(id);
    expect(await outcome).toEqual({ ok: true });

    const [image] = await imagesOf(id);
    expect(image!.manifest.as_of?.completion?.how).toBe('recapture');
    expect(image!.manifest.row_count).toBe(1095);
    expect(await restoredFingerprint(image!.snapshot_id)).toEqual(expected);
    const { rows: [request] } = await admin.query('SELECT status, image_completed_at IS NOT NULL AS completed, image_completion FROM backstop.requests WHERE id = $1', [id]);
    expect(request).toMatchObject({ status: 'consumed', completed: true });
    expect(request.image_completion[0]).toMatchObject({ how: 'recapture', snapshot_id: image!.snapshot_id });
  });

  it('operator mode: with no write during the wait, a census proves the bulk image current (no second read)', async () => {
    await admin.query(`CREATE TABLE public.quiet (id int, v text); INSERT INTO public.quiet SELECT i, md5(i::text) FROM generate_series(1, 500) i`);
    const expected = await fingerprint(admin, 'public.quiet');
    const { id, outcome } = await waitingForApproval('DROP TABLE public.quiet');
    const [bulk] = await imagesOf(id);
    await approve(id);
    expect(await outcome).toEqual({ ok: true });
    const [image] = await imagesOf(id);
    expect(image!.snapshot_id).toBe(bulk!.snapshot_id);
    expect(image!.manifest.as_of?.completion?.how).toBe('proof');
    expect(await restoredFingerprint(image!.snapshot_id)).toEqual(expected);
  });

  it('operator mode: rows only inserted during the wait are added to the image as a part, which restores and verifies', async () => {
    await admin.query(`CREATE TABLE public.events (id bigint PRIMARY KEY, payload jsonb, at timestamptz);
      INSERT INTO public.events SELECT i, jsonb_build_object('n', i), '2026-01-01'::timestamptz + i * interval '1 s' FROM generate_series(1, 2000) i`);
    const { id, outcome } = await waitingForApproval('DROP TABLE public.events');
    const [bulk] = await imagesOf(id);
    await admin.query(`INSERT INTO public.events SELECT i, jsonb_build_object('late', true), now() FROM generate_series(2001, 2250) i`);
    await admin.query(`BEGIN; INSERT INTO public.events VALUES (5000, '{"in": "a transaction"}', now()); COMMIT`);
    const expected = await fingerprint(admin, 'public.events');
    await approve(id);
    expect(await outcome).toEqual({ ok: true });

    const [image] = await imagesOf(id);
    expect(image!.snapshot_id).toBe(bulk!.snapshot_id);
    expect(image!.manifest.as_of?.completion?.how).toBe('delta');
    expect(image!.manifest.format_version).toBe(3);
    expect(image!.manifest.parts).toHaveLength(1);
    expect(image!.manifest.parts![0]!.row_count).toBe(251);
    expect(image!.manifest.row_count).toBe(2251);
    expect((await checkSnapshot(openStorage(storageDir), image!.snapshot_id)).ok).toBe(true);
    expect(await restoredFingerprint(image!.snapshot_id)).toEqual(expected);
  });

  it('operator mode: DROP COLUMN and ALTER COLUMN TYPE keep the column values as of the statement', async () => {
    await admin.query(`CREATE TABLE public.cols (id int PRIMARY KEY, keep text, gone text, num text);
      INSERT INTO public.cols SELECT i, 'k' || i, 'g' || i, i::text FROM generate_series(1, 300) i`);
    const dropColumn = await waitingForApproval('ALTER TABLE public.cols DROP COLUMN gone');
    await admin.query(`UPDATE public.cols SET gone = 'changed' WHERE id <= 20; INSERT INTO public.cols VALUES (301, 'k', 'g301', '301')`);
    const expectedGone = await fingerprint(admin, 'public.cols', `id || ':' || gone`);
    await approve(dropColumn.id);
    expect(await dropColumn.outcome).toEqual({ ok: true });
    const [columnImage] = await imagesOf(dropColumn.id);
    expect(await restoredFingerprint(columnImage!.snapshot_id, `id || ':' || gone`)).toEqual(expectedGone);

    const alterType = await waitingForApproval('ALTER TABLE public.cols ALTER COLUMN num TYPE int USING length(num)');
    await admin.query(`UPDATE public.cols SET num = '123456' WHERE id <= 5`);
    const expectedNum = await fingerprint(admin, 'public.cols', `id || ':' || num`);
    await approve(alterType.id);
    expect(await alterType.outcome).toEqual({ ok: true });
    const [typeImage] = await imagesOf(alterType.id);
    expect(await restoredFingerprint(typeImage!.snapshot_id, `id || ':' || num`)).toEqual(expectedNum);
  });

  it('operator mode: DROP SCHEMA ... CASCADE completes the image of every table in it', async () => {
    await admin.query(`CREATE SCHEMA shop;
      CREATE TABLE shop.carts (id int, owner text); INSERT INTO shop.carts SELECT i, 'o' || i FROM generate_series(1, 200) i;
      CREATE TABLE shop."Line Items" (id int, cart int); INSERT INTO shop."Line Items" SELECT i, i % 200 FROM generate_series(1, 400) i`);
    const { id, outcome } = await waitingForApproval('DROP SCHEMA shop CASCADE');
    await admin.query(`INSERT INTO shop.carts VALUES (201, 'late'); DELETE FROM shop."Line Items" WHERE id <= 3`);
    const expected = [await fingerprint(admin, 'shop.carts'), await fingerprint(admin, 'shop."Line Items"')];
    await approve(id);
    expect(await outcome).toEqual({ ok: true });
    const images = await imagesOf(id);
    const byTable = new Map(images.map((image) => [image.manifest.table, image.snapshot_id]));
    expect(await restoredFingerprint(byTable.get('carts')!)).toEqual(expected[0]);
    expect(await restoredFingerprint(byTable.get('Line Items')!)).toEqual(expected[1]);
  });

  it('operator mode: a partitioned table is exact across its partitions', async () => {
    await admin.query(`CREATE TABLE public.metrics (id int, v text) PARTITION BY RANGE (id);
      CREATE TABLE public.metrics_low PARTITION OF public.metrics FOR VALUES FROM (0) TO (1000);
      CREATE TABLE public.metrics_high PARTITION OF public.metrics FOR VALUES FROM (1000) TO (2000);
      INSERT INTO public.metrics SELECT i, 'v' || i FROM generate_series(0, 1999, 3) i`);
    const { id, outcome } = await waitingForApproval('DROP TABLE public.metrics');
    await admin.query(`INSERT INTO public.metrics VALUES (1, 'late low'), (1001, 'late high'); DELETE FROM public.metrics WHERE id = 3`);
    const expected = await fingerprint(admin, 'public.metrics');
    await approve(id);
    expect(await outcome).toEqual({ ok: true });
    const [image] = await imagesOf(id);
    expect(await restoredFingerprint(image!.snapshot_id)).toEqual(expected);
  });

  it('a request filed ahead, approved, then written to: the image holds the later writes', async () => {
    await admin.query(`UPDATE backstop.settings SET approval_mode = 'auto'`);
    try {
      await admin.query(`CREATE TABLE public.ahead (id int, v text); INSERT INTO public.ahead SELECT i, 'v' FROM generate_series(1, 100) i`);
      const requester = await db.client();
      const { rows: [filed] } = await requester.query(`SELECT backstop.wait(backstop.request('DROP TABLE public.ahead'), '60 s') AS status`);
      expect(filed.status).toBe('approved');
      await admin.query(`INSERT INTO public.ahead SELECT i, 'after approval' FROM generate_series(101, 150) i; UPDATE public.ahead SET v = 'x' WHERE id = 1`);
      const expected = await fingerprint(admin, 'public.ahead');
      const { rows: [request] } = await admin.query(`SELECT id::text FROM backstop.requests WHERE statement = 'DROP TABLE public.ahead'`);
      await requester.query('DROP TABLE public.ahead');
      const [image] = await imagesOf(request.id);
      expect(await restoredFingerprint(image!.snapshot_id)).toEqual(expected);
    } finally {
      await admin.query(`UPDATE backstop.settings SET approval_mode = 'operator'`);
    }
  });

  it('auto mode with a steady writer: every acknowledged insert is in the image, and nothing else', async () => {
    await admin.query(`UPDATE backstop.settings SET approval_mode = 'auto'`);
    try {
      await admin.query(`CREATE TABLE public.feed (id int PRIMARY KEY); INSERT INTO public.feed SELECT generate_series(1, 2000)`);
      const writer = await db.client();
      const acknowledged: number[] = [];
      let next = 2001;
      let stop = false;
      const writing = (async () => {
        while (!stop) {
          try {
            await writer.query('INSERT INTO public.feed VALUES ($1)', [next]);
            acknowledged.push(next);
            next += 1;
          } catch {
            return; // the table is gone
          }
          await new Promise((resolve) => setTimeout(resolve, 3));
        }
      })();
      await waitUntil(() => acknowledged.length >= 50, 30_000, 'the writer to get going');
      const requester = await db.client();
      const outcome = await settle(requester.query('DROP TABLE public.feed'));
      stop = true;
      await writing;
      expect(outcome).toEqual({ ok: true });
      const { rows: [request] } = await admin.query(`SELECT id::text FROM backstop.requests WHERE statement = 'DROP TABLE public.feed'`);
      const [image] = await imagesOf(request.id);
      const restoredAs = `restored_${++restored}`;
      const client = await db.client();
      await restoreSnapshot({ client, storage: openStorage(storageDir), snapshotId: image!.snapshot_id, into: { schema: 'public', table: restoredAs } });
      const { rows: [counts] } = await admin.query(
        `SELECT count(*)::int AS rows, count(*) FILTER (WHERE id > 2000)::int AS written, max(id) AS last FROM public.${restoredAs}`);
      expect(counts.written).toBe(acknowledged.length);
      expect(counts.rows).toBe(2000 + acknowledged.length);
      expect(counts.last).toBe(acknowledged.at(-1));
    } finally {
      await admin.query(`UPDATE backstop.settings SET approval_mode = 'operator'`);
    }
  });
});

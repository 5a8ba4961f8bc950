/**
 * Guided recover: only verified points are offered, the original is never written, the copy
 * lands in <table>_recovered (then _recovered_2 …), and the printed copy-back SQL really puts the
 * rows back after DROP TABLE, TRUNCATE and DROP COLUMN. Prompts are driven through a scripted,
 * TTY-less input stream.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveDatabase } from '../../src/db/connection.js';
import { ConfigError } from '../../src/errors/index.js';
import { createLinePrompter } from '../../src/restore/prompt.js';
import { RecoveryCancelledError, recover } from '../../src/restore/recover.js';
import { captureTable } from '../../src/snapshot/capture.js';
import type { Manifest } from '../../src/snapshot/manifest.js';
import { openStorage } from '../../src/storage/open.js';
import type { Storage } from '../../src/storage/storage.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { tableFingerprint } from '../support/type-torture.js';
import { withoutGuard } from './guard.js';

function sink(): PassThrough & { text(): string } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (chunk: Buffer) => {
    text += chunk.toString();
  });
  return Object.assign(stream, { text: () => text });
}

describe('guided recover', () => {
  let db: TestDatabase;
  let client: pg.Client;
  let folder: string;
  let storage: Storage;
  const capture = (table: string) => captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table } });

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-recover-'));
    storage = openStorage(folder);
  });
  afterAll(async () => {
    await db?.drop();
    if (folder) await rm(folder, { recursive: true, force: true });
  });

  it('asks which point and for confirmation, restores into _recovered and then _recovered_2', async () => {
    await client.query(`CREATE TABLE users (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text)`);
    await client.query(`INSERT INTO users (name) SELECT 'u' || g FROM generate_series(1, 10) g`);
    const older = await capture('users');
    const olderPrint = await tableFingerprint(client, { schema: 'public', table: 'users' });
    await client.query(`INSERT INTO users (name) VALUES ('late')`);
    const newer = await capture('users');

    const out = sink();
    const prompter = createLinePrompter(Readable.from(['2\n', 'y\n']), out);
    const result = await recover({ client, storage, table: 'users', prompter, out });
    prompter.close();
    expect(out.text()).toMatch(/Verified recovery points for public\.users \(newest first\):\n\s+1\) \S+ .* 11 rows  source: on-demand\n\s+2\) \S+ .* 10 rows/);
    expect(out.text()).toContain('Restore which recovery point?');
    expect(out.text()).toContain(`Restore snapshot ${older.snapshot_id} (10 rows`);
    expect(result).toMatchObject({ snapshotId: older.snapshot_id, recovered: { schema: 'public', table: 'users_recovered' }, rows: 10 });
    expect(await tableFingerprint(client, { schema: 'public', table: 'users_recovered' })).toEqual(olderPrint);
    expect((await tableFingerprint(client, { schema: 'public', table: 'users' })).rows).toBe(11);

    // Enter takes the newest; the next free name is _recovered_2.
    const second = await recover({ client, storage, table: 'users', prompter: createLinePrompter(Readable.from(['\n', 'yes\n']), sink()), out: sink() });
    expect(second).toMatchObject({ snapshotId: newer.snapshot_id, recovered: { table: 'users_recovered_2' }, rows: 11 });
  });

  it('changes nothing when the operator declines, and explains the flags when there is no terminal', async () => {
    await client.query(`CREATE TABLE decline_me (v int)`);
    await capture('decline_me');
    const before = (await client.query(`SELECT count(*)::int AS n FROM pg_class`)).rows[0].n;
    await expect(recover({ client, storage, table: 'decline_me', prompter: createLinePrompter(Readable.from(['1\n', 'n\n']), sink()), out: sink() })).rejects.toBeInstanceOf(RecoveryCancelledError);
    // Input ends before the confirmation: that is a no as well.
    await expect(recover({ client, storage, table: 'decline_me', prompter: createLinePrompter(Readable.from(['1\n']), sink()), out: sink() })).rejects.toBeInstanceOf(RecoveryCancelledError);
    const error = await recover({ client, storage, table: 'decline_me', out: sink() }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).hint).toMatch(/--snapshot-id ID .*--yes/);
    expect((await client.query(`SELECT count(*)::int AS n FROM pg_class`)).rows[0].n).toBe(before);
  });

  it('never offers a snapshot that fails verification', async () => {
    await client.query(`CREATE TABLE flaky (v int); INSERT INTO flaky VALUES (1)`);
    const good = await capture('flaky');
    await client.query(`INSERT INTO flaky VALUES (2)`);
    const bad: Manifest = await capture('flaky');
    const file = path.join(folder, bad.parquet_path);
    const bytes = await readFile(file);
    bytes[10]! ^= 0xff;
    await writeFile(file, bytes);
    const out = sink();
    const result = await recover({ client, storage, table: 'flaky', yes: true, out });
    expect(result.snapshotId).toBe(good.snapshot_id);
    expect(out.text()).toContain(`not offered: ${bad.snapshot_id}`);
    await expect(recover({ client, storage, table: 'flaky', snapshotId: bad.snapshot_id, out: sink() })).rejects.toThrow(/not a verified recovery point/);
  });

  it('prints copy-back SQL that puts a dropped table back', async () => {
    await client.query(`CREATE TABLE dropped (id bigserial PRIMARY KEY, note text); CREATE INDEX dropped_note ON dropped (note)`);
    await client.query(`INSERT INTO dropped (note) SELECT 'n' || g FROM generate_series(1, 25) g`);
    const manifest = await capture('dropped');
    const before = await tableFingerprint(client, { schema: 'public', table: 'dropped' });
    await withoutGuard(client, () => client.query(`DROP TABLE dropped`));
    const sql = sink();
    const result = await recover({ client, storage, table: 'public.dropped', snapshotId: manifest.snapshot_id, out: sink(), sqlOut: sql });
    expect(result.copyBack.mode).toBe('rename');
    expect(sql.text()).toContain('ALTER TABLE "public"."dropped_recovered" RENAME TO "dropped";');
    await client.query(sql.text());
    expect(await tableFingerprint(client, { schema: 'public', table: 'dropped' })).toEqual(before);
    const names = (await client.query(`SELECT relname FROM pg_class WHERE relname LIKE 'dropped%' ORDER BY 1`)).rows.map((r) => r.relname);
    expect(names).toEqual(['dropped', 'dropped_id_seq', 'dropped_note', 'dropped_pkey']);
  });

  it('prints copy-back SQL that refills an emptied table and catches its identity up', async () => {
    await client.query(`CREATE TABLE emptied (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)`);
    await client.query(`INSERT INTO emptied (v) SELECT 'v' || g FROM generate_series(1, 40) g`);
    const manifest = await capture('emptied');
    const before = await tableFingerprint(client, { schema: 'public', table: 'emptied' });
    // What TRUNCATE … RESTART IDENTITY leaves behind (TRUNCATE itself is guarded).
    await client.query(`DELETE FROM emptied; ALTER TABLE emptied ALTER COLUMN id RESTART`);
    const sql = sink();
    const result = await recover({ client, storage, table: 'emptied', snapshotId: manifest.snapshot_id, yes: true, out: sink(), sqlOut: sql });
    expect(result.copyBack).toMatchObject({ mode: 'insert-rows', expectedRows: 40, expectedTotal: 40 });
    expect(sql.text()).toContain('OVERRIDING SYSTEM VALUE');
    await client.query(sql.text());
    expect(await tableFingerprint(client, { schema: 'public', table: 'emptied' })).toEqual(before);
    const next = await client.query(`INSERT INTO emptied (v) VALUES ('new') RETURNING id`);
    expect(next.rows[0].id).toBe(41);
  });

  it('prints copy-back SQL that brings a dropped column back by primary key', async () => {
    await client.query(`CREATE TABLE lost_column (id int PRIMARY KEY, keep text, gone numeric(10,2))`);
    await client.query(`INSERT INTO lost_column SELECT g, 'k' || g, g * 1.25 FROM generate_series(1, 30) g`);
    const manifest = await capture('lost_column');
    const before = await tableFingerprint(client, { schema: 'public', table: 'lost_column' });
    await withoutGuard(client, () => client.query(`ALTER TABLE lost_column DROP COLUMN gone`));
    const sql = sink();
    const result = await recover({ client, storage, table: 'lost_column', snapshotId: manifest.snapshot_id, out: sink(), sqlOut: sql });
    expect(result.copyBack).toMatchObject({ mode: 'add-columns', expectedRows: 30 });
    await client.query(sql.text());
    expect(await tableFingerprint(client, { schema: 'public', table: 'lost_column' })).toEqual(before);
  });

  it('counts rows changed since the snapshot and offers the copy-back that sets them back too', async () => {
    // point has no equality operator: changed rows are found by their text form.
    await client.query(`CREATE TABLE drifted (id int PRIMARY KEY, name text, meta jsonb, spot point)`);
    await client.query(`INSERT INTO drifted SELECT g, 'n' || g, jsonb_build_object('g', g), point(g, g) FROM generate_series(1, 20) g`);
    const manifest = await capture('drifted');
    await client.query(`DELETE FROM drifted WHERE id <= 5`);
    await client.query(`UPDATE drifted SET name = 'renamed' WHERE id IN (6, 7); UPDATE drifted SET spot = point(0, 0) WHERE id = 8`);
    await client.query(`INSERT INTO drifted VALUES (100, 'new', '{}', point(1, 1)), (101, 'new', NULL, NULL)`);
    const differing = `SELECT count(*)::int AS n FROM drifted_recovered r JOIN drifted o USING (id) WHERE r::text IS DISTINCT FROM o::text`;

    const out = sink();
    const sql = sink();
    const first = await recover({ client, storage, table: 'drifted', snapshotId: manifest.snapshot_id, out, sqlOut: sql });
    expect(first.copyBack).toMatchObject({ mode: 'insert-rows', expectedRows: 5, expectedTotal: 22, changedRows: 3 });
    expect(first.copyBack.alternative).toMatchObject({ mode: 'upsert-rows', expectedRows: 8, expectedTotal: 22, changedRows: 3 });
    expect(out.text()).toMatch(/note: 3 row\(s\) of public\.drifted changed since the snapshot .*leaves them as they are/);
    expect(sql.text()).toContain('-- 3 row(s) of public.drifted differ from the snapshot');
    // The other form is there, commented out: running the output runs one transaction.
    expect(sql.text()).toMatch(/run this INSTEAD of the transaction above:\n(-- .*\n)+$/);
    expect(sql.text()).toContain('-- INSERT INTO "public"."drifted" AS o');
    await client.query(sql.text());
    expect((await client.query(`SELECT count(*)::int AS n FROM drifted`)).rows[0].n).toBe(22);
    expect((await client.query(differing.replace('drifted_recovered', first.recovered.table))).rows[0].n).toBe(3);

    const sql2 = sink();
    const second = await recover({ client, storage, table: 'drifted', snapshotId: manifest.snapshot_id, yes: true, overwriteChanged: true, out: sink(), sqlOut: sql2 });
    expect(second.copyBack).toMatchObject({ mode: 'upsert-rows', expectedRows: 3, expectedTotal: 22, changedRows: 3 });
    expect(sql2.text()).toContain('ON CONFLICT ("id") DO UPDATE SET');
    await client.query(sql2.text());
    expect((await client.query(differing.replace('drifted_recovered', second.recovered.table))).rows[0].n).toBe(0);
    expect((await client.query(`SELECT count(*)::int AS n FROM drifted`)).rows[0].n).toBe(22);
    // Rows added since the snapshot stay.
    expect((await client.query(`SELECT array_agg(id ORDER BY id) AS ids FROM drifted WHERE id > 20`)).rows[0].ids).toEqual([100, 101]);
  });
});

/** verify detects altered and truncated data files; prune keeps N verified snapshots per table and collects orphans. */
import { open as openFile, mkdtemp, rm, truncate, utimes, writeFile, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveDatabase } from '../../src/db/connection.js';
import { ConfigError, NotFoundError, VerificationError } from '../../src/errors/index.js';
import { captureTable } from '../../src/snapshot/capture.js';
import { listManifests } from '../../src/snapshot/list.js';
import type { Manifest } from '../../src/snapshot/manifest.js';
import { prune, pruneWithReport } from '../../src/snapshot/prune.js';
import { checkSnapshot, verifySnapshot } from '../../src/snapshot/verify.js';
import { LocalStorage } from '../../src/storage/local.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

let db: TestDatabase;
let client: pg.Client;
let folder: string;

beforeAll(async () => {
  db = await createTestDatabase();
  client = await db.client();
  folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-verify-'));
  await client.query(`CREATE TABLE t (id int, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 3000) g;
                      CREATE TABLE u (id int); INSERT INTO u VALUES (1), (2)`);
});

afterAll(async () => {
  await db?.drop();
  if (folder) await rm(folder, { recursive: true, force: true });
});

async function captures(storage: LocalStorage, table: string, n: number): Promise<Manifest[]> {
  const out: Manifest[] = [];
  for (let i = 0; i < n; i += 1) out.push(await captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table } }));
  return out;
}

async function flipByte(file: string, at: number): Promise<void> {
  const handle = await openFile(file, 'r+');
  try {
    const buffer = Buffer.alloc(1);
    await handle.read(buffer, 0, 1, at);
    buffer[0] = buffer[0]! ^ 0xff;
    await handle.write(buffer, 0, 1, at);
  } finally {
    await handle.close();
  }
}

describe('verify', () => {
  it('passes an intact snapshot and refuses an altered or truncated one', async () => {
    const storage = new LocalStorage(path.join(folder, 'verify'));
    const [intact, altered, cut] = await captures(storage, 't', 3);
    expect((await verifySnapshot(storage, intact!.snapshot_id)).ok).toBe(true);

    await flipByte(path.join(storage.root, altered!.parquet_path), 1000);
    const alteredResult = await checkSnapshot(storage, altered!);
    expect(alteredResult).toMatchObject({ ok: false });
    expect(alteredResult.problem).toMatch(/SHA-256.*altered/);
    await expect(verifySnapshot(storage, altered!.snapshot_id)).rejects.toBeInstanceOf(VerificationError);

    await truncate(path.join(storage.root, cut!.parquet_path), cut!.size_bytes - 10);
    const error = await verifySnapshot(storage, cut!).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VerificationError);
    expect((error as VerificationError).message).toMatch(/truncated/);
    expect((error as VerificationError).hint).toBeTruthy();

    await rm(path.join(storage.root, intact!.parquet_path));
    expect((await checkSnapshot(storage, intact!)).problem).toMatch(/missing/);
    await expect(verifySnapshot(storage, 'ffffffffffff')).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe('prune', () => {
  it('keeps N verified snapshots per table, never the newest verified, and honours protect', async () => {
    const storage = new LocalStorage(path.join(folder, 'prune'));
    const t = await captures(storage, 't', 5); // oldest first
    const u = await captures(storage, 'u', 2);
    // The newest snapshot of t is damaged: it does not count, and it is left for a person to look at.
    await flipByte(path.join(storage.root, t[4]!.parquet_path), 200);

    const report = await pruneWithReport(storage, { keep: 2, protect: (m) => m.snapshot_id === t[0]!.snapshot_id });
    expect(report.corrupt.map((c) => c.snapshot_id)).toEqual([t[4]!.snapshot_id]);
    expect(report.removed.map((m) => m.snapshot_id)).toEqual([t[1]!.snapshot_id]);
    expect(report.kept).toEqual(expect.arrayContaining([t[3]!.snapshot_id, t[2]!.snapshot_id, t[0]!.snapshot_id, u[1]!.snapshot_id, u[0]!.snapshot_id]));
    const left = (await listManifests(storage)).map((m) => m.snapshot_id);
    expect(left.sort()).toEqual([t[0], t[2], t[3], t[4], u[0], u[1]].map((m) => m!.snapshot_id).sort());
    expect(await storage.head(t[1]!.parquet_path)).toBeUndefined();

    const removed = await prune(storage, { keep: 1, table: { schema: 'public', table: 't' }, protect: [] });
    expect(removed.map((m) => m.snapshot_id).sort()).toEqual([t[0]!.snapshot_id, t[2]!.snapshot_id].sort());
    expect((await listManifests(storage, { table: { schema: 'public', table: 't' } })).map((m) => m.snapshot_id)).toEqual([t[4]!.snapshot_id, t[3]!.snapshot_id]);
    expect(await listManifests(storage, { table: { schema: 'public', table: 'u' } })).toHaveLength(2);
  });

  it('removes nothing when fewer than N snapshots verify', async () => {
    const storage = new LocalStorage(path.join(folder, 'few'));
    const t = await captures(storage, 't', 2);
    await flipByte(path.join(storage.root, t[1]!.parquet_path), 300);
    const report = await pruneWithReport(storage, { keep: 1 });
    expect(report.removed).toEqual([]);
    expect(report.kept).toEqual([t[0]!.snapshot_id]);
  });

  it('collects orphaned data files once they are older than the grace period', async () => {
    const storage = new LocalStorage(path.join(folder, 'orphans'));
    const [kept] = await captures(storage, 'u', 1);
    const dir = path.join(storage.root, 'snapshots', 'public.u');
    await mkdir(dir, { recursive: true });
    const old = path.join(dir, '20200101T000000000Z_aaaaaaaaaaaa.parquet');
    const oldTemp = path.join(dir, '20200101T000000000Z_bbbbbbbbbbbb.parquet.tmp-123456');
    const fresh = path.join(dir, '20991231T000000000Z_cccccccccccc.parquet');
    for (const file of [old, oldTemp, fresh]) await writeFile(file, 'partial');
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
    await utimes(old, twoHoursAgo, twoHoursAgo);
    await utimes(oldTemp, twoHoursAgo, twoHoursAgo);
    const report = await pruneWithReport(storage, { keep: 3 });
    expect(report.orphans.sort()).toEqual([
      'snapshots/public.u/20200101T000000000Z_aaaaaaaaaaaa.parquet',
      'snapshots/public.u/20200101T000000000Z_bbbbbbbbbbbb.parquet.tmp-123456',
    ]);
    expect(report.removed).toEqual([]);
    expect(await storage.head('snapshots/public.u/20991231T000000000Z_cccccccccccc.parquet')).toBeDefined();
    expect(await storage.head(kept!.parquet_path)).toBeDefined();
  });

  it('refuses keep < 1', async () => {
    const storage = new LocalStorage(path.join(folder, 'keep0'));
    await expect(prune(storage, { keep: 0 })).rejects.toBeInstanceOf(ConfigError);
  });
});

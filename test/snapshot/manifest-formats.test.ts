/**
 * The manifest follows the design's example: `"checksum": "sha256:<hex>"`, `db_size_bytes` the
 * database's size and `table_size_bytes` the table's. Manifests written before (format 1: bare hex
 * checksum, the table's size under db_size_bytes) are still read, verified, restored and recorded.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordCapturedSnapshot } from '../../src/capture/record.js';
import { resolveDatabase } from '../../src/db/connection.js';
import { verifyStoredChecksum } from '../../src/gate/checksum.js';
import { restoreSnapshot } from '../../src/restore/restore.js';
import { captureTable } from '../../src/snapshot/capture.js';
import { manifestKeyForData } from '../../src/snapshot/layout.js';
import { findManifest } from '../../src/snapshot/list.js';
import { checksumHex, parseManifest, type Manifest } from '../../src/snapshot/manifest.js';
import { verifySnapshot } from '../../src/snapshot/verify.js';
import { LocalStorage } from '../../src/storage/local.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

let db: TestDatabase;
let client: pg.Client;
let folder: string;
let storage: LocalStorage;

beforeAll(async () => {
  db = await createTestDatabase();
  client = await db.client();
  folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-manifest-formats-'));
  storage = new LocalStorage(folder);
  await client.query(`CREATE TABLE formats (id int PRIMARY KEY, v text); INSERT INTO formats SELECT g, 'v' || g FROM generate_series(1, 100) g`);
});

afterAll(async () => {
  await db?.drop();
  if (folder) await rm(folder, { recursive: true, force: true });
});

/** Rewrite a stored manifest as Backstop 0.1.0's format 1 wrote it. */
async function downgradeToFormat1(manifest: Manifest): Promise<void> {
  const file = path.join(folder, manifestKeyForData(manifest.parquet_path)!);
  const stored = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  stored.format_version = 1;
  stored.checksum = checksumHex(manifest);
  stored.db_size_bytes = stored.table_size_bytes;
  delete stored.table_size_bytes;
  await writeFile(file, JSON.stringify(stored, null, 2));
}

describe('manifest formats', () => {
  it('writes sha256:<hex> and both sizes', async () => {
    const manifest = await captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table: 'formats' } });
    expect(manifest.format_version).toBe(2);
    expect(manifest.checksum).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(manifest.table_size_bytes).toBeGreaterThan(0);
    expect(manifest.db_size_bytes).toBeGreaterThan(manifest.table_size_bytes);
  });

  it('reads, verifies, restores and records a format-1 manifest', async () => {
    const manifest = await captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table: 'formats' } });
    await downgradeToFormat1(manifest);
    const old = await findManifest(storage, manifest.snapshot_id);
    expect(old).toMatchObject({ format_version: 1, checksum: checksumHex(manifest), table_size_bytes: manifest.table_size_bytes, db_size_bytes: null });
    expect((await verifySnapshot(storage, old)).ok).toBe(true);
    await verifyStoredChecksum(storage, old);
    const restored = await restoreSnapshot({ client, storage, snapshotId: old.snapshot_id, into: 'formats_from_v1' });
    expect(restored.tables[0]!.rows).toBe(100);

    // The catalog holds the bare hex for both formats (agent_record_snapshot reads `sha256` first).
    const pool = { query: (sql: string, params: unknown[]) => client.query(sql, params) } as unknown as pg.Pool;
    const recorded = async () =>
      (await client.query<{ checksum: string }>(`SELECT checksum FROM backstop.snapshots WHERE snapshot_id = $1`, [old.snapshot_id])).rows[0]?.checksum;
    await recordCapturedSnapshot(pool, undefined, old, true);
    expect(await recorded()).toBe(checksumHex(manifest));
    await recordCapturedSnapshot(pool, undefined, manifest, true);
    expect(await recorded()).toBe(checksumHex(manifest));
  });

  it('refuses a manifest without a SHA-256 checksum', () => {
    const text = JSON.stringify({ format_version: 2, snapshot_id: 'x', schema: 's', table: 't', row_count: 0, columns: [], parquet_path: 'p', size_bytes: 0, checksum: 'md5:abc', content_hash: {}, created_at: '' });
    expect(() => parseManifest(text, 'test')).toThrow(/no SHA-256 checksum/);
  });
});

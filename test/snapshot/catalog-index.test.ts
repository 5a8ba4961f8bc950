/**
 * Listing and pruning from one storage listing plus a per-table catalog index: manifests are read
 * only when the index does not know them, and the listing, never the index, decides what exists.
 * Synthetic snapshots (a manifest with the required fields beside a small data file) in a local
 * folder and in a real S3 server.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { indexKey } from '../../src/snapshot/catalog-index.js';
import { snapshotKeys } from '../../src/snapshot/layout.js';
import { listSnapshots } from '../../src/snapshot/list.js';
import type { SnapshotSource } from '../../src/snapshot/manifest.js';
import { pruneWithReport } from '../../src/snapshot/prune.js';
import { storageTimestamp } from '../../src/snapshot/snapshot-id.js';
import { openStorage } from '../../src/storage/open.js';
import type { Storage } from '../../src/storage/storage.js';
import { startTestS3, type TestS3 } from '../support/s3.js';

let s3: TestS3;
let folder: string;
let serial = 0;
beforeAll(async () => {
  s3 = await startTestS3();
  folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-catalog-'));
});
afterAll(async () => {
  await s3?.stop();
  if (folder) await rm(folder, { recursive: true, force: true });
});

/** A storage that counts the manifests it is asked to read. */
function counting(storage: Storage): Storage & { manifestReads: number } {
  const wrapper: Storage & { manifestReads: number } = {
    url: storage.url,
    manifestReads: 0,
    put: (key, body, options) => storage.put(key, body, options),
    get: async (key) => {
      if (key.endsWith('.manifest.json')) wrapper.manifestReads += 1;
      return storage.get(key);
    },
    head: (key) => storage.head(key),
    list: (prefix) => storage.list(prefix),
    delete: (key) => storage.delete(key),
    check: () => storage.check(),
  };
  return wrapper;
}

interface Synthetic {
  snapshot_id: string;
  manifestKey: string;
  dataKey: string;
}

/** Publish a snapshot as a capture would: data file first, manifest last. */
async function publish(storage: Storage, table: string, createdAt: Date, source: SnapshotSource = 'sidecar'): Promise<Synthetic> {
  serial += 1;
  const snapshotId = serial.toString(16).padStart(12, '0');
  const keys = snapshotKeys({ schema: 'public', table }, storageTimestamp(createdAt), snapshotId);
  const data = Buffer.from(`rows of ${table} ${snapshotId}`);
  await storage.put(keys.data, Readable.from([data]));
  const manifest = {
    format_version: 1, snapshot_id: snapshotId, schema: 'public', table, row_count: 3, columns: [], ddl: '', definition: {},
    parquet_path: keys.data, location: `${storage.url}/${keys.data}`, size_bytes: data.length,
    checksum: createHash('sha256').update(data).digest('hex'), checksum_algorithm: 'sha256',
    content_hash: { algorithm: 'row-fields-sum128/v2', value: '0', row_count: 3 }, session_settings: {},
    created_at: createdAt.toISOString(), source, request_id: null, label: null, group: null, read_from: null,
    db_size_bytes: 0, duration_ms: 5, server_version: '17', server_version_num: 170000, compression: 'snappy', warnings: [],
  };
  await storage.put(keys.manifest, Readable.from([Buffer.from(JSON.stringify(manifest))]));
  return { snapshot_id: snapshotId, manifestKey: keys.manifest, dataKey: keys.data };
}

const HOUR = 3_600_000;

describe.each([
  ['local folder', () => openStorage(path.join(folder, `local-${++serial}`))],
  ['S3', () => openStorage(s3.url(`catalog-${++serial}`))],
])('catalog index, %s', (_name, open: () => Storage) => {
  it('lists from the index on the second listing without reading a manifest', async () => {
    const storage = counting(open());
    const now = Date.now();
    const made = [];
    for (let i = 0; i < 4; i += 1) made.push(await publish(storage, 'orders', new Date(now - i * HOUR)));
    await publish(storage, 'users', new Date(now));
    const first = await listSnapshots(storage);
    expect(first.filter((s) => s.table === 'orders').map((s) => s.snapshot_id)).toEqual(made.map((m) => m.snapshot_id));
    expect(storage.manifestReads).toBe(5);
    expect(await storage.head(indexKey('public.orders'))).toBeDefined();

    storage.manifestReads = 0;
    const second = await listSnapshots(storage);
    expect(second).toEqual(first);
    expect(storage.manifestReads).toBe(0);
    expect(await listSnapshots(storage, { table: { schema: 'public', table: 'users' } })).toHaveLength(1);
    expect(storage.manifestReads).toBe(0);
  });

  it('never lists a snapshot whose manifest another process removed, though the index still names it', async () => {
    const storage = counting(open());
    const kept = await publish(storage, 't', new Date(Date.now() - HOUR));
    const gone = await publish(storage, 't', new Date());
    await listSnapshots(storage);
    await storage.delete(gone.manifestKey);
    expect((await listSnapshots(storage)).map((s) => s.snapshot_id)).toEqual([kept.snapshot_id]);
  });

  it('reads only the manifest another process added since the index was written', async () => {
    const storage = counting(open());
    await publish(storage, 't', new Date(Date.now() - HOUR));
    await listSnapshots(storage);
    const added = await publish(storage, 't', new Date());
    storage.manifestReads = 0;
    expect((await listSnapshots(storage))[0]!.snapshot_id).toBe(added.snapshot_id);
    expect(storage.manifestReads).toBe(1);
  });

  it('ignores a damaged index and rebuilds it', async () => {
    const storage = counting(open());
    const one = await publish(storage, 't', new Date());
    await storage.put(indexKey('public.t'), Readable.from([Buffer.from('{not json')]));
    expect((await listSnapshots(storage)).map((s) => s.snapshot_id)).toEqual([one.snapshot_id]);
    storage.manifestReads = 0;
    await listSnapshots(storage);
    expect(storage.manifestReads).toBe(0);
  });

  it('lists no data file that has no manifest', async () => {
    const storage = open();
    const one = await publish(storage, 't', new Date());
    await storage.put('snapshots/public.t/20200101T000000000Z_aaaaaaaaaaaa.parquet', Readable.from([Buffer.from('partial')]));
    expect((await listSnapshots(storage)).map((s) => s.snapshot_id)).toEqual([one.snapshot_id]);
  });

  it('prunes by policy without reading a manifest the index knows, and keeps before-images and on-demand snapshots out of the background policy', async () => {
    const storage = counting(open());
    const now = Date.now();
    const made = [];
    // Oldest first: a before-image, two on-demand, and background snapshots an hour apart.
    for (let i = 9; i >= 0; i -= 1) {
      const source: SnapshotSource = i === 9 ? 'before-image' : i === 5 || i === 1 ? 'on-demand' : 'sidecar';
      made.unshift({ ...(await publish(storage, 't', new Date(now - i * HOUR), source)), source });
    }
    await listSnapshots(storage);
    storage.manifestReads = 0;
    const dry = await pruneWithReport(storage, { policy: { last: 2, hourly: 0, daily: 0 }, sources: ['sidecar'], verification: 'size', dryRun: true });
    expect(storage.manifestReads).toBe(0);
    const sidecars = made.filter((m) => m.source === 'sidecar').map((m) => m.snapshot_id);
    expect(dry.removed.map((s) => s.snapshot_id)).toEqual(sidecars.slice(2));
    expect((await listSnapshots(storage)).length).toBe(10);

    const report = await pruneWithReport(storage, { policy: { last: 2, hourly: 0, daily: 0 }, sources: ['sidecar'], verification: 'size' });
    expect(report.removed.map((s) => s.snapshot_id)).toEqual(sidecars.slice(2));
    const left = (await listSnapshots(storage)).map((s) => s.snapshot_id);
    expect(left).toEqual(made.filter((m) => m.source !== 'sidecar' || sidecars.slice(0, 2).includes(m.snapshot_id)).map((m) => m.snapshot_id));
    for (const removed of report.removed) expect(await storage.head(removed.parquet_path)).toBeUndefined();
  });

  it('does not remove on the strength of a kept snapshot whose data file is damaged', async () => {
    const storage = open();
    const older = await publish(storage, 't', new Date(Date.now() - HOUR));
    const newest = await publish(storage, 't', new Date());
    await storage.put(newest.dataKey, Readable.from([Buffer.from('x')]));
    const report = await pruneWithReport(storage, { keep: 1, verification: 'size' });
    expect(report.corrupt.map((c) => c.snapshot_id)).toEqual([newest.snapshot_id]);
    expect(report.removed).toEqual([]);
    expect(report.kept).toEqual([older.snapshot_id]);
  });
});

/**
 * A capture that fails or is aborted at any step publishes nothing: no manifest, and the data
 * files it uploaded are removed.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveDatabase } from '../../src/db/connection.js';
import { BackstopError, NotFoundError, SnapshotError, StorageError } from '../../src/errors/index.js';
import { captureGroup, captureTable } from '../../src/snapshot/capture.js';
import { listManifests } from '../../src/snapshot/list.js';
import { LocalStorage } from '../../src/storage/local.js';
import type { PutOptions, Storage } from '../../src/storage/storage.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { withoutGuard } from '../restore/guard.js';

let db: TestDatabase;
let client: pg.Client;
let folder: string;
const TABLE = { schema: 'public', table: 'items' };

/** Local storage that runs `beforePut` before each write (to fail or abort at a chosen point). */
class InterceptedStorage extends LocalStorage {
  constructor(root: string, private readonly beforePut: (key: string) => void) {
    super(root);
  }

  override async put(key: string, body: Readable, options?: PutOptions): Promise<{ size: number }> {
    this.beforePut(key);
    return super.put(key, body, options);
  }
}

async function leftovers(storage: Storage): Promise<string[]> {
  return (await storage.list('')).map((o) => o.key);
}

async function waitFor(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 600; i += 1) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('timed out');
}

beforeAll(async () => {
  db = await createTestDatabase();
  client = await db.client();
  folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-failures-'));
  await client.query(`CREATE TABLE items (id int PRIMARY KEY, note text); INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 2000) g;
                      CREATE TABLE others (id int); INSERT INTO others VALUES (1)`);
});

afterAll(async () => {
  await db?.drop();
  if (folder) await rm(folder, { recursive: true, force: true });
});

describe('failed captures publish nothing', () => {
  it('when the manifest cannot be written', async () => {
    const storage = new InterceptedStorage(path.join(folder, 'manifest-fails'), (key) => {
      if (key.endsWith('.manifest.json')) throw new StorageError('disk full (simulated)');
    });
    await expect(captureTable({ database: resolveDatabase(db.url), storage, table: TABLE })).rejects.toBeInstanceOf(StorageError);
    expect(await leftovers(storage)).toEqual([]);
  });

  it('when the data file upload fails', async () => {
    const storage = new InterceptedStorage(path.join(folder, 'data-fails'), (key) => {
      if (key.endsWith('.parquet')) throw new StorageError('network down (simulated)');
    });
    await expect(captureTable({ database: resolveDatabase(db.url), storage, table: TABLE })).rejects.toThrow(/network down/);
    expect(await leftovers(storage)).toEqual([]);
  });

  it('when one table of a group fails, no table of the group is published', async () => {
    const storage = new InterceptedStorage(path.join(folder, 'group-fails'), (key) => {
      if (key.includes('others') && key.endsWith('.manifest.json')) throw new StorageError('fails for the second table');
    });
    await expect(
      captureGroup({ database: resolveDatabase(db.url), storage, group: 'g', tables: [{ table: TABLE }, { table: { schema: 'public', table: 'others' } }] }),
    ).rejects.toThrow(/second table/);
    expect(await leftovers(storage)).toEqual([]);
    expect(await listManifests(storage)).toEqual([]);
  });

  it('when aborted during the upload', async () => {
    const controller = new AbortController();
    const storage = new InterceptedStorage(path.join(folder, 'abort-upload'), () => controller.abort());
    const error = await captureTable({ database: resolveDatabase(db.url), storage, table: TABLE, signal: controller.signal }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SnapshotError);
    expect((error as Error).message).toMatch(/aborted/);
    expect(await leftovers(storage)).toEqual([]);
  });

  it('when aborted while waiting for a lock inside the database snapshot', async () => {
    const storage = new LocalStorage(path.join(folder, 'abort-lock'));
    const blocker = await db.client();
    const watcher = await db.client();
    await blocker.query('BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE');
    try {
      const controller = new AbortController();
      const capture = captureTable({ database: resolveDatabase(db.url), storage, table: TABLE, signal: controller.signal }).catch((e: unknown) => e);
      await waitFor(async () => (await watcher.query(`SELECT count(*)::int AS n FROM pg_locks WHERE relation = 'items'::regclass AND NOT granted`)).rows[0].n > 0);
      controller.abort();
      const error = await capture;
      expect(error).toBeInstanceOf(SnapshotError);
      expect((error as Error).message).toMatch(/aborted/);
      await waitFor(async () => (await watcher.query(`SELECT count(*)::int AS n FROM pg_locks WHERE relation = 'items'::regclass AND NOT granted`)).rows[0].n === 0);
    } finally {
      await blocker.query('ROLLBACK');
    }
    expect(await leftovers(storage)).toEqual([]);
  });

  it('when the table is dropped while the capture waits for it', async () => {
    await client.query(`CREATE TABLE lock_order (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text);
                        INSERT INTO lock_order (note) SELECT 'n' || g FROM generate_series(1, 100) g`);
    const storage = new LocalStorage(path.join(folder, 'lock-order'));
    const blocker = await db.client();
    await blocker.query('BEGIN; LOCK TABLE lock_order IN ACCESS EXCLUSIVE MODE');
    const capture = captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table: 'lock_order' } }).catch((e: unknown) => e);
    await waitFor(async () => (await client.query(`SELECT count(*)::int AS n FROM pg_locks WHERE relation = 'lock_order'::regclass AND NOT granted`)).rows[0].n > 0);
    await withoutGuard(blocker, async () => {
      await blocker.query('DROP TABLE lock_order');
      await blocker.query('COMMIT');
    });
    const error = await capture;
    expect(error).toBeInstanceOf(BackstopError);
    expect((error as Error).message).toMatch(/lock_order/);
    expect(await leftovers(storage)).toEqual([]);
  });
  it('when the capture connection is killed', async () => {
    const storage = new LocalStorage(path.join(folder, 'killed'));
    const blocker = await db.client();
    await blocker.query('BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE');
    try {
      const capture = captureTable({ database: resolveDatabase(db.url), storage, table: TABLE }).catch((e: unknown) => e);
      let pid = 0;
      await waitFor(async () => {
        const { rows } = await blocker.query(`SELECT pid FROM pg_locks WHERE relation = 'items'::regclass AND NOT granted`);
        pid = rows[0]?.pid ?? 0;
        return pid > 0;
      });
      await blocker.query('SELECT pg_terminate_backend($1)', [pid]);
      const error = await capture;
      expect(error).toBeInstanceOf(BackstopError);
    } finally {
      await blocker.query('ROLLBACK');
    }
    expect(await leftovers(storage)).toEqual([]);
  });

  it('reports a missing table as NotFoundError', async () => {
    const storage = new LocalStorage(path.join(folder, 'missing'));
    await expect(captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table: 'nope' } })).rejects.toBeInstanceOf(NotFoundError);
    expect(await leftovers(storage)).toEqual([]);
  });
});

describe('lock order', () => {
  it("takes the table's lock before reading its sequences, the order DROP TABLE takes them in", async () => {
    // Otherwise a capture holding the sequence and waiting for the table, and a DROP holding the
    // table and waiting for the sequence, deadlock (seen with the agent's startup sweep).
    await client.query(`CREATE TABLE seq_order (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text);
                        INSERT INTO seq_order (note) SELECT 'n' || g FROM generate_series(1, 100) g`);
    const sequence = (await client.query(`SELECT pg_get_serial_sequence('seq_order', 'id') AS s`)).rows[0].s as string;
    const storage = new LocalStorage(path.join(folder, 'seq-order'));
    const blocker = await db.client();
    // Renaming the sequence holds it exclusively until the blocker's transaction ends.
    await blocker.query(`BEGIN; ALTER SEQUENCE ${sequence} RENAME TO seq_order_renamed`);
    const capture = captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table: 'seq_order' } }).catch((e: unknown) => e);
    let pid = 0;
    await waitFor(async () => {
      const { rows } = await client.query(`SELECT pid FROM pg_locks WHERE relation = $1::regclass AND NOT granted`, [sequence]);
      pid = rows[0]?.pid ?? 0;
      return pid > 0;
    });
    const held = await client.query(`SELECT mode FROM pg_locks WHERE pid = $1 AND relation = 'seq_order'::regclass AND granted`, [pid]);
    await blocker.query('ROLLBACK');
    expect(held.rows.map((r) => r.mode)).toContain('AccessShareLock');
    const manifest = await capture;
    expect((manifest as { row_count?: number }).row_count).toBe(100);
  });
});

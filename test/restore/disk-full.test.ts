/**
 * A restore from S3 downloads the data file to TMPDIR first: when that disk is full the error
 * says so (ENOSPC, and how much room it needs), not "check that the storage is reachable". Needs
 * a small tmpfs to fill, so it runs where this process may mount one (root, outside most
 * containers' restrictions) and is skipped elsewhere.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveDatabase } from '../../src/db/connection.js';
import { LocalDiskFullError } from '../../src/errors/index.js';
import { restoreSnapshot } from '../../src/restore/restore.js';
import { captureTable } from '../../src/snapshot/capture.js';
import { openStorage } from '../../src/storage/open.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestS3, type TestS3 } from '../support/s3.js';

/** A 64 KB tmpfs at a fresh folder, or undefined where mounting is not allowed. */
async function smallDisk(): Promise<string | undefined> {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return undefined;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'backstop-full-disk-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], { stdio: 'ignore' });
    return dir;
  } catch {
    await rm(dir, { recursive: true, force: true });
    return undefined;
  }
}

const disk = await smallDisk();

describe.skipIf(!disk)('restore with a full TMPDIR', () => {
  let db: TestDatabase;
  let client: pg.Client;
  let s3: TestS3;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    s3 = await startTestS3();
  });
  afterAll(async () => {
    await db?.drop();
    await s3?.stop();
    if (disk) {
      try {
        execFileSync('umount', [disk], { stdio: 'ignore' });
      } finally {
        await rm(disk, { recursive: true, force: true });
      }
    }
  });

  it('says the local disk is full, and how much room the data file needs', async () => {
    await client.query(`CREATE TABLE wide AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 20000) AS g`);
    const storage = openStorage(s3.url('disk-full'));
    const manifest = await captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table: 'wide' } });
    expect(manifest.size_bytes).toBeGreaterThan(64 * 1024);
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = disk!;
    let caught: unknown;
    try {
      await restoreSnapshot({ client, storage, snapshotId: manifest.snapshot_id, into: 'wide_restored' });
    } catch (error) {
      caught = error;
    } finally {
      process.env.TMPDIR = saved;
      if (saved === undefined) delete process.env.TMPDIR;
    }
    expect(caught).toBeInstanceOf(LocalDiskFullError);
    expect((caught as LocalDiskFullError).message).toMatch(/no space left on the local disk/);
    expect((caught as LocalDiskFullError).hint).toContain(`${manifest.size_bytes}-byte`);
    expect((caught as LocalDiskFullError).hint).not.toMatch(/storage is reachable/);
    expect((await client.query(`SELECT to_regclass('wide_restored') AS t`)).rows[0].t).toBeNull();
  });
});

/**
 * The SHA-256 of a local data file (src/restore/verified-file.ts), read with several reads in
 * flight: the same digest and size as hashing the file in one piece, whatever the size is against
 * the read chunk (1 MiB) and the number of reads ahead (4).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestOfLocalFile } from '../../src/restore/verified-file.js';

const MiB = 1024 * 1024;

describe('digest of a local data file', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'backstop-digest-'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it.each([0, 1, MiB - 1, MiB, MiB + 1, 4 * MiB, 4 * MiB + 1, 5.5 * MiB, 9 * MiB])('gives the sha256 and size of a %i-byte file', async (size) => {
    const bytes = randomBytes(size);
    const file = path.join(dir, `data ${size}.parquet`);
    await writeFile(file, bytes);
    expect(await digestOfLocalFile(file)).toEqual({ sha256: createHash('sha256').update(bytes).digest('hex'), size });
  });

  it('stops when its signal is aborted (the restore failed elsewhere meanwhile)', async () => {
    const file = path.join(dir, 'big.parquet');
    await writeFile(file, randomBytes(16 * MiB));
    const stop = new AbortController();
    const digesting = digestOfLocalFile(file, stop.signal);
    stop.abort();
    await expect(digesting).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('fails with the file system error for a missing file', async () => {
    await expect(digestOfLocalFile(path.join(dir, 'missing.parquet'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

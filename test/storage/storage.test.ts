/** Both storage implementations behave alike: a local folder, and a real S3 server over HTTP. */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NotFoundError, StorageError } from '../../src/errors/index.js';
import { digestOf } from '../../src/storage/digest.js';
import { LocalStorage } from '../../src/storage/local.js';
import { openStorage } from '../../src/storage/open.js';
import type { Storage } from '../../src/storage/storage.js';
import { startTestS3, type TestS3 } from '../support/s3.js';

async function text(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** A stream of `size` pseudo-random bytes produced in 1 MB chunks, failing after `failAt` bytes if given. */
function generated(size: number, failAt?: number): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (failAt !== undefined && sent >= failAt) {
        this.destroy(new Error('source failed on purpose'));
        return;
      }
      if (sent >= size) {
        this.push(null);
        return;
      }
      const n = Math.min(1024 * 1024, size - sent);
      const chunk = Buffer.alloc(n);
      for (let i = 0; i < n; i += 1) chunk[i] = (sent + i) % 251;
      sent += n;
      this.push(chunk);
    },
  });
}

let s3: TestS3;
let folder: string;
beforeAll(async () => {
  s3 = await startTestS3();
  folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-storage-'));
});
afterAll(async () => {
  await s3?.stop();
  if (folder) await rm(folder, { recursive: true, force: true });
});

describe.each([
  ['local folder', () => openStorage(`file://${folder}/store`)],
  ['S3', () => openStorage(s3.url('some/prefix'))],
])('%s storage', (_name, open: () => Storage) => {
  it('puts, heads, gets, lists and deletes', async () => {
    const storage = open();
    await storage.check();
    const { size } = await storage.put('snapshots/a.b/one.txt', Readable.from([Buffer.from('hello '), Buffer.from('wörld')]));
    expect(size).toBe(Buffer.byteLength('hello wörld'));
    expect((await storage.head('snapshots/a.b/one.txt'))?.size).toBe(size);
    expect(await text(await storage.get('snapshots/a.b/one.txt'))).toBe('hello wörld');
    await storage.put('snapshots/c.d/two.txt', Readable.from([Buffer.from('2')]));
    await storage.put('other/three.txt', Readable.from([Buffer.from('3')]));
    expect((await storage.list('snapshots/')).map((o) => o.key).sort()).toEqual(['snapshots/a.b/one.txt', 'snapshots/c.d/two.txt']);
    expect((await storage.list('snapshots/a.')).map((o) => o.key)).toEqual(['snapshots/a.b/one.txt']);
    expect((await storage.listFolders!('snapshots/')).sort()).toEqual(['a.b', 'c.d']);
    expect(await storage.listFolders!('nothing/')).toEqual([]);
    await storage.delete('snapshots/a.b/one.txt');
    await storage.delete('snapshots/a.b/one.txt');
    expect(await storage.head('snapshots/a.b/one.txt')).toBeUndefined();
    await expect(storage.get('snapshots/a.b/one.txt')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('streams a multi-part body byte-exact', async () => {
    const storage = open();
    const size = 20 * 1024 * 1024 + 12345;
    const expected = await digestOf(generated(size));
    await storage.put('big/blob.bin', generated(size), { size });
    expect((await storage.head('big/blob.bin'))?.size).toBe(size);
    expect(await digestOf(await storage.get('big/blob.bin'))).toEqual(expected);
  });

  it('leaves nothing behind when the body fails half way', async () => {
    const storage = open();
    await expect(storage.put('broken/blob.bin', generated(20 * 1024 * 1024, 9 * 1024 * 1024))).rejects.toThrow();
    expect(await storage.head('broken/blob.bin')).toBeUndefined();
    expect(await storage.list('broken/')).toEqual([]);
  });

  it('leaves nothing behind when aborted', async () => {
    const storage = open();
    const controller = new AbortController();
    const body = generated(64 * 1024 * 1024);
    let seen = 0;
    body.on('data', (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > 6 * 1024 * 1024) controller.abort();
    });
    await expect(storage.put('aborted/blob.bin', body, { signal: controller.signal })).rejects.toThrow();
    expect(await storage.list('aborted/')).toEqual([]);
  });
});

describe('storage failures', () => {
  it('reports a missing bucket with a hint', async () => {
    const storage = openStorage(`s3://no-such-bucket-here@${s3.endpoint}`);
    const error = await storage.check().then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(StorageError);
    expect((error as StorageError).hint).toBeTruthy();
  });

  it('reports an unreachable endpoint', async () => {
    const storage = openStorage('s3://some-bucket@http://127.0.0.1:1');
    const error = await storage.check().then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(StorageError);
    expect((error as StorageError).hint).toMatch(/reachable|endpoint/);
  });

  it('writes local files through a temp name only', async () => {
    const storage = new LocalStorage(path.join(folder, 'atomic'));
    await storage.put('x/y.bin', generated(3 * 1024 * 1024));
    expect(await readdir(path.join(folder, 'atomic', 'x'))).toEqual(['y.bin']);
  });
});

/**
 * COPY … FROM STDIN fed from a named pipe into reused buffers (src/restore/copy-in.ts): the rows
 * arrive, every chunk is seen before it is sent, and each way of stopping — a row the server
 * refuses, a source that fails, a chunk the caller refuses — ends the COPY with the right error
 * and leaves the connection usable.
 */
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFromPipe } from '../../src/restore/copy-in.js';
import { createNamedPipe, openPipeReader, openPipeWriter } from '../../src/scratch/named-pipe.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/** A pipe whose reading end is the COPY's source and whose writing end the test writes. */
async function pipeSource(dir: string, name: string) {
  const fifo = await createNamedPipe(dir, name);
  let reader: { stream: net.Socket; release(): void } | undefined;
  return {
    fifo,
    open(onread: net.OnReadOpts) {
      reader = openPipeReader(fifo, onread);
      return Promise.resolve(reader.stream);
    },
    /** Write `text` and close; fails (EPIPE) when the reader stopped first. */
    async write(text: Iterable<string>) {
      const writer = await openPipeWriter(fifo, () => false);
      let failed: unknown;
      writer.on('error', (error) => {
        failed = error;
      });
      try {
        for (const part of text) {
          if (failed) throw failed;
          if (!writer.write(part)) await once(writer, 'drain');
        }
        await new Promise<void>((resolve, reject) => {
          if (failed) reject(failed);
          writer.once('error', reject);
          writer.end(resolve);
        });
      } finally {
        writer.destroy();
        reader?.release();
      }
    },
    get reader() {
      return reader!;
    },
  };
}

/** COPY text lines, in parts of about 64 KiB; row `bad` has a value the server refuses. */
function* rows(count: number, bad?: number): Generator<string> {
  let part = '';
  for (let id = 1; id <= count; id += 1) {
    part += `${id}\t${id === bad ? 'not a number' : id * 2}\trow "${id}" ü\n`;
    if (part.length >= 65_536) {
      yield part;
      part = '';
    }
  }
  if (part) yield part;
}

describe('COPY from a pipe', () => {
  let db: TestDatabase;
  let client: pg.Client;
  let dir: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    dir = await mkdtemp(path.join(os.tmpdir(), 'backstop-copy-in-'));
    await client.query(`CREATE TABLE "Copy target" (id int PRIMARY KEY, "two x" int, label text)`);
  });
  afterAll(async () => {
    await db?.drop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const sql = `COPY "Copy target" (id, "two x", label) FROM STDIN`;

  it('loads every row and shows every byte to onChunk first, in order', async () => {
    const source = await pipeSource(dir, 'ok');
    const seen: Buffer[] = [];
    const count = 200_000;
    await client.query('BEGIN');
    const loading = copyFromPipe({ client, sql, open: (onread) => source.open(onread), onChunk: (chunk) => seen.push(Buffer.from(chunk)) });
    await source.write(rows(count));
    expect(await loading).toBe(count);
    expect(Buffer.concat(seen).toString('utf8')).toBe([...rows(count)].join(''));
    const { rows: [loaded] } = await client.query<{ n: number; sum: string }>(`SELECT count(*)::int AS n, sum("two x")::text AS sum FROM "Copy target"`);
    expect(loaded).toEqual({ n: count, sum: String(count * (count + 1)) });
    await client.query('ROLLBACK');
  });

  it('fails with the server\'s error when it refuses a row, and stops reading', async () => {
    const source = await pipeSource(dir, 'refused');
    await client.query('BEGIN');
    const loading = copyFromPipe({ client, sql, open: (onread) => source.open(onread), onChunk: () => {} });
    // The bad row comes early; the writer must not be left blocked on a reader that stopped.
    const writing = source.write(rows(500_000, 10)).catch((error: unknown) => error);
    const error = await loading.catch((e: unknown) => e);
    expect((error as { code?: string }).code).toBe('22P02');
    expect((await writing) as { code?: string }).toMatchObject({ code: 'EPIPE' });
    expect(source.reader.stream.destroyed).toBe(true);
    await client.query('ROLLBACK');
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('abandons the COPY with the source\'s own error when the source fails', async () => {
    const source = await pipeSource(dir, 'broken');
    await client.query('BEGIN');
    const loading = copyFromPipe({ client, sql, open: (onread) => source.open(onread), onChunk: () => {} });
    const writer = await openPipeWriter(source.fifo, () => false);
    writer.on('error', () => {});
    writer.write([...rows(1000)].join(''));
    await new Promise((resolve) => setTimeout(resolve, 50));
    // What copy-text.ts does when DuckDB fails: the source is destroyed with DuckDB's error.
    source.reader.stream.destroy(new Error('DuckDB stopped'));
    await expect(loading).rejects.toThrow('DuckDB stopped');
    writer.destroy();
    source.reader.release();
    await client.query('ROLLBACK');
    expect((await client.query(`SELECT count(*)::int AS n FROM "Copy target"`)).rows).toEqual([{ n: 0 }]);
  });

  it('abandons the COPY when onChunk throws', async () => {
    const source = await pipeSource(dir, 'refused-chunk');
    await client.query('BEGIN');
    const loading = copyFromPipe({
      client, sql, open: (onread) => source.open(onread),
      onChunk: () => {
        throw new Error('the row hasher refused this');
      },
    });
    const writing = source.write(rows(100_000)).catch(() => {});
    await expect(loading).rejects.toThrow('the row hasher refused this');
    await writing;
    await client.query('ROLLBACK');
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('fails before reading when the COPY cannot start', async () => {
    let opened = false;
    await client.query('BEGIN');
    const error = await copyFromPipe({
      client,
      sql: `COPY "no such table" FROM STDIN`,
      open: () => {
        opened = true;
        throw new Error('not reached');
      },
      onChunk: () => {},
    }).catch((e: unknown) => e);
    expect((error as { code?: string }).code).toBe('42P01');
    expect(opened).toBe(false);
    await client.query('ROLLBACK');
  });
});

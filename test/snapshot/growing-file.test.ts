/**
 * Reading a file while its writer still appends to it (the capture's upload beside DuckDB's
 * encode): every byte arrives once, in order; the stream ends only after the writer finished,
 * and fails with the writer's error.
 */
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { followGrowingFile } from '../../src/snapshot/growing-file.js';

let folder: string;

beforeAll(async () => {
  folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-growing-'));
});

afterAll(async () => {
  await rm(folder, { recursive: true, force: true });
});

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('followGrowingFile', () => {
  it('passes on every byte as the writer appends, and ends after the writer finished', async () => {
    const file = path.join(folder, 'appended.bin');
    const pieces = Array.from({ length: 12 }, (_, i) => Buffer.alloc(300_000 + i * 7919, i));
    const writer = (async () => {
      await delay(20); // the reader starts before the file exists
      await writeFile(file, '');
      for (const piece of pieces) {
        await appendFile(file, piece);
        await delay(3);
      }
    })();
    const read = await readAll(followGrowingFile(file, writer));
    expect(read.equals(Buffer.concat(pieces))).toBe(true);
  });

  it("fails with the writer's error, once it has read what was written", async () => {
    const file = path.join(folder, 'failing.bin');
    const writer = (async () => {
      await writeFile(file, 'partial');
      await delay(10);
      throw new Error('the encoder failed');
    })();
    writer.catch(() => {});
    await expect(readAll(followGrowingFile(file, writer))).rejects.toThrow('the encoder failed');
  });

  it('fails when the writer finished without ever creating the file', async () => {
    const file = path.join(folder, 'never.bin');
    await expect(readAll(followGrowingFile(file, Promise.resolve()))).rejects.toThrow(/never written/);
  });

  it('stops when aborted', async () => {
    const file = path.join(folder, 'aborted.bin');
    await writeFile(file, 'x');
    const controller = new AbortController();
    const never = new Promise<void>(() => {});
    const reading = readAll(followGrowingFile(file, never, controller.signal));
    await delay(20);
    controller.abort();
    await expect(reading).rejects.toThrow(/abort/i);
  });
});

/**
 * A file another writer is still appending to (DuckDB writing a Parquet file), read as a stream:
 * bytes are passed on as they land, so the upload runs beside the encode instead of after it.
 * At the end of what is there the reader waits until the writer has finished, then reads the
 * rest and ends — or fails with the writer's error.
 *
 * Only for writers that append: DuckDB writes a Parquet file front to back, footer last, with
 * plain write() calls (seen with strace), and never rewrites a byte. The caller checks the size
 * read against the finished file; restore checks the SHA-256 against the stored object.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';

const CHUNK_BYTES = 1024 * 1024;
/** How long to wait for the writer before looking again. */
const POLL_MS = 5;

type WriterState = { done: false } | { done: true; error?: unknown };

export function followGrowingFile(file: string, writer: Promise<unknown>, signal?: AbortSignal): Readable {
  let state: WriterState = { done: false };
  writer.then(
    () => {
      state = { done: true };
    },
    (error: unknown) => {
      state = { done: true, error: error ?? new Error('the writer failed') };
    },
  );

  async function waitForWriter(): Promise<void> {
    signal?.throwIfAborted();
    await delay(POLL_MS, undefined, signal ? { signal } : {});
  }

  async function* chunks(): AsyncGenerator<Buffer> {
    let handle: FileHandle | undefined;
    while (!handle) {
      const before = state;
      try {
        handle = await open(file, 'r');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        if (before.done) throw before.error ?? new Error(`${file} was never written`);
        await waitForWriter();
      }
    }
    try {
      let position = 0;
      for (;;) {
        // Read the writer's state first: a read that comes back empty after the writer finished
        // is the real end of the file.
        const before = state;
        const buffer = Buffer.allocUnsafe(CHUNK_BYTES);
        const { bytesRead } = await handle.read(buffer, 0, CHUNK_BYTES, position);
        if (bytesRead > 0) {
          position += bytesRead;
          yield buffer.subarray(0, bytesRead);
          continue;
        }
        if (before.done) {
          if (before.error !== undefined) throw before.error;
          return;
        }
        await waitForWriter();
      }
    } finally {
      await handle.close();
    }
  }

  return Readable.from(chunks(), { objectMode: false });
}

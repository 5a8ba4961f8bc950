/**
 * Named pipes between Node and DuckDB (capture writes COPY rows into one for DuckDB to read;
 * restore reads from one that DuckDB writes). Both ends are opened non-blocking and used as
 * sockets, so no libuv worker thread ever blocks on a pipe: DuckDB's queries hold those workers
 * while they run, and with as many captures in flight as workers, a write queued behind them
 * deadlocked everything (BENCHMARKS.md, finding 3).
 */
import { execFile } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { constants, open } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { SnapshotError } from '../errors/index.js';

const execFileAsync = promisify(execFile);

/** Create a pipe (mode 600) named `name` in `dir`; returns its path. */
export async function createNamedPipe(dir: string, name: string): Promise<string> {
  const fifo = path.join(dir, name);
  await execFileAsync('mkfifo', ['-m', '600', fifo]);
  return fifo;
}

/**
 * Open the pipe with read and write access and close it again. On Linux this never blocks, and
 * it releases a peer blocked in open() (a reader waiting for a writer, or the other way round)
 * after the other side failed before opening its end.
 */
export async function releasePipe(fifo: string): Promise<void> {
  try {
    const handle = await open(fifo, constants.O_RDWR | constants.O_NONBLOCK);
    await handle.close();
  } catch {
    // Already gone: nobody is blocked on it.
  }
}

/**
 * The writing end as a socket. Opening it non-blocking fails with ENXIO until the reader has
 * opened its end; we retry on a timer rather than block a thread. Waiting for the reader matters:
 * closing a writer no reader ever saw (an empty table) would leave the reader waiting forever.
 */
export async function openPipeWriter(fifo: string, readerStopped: () => boolean, signal?: AbortSignal): Promise<net.Socket> {
  for (;;) {
    try {
      const fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
      return new net.Socket({ fd, readable: false, writable: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENXIO') throw error;
    }
    signal?.throwIfAborted();
    if (readerStopped()) throw new SnapshotError('the reader of the pipe stopped before it opened it');
    await delay(2);
  }
}

/**
 * The reading end as a stream, held open by a write end of our own until `release()`: a reader
 * with no writer reads EOF at once, so the stream ends only after the real writer has finished
 * (or failed) and `release()` was called. With `onread`, the bytes go to its callback, read into
 * the caller's buffers, instead of being emitted as new ones (net.Socket's `onread`).
 */
export function openPipeReader(fifo: string, onread?: net.OnReadOpts): { stream: net.Socket; release(): void } {
  const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const holdFd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
  let held = true;
  return {
    stream: new net.Socket({ fd: readFd, readable: true, writable: false, ...(onread ? { onread } : {}) }),
    release() {
      if (!held) return;
      held = false;
      closeSync(holdFd);
    },
  };
}

/**
 * COPY … FROM STDIN fed from DuckDB's pipe without a new buffer per chunk.
 *
 * Why not pg-copy-streams fed by the pipe's stream (as before): every 64 KiB read from the pipe
 * became a new Buffer, memory outside V8's heap that only a mark-compact frees — 148 MB per 1M
 * rows of bench_t, and the collector ran six to eight mark-compacts during the COPY (about
 * 0.15 s of the main thread, 0.1–0.2 CPU-s of the process; BENCHMARKS.md). Here the pipe is read
 * into a few buffers that are used again and again. Each has room for the CopyData header in
 * front of the bytes read: the row hasher reads the chunk where it lies, and the header and the
 * chunk go to the server in one write. A buffer is read into again once that write has been
 * handed to the socket.
 *
 * Memory: at most IN_FLIGHT_HIGH bytes written to the server's socket and not yet sent, plus the
 * buffer being read; reading pauses above that, so a slow server holds DuckDB back.
 */
import type net from 'node:net';
import type { Readable } from 'node:stream';
import type pg from 'pg';

const CHUNK_BYTES = 64 * 1024;
/** 'd', then the message length (itself and the data) as a big-endian int32. */
const HEADER_BYTES = 5;
const COPY_DATA = 0x64;
/** CopyDone: 'c' and its length, 4. */
const COPY_DONE = Buffer.from([0x63, 0, 0, 0, 4]);
const IN_FLIGHT_HIGH = 1024 * 1024;
const IN_FLIGHT_LOW = IN_FLIGHT_HIGH / 2;

/** What pg's connection offers beyond its declared type (pg-copy-streams uses the same). */
type CopyConnection = pg.Connection & { stream: net.Socket; sendCopyFail(message: string): void };

/**
 * COPY … FROM STDIN as a query object pg accepts (a "submittable", like pg-copy-streams' own):
 * the protocol's answers, as promises.
 */
class CopyFromStdin implements pg.Submittable {
  rowCount = 0;
  readonly started: Promise<CopyConnection>;
  readonly finished: Promise<void>;
  #resolveStarted!: (connection: CopyConnection) => void;
  #resolveFinished!: () => void;
  #fail!: (error: unknown) => void;

  constructor(readonly text: string) {
    let rejectStarted!: (error: unknown) => void;
    let rejectFinished!: (error: unknown) => void;
    this.started = new Promise((resolve, reject) => {
      this.#resolveStarted = resolve;
      rejectStarted = reject;
    });
    this.finished = new Promise((resolve, reject) => {
      this.#resolveFinished = resolve;
      rejectFinished = reject;
    });
    // Whoever waits on one of them sees the error; the other must not count as unhandled.
    this.started.catch(() => {});
    this.finished.catch(() => {});
    this.#fail = (error) => {
      rejectStarted(error);
      rejectFinished(error);
    };
  }

  submit(connection: pg.Connection): void {
    connection.query(this.text);
  }

  /** pg sets this for query_timeout and calls it; nothing else to call back. */
  callback(): void {}

  handleCopyInResponse(connection: CopyConnection): void {
    this.#resolveStarted(connection);
  }

  handleCommandComplete(message: { text?: string }): void {
    const match = /^COPY (\d+)/.exec(message.text ?? '');
    if (match) this.rowCount = Number(match[1]);
  }

  handleReadyForQuery(): void {
    this.#resolveFinished();
  }

  /** The server's ErrorResponse, a lost connection, or pg's query timeout. */
  handleError(error: unknown): void {
    this.#fail(error);
  }
}

interface Slot {
  /** Header room and data. */
  message: Buffer;
  /** The part the pipe is read into. */
  data: Buffer;
}

export interface PipeCopyOptions {
  client: pg.ClientBase;
  /** The `COPY … FROM STDIN` statement (text format). */
  sql: string;
  /** Open the rows' source, reading into the given buffers (ParquetCopyReader.stream). */
  open(onread: net.OnReadOpts): Promise<Readable>;
  /** Sees every chunk, in order, before it is sent (the row hasher; throwing stops the COPY). */
  onChunk(chunk: Uint8Array): void;
}

/** Run the COPY with the source's bytes; returns the rows the server reported. */
export async function copyFromPipe(options: PipeCopyOptions): Promise<number> {
  const copy = options.client.query(new CopyFromStdin(options.sql));
  const connection = await copy.started;
  const socket = connection.stream;
  const free: Slot[] = [];
  const slots = new Map<Uint8Array, Slot>();
  const take = (): Buffer => {
    let slot = free.pop();
    if (!slot) {
      const message = Buffer.allocUnsafeSlow(HEADER_BYTES + CHUNK_BYTES);
      slot = { message, data: message.subarray(HEADER_BYTES) };
      slots.set(slot.data, slot);
    }
    return slot.data;
  };

  let source: Readable | undefined;
  let failure: unknown;
  let paused = false;
  let inFlight = 0;
  /** CopyDone sent, or the server ended the COPY first: nothing more to send. */
  let ended = false;
  // Stop on the source's side: the server is told to abandon the COPY (CopyFail) and answers with
  // an error, which ends `copy.finished`; the original error is the one reported.
  const fail = (error: unknown): void => {
    if (failure !== undefined) return;
    failure = error;
    source?.destroy();
    connection.sendCopyFail(error instanceof Error ? error.message : String(error));
  };
  const onread: net.OnReadOpts = {
    buffer: take,
    callback(bytes, data) {
      const slot = slots.get(data)!;
      if (failure !== undefined) {
        free.push(slot);
        return false;
      }
      try {
        options.onChunk(slot.data.subarray(0, bytes));
      } catch (error) {
        free.push(slot);
        fail(error);
        return false;
      }
      slot.message[0] = COPY_DATA;
      slot.message.writeUInt32BE(bytes + 4, 1);
      inFlight += bytes;
      socket.write(slot.message.subarray(0, HEADER_BYTES + bytes), () => {
        inFlight -= bytes;
        free.push(slot);
        if (paused && inFlight <= IN_FLIGHT_LOW && failure === undefined) {
          paused = false;
          source?.resume();
        }
      });
      if (inFlight < IN_FLIGHT_HIGH) return true;
      paused = true;
      return false;
    },
  };

  try {
    source = await options.open(onread);
  } catch (error) {
    fail(error);
  }
  const sourceDone = new Promise<void>((resolve) => {
    if (!source) return resolve();
    const end = () => {
      if (failure === undefined && !ended) {
        ended = true;
        // After every CopyData: writes to the socket go out in order.
        socket.write(COPY_DONE);
      }
      resolve();
    };
    source.once('error', (error) => {
      fail(error);
      resolve();
    });
    source.once('end', end);
    source.once('close', end);
  });

  try {
    await copy.finished;
  } catch (error) {
    // The server stopped the COPY (a row it refused, or our CopyFail): stop reading too.
    ended = true;
    source?.destroy();
    await sourceDone;
    throw failure ?? error;
  }
  await sourceDone;
  if (failure !== undefined) throw failure;
  return copy.rowCount;
}

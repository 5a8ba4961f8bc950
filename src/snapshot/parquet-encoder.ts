/**
 * PostgreSQL COPY (text format) → Parquet through DuckDB. The COPY stream is written into a named
 * pipe that DuckDB's CSV reader (tab-separated, no quoting, \N for NULL) consumes while it writes
 * the Parquet file; the column expressions undo COPY's backslash escapes. Nothing the size of the
 * table is ever held in memory or staged on disk. DuckDB runs with a file-backed database, a
 * memory limit and a spill folder. On its way to the pipe every chunk passes the row hasher, which
 * gives the snapshot's content hash, row count and longest record without a second read.
 *
 * Measured on the 1M-row benchmark table (gen_1m.sql, 2 cores): pipe 1.8–2.0 s, CSV temp file
 * then read 2.2 s, row-by-row appender 5.8 s; identical Parquet contents. Text format rather than
 * CSV: PostgreSQL prints it in 1.15 s instead of 1.37 s, DuckDB encodes it in 0.84 s instead of
 * 1.03 s, and it is 9% smaller (no doubled quotes in JSON).
 */
import { DuckDBInstance } from '@duckdb/node-api';
import type net from 'node:net';
import path from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SnapshotError, describeError } from '../errors/index.js';
import { createNamedPipe, openPipeWriter, releasePipe } from '../scratch/named-pipe.js';
import { duckdbIdent, duckdbString } from './duckdb-sql.js';
import { RowHasher, hashingStream, type RowHashResult } from './row-hash/row-hasher.js';


export interface EncodedColumn {
  parquetName: string;
  /** DuckDB expression over the raw COPY text field (VARCHAR) whose quoted name is given. */
  expression: (field: string) => string;
}

export interface ParquetEncodeOptions {
  /** Empty folder for the pipe and DuckDB's database and spill files. */
  workDir: string;
  /** The Parquet file to write (it must not exist); it grows front to back, footer last. */
  output: string;
  columns: readonly EncodedColumn[];
  /** Starts the COPY … TO STDOUT (text format) and returns its stream. */
  openCopy: () => Readable;
  /** Longest row to expect, in bytes. */
  maxRecordBytes: number;
  rowGroupRows: number;
  /** DuckDB memory_limit in bytes (raised when a single record needs more). */
  memoryLimitBytes?: number;
  threads?: number;
  signal?: AbortSignal;
  /** Called with the running totals of rows and bytes. */
  onProgress?: (rows: number, bytes: number) => void;
}

export interface ParquetEncodeResult {
  file: string;
  /** Rows DuckDB wrote. */
  rows: number;
  /** The content hash of the rows as PostgreSQL sent them (row-hash), with their count and widths. */
  hash: RowHashResult;
}

const MB = 1024 * 1024;
const DEFAULT_MEMORY_LIMIT = 256 * MB;
const DEFAULT_THREADS = 1;

/**
 * The pipe's writer as the end of the COPY pipeline. While DuckDB reads, chunks go into the pipe
 * with its backpressure; once DuckDB has failed, they are dropped, so the COPY still runs to its
 * end (the connection is left usable and the row hash covers every row).
 */
class PipeSink extends Writable {
  #pipe: net.Socket | undefined;
  #waiting: (() => void) | undefined;
  #discarding = false;

  constructor(pipe: net.Socket) {
    super({ highWaterMark: 0 });
    this.#pipe = pipe;
    pipe.on('error', () => this.discard());
    pipe.on('drain', () => this.#resume());
  }

  /** Stop feeding the pipe (DuckDB failed): close our end and drop every chunk from now on. */
  discard(): void {
    if (this.#discarding) return;
    this.#discarding = true;
    this.#pipe?.destroy();
    this.#pipe = undefined;
    this.#resume();
  }

  #resume(): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#discarding || !this.#pipe) {
      callback();
      return;
    }
    if (this.#pipe.write(chunk)) callback();
    else this.#waiting = () => callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    const pipe = this.#pipe;
    if (this.#discarding || !pipe) {
      callback();
      return;
    }
    // Closing our end is DuckDB's end of file.
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      callback();
    };
    pipe.once('close', finish);
    pipe.end(finish);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#pipe?.destroy();
    callback(error);
  }
}

/**
 * DuckDB refused the rows (a value its column type cannot hold, a row longer than the reader's
 * buffer, …) after the COPY had started. The COPY was still read to its end, so `hash` covers
 * every row and the connection is ready for the next statement.
 */
export class ParquetEncodeRejected extends SnapshotError {
  readonly hash: RowHashResult;
  constructor(message: string, hash: RowHashResult, cause: unknown) {
    super(message, { cause, hint: 'Backstop encodes the rows again with what it learned; report this if it persists' });
    this.name = 'ParquetEncodeRejected';
    this.hash = hash;
  }
}

export async function encodeCopyToParquet(options: ParquetEncodeOptions): Promise<ParquetEncodeResult> {
  const fifo = await createNamedPipe(options.workDir, 'rows.copy');
  const output = options.output;

  // A row must fit the reader's buffer; DuckDB needs a few buffers in flight.
  const maxLineSize = Math.max(2 * MB, options.maxRecordBytes);
  const bufferSize = Math.max(32 * MB, maxLineSize + MB);
  const memoryLimit = Math.max(options.memoryLimitBytes ?? DEFAULT_MEMORY_LIMIT, 4 * bufferSize + 128 * MB);

  const instance = await DuckDBInstance.create(path.join(options.workDir, 'work.duckdb'), {
    // One thread by default: the pipe is read sequentially anyway, and PostgreSQL's COPY needs the
    // other core. Measured on bench_t (1M rows) and bench_t5m (5M), 2 cores: peak RSS of the
    // capture 305–325 MB with 1 thread against 440–531 MB with 2 (over the 512 MB budget), wall
    // time equal within the noise (npm run bench; BENCHMARKS.md).
    threads: String(options.threads ?? DEFAULT_THREADS),
    memory_limit: `${Math.ceil(memoryLimit / MB)}MB`,
    temp_directory: path.join(options.workDir, 'spill'),
    autoinstall_known_extensions: 'false',
    autoload_known_extensions: 'false',
  });
  const connection = await instance.connect();
  let copy: Readable | undefined;
  const onAbort = () => {
    copy?.destroy(new SnapshotError('capture aborted'));
    connection.interrupt();
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    options.signal?.throwIfAborted();
    await connection.run(`SET TimeZone = 'UTC'`);
    const fields = options.columns.map((_, index) => `c${index}`);
    const reader = `read_csv(${duckdbString(fifo)}, columns = {${fields.map((f) => `${duckdbString(f)}: 'VARCHAR'`).join(', ')}},
      header = false, auto_detect = false, delim = '\t', quote = '', escape = '', nullstr = '\\N',
      max_line_size = ${maxLineSize}, buffer_size = ${bufferSize})`;
    const select = options.columns.map((column, index) => `${column.expression(fields[index]!)} AS ${duckdbIdent(column.parquetName)}`).join(', ');
    const sql = `COPY (SELECT ${select} FROM ${reader}) TO ${duckdbString(output)} (FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE ${options.rowGroupRows})`;

    let encodingSettled = false;
    const encoding = connection.runAndReadAll(sql).finally(() => {
      encodingSettled = true;
    }).then(
      (result) => Number(result.getRows()[0]?.[0] ?? 0),
      async (error: unknown) => {
        await releasePipe(fifo);
        throw error;
      },
    );
    const hasher = new RowHasher();
    // The COPY starts only once the pipe is open, so its stream is never without an error
    // listener (pipeline's) while we wait for DuckDB.
    let sink: PipeSink | undefined;
    const feeding = openPipeWriter(fifo, () => encodingSettled, options.signal).then((pipe) => {
      sink = new PipeSink(pipe);
      copy = options.openCopy();
      return pipeline(copy, hashingStream(hasher, options.onProgress), sink);
    }).catch(async (error: unknown) => {
      copy?.destroy();
      sink?.discard();
      // DuckDB may still wait for a writer (we never opened the pipe) or for more rows.
      await releasePipe(fifo);
      connection.interrupt();
      throw error;
    });
    // DuckDB failing stops the pipe, not the COPY: the rest of the rows still pass the hasher.
    encoding.catch(() => sink?.discard());
    const [encoded, fed] = await Promise.allSettled([encoding, feeding]);
    options.signal?.throwIfAborted();
    if (fed.status === 'rejected') {
      // The COPY itself failed (or never started): nothing to go on.
      if (encoded.status === 'rejected' && copy === undefined) {
        throw new SnapshotError(`DuckDB could not start encoding the rows: ${describeError(encoded.reason)}`, {
          cause: encoded.reason,
          hint: 'this is a bug in Backstop unless the disk holding the temp folder is full; report it with the table definition',
        });
      }
      throw fed.reason;
    }
    const hash = hasher.result();
    if (encoded.status === 'rejected') {
      throw new ParquetEncodeRejected(`DuckDB could not encode the rows as Parquet: ${describeError(encoded.reason)}`, hash, encoded.reason);
    }
    return { file: output, rows: encoded.value, hash };
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    connection.closeSync();
    instance.closeSync();
  }
}

/**
 * Rows of a local Parquet file as PostgreSQL COPY text-format data, rendered by DuckDB.
 *
 * DuckDB reads the file, renders every field as COPY text in SQL (escaped), joins each row's
 * fields into its line (tab-separated, \N for NULL) and writes the lines with its own CSV writer
 * (no quoting) into a named pipe; restore streams the pipe's bytes to COPY. No row ever becomes a JavaScript value, and memory stays bounded by DuckDB's row groups
 * and the pipe, whatever the file's size. Every value is rendered in a form PostgreSQL's input
 * function reads back to the same value — for the common types, in exactly the form PostgreSQL
 * prints, so that the row hash of the loaded lines equals the snapshot's:
 * - columns stored as text hold the PostgreSQL text form and go through verbatim (escaped);
 * - native columns are cast to DuckDB's text form, which PostgreSQL accepts exactly: dates and
 *   timestamps with microseconds, timestamptz in UTC with "+00", canonical uuids, exact
 *   decimals; float8 in PostgreSQL's own layout of its short digits (float-text.ts), float4 as
 *   DuckDB prints it;
 *   booleans become t/f and blobs lower-case `\x` hex.
 */
import type { DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import type net from 'node:net';
import os from 'node:os';
import type { Readable } from 'node:stream';
import { SnapshotError, describeError } from '../errors/index.js';
import { createNamedPipe, openPipeReader } from '../scratch/named-pipe.js';
import { duckdbIdent, duckdbString } from '../snapshot/duckdb-sql.js';
import { FLOAT_TEXT_MACROS, pgFloat8Text } from './float-text.js';

export interface CopyColumn {
  /** Column name in the Parquet file. */
  parquetName: string;
  /** How capture stored it: the PostgreSQL text form, or a native Parquet type. */
  storedAs: 'native' | 'text';
  /** PostgreSQL type, for messages and for telling bytea from text in a BLOB column. */
  pgType: string;
}

const MB = 1024 * 1024;
const MIN_MEMORY_LIMIT_MB = 256;

/**
 * COPY text format escapes: backslash, newline, carriage return and tab. Most values contain
 * none of them, and four contains() tests cost less than four replace() passes (measured: the
 * 1M-row benchmark renders in about half the time).
 */
function escapeText(expression: string): string {
  const escaped = `replace(replace(replace(replace(${expression}, '\\', '\\\\'), chr(10), '\\n'), chr(13), '\\r'), chr(9), '\\t')`;
  const special = `contains(${expression}, '\\') OR contains(${expression}, chr(9)) OR contains(${expression}, chr(10)) OR contains(${expression}, chr(13))`;
  return `CASE WHEN ${special} THEN ${escaped} ELSE ${expression} END`;
}

const CAST_TYPES = [
  /^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT)$/,
  /^DECIMAL\(\d+,\d+\)$/,
  /^(DATE|TIME|TIMESTAMP|TIMESTAMP WITH TIME ZONE|TIME WITH TIME ZONE|TIMESTAMP_MS|TIMESTAMP_S|UUID|INTERVAL)$/,
];

/** The DuckDB expression rendering one column as its COPY text field (NULL stays NULL). */
export function renderExpression(column: CopyColumn, duckType: string): string {
  const ref = duckdbIdent(column.parquetName);
  if (duckType === 'VARCHAR') return escapeText(ref);
  // As VARCHAR, or the CASE in escapeText would turn the '\N' NULL marker into JSON.
  if (duckType === 'JSON') return escapeText(`CAST(${ref} AS VARCHAR)`);
  if (duckType === 'BLOB') {
    if (column.storedAs === 'text' || !/^bytea$/.test(column.pgType)) return escapeText(`decode(${ref})`);
    // Lower-case, as PostgreSQL prints it (bytea_output = hex).
    return `'\\\\x' || lower(hex(${ref}))`;
  }
  if (column.storedAs === 'text') {
    throw new SnapshotError(`column "${column.parquetName}" is recorded as stored as text but the Parquet file holds ${duckType}`, {
      hint: 'the snapshot file does not match its manifest; verify it with backstop verify or pick another snapshot',
    });
  }
  if (duckType === 'BOOLEAN') return `CASE WHEN ${ref} THEN 't' WHEN NOT ${ref} THEN 'f' END`;
  if (duckType === 'DOUBLE') return pgFloat8Text(ref);
  // The instant as UTC wall-clock time plus "+00", which is what PostgreSQL prints with TimeZone
  // UTC; going through the epoch avoids DuckDB's time-zone-aware cast (235 → 96 ms per 1M rows).
  if (duckType === 'TIMESTAMP WITH TIME ZONE') return `CAST(make_timestamp(epoch_us(${ref})) AS VARCHAR) || '+00'`;
  // Shortest round-trip digits in fixed or exponent notation; PostgreSQL reads them exactly.
  if (duckType === 'FLOAT') return `CAST(${ref} AS VARCHAR)`;
  if (CAST_TYPES.some((pattern) => pattern.test(duckType))) return `CAST(${ref} AS VARCHAR)`;
  throw new SnapshotError(`column "${column.parquetName}" (${column.pgType}) is stored as Parquet/DuckDB type ${duckType}, which restore cannot render`, {
    hint: 'this snapshot was written by an incompatible version; restore it with the Backstop version that captured it',
  });
}

export interface ParquetCopyReader {
  rowCount(): Promise<number>;
  /** The query that renders the lines; shown by --dry-run and in debug logs. */
  readonly sql: string;
  /**
   * The COPY text, as a byte stream (call once); DuckDB writes it into a pipe made in `workDir`
   * (a scratch folder). It ends after the last line, or fails with DuckDB's error; destroying it
   * stops DuckDB. With `onread` the bytes are read into the caller's buffers and handed to its
   * callback instead of being emitted (see copy-in.ts).
   */
  stream(workDir: string, onread?: net.OnReadOpts): Promise<Readable>;
  /** Stop DuckDB (if still writing) and release the reader (its renderer stays open). */
  close(): Promise<void>;
}

/**
 * A DuckDB instance ready to render COPY text: the module loaded, the instance created, the
 * session set up. Nothing of it reads a data file, so a restore starts it while the files' SHA-256
 * is still being checked and the files are opened only once they passed (restore.ts): that takes
 * DuckDB's start-up (about 50 ms of the CLI's fixed cost, BENCHMARKS.md) off the path before the
 * first row. One reader at a time.
 */
export interface CopyRenderer {
  /** A reader of one snapshot's rows: its data file, or its main file and its parts (read as one relation). */
  open(file: string | string[], columns: CopyColumn[]): Promise<ParquetCopyReader>;
  /** Close the instance (after the reader is closed); every call returns the same promise. */
  close(): Promise<void>;
}

/**
 * DuckDB threads rendering the rows. PostgreSQL's COPY takes a core of its own, and one DuckDB
 * thread renders faster than COPY parses (BENCHMARKS.md).
 */
const READER_THREADS = 1;

interface DuckDBSession {
  instance: DuckDBInstance;
  connection: DuckDBConnection;
}

async function startSession(): Promise<DuckDBSession> {
  // Imported here, not at the top: loading DuckDB's native library is the largest piece of the
  // restore command's start-up, and here it runs beside the checksum instead of before it.
  const { DuckDBInstance } = await import('@duckdb/node-api');
  const instance = await DuckDBInstance.create(':memory:', { threads: String(READER_THREADS), temp_directory: os.tmpdir() });
  try {
    const connection = await instance.connect();
    try {
      await connection.run(`SET TimeZone = 'UTC'`);
      for (const macro of FLOAT_TEXT_MACROS) await connection.run(macro);
      return { instance, connection };
    } catch (error) {
      connection.closeSync();
      throw error;
    }
  } catch (error) {
    instance.closeSync();
    throw error;
  }
}

export function startCopyRenderer(): CopyRenderer {
  const starting = startSession();
  // A failure is reported by open(); until then (or if the restore stops before it) it is not unhandled.
  starting.catch(() => {});
  let reading = false;
  let closing: Promise<void> | undefined;
  return {
    async open(file, columns) {
      if (closing) throw new SnapshotError('the COPY renderer is closed', { hint: 'this is a bug in Backstop; report it' });
      if (reading) throw new SnapshotError('the COPY renderer reads one snapshot file at a time', { hint: 'this is a bug in Backstop; report it' });
      const { connection } = await starting;
      reading = true;
      try {
        const reader = await openReader(connection, file, columns);
        return {
          ...reader,
          async close() {
            await reader.close();
            reading = false;
          },
        };
      } catch (error) {
        reading = false;
        throw error;
      }
    },
    close() {
      // Never rejects: restore closes it without waiting (restore.ts), and what was restored
      // does not depend on DuckDB's teardown.
      closing ??= starting
        .then((session) => {
          session.connection.closeSync();
          session.instance.closeSync();
        })
        .catch(() => {});
      return closing;
    },
  };
}

/** A reader with a DuckDB instance of its own, closed with it (where nothing ran ahead of the file check). */
export async function openParquetCopyReader(file: string | string[], columns: CopyColumn[]): Promise<ParquetCopyReader> {
  const renderer = startCopyRenderer();
  try {
    const reader = await renderer.open(file, columns);
    return {
      ...reader,
      async close() {
        try {
          await reader.close();
        } finally {
          await renderer.close();
        }
      },
    };
  } catch (error) {
    await renderer.close();
    throw error;
  }
}

async function openReader(conn: DuckDBConnection, file: string | string[], columns: CopyColumn[]): Promise<ParquetCopyReader> {
  // One data file, or a snapshot's main file and its parts: DuckDB reads a list as one relation.
  const files = typeof file === 'string' ? duckdbString(file) : `[${file.map(duckdbString).join(', ')}]`;
  // Each thread decodes a whole row group; wide rows make big ones (capture aims at 64 MB but
  // never writes fewer than 2048 rows to a group). Room for that, and no more.
  const groups = await conn.runAndReadAll(
    `SELECT coalesce(max(bytes), 0)::BIGINT AS largest FROM (SELECT sum(total_uncompressed_size) AS bytes FROM parquet_metadata(${files}) GROUP BY file_name, row_group_id)`,
  );
  const largestRowGroup = Number(groups.getRowsJS()[0]![0]);
  const memoryLimitMb = Math.max(MIN_MEMORY_LIMIT_MB, Math.ceil((READER_THREADS * 3 * largestRowGroup) / MB) + 128);
  await conn.run(`SET memory_limit = '${memoryLimitMb}MB'`);
  const source = `read_parquet(${files})`;
  const described = await conn.runAndReadAll(`DESCRIBE SELECT * FROM ${source}`);
  const types = new Map(described.getRowObjectsJS().map((row) => [String(row.column_name), String(row.column_type)]));
  const fields = columns.map((column) => {
    const duckType = types.get(column.parquetName);
    if (duckType === undefined) {
      throw new SnapshotError(`the snapshot file has no column "${column.parquetName}"`, {
        hint: 'the snapshot file does not match its manifest; verify it with backstop verify or pick another snapshot',
      });
    }
    return renderExpression(column, duckType);
  });
  if (fields.length === 0) throw new SnapshotError('a COPY needs at least one column', { hint: 'this is a bug in Backstop; report it' });
  // One value per row, the whole line: DuckDB's CSV writer checks every value it writes for
  // characters to quote, and one long value costs it less than seven short ones (measured on
  // bench_t: 0.32 instead of 0.43 CPU-s per 1M rows, the same bytes). NULL is COPY's \N.
  const sql = `SELECT concat_ws(chr(9), ${fields.map((field) => `coalesce(${field}, '\\N')`).join(', ')}) AS line FROM ${source}`;
  let pipe: net.Socket | undefined;
  let writing: Promise<unknown> | undefined;
  let written = false;
  return {
    sql,
    async rowCount() {
      const reader = await conn.runAndReadAll(`SELECT count(*)::BIGINT AS n FROM ${source}`);
      return Number(reader.getRowsJS()[0]![0]);
    },
    async stream(workDir: string, onread?: net.OnReadOpts) {
      if (writing) throw new SnapshotError('the rows of a snapshot file can be streamed once per reader');
      const fifo = await createNamedPipe(workDir, 'rows.copy');
      const reader = openPipeReader(fifo, onread);
      pipe = reader.stream;
      const stream = reader.stream;
      // Lines already laid out and escaped for COPY, so DuckDB's writer must not quote or escape.
      writing = conn.run(`COPY (${sql}) TO ${duckdbString(fifo)} (FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\t')`).then(
        () => reader.release(),
        (error: unknown) => {
          reader.release();
          stream.destroy(new SnapshotError(`DuckDB could not render the snapshot's rows: ${describeError(error)}`, {
            cause: error,
            hint: 'verify the snapshot (backstop verify); if it is intact, report this with its manifest',
          }));
        },
      ).finally(() => {
        written = true;
      });
      return stream;
    },
    async close() {
      // With our end gone, a DuckDB blocked writing into the pipe fails with EPIPE and stops.
      pipe?.destroy();
      // Only a query still running is interrupted: the connection serves the next reader.
      if (writing && !written) conn.interrupt();
      await writing;
    },
  };
}

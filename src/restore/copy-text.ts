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
import type duckdb from '@duckdb/node-bindings';
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

type Bindings = typeof duckdb;

interface DuckDBSession {
  duckdb: Bindings;
  database: duckdb.Database;
  connection: duckdb.Connection;
}

async function startSession(): Promise<DuckDBSession> {
  // Imported here, not at the top, and the bindings rather than @duckdb/node-api (the capture's
  // client): loading DuckDB is the largest piece of the restore command's start-up — the native
  // library ~15 ms, node-api's 181 JavaScript modules another 25-45 ms — and the few statements a
  // restore runs need none of node-api's value conversions.
  const duckdb = (await import('@duckdb/node-bindings')).default;
  const config = duckdb.create_config();
  duckdb.set_config(config, 'threads', String(READER_THREADS));
  duckdb.set_config(config, 'temp_directory', os.tmpdir());
  const database = await duckdb.open(':memory:', config);
  try {
    const connection = await duckdb.connect(database);
    try {
      await duckdb.query(connection, [`SET TimeZone = 'UTC'`, ...FLOAT_TEXT_MACROS].join(';\n'));
      return { duckdb, database, connection };
    } catch (error) {
      duckdb.disconnect_sync(connection);
      throw error;
    }
  } catch (error) {
    duckdb.close_sync(database);
    throw error;
  }
}

/** The first column of the first row, a BIGINT (the only values restore reads back from DuckDB). */
function firstBigint(session: DuckDBSession, result: duckdb.Result): number {
  const { duckdb } = session;
  const chunk = duckdb.result_get_chunk(result, 0);
  if (duckdb.data_chunk_get_size(chunk) < 1) throw new SnapshotError('DuckDB returned no row', { hint: 'this is a bug in Backstop; report it' });
  const data = duckdb.vector_get_data(duckdb.data_chunk_get_vector(chunk, 0), 8);
  return Number(new DataView(data.buffer, data.byteOffset, 8).getBigInt64(0, true));
}

/** A column's type as DuckDB's DESCRIBE names it (what renderExpression reads). */
function typeName(session: DuckDBSession, type: duckdb.LogicalType): string {
  const { duckdb } = session;
  const alias = duckdb.logical_type_get_alias(type);
  if (alias) return alias.toUpperCase();
  const id = duckdb.get_type_id(type);
  if (id === duckdb.Type.DECIMAL) return `DECIMAL(${duckdb.decimal_width(type)},${duckdb.decimal_scale(type)})`;
  if (id === duckdb.Type.TIMESTAMP_TZ) return 'TIMESTAMP WITH TIME ZONE';
  if (id === duckdb.Type.TIME_TZ) return 'TIME WITH TIME ZONE';
  // The enum's own names are DESCRIBE's for every other type restore renders (BIGINT, DATE, UUID…);
  // nested and other types only reach the error message.
  return Object.entries(duckdb.Type).find(([, value]) => value === id)?.[0] ?? `type ${id}`;
}

/** Column name → type name of what DuckDB reads from `source`, without reading a row. */
async function columnTypes(session: DuckDBSession, source: string): Promise<Map<string, string>> {
  const { duckdb } = session;
  const result = await duckdb.query(session.connection, `SELECT * FROM ${source} LIMIT 0`);
  const types = new Map<string, string>();
  for (let index = 0; index < duckdb.column_count(result); index += 1) {
    types.set(duckdb.column_name(result, index), typeName(session, duckdb.column_logical_type(result, index)));
  }
  return types;
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
      const session = await starting;
      reading = true;
      try {
        const reader = await openReader(session, file, columns);
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
          session.duckdb.disconnect_sync(session.connection);
          session.duckdb.close_sync(session.database);
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

async function openReader(session: DuckDBSession, file: string | string[], columns: CopyColumn[]): Promise<ParquetCopyReader> {
  const { duckdb, connection } = session;
  // One data file, or a snapshot's main file and its parts: DuckDB reads a list as one relation.
  const files = typeof file === 'string' ? duckdbString(file) : `[${file.map(duckdbString).join(', ')}]`;
  // Each thread decodes a whole row group; wide rows make big ones (capture aims at 64 MB but
  // never writes fewer than 2048 rows to a group). Room for that, and no more.
  const largestRowGroup = firstBigint(session, await duckdb.query(connection,
    `SELECT coalesce(max(bytes), 0)::BIGINT AS largest FROM (SELECT sum(total_uncompressed_size) AS bytes FROM parquet_metadata(${files}) GROUP BY file_name, row_group_id)`,
  ));
  const memoryLimitMb = Math.max(MIN_MEMORY_LIMIT_MB, Math.ceil((READER_THREADS * 3 * largestRowGroup) / MB) + 128);
  await duckdb.query(connection, `SET memory_limit = '${memoryLimitMb}MB'`);
  const source = `read_parquet(${files})`;
  const types = await columnTypes(session, source);
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
      return firstBigint(session, await duckdb.query(connection, `SELECT count(*)::BIGINT AS n FROM ${source}`));
    },
    async stream(workDir: string, onread?: net.OnReadOpts) {
      if (writing) throw new SnapshotError('the rows of a snapshot file can be streamed once per reader');
      const fifo = await createNamedPipe(workDir, 'rows.copy');
      const reader = openPipeReader(fifo, onread);
      pipe = reader.stream;
      const stream = reader.stream;
      // Lines already laid out and escaped for COPY, so DuckDB's writer must not quote or escape.
      writing = duckdb.query(connection, `COPY (${sql}) TO ${duckdbString(fifo)} (FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\t')`).then(
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
      if (writing && !written) duckdb.interrupt(connection);
      await writing;
    },
  };
}

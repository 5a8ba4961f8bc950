/**
 * Rows of a local Parquet file as PostgreSQL COPY text-format data, rendered by DuckDB.
 *
 * DuckDB reads the file and builds each whole COPY line in SQL (one VARCHAR per row), so
 * JavaScript only joins lines of a chunk (2048 rows) and hands them to COPY: memory stays bounded
 * by a chunk whatever the file's size. Every value is rendered in a form PostgreSQL's input
 * function reads back to the same value:
 * - columns stored as text hold the PostgreSQL text form and go through verbatim (escaped);
 * - native columns are cast to DuckDB's text form, which PostgreSQL accepts exactly: shortest
 *   round-trip floats with nan/inf/-inf/-0.0, dates and timestamps with microseconds, infinity
 *   and "(BC)", timestamptz in UTC with "+00", canonical uuids, exact decimals; booleans become
 *   t/f and blobs `\x` hex.
 */
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import os from 'node:os';
import { SnapshotError } from '../errors/index.js';

export interface CopyColumn {
  /** Column name in the Parquet file. */
  parquetName: string;
  /** How capture stored it: the PostgreSQL text form, or a native Parquet type. */
  storedAs: 'native' | 'text';
  /** PostgreSQL type, for messages and for telling bytea from text in a BLOB column. */
  pgType: string;
}

export interface CopyTextChunk {
  /** One or more complete lines, each ending in \n. */
  text: string;
  rows: number;
}

const NULL_MARKER = `'\\N'`;
const MB = 1024 * 1024;
const MIN_MEMORY_LIMIT_MB = 256;

function duckString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

function duckIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

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
  /^(FLOAT|DOUBLE)$/,
  /^DECIMAL\(\d+,\d+\)$/,
  /^(DATE|TIME|TIMESTAMP|TIMESTAMP WITH TIME ZONE|TIME WITH TIME ZONE|TIMESTAMP_MS|TIMESTAMP_S|UUID|INTERVAL)$/,
];

/** The DuckDB expression rendering one column as its COPY text field (NULL stays NULL). */
export function renderExpression(column: CopyColumn, duckType: string): string {
  const ref = duckIdent(column.parquetName);
  if (duckType === 'VARCHAR') return escapeText(ref);
  // As VARCHAR, or the CASE in escapeText would turn the '\N' NULL marker into JSON.
  if (duckType === 'JSON') return escapeText(`CAST(${ref} AS VARCHAR)`);
  if (duckType === 'BLOB') {
    if (column.storedAs === 'text' || !/^bytea$/.test(column.pgType)) return escapeText(`decode(${ref})`);
    return `'\\\\x' || hex(${ref})`;
  }
  if (column.storedAs === 'text') {
    throw new SnapshotError(`column "${column.parquetName}" is recorded as stored as text but the Parquet file holds ${duckType}`, {
      hint: 'the snapshot file does not match its manifest; verify it with backstop verify or pick another snapshot',
    });
  }
  if (duckType === 'BOOLEAN') return `CASE WHEN ${ref} THEN 't' WHEN NOT ${ref} THEN 'f' END`;
  if (CAST_TYPES.some((pattern) => pattern.test(duckType))) return `CAST(${ref} AS VARCHAR)`;
  throw new SnapshotError(`column "${column.parquetName}" (${column.pgType}) is stored as Parquet/DuckDB type ${duckType}, which restore cannot render`, {
    hint: 'this snapshot was written by an incompatible version; restore it with the Backstop version that captured it',
  });
}

export interface ParquetCopyReader {
  rowCount(): Promise<number>;
  /** The query that renders the lines; shown by --dry-run and in debug logs. */
  readonly sql: string;
  chunks(): AsyncGenerator<CopyTextChunk>;
  close(): void;
}

/** Open a local Parquet file for rendering `columns` (in COPY column order) as COPY text. */
export async function openParquetCopyReader(file: string, columns: CopyColumn[]): Promise<ParquetCopyReader> {
  const threads = Math.max(1, Math.min(2, os.availableParallelism()));
  const instance = await DuckDBInstance.create(':memory:', { threads: String(threads), temp_directory: os.tmpdir() });
  let connection: DuckDBConnection | undefined;
  try {
    connection = await instance.connect();
    await connection.run(`SET TimeZone = 'UTC'`);
    // Each thread decodes a whole row group; wide rows make big ones (capture aims at 64 MB but
    // never writes fewer than 2048 rows to a group). Room for that, and no more.
    const groups = await connection.runAndReadAll(
      `SELECT coalesce(max(bytes), 0)::BIGINT AS largest FROM (SELECT sum(total_uncompressed_size) AS bytes FROM parquet_metadata(${duckString(file)}) GROUP BY row_group_id)`,
    );
    const largestRowGroup = Number(groups.getRowsJS()[0]![0]);
    const memoryLimitMb = Math.max(MIN_MEMORY_LIMIT_MB, Math.ceil((threads * 3 * largestRowGroup) / MB) + 128);
    await connection.run(`SET memory_limit = '${memoryLimitMb}MB'`);
    const source = `read_parquet(${duckString(file)})`;
    const described = await connection.runAndReadAll(`DESCRIBE SELECT * FROM ${source}`);
    const types = new Map(described.getRowObjectsJS().map((row) => [String(row.column_name), String(row.column_type)]));
    const fields = columns.map((column) => {
      const duckType = types.get(column.parquetName);
      if (duckType === undefined) {
        throw new SnapshotError(`the snapshot file has no column "${column.parquetName}"`, {
          hint: 'the snapshot file does not match its manifest; verify it with backstop verify or pick another snapshot',
        });
      }
      return `coalesce(${renderExpression(column, duckType)}, ${NULL_MARKER})`;
    });
    const line = fields.length === 0 ? `''` : fields.join(` || chr(9) || `);
    const sql = `SELECT ${line} AS line FROM ${source}`;
    const conn = connection;
    return {
      sql,
      async rowCount() {
        const reader = await conn.runAndReadAll(`SELECT count(*)::BIGINT AS n FROM ${source}`);
        return Number(reader.getRowsJS()[0]![0]);
      },
      async *chunks() {
        const result = await conn.stream(sql);
        for await (const chunk of result) {
          const lines = chunk.getColumnValues(0) as string[];
          // A fetched chunk's native memory is otherwise freed only when V8 collects the chunk
          // object, which it has no reason to do soon: measured, RSS grew with the table's size
          // (3 GB for 900 MB of rows) instead of levelling off.
          chunk.reset();
          yield { text: `${lines.join('\n')}\n`, rows: lines.length };
        }
      },
      close() {
        conn.closeSync();
        instance.closeSync();
      },
    };
  } catch (error) {
    connection?.closeSync();
    instance.closeSync();
    throw error;
  }
}

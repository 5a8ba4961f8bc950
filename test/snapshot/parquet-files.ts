/** Test helpers: fetch a snapshot's data file to a local path and read it with DuckDB or hyparquet. */
import { DuckDBInstance } from '@duckdb/node-api';
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet';
import { createWriteStream } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { openDataFile } from '../../src/snapshot/list.js';
import type { Manifest } from '../../src/snapshot/manifest.js';
import type { Storage } from '../../src/storage/storage.js';

export async function downloadDataFile(storage: Storage, manifest: Manifest): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'backstop-test-parquet-'));
  const file = path.join(dir, 'data.parquet');
  await pipeline(await openDataFile(storage, manifest), createWriteStream(file));
  return file;
}

export function duckString(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

/** Run one query with DuckDB over the file (bound as view `p`) and return plain JS rows. */
export async function duckdbQuery(file: string, sql: string): Promise<Record<string, unknown>[]> {
  const instance = await DuckDBInstance.create(':memory:');
  const connection = await instance.connect();
  try {
    await connection.run(`SET TimeZone = 'UTC'`);
    await connection.run(`CREATE VIEW p AS SELECT * FROM read_parquet(${duckString(file)})`);
    const reader = await connection.runAndReadAll(sql);
    return reader.getRowObjectsJS() as Record<string, unknown>[];
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}

/** Column name → DuckDB type as DuckDB reads the file. */
export async function duckdbTypes(file: string): Promise<Record<string, string>> {
  const rows = await duckdbQuery(file, 'DESCRIBE SELECT * FROM p');
  return Object.fromEntries(rows.map((row) => [String(row.column_name), String(row.column_type)]));
}

/** Every row with hyparquet, timestamps as microseconds (bigint), dates as days, JSON as text. */
export async function hyparquetRows(file: string): Promise<Record<string, unknown>[]> {
  return (await parquetReadObjects({
    file: await asyncBufferFromFile(file),
    parsers: {
      timestampFromMilliseconds: (v: bigint) => BigInt(v) * 1000n,
      timestampFromMicroseconds: (v: bigint) => BigInt(v),
      timestampFromNanoseconds: (v: bigint) => BigInt(v) / 1000n,
      dateFromDays: (days: number) => days,
      stringFromBytes: (bytes: Uint8Array) => bytes && new TextDecoder().decode(bytes),
      jsonFromBytes: (bytes: Uint8Array) => bytes && new TextDecoder().decode(bytes),
      uuidFromBytes: (bytes: Uint8Array) => {
        if (!bytes) return undefined;
        const hex = Buffer.from(bytes).toString('hex');
        return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
      },
    } as never,
    utf8: false,
  })) as Record<string, unknown>[];
}

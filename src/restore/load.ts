/**
 * Load a verified Parquet data file into a freshly created table with COPY FROM STDIN (text
 * format), streamed chunk by chunk from DuckDB (see copy-text.ts), with progress.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import copyStreams from 'pg-copy-streams';
import type { ColumnDefinition } from '../db/catalog.js';
import { quoteIdent, quoteQualified, type QualifiedName } from '../db/identifiers.js';
import { SnapshotError } from '../errors/index.js';
import type { ProgressReporter } from '../log/progress.js';
import type { Manifest } from '../snapshot/manifest.js';
import { openParquetCopyReader, type CopyColumn } from './copy-text.js';

export interface LoadOptions {
  client: pg.ClientBase;
  manifest: Manifest;
  file: string;
  table: QualifiedName;
  /** Columns COPY writes (generated columns are not among them). */
  columns: ColumnDefinition[];
  /** The table was created in this transaction and is not partitioned (see copyStatement). */
  freeze: boolean;
  progress?: ProgressReporter;
}

export function copyColumnsFor(manifest: Manifest, columns: ColumnDefinition[]): CopyColumn[] {
  return columns.map((column) => {
    const stored = manifest.columns.find((c) => c.name === column.name);
    if (!stored) {
      throw new SnapshotError(`snapshot ${manifest.snapshot_id} has no data for column "${column.name}"`, {
        hint: 'the manifest is inconsistent; pick another snapshot',
      });
    }
    return { parquetName: stored.parquet_name, storedAs: stored.stored_as, pgType: stored.pg_type };
  });
}

/**
 * FREEZE (allowed because the table was created in this transaction, and not for partitioned
 * tables) writes the rows already frozen: no later anti-wraparound vacuum rewrites them.
 */
export function copyStatement(table: QualifiedName, columns: ColumnDefinition[], freeze = false): string {
  return `COPY ${quoteQualified(table)} (${columns.map((c) => quoteIdent(c.name)).join(', ')}) FROM STDIN${freeze ? ' WITH (FREEZE)' : ''}`;
}

/** Load every row; resolves with the number of rows loaded. */
export async function loadRows(options: LoadOptions): Promise<number> {
  const { client, manifest, table, columns } = options;
  if (columns.length === 0) {
    // Nothing to COPY (no columns, or only generated ones): the rows still exist.
    const result = await client.query(`INSERT INTO ${quoteQualified(table)} SELECT FROM pg_catalog.generate_series(1, $1::bigint)`, [manifest.row_count]);
    options.progress?.done(result.rowCount ?? 0);
    return result.rowCount ?? 0;
  }
  const reader = await openParquetCopyReader(options.file, copyColumnsFor(manifest, columns));
  let rows = 0;
  try {
    const lines = Readable.from(
      (async function* () {
        for await (const chunk of reader.chunks()) {
          rows += chunk.rows;
          options.progress?.update(rows);
          yield chunk.text;
        }
      })(),
      // A chunk can be megabytes (2048 wide rows): keep at most two ahead of COPY.
      { highWaterMark: 2 },
    );
    await pipeline(lines, client.query(copyStreams.from(copyStatement(table, columns, options.freeze))));
  } finally {
    reader.close();
  }
  options.progress?.done(rows);
  return rows;
}

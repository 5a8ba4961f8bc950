/**
 * Load a verified Parquet data file into a freshly created table with COPY FROM STDIN (text
 * format), streamed from DuckDB (see copy-text.ts) through the row hasher to the server
 * (copy-in.ts), with progress.
 */
import type pg from 'pg';
import type { ColumnDefinition } from '../db/catalog.js';
import { quoteIdent, quoteQualified, type QualifiedName } from '../db/identifiers.js';
import { SnapshotError } from '../errors/index.js';
import type { ProgressReporter } from '../log/progress.js';
import type { Manifest } from '../snapshot/manifest.js';
import { RowHasher, type RowHashResult } from '../snapshot/row-hash/row-hasher.js';
import { copyFromPipe } from './copy-in.js';
import { openParquetCopyReader, type CopyColumn, type CopyRenderer } from './copy-text.js';

export interface LoadOptions {
  client: pg.ClientBase;
  manifest: Manifest;
  file: string | string[];
  /** Scratch folder for the pipe DuckDB writes the rows into. */
  workDir: string;
  table: QualifiedName;
  /** Columns COPY writes (generated columns are not among them). */
  columns: ColumnDefinition[];
  /** The table was created in this transaction and is not partitioned (see copyStatement). */
  freeze: boolean;
  progress?: ProgressReporter;
  /** DuckDB, started ahead (restore.ts starts it beside the checksum); default: one of the load's own. */
  renderer?: CopyRenderer;
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

export interface LoadedRows {
  /** Rows COPY reported loaded. */
  rows: number;
  /** The row hash of the COPY text sent (null when there was nothing to COPY). */
  hash: RowHashResult | null;
}

/** Load every row. */
export async function loadRows(options: LoadOptions): Promise<LoadedRows> {
  const { client, manifest, table, columns } = options;
  if (columns.length === 0) {
    // Nothing to COPY (no columns, or only generated ones): the rows still exist.
    const result = await client.query(`INSERT INTO ${quoteQualified(table)} SELECT FROM pg_catalog.generate_series(1, $1::bigint)`, [manifest.row_count]);
    options.progress?.done(result.rowCount ?? 0);
    return { rows: result.rowCount ?? 0, hash: null };
  }
  const copyColumns = copyColumnsFor(manifest, columns);
  const reader = await (options.renderer ? options.renderer.open(options.file, copyColumns) : openParquetCopyReader(options.file, copyColumns));
  const hasher = new RowHasher();
  let loaded: number;
  try {
    loaded = await copyFromPipe({
      client,
      sql: copyStatement(table, columns, options.freeze),
      open: (onread) => reader.stream(options.workDir, onread),
      onChunk(chunk) {
        hasher.update(chunk);
        options.progress?.update(hasher.rows);
      },
    });
  } finally {
    await reader.close();
  }
  const hash = hasher.result();
  options.progress?.done(hash.rows);
  return { rows: loaded, hash };
}

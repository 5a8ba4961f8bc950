/**
 * Load a verified Parquet data file into a freshly created table with COPY FROM STDIN (text
 * format), streamed from DuckDB (see copy-text.ts) through the row hasher to the server
 * (copy-in.ts), with progress.
 */
import type pg from 'pg';
import type { ColumnDefinition } from '../db/catalog.js';
import { quoteIdent, quoteQualified, type QualifiedName } from '../db/identifiers.js';
import { ConfigError, SnapshotError } from '../errors/index.js';
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
 * maintenance_work_mem for the restore transaction, which builds the indexes and constraints of
 * every restored table after its load. PostgreSQL's default (64MB) makes the primary key of a
 * 5M-row bigint table an external sort through temporary files (it needs ~390 MB in memory):
 * 1.65 s instead of 1.35 s for bench_t5m's on the benchmark machine. Raised for this transaction
 * only (SET LOCAL), never lowered below what the session already has, and bounded: the server
 * allocates it only while an index is sorted, one index at a time.
 */
export const DEFAULT_MAINTENANCE_WORK_MEM = '512MB';

/** PostgreSQL's upper bound for maintenance_work_mem, in kB. */
const MAX_MAINTENANCE_WORK_MEM_KB = 2_147_483_647;
const UNIT_KB: Record<string, number> = { kB: 1, MB: 1024, GB: 1024 * 1024 };

/**
 * The maintenance_work_mem a restore asks for, in kB (`512MB`, `2GB`, `65536kB`), or undefined
 * for `server` (keep the server's). Checked before anything is read or created.
 */
export function maintenanceWorkMemKb(setting: string = DEFAULT_MAINTENANCE_WORK_MEM): number | undefined {
  if (setting === 'server') return undefined;
  const match = /^(\d+)\s*(kB|MB|GB)$/.exec(setting.trim());
  const kb = match ? Number(match[1]) * UNIT_KB[match[2]!]! : Number.NaN;
  if (!Number.isSafeInteger(kb) || kb < 64 || kb > MAX_MAINTENANCE_WORK_MEM_KB) {
    throw new ConfigError(`maintenance_work_mem for the restore must be a size from 64kB to 2TB with a unit (kB, MB, GB), or "server"; got "${setting}"`, {
      hint: `e.g. --maintenance-work-mem 1GB, or --maintenance-work-mem server to keep the server's setting (default ${DEFAULT_MAINTENANCE_WORK_MEM})`,
    });
  }
  return kb;
}

/** SET LOCAL maintenance_work_mem to `kb`, unless the session already has at least that. */
export async function raiseMaintenanceWorkMemLocal(client: pg.ClientBase, kb: number | undefined): Promise<void> {
  if (kb === undefined) return;
  await client.query(
    `SELECT pg_catalog.set_config('maintenance_work_mem', $1::text || 'kB', true)
      WHERE $1::bigint > (SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'maintenance_work_mem')`,
    [kb],
  );
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

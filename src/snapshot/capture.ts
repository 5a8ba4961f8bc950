/**
 * Capture tables to Parquet + manifest.
 *
 * 1. In one read-only REPEATABLE READ transaction (one database snapshot for every table of a
 *    group; parallel workers join it through pg_export_snapshot), for each table: describe it
 *    (src/db/catalog) and COPY it once (text format) through the row hasher (content hash, row count,
 *    longest record) into DuckDB, which writes a local Parquet file. When DuckDB refuses a value
 *    its native type cannot hold (or a record too long for its buffer), the COPY still runs to its
 *    end, the columns at fault are found with a cheap range check, and the rows are encoded again.
 *    Each data file is uploaded while DuckDB writes it, hashed (SHA-256) as it streams, and its
 *    stored size checked against the finished local file.
 * 2. After the transaction, write the manifests — the commit point. Any failure or abort before that removes
 *    the uploaded data files (best effort; prune collects what a crash leaves behind).
 */
import { createReadStream } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import copyStreams from 'pg-copy-streams';
import pg from 'pg';
import { createTableSql, describeTable, type TableDefinition } from '../db/catalog.js';
import { displayName, quoteQualified, type QualifiedName } from '../db/identifiers.js';
import { BackstopError, DatabaseError, NotFoundError, PrivilegeError, RowSecurityError, SnapshotError, describeError } from '../errors/index.js';
import { silentLogger, type Logger } from '../log/logger.js';
import { createProgress } from '../log/progress.js';
import { digestingStream } from '../storage/digest.js';
import type { Storage } from '../storage/storage.js';
import { contentHashOf, copyOutSql, rowSource, type ContentHash, type RowSource } from './content-hash.js';
import { inSnapshotTransaction, type DatabaseSource } from './database-session.js';
import { snapshotKeys, type SnapshotKeys } from './layout.js';
import { MANIFEST_FORMAT_VERSION, formatChecksum, writeManifest, type Manifest, type ManifestAsOf, type ManifestColumn, type ManifestGroup, type SnapshotSource } from './manifest.js';
import { censusBounds, currentSnapshot, takeCensus, type RowCensus } from '../capture/census.js';
import { followGrowingFile } from './growing-file.js';
import { ParquetEncodeRejected, encodeCopyToParquet, type ParquetEncodeResult } from './parquet-encoder.js';
import type { RowHashResult } from './row-hash/row-hasher.js';
import { CANONICAL_SETTINGS } from './session-settings.js';
import { newGroupId, newSnapshotId, storageTimestamp } from './snapshot-id.js';
import { parquetNames, planColumn, resolveStorage, unrepresentableSql, type ColumnStorage } from './type-mapping.js';
import { createScratchDir } from '../scratch/scratch-dir.js';

export interface CaptureTarget {
  /** The table the snapshot describes. */
  table: QualifiedName;
  /**
   * Read the rows from this relation instead (e.g. a TRUNCATE before-image copied into
   * backstop_images.*); it must have the same columns. The manifest still describes `table`.
   */
  readFrom?: QualifiedName;
}

export interface CaptureOptions {
  /** Connection target, or a pool (one client per table in flight, plus one for a group). */
  database?: DatabaseSource;
  /** Same as `database` with a pool. */
  pool?: pg.Pool;
  storage: Storage;
  /** Default 'on-demand'. */
  source?: SnapshotSource;
  requestId?: number | null;
  label?: string | null;
  /** Join this exported snapshot (pg_export_snapshot()) instead of taking a new one. */
  snapshot?: string;
  logger?: Logger;
  /** Progress bar on a terminal, structured progress lines otherwise. Default false. */
  progress?: boolean;
  /** Aborting stops the capture; no manifest is written and uploaded data files are removed. */
  signal?: AbortSignal;
  /** Parent folder for temporary files (default: the OS temp folder). */
  tempDir?: string;
  /**
   * Only the rows for which this SQL condition (over the alias `t`) holds: the rows written
   * since a before-image was captured (capture/completion.ts). Never user input.
   */
  rowFilter?: string;
  /** Store each column as a given earlier image did (`text` or native), so parts of one image agree. */
  storedAs?: Record<string, 'native' | 'text'>;
  /** Also take a row-version census in the capture's snapshot (before-images: see capture/census.ts). */
  census?: boolean;
  /** Recorded in the manifest's as_of.completion (a before-image captured again to complete it); its snapshot is the capture's. */
  completion?: Omit<NonNullable<ManifestAsOf['completion']>, 'snapshot'>;
  /** DuckDB memory limit per table being encoded (default 256 MB). */
  duckdbMemoryLimitBytes?: number;
  duckdbThreads?: number;
}

export interface CaptureTableOptions extends CaptureOptions, CaptureTarget {}

export interface CaptureGroupOptions extends CaptureOptions {
  tables: CaptureTarget[];
  /** Recovery group name recorded in every manifest. */
  group: string;
  /** Tables encoded at the same time, each on its own connection (default 2). */
  concurrency?: number;
}

interface CapturedData {
  target: CaptureTarget;
  definition: TableDefinition;
  columns: ManifestColumn[];
  contentHash: ContentHash;
  tableSizeBytes: number;
  warnings: string[];
  /** The data file as stored: size and SHA-256 of what was uploaded. */
  stored: StoredDataFile;
  startedAt: number;
  census?: RowCensus;
}

interface StoredDataFile {
  size: number;
  sha256: string;
}

/**
 * Stores the Parquet file `file` while the encode (`encoding`) is still writing it, under the
 * key the capture chose for the table; resolves once the upload is complete and checked.
 */
type StoreDataFile = (file: string, encoding: Promise<unknown>, sizeHint: number, signal: AbortSignal) => Promise<StoredDataFile>;

interface SnapshotContext {
  createdAt: Date;
  serverVersion: string;
  serverVersionNum: number;
  databaseSizeBytes: number;
  /** pg_current_snapshot() of the capture transaction. */
  snapshot: string;
}

const ROW_GROUP_TARGET_BYTES = 64 * 1024 * 1024;
const MAX_ROW_GROUP_ROWS = 122_880;
const MIN_ROW_GROUP_ROWS = 2_048;

/**
 * Any failure of a capture as a BackstopError whose message starts `snapshot of <table>` (its
 * `subject`), so that the agent's denial reason names the table once.
 */
export function wrapFailure(error: unknown, table: QualifiedName, signal: AbortSignal | undefined): BackstopError {
  const name = displayName(table);
  const subject = `snapshot of ${name}`;
  if (signal?.aborted) return new SnapshotError(`${subject} was aborted`, { cause: error, subject, hint: 'nothing was published; run the capture again' });
  if (error instanceof BackstopError) return error;
  const code = (error as { code?: unknown } | null)?.code;
  if (code === '42501') {
    // Also what a read with row_security = off raises when a policy would filter it (a policy
    // switched on after the check in captureData).
    return new PrivilegeError(`${subject} failed: ${describeError(error)}`, {
      cause: error,
      subject,
      hint: 'grant the capturing role SELECT on the table (the backstop_agent role has pg_read_all_data), and BYPASSRLS when the table has row-level security',
    });
  }
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) {
    return new DatabaseError(`${subject} failed: ${describeError(error)}`, { cause: error, subject, hint: 'see the database error above; nothing was published' });
  }
  return new SnapshotError(`${subject} failed: ${describeError(error)}`, { cause: error, subject, hint: 'nothing was published; check the log and run the capture again' });
}

/** Where the guard copies the rows of truncated tables (the TRUNCATE before-images). */
export const IMAGES_SCHEMA = 'backstop_images';

/** Schemas whose tables are never exported: Backstop's own (settings, secrets) and the system's. */
const NEVER_EXPORTED_SCHEMAS = new Set(['backstop', 'backstop_images', 'pg_catalog', 'information_schema']);

/**
 * Refuse a target whose export would publish what is not user data: a table of Backstop's own
 * or of the system (`pg_*` schemas included), and rows read from anywhere but a TRUNCATE
 * before-image copy in backstop_images. Checked by name, whoever asked (the CLI, an on-demand
 * request, the scheduler).
 */
function assertExportable(target: CaptureTarget): void {
  const { schema } = target.table;
  if (NEVER_EXPORTED_SCHEMAS.has(schema) || schema.startsWith('pg_')) {
    throw new PrivilegeError(`${displayName(target.table)} is ${schema.startsWith('backstop') ? "one of Backstop's own tables" : 'a system table'}, which is never exported`, {
      hint: 'snapshots are for your own tables',
    });
  }
  if (target.readFrom && target.readFrom.schema !== IMAGES_SCHEMA) {
    throw new PrivilegeError(`rows of ${displayName(target.table)} may only be read from a TRUNCATE before-image in ${IMAGES_SCHEMA}, not from ${displayName(target.readFrom)}`, {
      hint: 'this is a bug in the caller; report it',
    });
  }
}

/**
 * A relation row-level security applies to for the connected role cannot be read in full: say
 * which role needs what, rather than let the read with row_security = off fail with 42501.
 */
async function assertSeesEveryRow(client: pg.ClientBase, source: RowSource, table: QualifiedName): Promise<void> {
  if (!source.rowSecurityApplies) return;
  const { rows } = await client.query<{ role: string }>('SELECT pg_catalog.quote_ident(current_user) AS role');
  throw new RowSecurityError(displayName(table), rows[0]!.role);
}

async function snapshotContext(client: pg.ClientBase): Promise<SnapshotContext> {
  const { rows } = await client.query<{ now: Date; version: string; version_num: string; database_size: string; snapshot: string }>(
    `SELECT pg_catalog.now() AS now, pg_catalog.current_setting('server_version') AS version, pg_catalog.current_setting('server_version_num') AS version_num,
            pg_catalog.pg_database_size(pg_catalog.current_database())::text AS database_size, pg_catalog.pg_current_snapshot()::text AS snapshot`,
  );
  const row = rows[0]!;
  return {
    createdAt: row.now, serverVersion: row.version, serverVersionNum: Number(row.version_num),
    databaseSizeBytes: Number(row.database_size), snapshot: row.snapshot,
  };
}

async function tableDefinitions(client: pg.ClientBase, target: CaptureTarget, warnings: string[]): Promise<{ definition: TableDefinition; rows: TableDefinition }> {
  if (!target.readFrom) {
    const definition = await describeTable(client, target.table);
    return { definition, rows: definition };
  }
  const rows = await describeTable(client, target.readFrom);
  try {
    const definition = await describeTable(client, target.table);
    const expected = definition.columns.map((c) => c.name).join('\u0000');
    if (rows.columns.map((c) => c.name).join('\u0000') !== expected) {
      warnings.push(`rows come from ${displayName(target.readFrom)}, whose columns differ from ${displayName(target.table)}'s current columns`);
    }
    return { definition, rows };
  } catch (error) {
    if (!(error instanceof NotFoundError)) throw error;
    // The table is gone since its rows were copied: describe it from the copy. What is attached
    // to the copy (Backstop's owner and privileges) and what surrounds it (its schema is
    // Backstop's) say nothing about the dropped table: leave them out.
    const { attachments: _copyAttachments, dependents: _dependents, referencedBy: _referencedBy, schemaDefinition: _schema, types: _types, ...copy } = rows;
    const base = { ...copy, schema: target.table.schema, table: target.table.table, ddl: '' };
    warnings.push(`${displayName(target.table)} no longer exists; its definition was taken from ${displayName(target.readFrom)} (indexes and constraints are not known)`);
    return { definition: { ...base, ddl: createTableSql(base, target.table) }, rows };
  }
}

/**
 * Columns holding a value their native Parquet type cannot carry, in one pass over the rows that
 * evaluates only the range checks (no text forms): needed only after DuckDB refused a file.
 */
async function unrepresentableColumns(client: pg.ClientBase, from: string, checks: Array<string | null>): Promise<boolean[]> {
  const items = checks.flatMap((check, index) => (check ? [`pg_catalog.bool_or(${check}) AS flag_${index}`] : []));
  if (items.length === 0) return checks.map(() => false);
  const { rows } = await client.query<Record<string, boolean | null>>(`SELECT ${items.join(', ')} FROM ${from} AS t`);
  return checks.map((_, index) => rows[0]?.[`flag_${index}`] === true);
}

/**
 * Take the table's ACCESS SHARE lock before reading anything that depends on it. Describing a
 * table reads its owned sequences, and DROP TABLE locks the table first and those sequences
 * after: a capture that read the sequence first and then waited for the table could deadlock
 * with a DROP approved meanwhile (seen: the agent's startup sweep against a DROP of the same
 * table). Taking the table first orders the two the same way; one waits for the other.
 */
async function lockForReading(client: pg.ClientBase, source: RowSource): Promise<void> {
  // Foreign tables take no lock worth ordering (and LOCK TABLE refuses some of them). The FROM
  // target locks what the COPY reads: a plain table without its inheritance children, a
  // partitioned table with its partitions.
  if (source.relkind !== 'f') await client.query(`LOCK TABLE ${source.from} IN ACCESS SHARE MODE`);
}

interface RelationFacts {
  unlogged: boolean;
  sizeBytes: number;
  /** pg_class.reltuples, when the relation has been vacuumed or analyzed. */
  estimatedRows: number | null;
  /** Average row size on disk by the same statistics. */
  estimatedRowBytes: number | null;
}

async function relationFacts(client: pg.ClientBase, relation: QualifiedName): Promise<RelationFacts> {
  const { rows } = await client.query<{ persistence: string; size: string; reltuples: number | null; heap: string | null }>(
    `SELECT c.relpersistence::text AS persistence,
            CASE WHEN c.relkind = 'p'
                 THEN (SELECT COALESCE(pg_catalog.sum(pg_catalog.pg_total_relation_size(p.relid)), 0) FROM pg_catalog.pg_partition_tree(c.oid) AS p)
                 ELSE pg_catalog.pg_total_relation_size(c.oid) END::bigint::text AS size,
            c.reltuples::float8 AS reltuples,
            CASE WHEN c.relkind = 'p' THEN NULL ELSE pg_catalog.pg_table_size(c.oid)::bigint::text END AS heap
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2`,
    [relation.schema, relation.table],
  );
  const row = rows[0];
  const reltuples = row?.reltuples ?? null;
  const heap = row?.heap === null || row?.heap === undefined ? null : Number(row.heap);
  const known = reltuples !== null && reltuples > 0;
  return {
    unlogged: row?.persistence === 'u',
    sizeBytes: Number(row?.size ?? 0),
    estimatedRows: known ? Math.round(reltuples) : null,
    estimatedRowBytes: known && heap !== null && heap > 0 ? heap / reltuples : null,
  };
}

/**
 * Average text width of the first rows, for a table without statistics (never vacuumed or
 * analyzed). Few rows: each is printed whole, and rows can be huge. The estimate only sizes row
 * groups; one far off is corrected after the encode (rowGroupsTooLarge).
 */
async function sampledRowBytes(client: pg.ClientBase, from: string): Promise<number | null> {
  const { rows } = await client.query<{ bytes: number | null }>(
    `SELECT avg(pg_catalog.octet_length(s.t::text))::float8 AS bytes FROM (SELECT t FROM ${from} AS t LIMIT 20) AS s`,
  );
  return rows[0]?.bytes ?? null;
}

const MB = 1024 * 1024;
const LOCAL_COPY_CHUNK_BYTES = MB;
/**
 * Longest row the first encode accepts: the encoder's 32 MB read buffer holds it, so it
 * costs no more memory than a table of short rows already takes. A longer one makes DuckDB refuse
 * the file; the second encode then knows the longest record from the row hash.
 */
const FIRST_MAX_RECORD_BYTES = 31 * MB;

/** How DuckDB reads the rows and which type each column is written as. */
interface EncodePlan {
  storages: ColumnStorage[];
  maxRecordBytes: number;
  rowGroupRows: number;
}

function rowGroupRowsFor(averageRowBytes: number): number {
  return Math.min(MAX_ROW_GROUP_ROWS, Math.max(MIN_ROW_GROUP_ROWS, Math.floor(ROW_GROUP_TARGET_BYTES / Math.max(1, averageRowBytes))));
}

function averageRowBytes(hash: RowHashResult): number {
  return hash.rows > 0 ? hash.bytes / hash.rows : 1;
}

/** Row groups more than 4× the 64 MB target (the row width estimate was far off): memory on restore grows with them. */
function rowGroupsTooLarge(plan: EncodePlan, hash: RowHashResult): boolean {
  return plan.rowGroupRows > MIN_ROW_GROUP_ROWS && plan.rowGroupRows > 4 * rowGroupRowsFor(averageRowBytes(hash));
}

async function captureData(
  client: pg.ClientBase,
  target: CaptureTarget,
  workDir: string,
  store: StoreDataFile,
  options: CaptureOptions,
  logger: Logger,
): Promise<CapturedData> {
  const startedAt = Date.now();
  const warnings: string[] = [];
  const source = target.readFrom ?? target.table;
  const sourceRows = await rowSource(client, source);
  await assertSeesEveryRow(client, sourceRows, target.table);
  const { from } = sourceRows;
  await lockForReading(client, sourceRows);
  const { definition, rows: rowsDefinition } = await tableDefinitions(client, target, warnings);
  const facts = await relationFacts(client, source);
  if (definition.persistence === 'unlogged') warnings.push('the table is UNLOGGED: PostgreSQL empties it after a crash and does not replicate it');

  const columns = [...rowsDefinition.columns].sort((a, b) => a.attnum - b.attnum);
  if (columns.length === 0) {
    throw new SnapshotError(`${displayName(target.table)} has no columns; Parquet cannot hold a table without columns`, { hint: 'add a column or leave this table out' });
  }
  const names = parquetNames(columns);
  const plans = columns.map((column, index) => planColumn(column, names[index]!));
  const checks = plans.map(unrepresentableSql);
  const copySql = copyOutSql(from, columns.map((column) => column.name), options.rowFilter);
  options.signal?.throwIfAborted();

  const label = `snapshot ${displayName(target.table)}`;
  const progress = options.progress ? createProgress({ label, logger, ...(facts.estimatedRows ? { totalRows: facts.estimatedRows } : {}) }) : undefined;
  let attempts = 0;
  // Each encode uploads its file while DuckDB writes it (growing-file.ts): the upload costs
  // little more than the encode. A file DuckDB refuses is never published: its upload is
  // aborted with it (storage removes what was partly written) and the next encode stores anew.
  const encodeWith = async (plan: EncodePlan): Promise<{ encoded: ParquetEncodeResult; copied: number; stored: StoredDataFile }> => {
    const dir = path.join(workDir, `encode-${++attempts}`);
    await mkdir(dir);
    const output = path.join(dir, 'data.parquet');
    const uploadAbort = new AbortController();
    const onAbort = () => uploadAbort.abort(options.signal?.reason);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    let copyStream: copyStreams.CopyToStreamQuery | undefined;
    try {
      const encoding = encodeCopyToParquet({
        workDir: dir,
        output,
        columns: plan.storages.map((s, index) => ({ parquetName: names[index]!, expression: s.duckdbExpression })),
        openCopy: () => {
          copyStream = client.query(copyStreams.to(copySql));
          return copyStream;
        },
        maxRecordBytes: plan.maxRecordBytes,
        rowGroupRows: plan.rowGroupRows,
        ...(options.duckdbMemoryLimitBytes ? { memoryLimitBytes: options.duckdbMemoryLimitBytes } : {}),
        ...(options.duckdbThreads ? { threads: options.duckdbThreads } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        ...(progress ? { onProgress: (rows: number, bytes: number) => progress.update(rows, bytes) } : {}),
      });
      const storing = store(output, encoding, facts.sizeBytes, uploadAbort.signal);
      const [encoded, stored] = await Promise.allSettled([encoding, storing]);
      // The encode's failure comes first: the upload of its file failed because of it.
      if (encoded.status === 'rejected') throw encoded.reason;
      if (stored.status === 'rejected') throw stored.reason;
      return { encoded: encoded.value, copied: copyStream?.rowCount ?? -1, stored: stored.value };
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  };

  // One COPY through the row hasher into DuckDB: the content hash, the row count and the
  // longest record come from the same read that writes the Parquet file. Every column that can be
  // native is encoded natively; when DuckDB refuses a value (or a record outgrows its buffer), the
  // COPY still runs to its end, and the rows are encoded a second time with what was learned.
  const estimatedRowBytes = facts.estimatedRowBytes ?? (await sampledRowBytes(client, from));
  const forced = options.storedAs;
  let unrepresentable = plans.map((p) => forced?.[p.column.name] === 'text');
  let plan: EncodePlan = {
    storages: plans.map((p, index) => resolveStorage(p, unrepresentable[index]!)),
    maxRecordBytes: FIRST_MAX_RECORD_BYTES,
    rowGroupRows: rowGroupRowsFor(estimatedRowBytes ?? 1),
  };
  let earlierHash: RowHashResult | undefined;
  let result: { encoded: ParquetEncodeResult; copied: number; stored: StoredDataFile };
  try {
    result = await encodeWith(plan);
  } catch (error) {
    if (!(error instanceof ParquetEncodeRejected)) throw error;
    if (forced) {
      throw new SnapshotError(`the rows of ${displayName(target.table)} cannot be stored the way its earlier image stored them: ${describeError(error.cause)}`, { cause: error });
    }
    earlierHash = error.hash;
    unrepresentable = await unrepresentableColumns(client, from, checks);
    plan = {
      storages: plans.map((p, index) => resolveStorage(p, unrepresentable[index]!)),
      // The hash measured the rows as COPY sent them, which is what DuckDB's buffer must hold.
      maxRecordBytes: error.hash.maxRowBytes + MB,
      rowGroupRows: rowGroupRowsFor(averageRowBytes(error.hash)),
    };
    logger.debug('encoding the rows again', { table: displayName(target.table), reason: describeError(error.cause), max_record_bytes: error.hash.maxRowBytes });
    try {
      result = await encodeWith(plan);
    } catch (again) {
      if (!(again instanceof ParquetEncodeRejected)) throw again;
      throw new SnapshotError(`DuckDB could not encode the rows of ${displayName(target.table)} as Parquet: ${describeError(again.cause)}`, {
        cause: again,
        hint: 'check that the temp folder has room (TMPDIR); otherwise this is a bug in Backstop — report it with the table definition',
      });
    }
  }
  if (rowGroupsTooLarge(plan, result.encoded.hash)) {
    logger.debug('encoding the rows again with smaller row groups', { table: displayName(target.table), average_row_bytes: averageRowBytes(result.encoded.hash) });
    earlierHash = result.encoded.hash;
    await rm(path.dirname(result.encoded.file), { recursive: true, force: true });
    plan = { ...plan, rowGroupRows: rowGroupRowsFor(averageRowBytes(result.encoded.hash)) };
    result = await encodeWith(plan);
  }
  const { encoded, copied, stored } = result;
  const hash = encoded.hash;
  const storages = plan.storages;

  plans.forEach((plan, index) => {
    if (unrepresentable[index]) {
      warnings.push(
        `column "${plan.column.name}" (${plan.column.type}) holds values its Parquet type cannot carry exactly (NaN, infinity, BC or beyond year 9999): stored as text`,
      );
    }
  });
  const asText = plans.filter((plan, index) => storages[index]!.storedAs === 'text' && !unrepresentable[index]);
  if (asText.length > 0) {
    warnings.push(`stored as PostgreSQL text form (no exact Parquet type): ${asText.map((p) => `"${p.column.name}" (${p.column.type})`).join(', ')}`);
  }
  names.forEach((name, index) => {
    if (name !== columns[index]!.name) warnings.push(`column "${columns[index]!.name}" is named "${name}" in the Parquet file (DuckDB names are case-insensitive)`);
  });

  progress?.done(encoded.rows, hash.bytes);
  if (encoded.rows !== hash.rows || copied !== hash.rows || (earlierHash && (earlierHash.rows !== hash.rows || earlierHash.value !== hash.value))) {
    throw new SnapshotError(
      `row counts of ${displayName(target.table)} disagree: ${hash.rows} hashed, ${copied} copied, ${encoded.rows} written to Parquet${earlierHash ? `, ${earlierHash.rows} in the first read` : ''}`,
      { hint: 'this is a bug in Backstop; report it with the table definition' },
    );
  }
  if (!hash.conclusive) {
    throw new SnapshotError(`PostgreSQL's COPY of ${displayName(target.table)} held a raw carriage return or an escape the content hash does not decode`, {
      hint: 'this is a bug in Backstop; report it with the table definition',
    });
  }

  const manifestColumns: ManifestColumn[] = columns.map((column, index) => ({
    name: column.name,
    attnum: column.attnum,
    pg_type: column.type,
    type_oid: column.typeOid,
    nullable: !column.notNull,
    generated: column.generated === 's',
    identity: column.identity,
    parquet_name: names[index]!,
    parquet_type: storages[index]!.parquetType,
    duckdb_type: storages[index]!.duckdbType,
    stored_as: storages[index]!.storedAs,
  }));
  logger.debug('rows encoded', { table: displayName(target.table), rows: hash.rows, copy_bytes: hash.bytes, row_group_rows: plan.rowGroupRows, encodes: attempts });
  const census = options.census ? await censusOf(client, source) : undefined;
  return {
    ...(census ? { census } : {}),
    target,
    definition,
    columns: manifestColumns,
    contentHash: contentHashOf(hash),
    tableSizeBytes: facts.sizeBytes,
    warnings,
    stored,
    startedAt,
  };
}

/** The row-version census of the rows just read, in the same snapshot (see capture/census.ts). */
async function censusOf(client: pg.ClientBase, relation: QualifiedName): Promise<RowCensus> {
  return takeCensus(client, quoteQualified(relation), censusBounds(await currentSnapshot(client)));
}

/**
 * Store data files under `key`, hashing them (SHA-256) on the way; the stored size is checked
 * against the finished local file. `onStart` learns every key written to, so that a failed
 * capture can remove it.
 *
 * Remote storage (S3) is fed while DuckDB still writes the file: the network wait overlaps the
 * encode. A local folder gets the finished file: copying it costs ≈ 0.1 s per 50 MB, and done
 * beside the encode its buffers came on top of DuckDB's memory (capture peak RSS 257 → 298 MB at
 * 1M rows, 271 → 368 MB at 5M: over the 1.2× growth budget).
 */
function storeDataFileAs(storage: Storage, key: string, onStart: (key: string) => void): StoreDataFile {
  return async (file, encoding, sizeHint, signal) => {
    onStart(key);
    const digest = digestingStream();
    let body: Readable;
    if (storage.localFile) {
      await encoding;
      body = createReadStream(file, { highWaterMark: LOCAL_COPY_CHUNK_BYTES });
    } else {
      body = followGrowingFile(file, encoding, signal);
    }
    body.on('error', (error) => digest.destroy(error));
    // put() reports any failure of its body; without a listener of our own, an error after put
    // gave up on the stream (an abort) would be thrown by pipe() as unhandled.
    digest.on('error', () => {});
    body.pipe(digest);
    // The size lets S3 choose a part size for very large files; the table's size on disk is
    // more than its Parquet file will take.
    const { size } = await storage.put(key, digest, { size: sizeHint, signal });
    const local = await stat(file);
    const streamed = digest.result();
    const stored = await storage.head(key);
    if (size !== local.size || streamed.size !== local.size || stored?.size !== local.size) {
      throw new SnapshotError(`data file ${key} was not stored completely (${local.size} bytes encoded, ${stored?.size ?? 'no'} bytes stored)`, {
        hint: 'check the storage service; nothing was published',
      });
    }
    return { size: local.size, sha256: streamed.sha256 };
  };
}

async function runLimited<T, R>(items: readonly T[], limit: number, work: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (failed === undefined && next < items.length) {
      const index = next++;
      try {
        results[index] = await work(items[index]!, index);
      } catch (error) {
        failed ??= error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failed !== undefined) throw failed;
  return results;
}

async function captureMany(targets: CaptureTarget[], options: CaptureOptions, group: { name: string; concurrency: number } | null): Promise<Manifest[]> {
  if (targets.length === 0) throw new SnapshotError('nothing to capture', { hint: 'name at least one table' });
  targets.forEach(assertExportable);
  const database = options.database ?? options.pool;
  if (!database) throw new SnapshotError('capture needs a database or a pool', { hint: 'this is a bug in the caller; report it' });
  const logger = options.logger ?? silentLogger;
  const tempRoot = await createScratchDir('capture', options.tempDir);
  const uploaded: string[] = [];
  const written: string[] = [];
  let current: QualifiedName = targets[0]!.table;
  try {
    // Every table's snapshot id and keys are chosen up front: its data file is stored while it
    // is encoded.
    const planned = targets.map((target) => ({ target, snapshotId: newSnapshotId(), keys: undefined as SnapshotKeys | undefined }));
    const dataOf = async (client: pg.ClientBase, target: CaptureTarget, index: number, timestamp: string): Promise<CapturedData> => {
      current = target.table;
      const workDir = path.join(tempRoot, String(index));
      await mkdir(workDir);
      const keys = snapshotKeys(target.table, timestamp, planned[index]!.snapshotId);
      planned[index]!.keys = keys;
      const store = storeDataFileAs(options.storage, keys.data, (key) => {
        if (!uploaded.includes(key)) uploaded.push(key);
      });
      try {
        return await captureData(client, target, workDir, store, options, logger.child({ table: displayName(target.table) }));
      } catch (error) {
        throw wrapFailure(error, target.table, options.signal);
      }
    };

    // Phase 1: every table read in the same database snapshot, its data file stored as it is written.
    const concurrency = group?.concurrency ?? 1;
    const { context, captured } = await inSnapshotTransaction(database, options.snapshot, async (client) => {
      const context = await snapshotContext(client);
      const timestamp = storageTimestamp(context.createdAt);
      if (concurrency <= 1 || targets.length === 1) {
        const captured: CapturedData[] = [];
        for (const [index, target] of targets.entries()) captured.push(await dataOf(client, target, index, timestamp));
        return { context, captured };
      }
      const exported = options.snapshot ?? (await client.query<{ id: string }>('SELECT pg_catalog.pg_export_snapshot() AS id')).rows[0]!.id;
      const captured = await runLimited(targets, concurrency, (target, index) =>
        inSnapshotTransaction(database, exported, (worker) => dataOf(worker, target, index, timestamp), options.signal),
      );
      return { context, captured };
    }, options.signal);

    const groupInfo: ManifestGroup | null = group
      ? { name: group.name, id: newGroupId(), tables: targets.map((t) => ({ schema: t.table.schema, table: t.table.table })) }
      : null;

    // Phase 3: manifests, the commit point.
    const manifests = captured.map((data, index) => buildManifest(data, planned[index]!.snapshotId, planned[index]!.keys!, context, groupInfo, options));
    options.signal?.throwIfAborted();
    for (const [index, manifest] of manifests.entries()) {
      current = captured[index]!.target.table;
      const key = planned[index]!.keys!.manifest;
      written.push(key);
      await writeManifest(options.storage, key, manifest);
      logger.info('snapshot captured', {
        table: displayName(captured[index]!.target.table),
        snapshot_id: manifest.snapshot_id,
        rows: manifest.row_count,
        bytes: manifest.size_bytes,
        duration_ms: manifest.duration_ms,
        ...(manifest.warnings.length > 0 ? { warnings: manifest.warnings } : {}),
      });
    }
    return manifests;
  } catch (error) {
    // Un-publish: manifests first (a group is all or nothing), then the data files.
    for (const key of [...written, ...uploaded]) await options.storage.delete(key).catch(() => {});
    throw wrapFailure(error, current, options.signal);
  } finally {
    await rm(tempRoot, { recursive: true, force: true }).catch(() => {});
  }
}

function buildManifest(
  data: CapturedData,
  snapshotId: string,
  keys: SnapshotKeys,
  context: SnapshotContext,
  group: ManifestGroup | null,
  options: CaptureOptions,
): Manifest {
  return {
    format_version: MANIFEST_FORMAT_VERSION,
    snapshot_id: snapshotId,
    schema: data.target.table.schema,
    table: data.target.table.table,
    row_count: data.contentHash.row_count,
    columns: data.columns,
    ddl: data.definition.ddl,
    definition: data.definition,
    parquet_path: keys.data,
    location: `${options.storage.url.replace(/\/+$/, '')}/${keys.data}`,
    size_bytes: data.stored.size,
    checksum: formatChecksum(data.stored.sha256),
    checksum_algorithm: 'sha256',
    content_hash: data.contentHash,
    session_settings: { ...CANONICAL_SETTINGS },
    created_at: context.createdAt.toISOString(),
    source: options.source ?? 'on-demand',
    request_id: options.requestId ?? null,
    label: options.label ?? null,
    group,
    read_from: data.target.readFrom ? { schema: data.target.readFrom.schema, table: data.target.readFrom.table } : null,
    db_size_bytes: context.databaseSizeBytes,
    table_size_bytes: data.tableSizeBytes,
    duration_ms: Date.now() - data.startedAt,
    server_version: context.serverVersion,
    server_version_num: context.serverVersionNum,
    compression: 'snappy',
    warnings: data.warnings,
    as_of: asOf(context, data, options),
  };
}

function asOf(context: SnapshotContext, data: CapturedData, options: CaptureOptions): ManifestAsOf {
  return {
    snapshot: context.snapshot,
    ...(data.census ? { census: data.census } : {}),
    // A capture that completes a before-image covers the instant of its own snapshot.
    ...(options.completion ? { completion: { ...options.completion, snapshot: context.snapshot } } : {}),
  };
}

/** One more data file of an existing snapshot (its manifest lists it under `parts`). */
export interface CapturedPart {
  parquet_path: string;
  size_bytes: number;
  checksum: string;
  row_count: number;
  content_hash: ContentHash;
}

/**
 * Store the rows `options.rowFilter` selects, encoded as `options.storedAs` says, as a data file
 * under `key`; no manifest is written (the caller adds the part to one — the commit point). On
 * any failure the file is removed.
 */
export async function capturePart(options: CaptureOptions & CaptureTarget & { key: string }): Promise<CapturedPart> {
  const database = options.database ?? options.pool;
  if (!database) throw new SnapshotError('capture needs a database or a pool', { hint: 'this is a bug in the caller; report it' });
  const logger = options.logger ?? silentLogger;
  const workDir = await createScratchDir('capture', options.tempDir);
  let started = false;
  try {
    const store = storeDataFileAs(options.storage, options.key, () => {
      started = true;
    });
    const data = await inSnapshotTransaction(database, options.snapshot, (client) =>
      captureData(client, { table: options.table }, workDir, store, options, logger), options.signal);
    return {
      parquet_path: options.key,
      size_bytes: data.stored.size,
      checksum: formatChecksum(data.stored.sha256),
      row_count: data.contentHash.row_count,
      content_hash: data.contentHash,
    };
  } catch (error) {
    if (started) await options.storage.delete(options.key).catch(() => {});
    throw wrapFailure(error, options.table, options.signal);
  } finally {
    await rm(workDir, { recursive: true, force: true }).catch(() => {});
  }
}

/** Capture one table; resolves with its manifest once the snapshot is published. */
export async function captureTable(options: CaptureTableOptions): Promise<Manifest> {
  const target: CaptureTarget = { table: options.table, ...(options.readFrom ? { readFrom: options.readFrom } : {}) };
  const [manifest] = await captureMany([target], options, null);
  return manifest!;
}

/**
 * Capture several tables in one consistent database snapshot, recorded as a recovery group in
 * every manifest. All manifests are published, or none.
 */
export async function captureGroup(options: CaptureGroupOptions): Promise<Manifest[]> {
  if (!options.group) throw new SnapshotError('a recovery group needs a name', { hint: 'pass --group NAME' });
  return captureMany(options.tables, options, { name: options.group, concurrency: options.concurrency ?? 2 });
}

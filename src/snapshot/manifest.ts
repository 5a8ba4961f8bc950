/**
 * The manifest: everything needed to trust and restore one snapshot, stored as JSON beside the
 * data file. It is written last, after the data file is complete and checked, and is therefore
 * the commit point: a data file without a manifest is garbage, never a snapshot.
 */
import { Readable } from 'node:stream';
import type { TableDefinition } from '../db/catalog.js';
import { SnapshotError, describeError } from '../errors/index.js';
import type { Storage } from '../storage/storage.js';
import type { ContentHash } from './content-hash.js';
import type { StoredAs } from './type-mapping.js';
import type { RowCensus } from '../capture/census.js';

/**
 * 2: `checksum` is `sha256:<hex>` and `db_size_bytes` the database's size, the table's being
 * `table_size_bytes` (as in the design's example manifest). 1: `checksum` was the bare hex and
 * `db_size_bytes` the table's size; such manifests are still read (see parseManifest) and verify.
 */
export const MANIFEST_FORMAT_VERSION = 2;

/**
 * 3: the manifest lists more data files under `parts` (rows written while a before-image's
 * statement waited, added when the image was completed); the snapshot's rows are the main file's
 * and every part's. Written only by such manifests, so that a reader that knows nothing of parts
 * refuses them instead of restoring fewer rows.
 */
export const MANIFEST_FORMAT_WITH_PARTS = 3;

/** A further data file of a snapshot: its size, SHA-256 and rows (their content hash is part of the manifest's). */
export interface ManifestPart {
  parquet_path: string;
  size_bytes: number;
  checksum: string;
  row_count: number;
  content_hash: ContentHash;
}

/** Every data file of a snapshot, the main one first. */
export function dataFiles(manifest: Pick<Manifest, 'parquet_path' | 'size_bytes' | 'checksum' | 'parts'>): Array<{ parquet_path: string; size_bytes: number; checksum: string }> {
  return [{ parquet_path: manifest.parquet_path, size_bytes: manifest.size_bytes, checksum: manifest.checksum }, ...(manifest.parts ?? [])];
}

/**
 * Why a snapshot was taken. `sidecar`: a background snapshot the agent (which runs beside the
 * database, like a sidecar) took on its own because the table was new or changed;
 * `before-image`: taken for a request before the guarded statement ran (`request_id`);
 * `on-demand`: asked for (`backstop snapshot`, `SELECT backstop.snapshot(…)`).
 */
export type SnapshotSource = 'sidecar' | 'before-image' | 'on-demand';

/** The source as people read it in listings: `sidecar` says what it is. */
export function sourceForPeople(source: string): string {
  return source === 'sidecar' ? "sidecar (the agent's background snapshot)" : source;
}

export interface ManifestColumn {
  name: string;
  attnum: number;
  /** format_type of the column, e.g. `numeric(10,2)`, `"My Schema".mood[]`. */
  pg_type: string;
  type_oid: number;
  nullable: boolean;
  generated: boolean;
  identity: '' | 'a' | 'd';
  /** Name of the column in the Parquet file (differs only when two names differ only by case). */
  parquet_name: string;
  /** Parquet physical type and annotation, e.g. `INT64`, `DECIMAL(10,2)`, `BYTE_ARRAY (STRING)`. */
  parquet_type: string;
  /** The type DuckDB reads the column as. */
  duckdb_type: string;
  /**
   * `native`: the Parquet value is the value (ints, floats, bool, strings, date/timestamps, bytes,
   * uuid, json, decimal). `text`: a string holding the PostgreSQL text form under
   * `session_settings`, loaded back through `pg_type`.
   */
  stored_as: StoredAs;
}

export interface ManifestGroup {
  name: string;
  id: string;
  /** Every table of the group, `schema.table`, in capture order. */
  tables: Array<{ schema: string; table: string }>;
}

/** Which instant a snapshot holds (absent in manifests written before it was recorded). */
export interface ManifestAsOf {
  /** pg_current_snapshot() of the transaction the rows were read in. */
  snapshot: string;
  /** Before-images: the row-version census taken in that snapshot (see src/capture/census.ts). */
  census?: RowCensus;
  /**
   * Before-images of DROP / ALTER: how the image was made to hold every write committed before
   * its statement took effect, once the waiting statement had stopped writers (EXCLUSIVE lock).
   * `proof`: a census in `snapshot` proved no row changed since the capture; `delta`: the census
   * proved rows were only added, and those rows were stored as a further part (`parts`) read in
   * `snapshot`; `recapture`: the rows were read again in `snapshot`. Absent: the image holds the
   * table as of the capture only.
   */
  completion?: {
    how: 'proof' | 'delta' | 'recapture';
    snapshot: string;
    at: string;
    request_id: number;
    completion_id: number;
    /** recapture: why the capture could not be proven current (e.g. rows written since). */
    reason?: string;
  };
}

export interface Manifest {
  format_version: number;
  snapshot_id: string;
  schema: string;
  table: string;
  row_count: number;
  columns: ManifestColumn[];
  /** CREATE TABLE text of the captured table (also in `definition.ddl`). */
  ddl: string;
  /** The whole table definition (columns, indexes, constraints, owned sequences, partitions). */
  definition: TableDefinition;
  /** Data file key relative to the storage root. */
  parquet_path: string;
  /** Data file URL (storage URL + key), for people and other tools. */
  location: string;
  size_bytes: number;
  /** SHA-256 of the data file, `sha256:<hex>` (a bare `<hex>` in format 1): read it with checksumHex(). */
  checksum: string;
  checksum_algorithm: 'sha256';
  content_hash: ContentHash;
  /** Settings under which text forms and the content hash were produced. */
  session_settings: Record<string, string>;
  created_at: string;
  source: SnapshotSource;
  request_id: number | null;
  label: string | null;
  group: ManifestGroup | null;
  /** Set when rows were read from another relation (a TRUNCATE before-image copy). */
  read_from: { schema: string; table: string } | null;
  /**
   * pg_database_size of the whole database at capture time; null for format-1 manifests, which
   * held the table's size here (now in table_size_bytes).
   */
  db_size_bytes: number | null;
  /** pg_total_relation_size of the table (its partitions included) at capture time. */
  table_size_bytes: number;
  duration_ms: number;
  server_version: string;
  server_version_num: number;
  compression: 'snappy';
  warnings: string[];
  as_of?: ManifestAsOf;
  /**
   * More data files (format 3). `row_count` and `content_hash` are the whole snapshot's (every
   * file's rows); `parquet_path`, `size_bytes` and `checksum` are the main file's.
   */
  parts?: ManifestPart[];
}

export function serializeManifest(manifest: Manifest): string {
  return `${JSON.stringify(manifest, null, 2)}\n`;
}

const REQUIRED_FIELDS: Array<keyof Manifest> = [
  'format_version',
  'snapshot_id',
  'schema',
  'table',
  'row_count',
  'columns',
  'parquet_path',
  'size_bytes',
  'checksum',
  'content_hash',
  'created_at',
];

/** Parse and sanity-check manifest JSON; `where` names it in errors. */
export function parseManifest(text: string, where: string): Manifest {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new SnapshotError(`manifest ${where} is not valid JSON: ${describeError(error)}`, { cause: error, hint: 'the manifest is damaged; use another snapshot' });
  }
  if (!value || typeof value !== 'object') throw new SnapshotError(`manifest ${where} is not a JSON object`, { hint: 'the manifest is damaged; use another snapshot' });
  const record = value as Record<string, unknown>;
  const missing = REQUIRED_FIELDS.filter((field) => record[field] === undefined);
  if (missing.length > 0) throw new SnapshotError(`manifest ${where} lacks ${missing.join(', ')}`, { hint: 'the manifest is damaged; use another snapshot' });
  if (typeof record.format_version !== 'number' || record.format_version > MANIFEST_FORMAT_WITH_PARTS) {
    throw new SnapshotError(`manifest ${where} has format version ${String(record.format_version)}, newer than this Backstop understands`, {
      hint: 'upgrade Backstop to read this snapshot',
    });
  }
  if (typeof record.checksum !== 'string' || !CHECKSUM.test(record.checksum)) {
    throw new SnapshotError(`manifest ${where} has no SHA-256 checksum (found ${JSON.stringify(record.checksum)})`, { hint: 'the manifest is damaged; use another snapshot' });
  }
  if (record.format_version < 2) {
    // Format 1 kept the table's size under db_size_bytes; the database's size was not recorded.
    return { ...(value as Manifest), table_size_bytes: Number(record.db_size_bytes ?? 0), db_size_bytes: null };
  }
  return value as Manifest;
}

/** `sha256:<hex>`, or the bare hex of format-1 manifests. */
const CHECKSUM = /^(sha256:)?[0-9a-f]{64}$/;

/** The manifest's checksum as `sha256:<hex>`, from the hex digest of the data file. */
export function formatChecksum(sha256Hex: string): string {
  return `sha256:${sha256Hex}`;
}

/** The hex SHA-256 the manifest's checksum holds, whichever format wrote it. */
export function checksumHex(manifest: Pick<Manifest, 'checksum'>): string {
  return manifest.checksum.startsWith('sha256:') ? manifest.checksum.slice('sha256:'.length) : manifest.checksum;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks).toString('utf8');
}

export async function readManifest(storage: Storage, key: string): Promise<Manifest> {
  return parseManifest(await readAll(await storage.get(key)), key);
}

/** Write (or atomically replace) a manifest under `key`: the commit point of a snapshot. */
export async function writeManifest(storage: Storage, key: string, manifest: Manifest): Promise<void> {
  await storage.put(key, Readable.from([Buffer.from(serializeManifest(manifest))]), { contentType: 'application/json' });
}

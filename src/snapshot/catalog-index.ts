/**
 * A cache of manifest summaries, one small object per table folder
 * (`index/{schema}.{table}.json` beside `snapshots/`), so that listing 10,000 snapshots reads a
 * hundred small objects instead of 10,000 manifests.
 *
 * The index is never the truth, only a memo of what manifests said. Storage's own listing
 * decides what exists: an index entry whose manifest is not listed is dropped (the manifest is the
 * commit point, so a snapshot without one is never shown), and a listed manifest the index does
 * not know, or knows with another size or modification time, is read. Any process may therefore
 * rewrite an index at any time, and two processes racing to rewrite one only cost the loser's
 * additions a re-read later. Manifests are written once and never changed, so an entry whose
 * manifest still lists with the same size and time says what the manifest says.
 */
import { NotFoundError, describeError } from '../errors/index.js';
import { silentLogger, type Logger } from '../log/logger.js';
import type { Storage, StoredObject } from '../storage/storage.js';
import { Readable } from 'node:stream';
import type { Manifest, SnapshotSource } from './manifest.js';

export const INDEX_PREFIX = 'index/';
const INDEX_FORMAT = 'backstop-catalog-index/v1';

/** What listing and retention need of a snapshot: the manifest without columns and definition. */
export interface SnapshotEntry {
  snapshot_id: string;
  schema: string;
  table: string;
  created_at: string;
  source: SnapshotSource;
  request_id: number | null;
  label: string | null;
  group: { name: string; id: string } | null;
  row_count: number;
  size_bytes: number;
  checksum: string;
  parquet_path: string;
  manifest_key: string;
  location: string;
  duration_ms: number;
  warnings: string[];
  /** Further data files of a completed before-image (manifest format 3). */
  parts?: Array<{ parquet_path: string; size_bytes: number; checksum: string }>;
}

interface IndexEntry {
  manifest_key: string;
  /** The manifest object as listed when the entry was made: a different one is read again. */
  manifest_size: number;
  manifest_modified: number;
  snapshot: SnapshotEntry;
}

interface IndexFile {
  format: typeof INDEX_FORMAT;
  folder: string;
  entries: IndexEntry[];
}

export function entryOf(manifest: Manifest, manifestKey: string): SnapshotEntry {
  return {
    snapshot_id: manifest.snapshot_id,
    schema: manifest.schema,
    table: manifest.table,
    created_at: manifest.created_at,
    source: manifest.source ?? 'on-demand',
    request_id: manifest.request_id ?? null,
    label: manifest.label ?? null,
    group: manifest.group ? { name: manifest.group.name, id: manifest.group.id } : null,
    row_count: manifest.row_count,
    size_bytes: manifest.size_bytes,
    checksum: manifest.checksum,
    parquet_path: manifest.parquet_path,
    manifest_key: manifestKey,
    location: manifest.location,
    duration_ms: manifest.duration_ms,
    warnings: manifest.warnings ?? [],
    ...(manifest.parts?.length
      ? { parts: manifest.parts.map((part) => ({ parquet_path: part.parquet_path, size_bytes: part.size_bytes, checksum: part.checksum })) }
      : {}),
  };
}

/** `snapshots/public.users/…` → `public.users`. */
export function folderOfKey(key: string): string {
  return key.split('/')[1] ?? '';
}

export function indexKey(folder: string): string {
  return `${INDEX_PREFIX}${folder}.json`;
}

function isIndexFile(value: unknown, folder: string): value is IndexFile {
  const file = value as Partial<IndexFile> | null;
  return !!file && file.format === INDEX_FORMAT && file.folder === folder && Array.isArray(file.entries);
}

/** The index of one table folder; an absent or unreadable index is an empty one. */
export async function readIndex(storage: Storage, folder: string, logger: Logger = silentLogger): Promise<Map<string, IndexEntry>> {
  const key = indexKey(folder);
  let text: string;
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of await storage.get(key)) chunks.push(chunk as Buffer);
    text = Buffer.concat(chunks).toString('utf8');
  } catch (error) {
    if (!(error instanceof NotFoundError)) logger.debug('catalog index not readable; reading manifests instead', { key, error: describeError(error) });
    return new Map();
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (isIndexFile(parsed, folder)) return new Map(parsed.entries.map((entry) => [entry.manifest_key, entry]));
  } catch {
    // damaged: rebuilt from the manifests
  }
  logger.debug('catalog index damaged or of another format; reading manifests instead', { key });
  return new Map();
}

/** Is the cached entry still what this listed manifest says? */
export function entryMatches(entry: IndexEntry | undefined, manifest: StoredObject): entry is IndexEntry {
  return !!entry && entry.manifest_size === manifest.size && entry.manifest_modified === manifest.modified.getTime();
}

export function indexEntry(manifest: StoredObject, snapshot: SnapshotEntry): IndexEntry {
  return { manifest_key: manifest.key, manifest_size: manifest.size, manifest_modified: manifest.modified.getTime(), snapshot };
}

/**
 * Write a folder's index (best effort: a read-only credential or a full disk only makes the next
 * listing read manifests again). An empty folder's index is removed.
 */
export async function writeIndex(storage: Storage, folder: string, entries: IndexEntry[], logger: Logger = silentLogger): Promise<void> {
  const key = indexKey(folder);
  try {
    if (entries.length === 0) {
      await storage.delete(key);
      return;
    }
    const file: IndexFile = { format: INDEX_FORMAT, folder, entries: [...entries].sort((a, b) => a.manifest_key.localeCompare(b.manifest_key)) };
    await storage.put(key, Readable.from([Buffer.from(JSON.stringify(file))]), { contentType: 'application/json' });
  } catch (error) {
    logger.debug('catalog index not written; the next listing reads the manifests again', { key, error: describeError(error) });
  }
}

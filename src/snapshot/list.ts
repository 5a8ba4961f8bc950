/**
 * Find snapshots in storage: every manifest is one published snapshot.
 *
 * `listSnapshots` answers from one listing of storage plus the catalog index of each table
 * folder (catalog-index.ts), reading only the manifests the index does not know; `listManifests`
 * reads every manifest, for callers that need the whole of each (restore, recover).
 */
import type { Readable } from 'node:stream';
import { displayName, type QualifiedName } from '../db/identifiers.js';
import { NotFoundError } from '../errors/index.js';
import { silentLogger, type Logger } from '../log/logger.js';
import type { Storage, StoredObject } from '../storage/storage.js';
import { entryMatches, entryOf, folderOfKey, indexEntry, readIndex, writeIndex, type SnapshotEntry } from './catalog-index.js';
import { SNAPSHOTS_PREFIX, isManifestKey, snapshotIdOfKey, tableFolder } from './layout.js';
import { readManifest, type Manifest } from './manifest.js';

export type { SnapshotEntry } from './catalog-index.js';

export interface ListManifestsOptions {
  /** Only this table's snapshots. */
  table?: QualifiedName;
  /** Called for a manifest that cannot be read or parsed (it is left out of the list). */
  onInvalid?: (key: string, error: unknown) => void;
}

const READ_CONCURRENCY = 8;
/** Folder listings at once when a store is listed folder by folder. */
const LIST_CONCURRENCY = 16;
/**
 * Above this many table folders, one listing of the whole prefix (1,000 keys a page) takes fewer
 * requests than a listing per folder.
 */
const MAX_FOLDER_LISTINGS = 500;

/**
 * Every object under `snapshots/`: folder by folder in parallel where the store can name its
 * folders and there are not too many, else one listing. (One S3 listing is a sequence of pages;
 * s3rver took 9.7 s for 20,000 keys that way, and 72 ms for one table's 200.)
 */
async function listSnapshotObjects(storage: Storage): Promise<StoredObject[]> {
  const folders = storage.listFolders ? await storage.listFolders(SNAPSHOTS_PREFIX) : undefined;
  if (!folders || folders.length > MAX_FOLDER_LISTINGS) return storage.list(SNAPSHOTS_PREFIX);
  const objects: StoredObject[] = [];
  await forEachLimited(folders, LIST_CONCURRENCY, async (folder) => {
    objects.push(...(await storage.list(`${SNAPSHOTS_PREFIX}${folder}/`)));
  });
  return objects;
}

async function forEachLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

function newestFirst(a: { created_at: string; snapshot_id: string }, b: { created_at: string; snapshot_id: string }): number {
  return a.created_at === b.created_at ? b.snapshot_id.localeCompare(a.snapshot_id) : b.created_at.localeCompare(a.created_at);
}

export interface ListSnapshotsOptions extends ListManifestsOptions {
  /** Rewrite the index of a table folder whose index was missing or out of date (default true). */
  updateIndex?: boolean;
  logger?: Logger;
}

/** What storage holds under the snapshots prefix: the committed snapshots, and every object listed. */
export interface SnapshotCatalog {
  /** Newest first (created_at, then snapshot id). */
  snapshots: SnapshotEntry[];
  /** Every object under the listed prefix, as listed (data files, manifests, leftovers). */
  objects: StoredObject[];
}

/**
 * The committed snapshots (those whose manifest is listed), newest first: one listing, one index
 * read per table folder, and a manifest read only for what the index does not know.
 */
export async function snapshotCatalog(storage: Storage, options: ListSnapshotsOptions = {}): Promise<SnapshotCatalog> {
  const logger = options.logger ?? silentLogger;
  const objects = options.table ? await storage.list(tableFolder(options.table)) : await listSnapshotObjects(storage);
  const manifestsByFolder = new Map<string, StoredObject[]>();
  for (const object of objects) {
    if (!isManifestKey(object.key)) continue;
    const folder = folderOfKey(object.key);
    manifestsByFolder.set(folder, [...(manifestsByFolder.get(folder) ?? []), object]);
  }
  const snapshots: SnapshotEntry[] = [];
  await forEachLimited([...manifestsByFolder], READ_CONCURRENCY, async ([folder, manifests]) => {
    const index = await readIndex(storage, folder, logger);
    let changed = index.size !== manifests.length;
    const entries = [];
    const unknown: StoredObject[] = [];
    for (const manifest of manifests) {
      const cached = index.get(manifest.key);
      if (entryMatches(cached, manifest)) entries.push(cached);
      else unknown.push(manifest);
    }
    await forEachLimited(unknown, READ_CONCURRENCY, async (manifest) => {
      try {
        entries.push(indexEntry(manifest, entryOf(await readManifest(storage, manifest.key), manifest.key)));
        changed = true;
      } catch (error) {
        // Removed between list and read (prune), or damaged: not a usable snapshot.
        if (!(error instanceof NotFoundError)) options.onInvalid?.(manifest.key, error);
      }
    });
    if (changed && options.updateIndex !== false) await writeIndex(storage, folder, entries, logger);
    for (const entry of entries) snapshots.push(entry.snapshot);
  });
  const wanted = options.table;
  return {
    snapshots: snapshots.filter((s) => !wanted || (s.schema === wanted.schema && s.table === wanted.table)).sort(newestFirst),
    objects,
  };
}

/** Snapshot summaries, newest first (see snapshotCatalog). */
export async function listSnapshots(storage: Storage, options: ListSnapshotsOptions = {}): Promise<SnapshotEntry[]> {
  return (await snapshotCatalog(storage, options)).snapshots;
}

/** Manifests, newest first (created_at, then snapshot id). */
export async function listManifests(storage: Storage, options: ListManifestsOptions = {}): Promise<Manifest[]> {
  const prefix = options.table ? tableFolder(options.table) : SNAPSHOTS_PREFIX;
  const keys = (await storage.list(prefix)).map((object) => object.key).filter(isManifestKey);
  const manifests: Manifest[] = [];
  let next = 0;
  const worker = async () => {
    while (next < keys.length) {
      const key = keys[next++]!;
      try {
        manifests.push(await readManifest(storage, key));
      } catch (error) {
        // Removed between list and read (prune), or damaged: not a usable snapshot.
        if (!(error instanceof NotFoundError)) options.onInvalid?.(key, error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(READ_CONCURRENCY, keys.length) }, worker));
  const wanted = options.table;
  return manifests.filter((m) => !wanted || (m.schema === wanted.schema && m.table === wanted.table)).sort(newestFirst);
}

/** The manifest of one snapshot; NotFoundError when no such snapshot exists. */
export async function findManifest(storage: Storage, snapshotId: string): Promise<Manifest> {
  const keys = (await listSnapshotObjects(storage)).map((object) => object.key).filter((key) => isManifestKey(key) && snapshotIdOfKey(key) === snapshotId);
  if (keys.length === 0) {
    throw new NotFoundError(`no snapshot ${snapshotId} in ${storage.url}`, { hint: 'list the snapshots with: backstop snapshots list --storage URL' });
  }
  return readManifest(storage, keys[0]!);
}

/** The snapshot's Parquet data, streamed from storage (verify it first: see verify.ts). */
export async function openDataFile(storage: Storage, manifest: Manifest): Promise<Readable> {
  return storage.get(manifest.parquet_path);
}

export function manifestTableName(manifest: Manifest): string {
  return displayName({ schema: manifest.schema, table: manifest.table });
}

/** Find snapshots in storage: every manifest is one published snapshot. */
import type { Readable } from 'node:stream';
import { displayName, type QualifiedName } from '../db/identifiers.js';
import { NotFoundError } from '../errors/index.js';
import type { Storage } from '../storage/storage.js';
import { SNAPSHOTS_PREFIX, isManifestKey, snapshotIdOfKey, tableFolder } from './layout.js';
import { readManifest, type Manifest } from './manifest.js';

export interface ListManifestsOptions {
  /** Only this table's snapshots. */
  table?: QualifiedName;
  /** Called for a manifest that cannot be read or parsed (it is left out of the list). */
  onInvalid?: (key: string, error: unknown) => void;
}

const READ_CONCURRENCY = 8;

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
  return manifests
    .filter((m) => !wanted || (m.schema === wanted.schema && m.table === wanted.table))
    .sort((a, b) => (a.created_at === b.created_at ? b.snapshot_id.localeCompare(a.snapshot_id) : b.created_at.localeCompare(a.created_at)));
}

/** The manifest of one snapshot; NotFoundError when no such snapshot exists. */
export async function findManifest(storage: Storage, snapshotId: string): Promise<Manifest> {
  const keys = (await storage.list(SNAPSHOTS_PREFIX)).map((object) => object.key).filter((key) => isManifestKey(key) && snapshotIdOfKey(key) === snapshotId);
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

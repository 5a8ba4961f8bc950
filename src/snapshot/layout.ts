/**
 * Where a snapshot lives in storage:
 * `snapshots/{schema}.{table}/{timestamp}_{snapshot_id}.parquet` and `….manifest.json` beside it
 * (under the storage URL's prefix). Schema and table are percent-encoded (dots too), so any name,
 * including `/`, `.` or unicode, gives one safe path segment and distinct tables distinct folders.
 */
import type { QualifiedName } from '../db/identifiers.js';

export const SNAPSHOTS_PREFIX = 'snapshots/';
export const DATA_SUFFIX = '.parquet';
export const MANIFEST_SUFFIX = '.manifest.json';

function encodeSegment(name: string): string {
  return encodeURIComponent(name).replace(/[.!'()*~]/g, (ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase()}`);
}

export function tableFolder(table: QualifiedName): string {
  return `${SNAPSHOTS_PREFIX}${encodeSegment(table.schema)}.${encodeSegment(table.table)}/`;
}

export interface SnapshotKeys {
  data: string;
  manifest: string;
}

export function snapshotKeys(table: QualifiedName, timestamp: string, snapshotId: string): SnapshotKeys {
  const base = `${tableFolder(table)}${timestamp}_${snapshotId}`;
  return { data: `${base}${DATA_SUFFIX}`, manifest: `${base}${MANIFEST_SUFFIX}` };
}

export function isManifestKey(key: string): boolean {
  return key.startsWith(SNAPSHOTS_PREFIX) && key.endsWith(MANIFEST_SUFFIX);
}

/** A further data file of a snapshot (`….part-2.parquet`), added when a before-image was completed. */
const PART_SUFFIX = /\.part-\d+\.parquet$/;

/** The snapshot id a manifest or data key (main file or part) names, or undefined for other keys. */
export function snapshotIdOfKey(key: string): string | undefined {
  const file = key.slice(key.lastIndexOf('/') + 1);
  const match = /_([0-9a-f]{12})(?:\.part-\d+)?(?:\.parquet|\.manifest\.json)$/.exec(file);
  return match?.[1];
}

/** The manifest key that belongs to a data key (a part belongs to its snapshot's manifest). */
export function manifestKeyForData(dataKey: string): string | undefined {
  if (PART_SUFFIX.test(dataKey)) return dataKey.replace(PART_SUFFIX, MANIFEST_SUFFIX);
  return dataKey.endsWith(DATA_SUFFIX) ? `${dataKey.slice(0, -DATA_SUFFIX.length)}${MANIFEST_SUFFIX}` : undefined;
}

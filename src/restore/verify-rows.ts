/**
 * Did the restored table receive exactly the snapshot's rows? The row count and the content hash
 * (src/snapshot/content-hash.ts) must equal the manifest's.
 *
 * - As loaded: the COPY text restore sent was hashed on its way. When it carried every column of
 *   the snapshot and its hash equals the manifest's, the table holds, byte for byte, the text
 *   PostgreSQL printed at capture, which its input functions read back to the same values (the
 *   guarantee pg_dump rests on). Nothing is read again.
 * - Read back: otherwise (generated columns, which COPY cannot load; values whose DuckDB rendering
 *   differs from PostgreSQL's own text, e.g. floats; a snapshot of a different shape) the loaded
 *   rows are read back with COPY and hashed: exact, and about as costly as the load's COPY.
 * - Snapshots with the v1 hash are checked by the server's md5 over every row.
 */
import type pg from 'pg';
import type { ColumnDefinition } from '../db/catalog.js';
import { displayName, type QualifiedName } from '../db/identifiers.js';
import { VerificationError } from '../errors/index.js';
import { CONTENT_HASH_ALGORITHM, LEGACY_MD5_ALGORITHM, contentHash, contentHashOf, legacyContentHash, sameContent, type ContentHash } from '../snapshot/content-hash.js';
import type { Manifest } from '../snapshot/manifest.js';
import type { LoadedRows } from './load.js';

export type RowCheck = 'as-loaded' | 'read-back' | 'legacy-md5';

export interface RowVerification {
  method: RowCheck;
  hash: ContentHash;
}

/** Column names of the snapshot in capture order (attnum). */
function snapshotColumnNames(manifest: Manifest): string[] {
  return [...manifest.columns].sort((a, b) => a.attnum - b.attnum).map((column) => column.name);
}

async function computeHash(client: pg.ClientBase, manifest: Manifest, table: QualifiedName, copyColumns: ColumnDefinition[], loaded: LoadedRows): Promise<RowVerification> {
  const expected = manifest.content_hash;
  if (expected.algorithm === LEGACY_MD5_ALGORITHM) return { method: 'legacy-md5', hash: await legacyContentHash(client, table) };
  if (expected.algorithm !== CONTENT_HASH_ALGORITHM) {
    throw new VerificationError(`snapshot ${manifest.snapshot_id} uses content hash ${expected.algorithm}, which this version of Backstop does not know`, {
      hint: 'restore it with the Backstop version that captured it, or a newer one',
    });
  }
  const names = snapshotColumnNames(manifest);
  const everyColumnLoaded = copyColumns.length === names.length && copyColumns.every((column, index) => column.name === names[index]);
  if (loaded.hash?.conclusive && everyColumnLoaded) {
    const streamed = contentHashOf(loaded.hash);
    if (sameContent(streamed, expected)) return { method: 'as-loaded', hash: streamed };
  }
  return { method: 'read-back', hash: await contentHash(client, table, names) };
}

/** Throws VerificationError unless the rows of `table` (just loaded) are the snapshot's. */
export async function verifyRestoredRows(
  client: pg.ClientBase,
  manifest: Manifest,
  table: QualifiedName,
  copyColumns: ColumnDefinition[],
  loaded: LoadedRows,
): Promise<RowVerification> {
  const source = displayName({ schema: manifest.schema, table: manifest.table });
  const verification = await computeHash(client, manifest, table, copyColumns, loaded);
  const { hash } = verification;
  if (loaded.rows !== manifest.row_count || hash.row_count !== manifest.row_count) {
    throw new VerificationError(`restored ${hash.row_count} rows of ${source}, the snapshot has ${manifest.row_count}`, {
      hint: 'the restore was rolled back; verify the snapshot (backstop verify) or pick another one',
    });
  }
  if (!sameContent(hash, manifest.content_hash)) {
    throw new VerificationError(`the restored rows of ${source} do not match the snapshot's content hash (${hash.value} ≠ ${manifest.content_hash.value})`, {
      hint: "the restore was rolled back; this is a fidelity bug — report it with the snapshot's manifest",
    });
  }
  return verification;
}

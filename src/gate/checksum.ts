/**
 * The gate's checksum check: read the stored data files back (the main one and any parts) and
 * compare each one's SHA-256 with the manifest. This proves the bytes in storage — not just the
 * ones that were sent — are the snapshot the manifest describes.
 */
import { createHash } from 'node:crypto';
import { VerificationError } from '../errors/index.js';
import { checksumHex, dataFiles, type Manifest } from '../snapshot/manifest.js';
import type { Storage } from '../storage/storage.js';

export async function verifyStoredChecksum(storage: Storage, manifest: Pick<Manifest, 'parquet_path' | 'checksum' | 'size_bytes' | 'snapshot_id' | 'parts'>): Promise<void> {
  for (const data of dataFiles(manifest)) {
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of await storage.get(data.parquet_path)) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    const actual = hash.digest('hex');
    const expected = checksumHex(data);
    if (actual !== expected || size !== data.size_bytes) {
      throw new VerificationError(`data file ${data.parquet_path} has sha256 ${actual} (${size} bytes), the manifest says ${expected} (${data.size_bytes} bytes)`, {
        hint: `the stored snapshot ${manifest.snapshot_id} is damaged; take a new one`,
      });
    }
  }
}

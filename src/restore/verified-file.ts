/**
 * A snapshot's data file, copied from storage to a local temp folder while its SHA-256 is
 * computed, and handed out only when size and checksum match the manifest. Restore reads rows
 * from this local copy, so what was verified is exactly what is loaded (no second download that
 * could differ), and a tampered or truncated file is refused before a single row is read.
 */
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { BackstopError, SnapshotError, VerificationError, describeError } from '../errors/index.js';
import type { Manifest } from '../snapshot/manifest.js';
import { digestingStream } from '../storage/digest.js';
import type { Storage } from '../storage/storage.js';
import { createScratchDir } from '../scratch/scratch-dir.js';

export interface VerifiedDataFile {
  /** Local path of the verified copy. */
  path: string;
  size: number;
  sha256: string;
  /** Delete the local copy (idempotent). */
  remove(): Promise<void>;
}

export async function fetchVerifiedDataFile(storage: Storage, manifest: Manifest): Promise<VerifiedDataFile> {
  const dir = await createScratchDir('restore');
  const remove = () => rm(dir, { recursive: true, force: true });
  const file = path.join(dir, `${manifest.snapshot_id}.parquet`);
  try {
    const digest = digestingStream();
    try {
      await pipeline(await storage.get(manifest.parquet_path), digest, createWriteStream(file));
    } catch (error) {
      if (error instanceof BackstopError) throw error;
      throw new SnapshotError(`cannot read the data file of snapshot ${manifest.snapshot_id} (${manifest.parquet_path}): ${describeError(error)}`, {
        cause: error,
        hint: 'check that the storage is reachable; nothing was restored',
      });
    }
    const { sha256, size } = digest.result();
    if (size !== manifest.size_bytes || sha256 !== manifest.checksum) {
      throw new VerificationError(
        `snapshot ${manifest.snapshot_id} is damaged: its data file has ${size} bytes with sha256 ${sha256}, the manifest says ${manifest.size_bytes} bytes with sha256 ${manifest.checksum}`,
        { hint: 'the file was modified or truncated after capture; nothing was restored — pick another snapshot (backstop snapshots list)' },
      );
    }
    return { path: file, size, sha256, remove };
  } catch (error) {
    await remove();
    throw error;
  }
}

/**
 * A snapshot's data file, checked against its manifest (size and SHA-256) before a single row is
 * read: a tampered or truncated file is refused before anything is created.
 *
 * A file in a local folder is hashed where it lies and read in place; any other storage is
 * downloaded to a scratch folder while it is hashed, so that what was checked is what is read.
 * Reading in place is safe because the content hash, checked on the loaded rows, covers what was
 * actually read: a file changed between the two checks fails the second one.
 */
import { createWriteStream } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { BackstopError, LocalDiskFullError, NotFoundError, SnapshotError, VerificationError, describeError, isDiskFull } from '../errors/index.js';
import { checksumHex, dataFiles, type Manifest } from '../snapshot/manifest.js';

type DataFile = ReturnType<typeof dataFiles>[number];
import { digestingStream, type Digest } from '../storage/digest.js';
import type { Storage } from '../storage/storage.js';
import { createScratchDir } from '../scratch/scratch-dir.js';

export interface VerifiedDataFile {
  /** Local path of the verified main data file: the stored file itself (local folder) or a downloaded copy. */
  path: string;
  /** Every verified data file, the main one first (a completed before-image may have parts). */
  paths: string[];
  /** A scratch folder of this restore's own (DuckDB's pipe goes there). */
  workDir: string;
  size: number;
  sha256: string;
  /** Delete the scratch folder and any downloaded copy (idempotent). */
  remove(): Promise<void>;
}

/** Big reads: the default 64 KB chunks made the copy of a 52 MB file take 170 ms instead of 120 ms. */
const READ_CHUNK_BYTES = 1024 * 1024;
/**
 * Reads of a local file kept in flight while the main thread hashes: a stream reads one chunk at
 * a time, and a 52 MB file then took 63-67 ms to hash; with four reads ahead (each on a libuv
 * worker) 37-41 ms, the hashing (~30 ms) being most of it. Memory: four chunks.
 */
const READS_AHEAD = 4;

/** SHA-256 and size of a local file, its reads running ahead of the hashing. */
export async function digestOfLocalFile(file: string, signal?: AbortSignal): Promise<Digest> {
  const handle = await open(file, 'r');
  try {
    const hash = createHash('sha256');
    const buffers = Array.from({ length: READS_AHEAD }, () => Buffer.allocUnsafeSlow(READ_CHUNK_BYTES));
    const reads: Array<Promise<Buffer>> = [];
    let next = 0;
    let position = 0;
    let ended = false;
    // Reads go to fixed offsets; a read returning fewer bytes than asked is the end of the file.
    const readAhead = () => {
      const buffer = buffers[next++ % READS_AHEAD]!;
      const at = position;
      position += READ_CHUNK_BYTES;
      const read = handle.read(buffer, 0, READ_CHUNK_BYTES, at).then(({ bytesRead }) => buffer.subarray(0, bytesRead));
      // Awaited in turn; one failing while an earlier one is awaited is not unhandled.
      read.catch(() => {});
      reads.push(read);
    };
    for (let index = 0; index < READS_AHEAD; index += 1) readAhead();
    let size = 0;
    while (reads.length > 0) {
      signal?.throwIfAborted();
      const chunk = await reads.shift()!;
      if (!ended) {
        hash.update(chunk);
        size += chunk.length;
      }
      if (chunk.length < READ_CHUNK_BYTES) ended = true;
      // The buffer just hashed is the one the next read fills.
      if (!ended) readAhead();
    }
    return { sha256: hash.digest('hex'), size };
  } finally {
    await handle.close();
  }
}

/** A full TMPDIR is the local disk's problem, not the storage's: say so, with the room needed. */
function diskFull(error: unknown, manifest: Manifest, where: string): LocalDiskFullError {
  return new LocalDiskFullError(`no space left on the local disk for snapshot ${manifest.snapshot_id} (${describeError(error)}) in ${where}`, {
    cause: error,
    hint: `free space there, or point TMPDIR at a folder with room for the ${manifest.size_bytes}-byte data file; nothing was restored`,
  });
}

/** Are all of the snapshot's data files in a local folder (read in place, no download)? */
export function readsInPlace(storage: Storage, manifest: Manifest): boolean {
  return dataFiles(manifest).every((data) => storage.localFile?.(data.parquet_path) !== undefined);
}

/**
 * Check the data files of every snapshot, one snapshot after another, adding each verified file
 * to `into` as it passes (the caller removes them, including those of a run that failed later).
 * `signal` stops it between files and between the chunks of a local file.
 */
export async function verifyDataFiles(
  storage: Storage,
  manifests: Manifest[],
  into: VerifiedDataFile[],
  onVerified: (manifest: Manifest, file: VerifiedDataFile) => void,
  signal?: AbortSignal,
): Promise<void> {
  for (const manifest of manifests) {
    signal?.throwIfAborted();
    const file = await fetchVerifiedDataFile(storage, manifest, signal);
    into.push(file);
    onVerified(manifest, file);
  }
}

export async function fetchVerifiedDataFile(storage: Storage, manifest: Manifest, signal?: AbortSignal): Promise<VerifiedDataFile> {
  let dir: string;
  try {
    dir = await createScratchDir('restore');
  } catch (error) {
    if (isDiskFull(error)) throw diskFull(error, manifest, os.tmpdir());
    throw error;
  }
  const remove = () => rm(dir, { recursive: true, force: true });
  try {
    // The main data file, then any parts (rows added when a before-image was completed): each is
    // checked against the manifest before a single row is read.
    const verified: Array<{ path: string; size: number; sha256: string }> = [];
    for (const [index, data] of dataFiles(manifest).entries()) {
      verified.push(await verifiedFile(storage, manifest, data, index === 0 ? `${manifest.snapshot_id}.parquet` : `${manifest.snapshot_id}.part-${index}.parquet`, dir, signal));
    }
    const main = verified[0]!;
    return {
      path: main.path, paths: verified.map((file) => file.path), workDir: dir,
      size: verified.reduce((sum, file) => sum + file.size, 0), sha256: main.sha256, remove,
    };
  } catch (error) {
    await remove();
    throw error;
  }
}

async function verifiedFile(storage: Storage, manifest: Manifest, data: DataFile, name: string, dir: string, signal?: AbortSignal): Promise<{ path: string; size: number; sha256: string }> {
  const inPlace = storage.localFile?.(data.parquet_path);
  const file = inPlace ?? path.join(dir, name);
  let digest: Digest;
  try {
    if (inPlace) {
      if (!(await storage.head(data.parquet_path))) {
        throw new NotFoundError(`the data file of snapshot ${manifest.snapshot_id} (${inPlace}) does not exist`, {
          hint: 'it was pruned or moved; pick another snapshot (backstop snapshots list)',
        });
      }
      digest = await digestOfLocalFile(inPlace, signal);
    } else {
      const digesting = digestingStream();
      await pipeline(await storage.get(data.parquet_path), digesting, createWriteStream(file, { highWaterMark: READ_CHUNK_BYTES }), signal ? { signal } : {});
      digest = digesting.result();
    }
  } catch (error) {
    if (error instanceof BackstopError || signal?.aborted) throw error;
    if (isDiskFull(error)) throw diskFull(error, manifest, dir);
    throw new SnapshotError(`cannot read the data file of snapshot ${manifest.snapshot_id} (${data.parquet_path}): ${describeError(error)}`, {
      cause: error,
      hint: 'check that the storage is reachable; nothing was restored',
    });
  }
  const { sha256, size } = digest;
  if (size !== data.size_bytes || sha256 !== checksumHex(data)) {
    throw new VerificationError(
      `snapshot ${manifest.snapshot_id} is damaged: its data file has ${size} bytes with sha256 ${sha256}, the manifest says ${data.size_bytes} bytes with sha256 ${checksumHex(data)} (${data.parquet_path})`,
      { hint: 'the file was modified or truncated after capture; nothing was restored — pick another snapshot (backstop snapshots list)' },
    );
  }
  return { path: file, size, sha256 };
}

/**
 * Verify a stored snapshot: re-read its data file from storage and compare size and SHA-256
 * with the manifest. Restore does this before reading a single row.
 */
import { NotFoundError, VerificationError } from '../errors/index.js';
import { digestOf } from '../storage/digest.js';
import type { Storage } from '../storage/storage.js';
import { findManifest } from './list.js';
import { checksumHex, type Manifest } from './manifest.js';

export interface VerifyResult {
  ok: boolean;
  manifest: Manifest;
  expected: { size: number; sha256: string };
  /** Undefined when the data file is missing. */
  actual: { size: number; sha256: string } | undefined;
  problem: string | undefined;
}

/** Check a snapshot without throwing on a mismatch (it still throws when storage fails). */
export async function checkSnapshot(storage: Storage, snapshot: string | Manifest): Promise<VerifyResult> {
  const manifest = typeof snapshot === 'string' ? await findManifest(storage, snapshot) : snapshot;
  const expected = { size: manifest.size_bytes, sha256: checksumHex(manifest) };
  const result = (actual: VerifyResult['actual'], problem: string | undefined): VerifyResult => ({ ok: problem === undefined, manifest, expected, actual, problem });
  const head = await storage.head(manifest.parquet_path);
  if (!head) return result(undefined, `data file ${manifest.parquet_path} is missing`);
  if (head.size !== expected.size) {
    return result({ size: head.size, sha256: '' }, `data file ${manifest.parquet_path} is ${head.size} bytes, the manifest says ${expected.size} (truncated or replaced)`);
  }
  let actual;
  try {
    actual = await digestOf(await storage.get(manifest.parquet_path));
  } catch (error) {
    if (error instanceof NotFoundError) return result(undefined, `data file ${manifest.parquet_path} is missing`);
    throw error;
  }
  if (actual.size !== expected.size) return result(actual, `data file ${manifest.parquet_path} is ${actual.size} bytes, the manifest says ${expected.size} (truncated or replaced)`);
  if (actual.sha256 !== expected.sha256) return result(actual, `data file ${manifest.parquet_path} has SHA-256 ${actual.sha256}, the manifest says ${expected.sha256} (the file was altered)`);
  return result(actual, await partProblem(storage, manifest));
}

/** What is wrong with the snapshot's further data files (parts of a completed before-image), if anything. */
async function partProblem(storage: Storage, manifest: Manifest): Promise<string | undefined> {
  for (const part of manifest.parts ?? []) {
    let actual;
    try {
      actual = await digestOf(await storage.get(part.parquet_path));
    } catch (error) {
      if (error instanceof NotFoundError) return `data file ${part.parquet_path} is missing`;
      throw error;
    }
    if (actual.size !== part.size_bytes) return `data file ${part.parquet_path} is ${actual.size} bytes, the manifest says ${part.size_bytes} (truncated or replaced)`;
    if (actual.sha256 !== checksumHex(part)) return `data file ${part.parquet_path} has SHA-256 ${actual.sha256}, the manifest says ${checksumHex(part)} (the file was altered)`;
  }
  return undefined;
}

/** Verify a snapshot (by id or manifest); throws VerificationError when it does not match. */
export async function verifySnapshot(storage: Storage, snapshot: string | Manifest): Promise<VerifyResult> {
  const result = await checkSnapshot(storage, snapshot);
  if (!result.ok) {
    throw new VerificationError(`snapshot ${result.manifest.snapshot_id} of ${result.manifest.schema}.${result.manifest.table} failed verification: ${result.problem}`, {
      hint: 'do not restore from it; pick another snapshot (backstop snapshots list) or take a new one',
    });
  }
  return result;
}

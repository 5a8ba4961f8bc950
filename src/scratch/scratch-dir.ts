/**
 * Scratch folders for capture and restore (DuckDB's pipe, database and spill files, the Parquet
 * file before upload, a downloaded snapshot). Each is removed by its owner when the work ends;
 * a process that was killed cannot, so folder names carry the owner's pid and the first folder a
 * process creates first removes those whose owner is gone.
 */
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const PREFIX = 'backstop-';
/** A folder younger than this is left alone even if its pid looks dead (pid reuse, clock skew). */
const MIN_STALE_AGE_MS = 10 * 60_000;

const swept = new Set<string>();

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Remove `backstop-<kind>-<pid>-*` folders under `root` whose process is gone. Returns their paths. */
export async function removeOrphanedScratchDirs(root: string = os.tmpdir(), now = Date.now()): Promise<string[]> {
  const removed: string[] = [];
  const entries = await readdir(root, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const match = /^backstop-[a-z]+-(\d+)-/.exec(entry.name);
    if (!entry.isDirectory() || !match) continue;
    const pid = Number(match[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    const folder = path.join(root, entry.name);
    const info = await stat(folder).catch(() => undefined);
    if (!info || now - info.mtimeMs < MIN_STALE_AGE_MS) continue;
    await rm(folder, { recursive: true, force: true }).catch(() => {});
    removed.push(folder);
  }
  return removed;
}

/** A new scratch folder `backstop-<kind>-<pid>-XXXXXX` under `root` (default: the OS temp folder). */
export async function createScratchDir(kind: 'capture' | 'restore', root: string = os.tmpdir()): Promise<string> {
  if (!swept.has(root)) {
    swept.add(root);
    await removeOrphanedScratchDirs(root);
  }
  return mkdtemp(path.join(root, `${PREFIX}${kind}-${process.pid}-`));
}

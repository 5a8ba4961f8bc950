import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, utimes } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScratchDir, removeOrphanedScratchDirs } from '../../src/scratch/scratch-dir.js';

describe('scratch folders', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'scratch-root-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('removes folders left by a process that is gone, and keeps live and recent ones', async () => {
    // A pid that certainly ended: a child we ran to completion.
    const deadPid = spawnSync(process.execPath, ['-e', '0']).pid!;
    const old = new Date(Date.now() - 60 * 60_000);
    const orphan = path.join(root, `backstop-capture-${deadPid}-abc123`);
    const recentOrphan = path.join(root, `backstop-restore-${deadPid}-def456`);
    const live = path.join(root, `backstop-capture-${process.pid}-ghi789`);
    const unrelated = path.join(root, 'backstop-data');
    for (const folder of [orphan, recentOrphan, live, unrelated]) await mkdir(folder);
    for (const folder of [orphan, live, unrelated]) await utimes(folder, old, old);

    expect(await removeOrphanedScratchDirs(root)).toEqual([orphan]);
    expect([orphan, recentOrphan, live, unrelated].map((f) => existsSync(f))).toEqual([false, true, true, true]);
  });

  it('names new folders after the kind and the owning pid', async () => {
    const folder = await createScratchDir('capture', root);
    expect(path.basename(folder)).toMatch(new RegExp(`^backstop-capture-${process.pid}-`));
  });
});

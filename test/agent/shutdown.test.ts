/**
 * SIGTERM while a before-image is being captured: the agent stops taking work, lets the capture
 * finish, decides the request, releases leadership and exits 0. Storage holds no data file
 * without its manifest.
 */
import path from 'node:path';
import { readdir } from 'node:fs/promises';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startAgent, tempDir, type AgentProcess } from '../support/agent-process.js';
import { settle, waitForRequest, waitForStatus } from './requests.js';

async function filesUnder(folder: string): Promise<string[]> {
  const entries = await readdir(folder, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
}

describe('shutdown during a capture', () => {
  let db: TestDatabase;
  let admin: pg.Client;
  let agent: AgentProcess | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    admin = await db.client();
    await admin.query(`CREATE TABLE public.big (id bigint PRIMARY KEY, payload text, n numeric);
      INSERT INTO public.big SELECT i, repeat(md5(i::text), 4), i * 1.5 FROM generate_series(1, 300000) i`);
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await db?.drop();
  });

  it('finishes the running capture, decides, and exits 0', async () => {
    const storage = await tempDir('backstop-storage-');
    // No watched schema: the startup poll stays out of the way of the request.
    agent = await startAgent({ db: db.url, storage, args: ['--interval', '1h', '--schemas', 'nothing_here'] });
    const requester = await db.client();
    const dropped = settle(requester.query('DROP TABLE public.big'));
    const request = await waitForRequest(admin, 'DROP TABLE public.big');
    await agent.waitForLog((line) => line.msg === 'answering request' && line.request_id === request.id, 60_000, 'the capture to start');
    const exit = await agent.stop('SIGTERM', 120_000);
    expect(exit.code).toBe(0);
    expect(agent.lines.some((line) => line.msg === 'agent stopping')).toBe(true);
    agent = undefined;

    expect(await dropped).toEqual({ ok: true });
    const consumed = await waitForStatus(admin, request.id, ['consumed']);
    expect(consumed.snapshot_ids).toHaveLength(1);
    const files = await filesUnder(storage);
    const data = files.filter((file) => file.endsWith('.parquet'));
    expect(data).toHaveLength(1);
    expect(files).toContain(data[0]!.replace(/\.parquet$/, '.manifest.json'));
    expect(files.some((file) => file.includes('.tmp-'))).toBe(false);
  });
});

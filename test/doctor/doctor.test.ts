import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDoctor } from '../../src/doctor/checks.js';
import { openStorage } from '../../src/storage/open.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

const run = promisify(execFile);

describe('backstop doctor', () => {
  let db: TestDatabase;
  let folder: string;
  beforeAll(async () => {
    db = await createTestDatabase();
    folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-doctor-'));
    const client = await db.client();
    await client.query(`CREATE TABLE public."Doctor's table" (id int primary key)`);
  });
  afterAll(async () => {
    await db?.drop();
    await rm(folder, { recursive: true, force: true });
  });

  it('reports an armed guard, a working loopback, no agent, and reachable storage', async () => {
    const client = await db.client();
    const results = await runDoctor(client, openStorage(folder));
    const byCheck = Object.fromEntries(results.map((r) => [r.check, r]));
    expect(byCheck['install']?.status).toBe('ok');
    expect(byCheck['event triggers']?.status).toBe('ok');
    expect(byCheck['truncate guards']?.status).toBe('ok');
    expect(byCheck['dblink']?.status).toBe('ok');
    expect(byCheck['agent']).toMatchObject({ status: 'fail', detail: 'no agent has ever sent a heartbeat' });
    expect(byCheck['storage']?.status).toBe('ok');
  });

  it('fails when a superuser disabled an event trigger, and the CLI exits non-zero with a hint', async () => {
    const client = await db.client();
    await client.query('ALTER EVENT TRIGGER backstop_guard_dropped DISABLE');
    try {
      const results = await runDoctor(client);
      expect(results.find((r) => r.check === 'event triggers')).toMatchObject({ status: 'fail', detail: expect.stringContaining('backstop_guard_dropped is disabled') });
      const failure = await run(process.execPath, ['bin/backstop.js', 'doctor', '--db', db.url]).then(() => null, (error: { code: number; stdout: string }) => error);
      expect(failure?.code).toBe(1);
      expect(failure?.stdout).toMatch(/FAIL\s+event triggers/);
      expect(failure?.stdout).toMatch(/hint: destructive statements are NOT guarded/);
    } finally {
      await client.query('ALTER EVENT TRIGGER backstop_guard_dropped ENABLE ALWAYS');
    }
  });

  it('says Backstop is not installed in a database without it', async () => {
    const bare = await createTestDatabase({ template: 'template0' });
    try {
      const results = await runDoctor(await bare.client());
      expect(results.find((r) => r.check === 'install')).toMatchObject({ status: 'fail', hint: expect.stringContaining('backstop install') });
    } finally {
      await bare.drop();
    }
  });
});

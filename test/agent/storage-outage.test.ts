/** Storage unreachable: requests are denied saying so, and the agent's health, heartbeat and backstop.readiness show it. */
import { rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startAgent, tempDir, waitUntil, type AgentProcess } from '../support/agent-process.js';
import { waitForStatus } from './requests.js';

describe('storage outage', () => {
  let db: TestDatabase;
  let client: pg.Client;
  let agent: AgentProcess | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    await client.query(`CREATE TABLE public.accounts (id int PRIMARY KEY, balance numeric); INSERT INTO public.accounts SELECT i, i * 10 FROM generate_series(1, 50) i`);
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await db?.drop();
  });

  it('denies with "storage unreachable" and reports it in backstop.agents, backstop.readiness and /metadata/health', async () => {
    const parent = await tempDir('backstop-storage-');
    const storage = path.join(parent, 'snapshots');
    agent = await startAgent({ db: db.url, storage, args: ['--interval', '1h'] });
    await waitUntil(async () => {
      const { rows } = await client.query(`SELECT storage_ok FROM backstop.agents WHERE agent_id = $1`, [agent!.agentId]);
      return rows[0]?.storage_ok === true;
    }, 60_000, 'storage_ok');
    // The startup sweep must be done: a capture still uploading would create the folder again.
    await waitUntil(async () => {
      const { rows } = await client.query(`SELECT ready FROM backstop.readiness WHERE schema_name = 'public' AND table_name = 'accounts'`);
      return rows[0]?.ready === true;
    }, 60_000, 'the startup snapshot of public.accounts');

    // The folder becomes a file: nothing can be written there any more.
    await rename(storage, `${storage}.moved`);
    await writeFile(storage, 'not a folder');

    const { rows: [filed] } = await client.query(`SELECT backstop.request($$DROP TABLE public.accounts$$)::text AS id`);
    const denied = await waitForStatus(client, filed.id, ['denied']);
    expect(denied.reason).toMatch(/^storage unreachable: /);
    expect(denied.reason).toContain(storage);

    await waitUntil(async () => {
      const { rows } = await client.query(`SELECT storage_ok, storage_error FROM backstop.agents WHERE agent_id = $1`, [agent!.agentId]);
      return rows[0]?.storage_ok === false && String(rows[0].storage_error).includes(storage);
    }, 60_000, 'storage_ok = false in backstop.agents');
    const health = (await (await fetch(`http://127.0.0.1:${agent.httpPort}/metadata/health`)).json()) as { storageOk: boolean; storageError: string };
    expect(health).toMatchObject({ storageOk: false });
    expect(String(health.storageError)).toContain(storage);
    // Readiness says so too: a table whose before-image could not be written is not ready.
    const { rows: [unready] } = await client.query(`SELECT ready, failing_check FROM backstop.readiness WHERE schema_name = 'public' AND table_name = 'accounts'`);
    expect(unready).toMatchObject({ ready: false, failing_check: expect.stringMatching(new RegExp(`^agent ${agent.agentId} cannot reach its storage: `)) });

    // Back again: the next request is not denied for storage.
    await rm(storage);
    await rename(`${storage}.moved`, storage);
    await waitUntil(async () => {
      const { rows } = await client.query(`SELECT storage_ok FROM backstop.agents WHERE agent_id = $1`, [agent!.agentId]);
      return rows[0]?.storage_ok === true;
    }, 60_000, 'storage_ok again');
    const { rows: [ready] } = await client.query(`SELECT ready FROM backstop.readiness WHERE schema_name = 'public' AND table_name = 'accounts'`);
    expect(ready).toEqual({ ready: true });
  });
});

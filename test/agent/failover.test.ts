/** Several agents on one database: one leads; SIGKILL it and a standby takes over. */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startAgent, tempDir, waitUntil, type AgentProcess } from '../support/agent-process.js';
import { waitForStatus } from './requests.js';

describe('leader election', () => {
  let db: TestDatabase;
  let client: pg.Client;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
  });
  afterAll(async () => {
    await Promise.all(agents.map((agent) => agent.stop('SIGKILL')));
    await db?.drop();
  });

  it('has exactly one leader, and a standby takes over when the leader is killed', async () => {
    // A request an agent claimed and then died with: the leader answers it anyway.
    const { rows: [orphan] } = await client.query(`SELECT backstop.request($$DROP TABLE missing_orphan$$) AS id`);
    expect((await client.query(`SELECT backstop.agent_claim($1, 'ghost') AS ok`, [orphan.id])).rows[0].ok).toBe(true);

    const storage = await tempDir('backstop-storage-');
    const first = await startAgent({ db: db.url, storage, args: ['--agent-id', 'first'] });
    agents.push(first);
    const second = await startAgent({ db: db.url, storage, args: ['--agent-id', 'second'], waitFor: 'standby' });
    agents.push(second);

    await waitUntil(async () => {
      const { rows } = await client.query(`SELECT agent_id, leader FROM backstop.agents ORDER BY agent_id`);
      return rows.length === 2 && rows.every((row) => row.leader === (row.agent_id === 'first')) ? rows : undefined;
    }, 60_000, 'both heartbeats with one leader');

    const resumed = await waitForStatus(client, orphan.id, ['denied']);
    expect(resumed).toMatchObject({ decided_by: 'first' });
    expect(resumed.reason).toContain('missing_orphan does not exist');

    const { rows: [before] } = await client.query(`SELECT backstop.request($$DROP TABLE missing_one$$) AS id`);
    expect((await waitForStatus(client, before.id, ['denied'])).decided_by).toBe('first');

    const killedAt = Date.now();
    await first.stop('SIGKILL');
    await second.waitForLog((line) => line.msg === 'this agent is the leader', 60_000, 'the standby to take over');
    console.log(`standby took over ${Date.now() - killedAt} ms after the leader was killed`);

    const { rows: [after] } = await client.query(`SELECT backstop.request($$DROP TABLE missing_two$$) AS id`);
    const decided = await waitForStatus(client, after.id, ['denied']);
    expect(decided.decided_by).toBe('second');
    expect(decided.reason).toContain('missing_two does not exist');
  });
});

/**
 * The agent's state file belongs to one database. Two agents started from one folder for two
 * databases each get their own file (and agent id) and raise no alerts about each other's
 * tables; a state file of another database, or one a live agent holds, is refused with a hint.
 */
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { BACKSTOP_BIN, startAgent, tempDir, waitUntil, type AgentProcess } from '../support/agent-process.js';

async function failedStart(args: string[], cwd: string): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [BACKSTOP_BIN, 'agent', '--http', 'off', ...args], { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  return { code, stderr };
}

describe('one state file per database', () => {
  let first: TestDatabase;
  let second: TestDatabase;
  let cwd: string;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    first = await createTestDatabase();
    second = await createTestDatabase();
    await (await first.client()).query(`CREATE TABLE only_in_first (id int)`);
    await (await second.client()).query(`CREATE TABLE only_in_second (id int)`);
    cwd = await tempDir('backstop-two-databases-');
  });
  afterAll(async () => {
    for (const agent of agents) await agent.stop('SIGKILL');
    await first?.drop();
    await second?.drop();
  });

  it('two agents from one folder keep separate state and ids, and raise no alerts about each other', async () => {
    const storage = await tempDir('backstop-two-databases-storage-');
    const polls = (agent: AgentProcess) => agent.lines.filter((line) => line.msg === 'snapshot poll done').length;
    for (const db of [first, second]) {
      agents.push(await startAgent({ db: db.url, storage: path.join(storage, db.name), cwd, defaultState: true, args: ['--interval', '300ms'] }));
    }
    const [a, b] = agents as [AgentProcess, AgentProcess];
    expect(a.agentId).not.toBe(b.agentId);
    const files = (await readdir(path.join(cwd, '.backstop'))).filter((name) => name.endsWith('.sqlite')).sort();
    expect(files).toEqual([`agent-${first.name}-`, `agent-${second.name}-`].sort().map((prefix) => expect.stringMatching(new RegExp(`^${prefix}[0-9a-f]{10}\\.sqlite$`))));
    await waitUntil(() => polls(a) >= 4 && polls(b) >= 4, 60_000, 'a few polls of each agent');
    for (const db of [first, second]) {
      const client: pg.Client = await db.client();
      expect((await client.query(`SELECT kind, table_name FROM backstop.alerts`)).rows).toEqual([]);
    }
  });

  it('a second agent for the same database from the same folder is refused, with a hint', async () => {
    const run = await failedStart(['--db', first.url, '--storage', await tempDir('backstop-storage-')], cwd);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^error: the agent state file \S+ is in use by another agent \(pid \d+/m);
    expect(run.stderr).toMatch(/^hint: .*--state/m);
  });

  it('a state file of another database is refused, with a hint', async () => {
    const [firstFile] = (await readdir(path.join(cwd, '.backstop'))).filter((name) => name.startsWith(`agent-${first.name}-`));
    const run = await failedStart(['--db', second.url, '--storage', await tempDir('backstop-storage-'), '--state', path.join(cwd, '.backstop', firstFile!)], cwd);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(new RegExp(`^error: the agent state file \\S+ belongs to database "${first.name}" \\(oid \\d+\\) of cluster \\d+, not to database "${second.name}"`, 'm'));
    expect(run.stderr).toMatch(/^hint: each database needs its own state file/m);
  });
});

/** The real agent process: start, heartbeat, leadership, answering a request, clean shutdown. */
import { spawn } from 'node:child_process';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, serverInfo, type TestDatabase } from '../support/database.js';
import { BACKSTOP_BIN, startAgent, tempDir, waitUntil, type AgentProcess } from '../support/agent-process.js';

describe('backstop agent process', () => {
  let db: TestDatabase;
  let client: pg.Client;
  let agent: AgentProcess | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    await client.query(`CREATE TABLE public.watched (id int PRIMARY KEY, v text); INSERT INTO public.watched SELECT i, 'v' || i FROM generate_series(1, 100) i`);
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await db?.drop();
  });

  it('heartbeats as leader, answers requests, and exits 0 on SIGTERM', async () => {
    agent = await startAgent({ db: db.url, storage: await tempDir('backstop-storage-') });
    const heartbeat = await waitUntil(async () => {
      const { rows } = await client.query(`SELECT agent_id, leader, listening, storage_ok FROM backstop.agents WHERE agent_id = $1 AND leader AND listening`, [agent!.agentId]);
      return rows[0];
    }, 60_000, 'a leader heartbeat');
    expect(heartbeat).toMatchObject({ leader: true, listening: true, storage_ok: true });

    // The leader's startup poll snapshots every table: readiness turns ready from psql.
    await waitUntil(async () => {
      const { rows } = await client.query(`SELECT ready FROM backstop.readiness WHERE schema_name = 'public' AND table_name = 'watched'`);
      return rows[0]?.ready === true;
    }, 90_000, 'public.watched to be ready');
    // An on-demand snapshot asked for from psql.
    const { rows: [asked] } = await client.query(`SELECT backstop.snapshot('public.watched'::regclass, 'before-migration') AS id`);
    const done = await waitUntil(async () => {
      const { rows } = await client.query(`SELECT status, snapshot_id FROM backstop.snapshot_requests WHERE id = $1 AND status <> 'pending'`, [asked.id]);
      return rows[0];
    }, 90_000, 'the on-demand snapshot');
    expect(done.status).toBe('done');
    expect((await client.query(`SELECT label, source FROM backstop.snapshots WHERE snapshot_id = $1`, [done.snapshot_id])).rows[0]).toEqual({ label: 'before-migration', source: 'on-demand' });

    // Dynamic SQL the parser cannot see into is denied with what to do instead.
    const { rows: [filed] } = await client.query(`SELECT backstop.request($q$DO $$ BEGIN EXECUTE 'DROP TABLE x'; END $$$q$) AS id`);
    const denied = await waitUntil(async () => {
      const { rows } = await client.query(`SELECT status, reason FROM backstop.requests WHERE id = $1 AND status <> 'pending' AND status <> 'capturing'`, [filed.id]);
      return rows[0];
    }, 60_000, 'a decision');
    expect(denied.status).toBe('denied');
    expect(denied.reason).toContain('DO block');
    expect(denied.reason).toContain('backstop.request(');

    // A statement naming a table that does not exist is denied naming it.
    const { rows: [missing] } = await client.query(`SELECT backstop.request($$DROP TABLE "No Such"$$) AS id`);
    const missingDecision = await waitUntil(async () => {
      const { rows } = await client.query(`SELECT status, reason FROM backstop.requests WHERE id = $1 AND status NOT IN ('pending', 'capturing')`, [missing.id]);
      return rows[0];
    }, 60_000, 'a decision');
    expect(missingDecision).toMatchObject({ status: 'denied' });
    expect(missingDecision.reason).toContain('"No Such" does not exist');

    // Text that is not SQL: denied with the parser's message.
    const { rows: [garbled] } = await client.query(`SELECT backstop.request($$DROP TABLEE watched$$) AS id`);
    const garbledDecision = await waitUntil(async () => {
      const { rows } = await client.query(`SELECT status, reason FROM backstop.requests WHERE id = $1 AND status NOT IN ('pending', 'capturing')`, [garbled.id]);
      return rows[0];
    }, 60_000, 'a decision on unparseable text');
    expect(garbledDecision.status).toBe('denied');
    expect(garbledDecision.reason).toContain('could not be parsed');

    // Filed from a transaction that already locks the table exclusively: no before-image is
    // possible, and the reason says what to do instead.
    const locker = await db.client();
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE public.watched IN ACCESS EXCLUSIVE MODE');
    const { rows: [locked] } = await locker.query(`SELECT backstop.request($$DROP TABLE public.watched$$) AS id`);
    const lockedDecision = await waitUntil(async () => {
      const { rows } = await client.query(`SELECT status, reason FROM backstop.requests WHERE id = $1 AND status NOT IN ('pending', 'capturing')`, [locked.id]);
      return rows[0];
    }, 60_000, 'a decision on a locked table');
    await locker.query('ROLLBACK');
    expect(lockedDecision.status).toBe('denied');
    expect(lockedDecision.reason).toContain('the requesting transaction holds an exclusive lock on public.watched');

    // Its LISTEN and leader connections are killed: it notices, reconnects, leads again, answers.
    await client.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name IN ('backstop agent listener', 'backstop agent leader')`);
    await agent.waitForLog((line) => line.msg === 'listener reconnected', 60_000, 'the listener to reconnect');
    const { rows: [afterKill] } = await client.query(`SELECT backstop.request($$DROP TABLE after_kill$$) AS id`);
    const afterKillDecision = await waitUntil(async () => {
      const { rows } = await client.query(`SELECT status, reason FROM backstop.requests WHERE id = $1 AND status NOT IN ('pending', 'capturing')`, [afterKill.id]);
      return rows[0];
    }, 60_000, 'a decision after the reconnect');
    expect(afterKillDecision.reason).toContain('after_kill does not exist');

    const listed = (await (await fetch(`http://127.0.0.1:${agent.httpPort}/metadata/snapshots?table=public.watched`)).json()) as Array<{ snapshot_id: string; table: string }>;
    expect(listed.map((manifest) => manifest.snapshot_id)).toContain(done.snapshot_id);
    expect(new Set(listed.map((manifest) => manifest.table))).toEqual(new Set(['watched']));
    const requests = (await (await fetch(`http://127.0.0.1:${agent.httpPort}/metadata/requests?status=denied`)).json()) as Array<{ status: string }>;
    expect(requests.length).toBeGreaterThanOrEqual(3);
    expect(requests.every((request) => request.status === 'denied')).toBe(true);
    const metrics = await (await fetch(`http://127.0.0.1:${agent.httpPort}/metrics`)).text();
    expect(metrics).toMatch(/backstop_request_decisions_total\{outcome="denied"\} [1-9]/);

    const health = await (await fetch(`http://127.0.0.1:${agent.httpPort}/metadata/health`)).json();
    expect(health).toMatchObject({ role: 'leader', listening: true });

    const exit = await agent.stop('SIGTERM');
    expect(exit.code).toBe(0);
    expect(agent.lines.some((line) => line.msg === 'agent stopped')).toBe(true);
    agent = undefined;
  });
});

describe('backstop agent start-up checks', () => {
  let db: TestDatabase;
  const role = `plain_${Math.random().toString(16).slice(2, 10)}`;
  beforeAll(async () => {
    db = await createTestDatabase();
    const client = await db.client();
    await client.query(`CREATE ROLE ${role} LOGIN`);
  });
  afterAll(async () => {
    await db?.drop();
    const admin = new pg.Client({ connectionString: serverInfo().adminUrl });
    await admin.connect();
    await admin.query(`DROP ROLE IF EXISTS ${role}`).catch(() => {});
    await admin.end();
  });

  async function failedStart(url: string): Promise<{ code: number | null; stderr: string }> {
    const child = spawn(process.execPath, [BACKSTOP_BIN, 'agent', '--db', url, '--storage', await tempDir('backstop-storage-'), '--state', `${await tempDir('backstop-state-')}/a.sqlite`, '--http', 'off'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    return { code, stderr };
  }

  it('exits with a hint when Backstop is not installed or the role is not an agent', async () => {
    const bare = `${serverInfo().adminUrl}`;
    const notInstalled = await failedStart(bare);
    expect(notInstalled.code).toBe(1);
    expect(notInstalled.stderr).toContain('Backstop is not installed');
    expect(notInstalled.stderr).toContain('backstop install');

    const notAgent = await failedStart(db.urlAs(role));
    expect(notAgent.code).toBe(1);
    expect(notAgent.stderr).toContain(`role ${role} may not act as the Backstop agent`);
    expect(notAgent.stderr).toContain(`GRANT backstop_agent TO ${role}`);
  });
});

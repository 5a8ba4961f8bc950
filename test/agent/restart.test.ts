/**
 * PostgreSQL restarted under a running agent, on a dedicated cluster: the agent reconnects,
 * answers a request filed while it was disconnected and one filed after it came back.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../src/db/local-cluster.js';
import { install } from '../../src/install/install.js';
import { serverInfo } from '../support/database.js';
import { SYSTEM_PG15_BIN, startLocalCluster, type TestServer } from '../support/servers.js';
import { embeddedBinDir } from '../../src/db/local-cluster.js';
import { startAgent, tempDir, waitUntil, type AgentProcess } from '../support/agent-process.js';
import { waitForStatus } from './requests.js';

describe('database restart', () => {
  let server: TestServer;
  let cluster: LocalCluster;
  let agent: AgentProcess | undefined;
  let url: string;

  beforeAll(async () => {
    const major = serverInfo().major;
    server = await startLocalCluster(major === 15 ? SYSTEM_PG15_BIN : embeddedBinDir(), major);
    cluster = new LocalCluster({ ...server.cluster!, settings: { fsync: 'off', max_connections: '100' } });
    const admin = new pg.Client({ connectionString: server.adminUrl });
    await admin.connect();
    await admin.query('CREATE DATABASE restart_test');
    await admin.end();
    url = cluster.url('restart_test');
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await install(client);
    await client.end();
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await server?.stop();
  });

  async function query<R extends pg.QueryResultRow>(sql: string): Promise<R[]> {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      return (await client.query<R>(sql)).rows;
    } finally {
      await client.end();
    }
  }

  async function health(): Promise<{ listening: boolean; role: string }> {
    return (await fetch(`http://127.0.0.1:${agent!.httpPort}/metadata/health`)).json() as Promise<{ listening: boolean; role: string }>;
  }

  it('reconnects and answers requests filed while it was away and after', async () => {
    agent = await startAgent({ db: url, storage: await tempDir('backstop-storage-') });

    await cluster.stop('fast');
    await waitUntil(async () => !(await health()).listening, 60_000, 'the agent to notice the server is gone');
    await cluster.start();
    // Filed before the agent's listener is back: no NOTIFY reaches it, the sweep must find it.
    const [filedWhileAway] = await query<{ id: string; listening: boolean }>(`SELECT backstop.request($$DROP TABLE gone_while_away$$)::text AS id`);
    const away = await waitForStatus(await connected(), filedWhileAway!.id, ['denied']);
    expect(away.reason).toContain('gone_while_away does not exist');

    await waitUntil(async () => {
      const h = await health();
      return h.listening && h.role === 'leader';
    }, 60_000, 'the agent to listen and lead again');
    const [filedAfter] = await query<{ id: string }>(`SELECT backstop.request($$DROP TABLE filed_after$$)::text AS id`);
    const after = await waitForStatus(await connected(), filedAfter!.id, ['denied']);
    expect(after.reason).toContain('filed_after does not exist');
    expect(agent.lines.some((line) => line.msg === 'listener reconnected')).toBe(true);

    const exit = await agent.stop('SIGTERM');
    expect(exit.code).toBe(0);
    agent = undefined;
  });

  it('replaces a LISTEN connection that stopped answering (a frozen server process) within seconds', async () => {
    agent = await startAgent({ db: url, storage: await tempDir('backstop-storage-') });
    const [listener] = await query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE application_name = 'backstop agent listener'`);
    // SIGSTOP: the socket stays open but nothing answers, as with a black-holed network.
    process.kill(listener!.pid, 'SIGSTOP');
    try {
      const lost = await agent.waitForLog((line) => line.msg === 'listener lost its connection; reconnecting', 60_000, 'the frozen listener to be noticed');
      expect(String(lost.error)).toContain('no answer from the server');
      await agent.waitForLog((line) => line.msg === 'listener reconnected', 60_000, 'a new listener connection');
    } finally {
      process.kill(listener!.pid, 'SIGCONT');
    }
    const [filed] = await query<{ id: string }>(`SELECT backstop.request($$DROP TABLE after_freeze$$)::text AS id`);
    expect((await waitForStatus(await connected(), filed!.id, ['denied'])).reason).toContain('after_freeze does not exist');
    expect((await agent.stop('SIGTERM')).code).toBe(0);
    agent = undefined;
  });

  const clients: pg.Client[] = [];
  async function connected(): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    clients.push(client);
    return client;
  }
  afterAll(async () => {
    await Promise.all(clients.map((client) => client.end().catch(() => {})));
  });
});

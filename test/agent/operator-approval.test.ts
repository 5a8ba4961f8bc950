/**
 * Operator mode (the agent's --approval operator flag, the database still on auto): a DROP
 * waits until a backstop_approver approves from another session; a denial reaches the waiting
 * statement with its reason. Then the agent is stopped and, once its heartbeat is older than
 * max_heartbeat_age, guarded statements are refused at once (fail-closed). The agent runs as an
 * ordinary login role in backstop_agent, not as a superuser.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, serverInfo, type TestDatabase } from '../support/database.js';
import { startAgent, tempDir, waitUntil, type AgentProcess } from '../support/agent-process.js';
import { settle, waitForRequest, waitForStatus } from './requests.js';

const serverAdminUrl = () => serverInfo().adminUrl;

describe('operator approval and the fail-closed heartbeat', () => {
  let db: TestDatabase;
  let admin: pg.Client;
  let approver: pg.Client;
  let agent: AgentProcess | undefined;
  const approverRole = `approver_${randomBytes(4).toString('hex')}`;
  // The agent runs as an ordinary login role in backstop_agent, as in production.
  const agentRole = `agent_${randomBytes(4).toString('hex')}`;

  beforeAll(async () => {
    db = await createTestDatabase();
    admin = await db.client();
    await admin.query(`CREATE ROLE ${approverRole} LOGIN IN ROLE backstop_approver`);
    await admin.query(`CREATE ROLE ${agentRole} LOGIN IN ROLE backstop_agent`);
    await admin.query(`
      CREATE TABLE public.invoices (id int PRIMARY KEY, total numeric);
      INSERT INTO public.invoices SELECT i, i FROM generate_series(1, 100) i;
      CREATE TABLE public.refunds (id int PRIMARY KEY, total numeric);
      INSERT INTO public.refunds SELECT i, i FROM generate_series(1, 100) i;
      CREATE TABLE public.audit (id int);`);
    approver = new pg.Client({ connectionString: db.urlAs(approverRole) });
    await approver.connect();
    agent = await startAgent({ db: db.urlAs(agentRole), storage: await tempDir('backstop-storage-'), args: ['--approval', 'operator', '--interval', '1h'] });
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await approver?.end().catch(() => {});
    await db?.drop();
    const cleanup = new pg.Client({ connectionString: serverAdminUrl() });
    await cleanup.connect();
    await cleanup.query(`DROP ROLE IF EXISTS ${approverRole}`).catch(() => {});
    await cleanup.query(`DROP ROLE IF EXISTS ${agentRole}`).catch(() => {});
    await cleanup.end();
  });

  it('a DROP waits for an approver, then completes', async () => {
    const requester = await db.client();
    const dropped = settle(requester.query('DROP TABLE public.invoices'));
    const request = await waitForRequest(admin, 'DROP TABLE public.invoices');
    const waiting = await waitForStatus(admin, request.id, ['awaiting_approval']);
    expect(waiting.snapshot_ids).toHaveLength(1);
    expect((await admin.query(`SELECT to_regclass('public.invoices') IS NOT NULL AS present`)).rows[0].present).toBe(true);

    await approver.query('SELECT backstop.approve($1::bigint, $2)', [request.id, 'checked with the team']);
    expect(await dropped).toEqual({ ok: true });
    expect((await waitForStatus(admin, request.id, ['consumed'])).status).toBe('consumed');
  });

  it('a denial reaches the waiting statement with its reason', async () => {
    const requester = await db.client();
    const dropped = settle(requester.query('DROP TABLE public.refunds'));
    const request = await waitForRequest(admin, 'DROP TABLE public.refunds');
    await waitForStatus(admin, request.id, ['awaiting_approval']);
    await approver.query('SELECT backstop.deny($1::bigint, $2)', [request.id, 'refunds are audited until March']);
    const outcome = await dropped;
    expect(outcome.ok).toBe(false);
    if (!outcome.ok) expect(outcome.error.message).toContain('refunds are audited until March');
    expect((await waitForStatus(admin, request.id, ['denied'])).reason).toBe('refunds are audited until March');
    expect((await admin.query(`SELECT count(*)::int AS n FROM public.refunds`)).rows[0].n).toBe(100);
  });

  it('expires a request whose requesting session ended while it waited', async () => {
    await admin.query(`CREATE TABLE public.sessions_log (id int)`);
    const requester = await db.client();
    const { rows: [{ pid }] } = await requester.query(`SELECT pg_backend_pid() AS pid`);
    requester.on('error', () => {});
    const dropped = settle(requester.query('DROP TABLE public.sessions_log'));
    const request = await waitForRequest(admin, 'DROP TABLE public.sessions_log');
    await waitForStatus(admin, request.id, ['awaiting_approval']);
    await admin.query(`SELECT pg_terminate_backend($1)`, [pid]);
    expect((await dropped).ok).toBe(false);
    const expired = await waitForStatus(admin, request.id, ['expired']);
    expect(expired.reason).toContain(`the requesting session (pid ${pid}) has ended`);
  });

  it('refuses guarded statements once the stopped agent heartbeat is older than max_heartbeat_age', async () => {
    await admin.query(`UPDATE backstop.settings SET max_heartbeat_age = '3 s'`);
    expect((await agent!.stop('SIGTERM')).code).toBe(0);
    agent = undefined;
    await waitUntil(async () => {
      const { rows } = await admin.query(`SELECT bool_or(fresh) AS fresh FROM backstop.agents`);
      return rows[0].fresh === false;
    }, 60_000, 'the heartbeat to go stale');
    const requester = await db.client();
    const outcome = await settle(requester.query('DROP TABLE public.audit'));
    expect(outcome.ok).toBe(false);
    if (!outcome.ok) {
      expect(outcome.error.message).toContain('the Backstop agent is not running');
      expect(outcome.error.hint).toContain('backstop agent');
    }
    expect((await admin.query(`SELECT to_regclass('public.audit') IS NOT NULL AS present`)).rows[0].present).toBe(true);
  });
});

/**
 * A waiting statement always gets a prompt, true answer, with real agent processes: the leader
 * killed mid-capture (the standby takes the request over at once), the only agent killed while
 * statements wait (each refused with BS001), and SIGTERM (a new statement refused at once while
 * the stopping agent finishes what it claimed).
 *
 * "Mid-capture" is made deterministic with a lock: another session holds the table ACCESS
 * EXCLUSIVE, so the agent's capture waits for it (up to its 15 s lock_timeout) and the request
 * stays `capturing` until the test lets go. Timings are printed; the only bounds asserted are the
 * contract's 10 s.
 */
import type pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startAgent, tempDir, waitUntil, type AgentProcess, type LogLine } from '../support/agent-process.js';
import { settle, waitForRequest, waitForStatus } from './requests.js';

describe('a waiting statement always gets a prompt, true answer', () => {
  let db: TestDatabase;
  let admin: pg.Client;
  const agents: AgentProcess[] = [];

  beforeEach(async () => {
    db = await createTestDatabase();
    admin = await db.client();
    await admin.query(`
      CREATE TABLE public.orders (id bigint PRIMARY KEY, note text);
      INSERT INTO public.orders SELECT i, md5(i::text) FROM generate_series(1, 20000) i;
      CREATE TABLE public.invoices (id bigint PRIMARY KEY);
      INSERT INTO public.invoices SELECT generate_series(1, 100);
      CREATE TABLE public.refunds (id bigint PRIMARY KEY);
      INSERT INTO public.refunds SELECT generate_series(1, 100);`);
    // Any wait that is not answered by liveness would last this long.
    await admin.query(`UPDATE backstop.settings SET wait_timeout = '10 min'`);
  });
  afterEach(async () => {
    await Promise.all(agents.splice(0).map((agent) => agent.stop('SIGKILL')));
    await db?.drop();
  });

  /** No continuous snapshots: only the requests read the tables. */
  async function agent(id: string, options: { waitFor?: 'leader' | 'standby'; args?: string[]; storage?: string } = {}): Promise<AgentProcess> {
    const started = await startAgent({
      db: db.url,
      storage: options.storage ?? (await tempDir('backstop-storage-')),
      args: ['--agent-id', id, '--interval', '1h', '--schemas', 'nothing_here', ...(options.args ?? [])],
      waitFor: options.waitFor ?? 'leader',
    });
    agents.push(started);
    return started;
  }

  /** Another session holds `table` ACCESS EXCLUSIVE until the returned function is called. */
  async function holdLock(table: string): Promise<() => Promise<void>> {
    const holder = await db.client();
    await holder.query(`BEGIN; LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
    return async () => {
      await holder.query('ROLLBACK');
    };
  }

  /** An agent's capture of `table` is waiting for its lock. */
  async function captureWaitsForLock(table: string): Promise<void> {
    await waitUntil(async () => {
      const { rows } = await admin.query(
        `SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'backstop agent % capture' AND wait_event_type = 'Lock'
            AND EXISTS (SELECT FROM pg_locks l WHERE l.pid = pg_stat_activity.pid AND NOT l.granted AND l.relation = $1::regclass)`,
        [table],
      );
      return rows.length > 0;
    }, 60_000, `the capture of ${table} to wait for its lock`);
  }

  const at = (line: LogLine) => Date.parse(String(line.time));

  it('the leader killed mid-capture: the standby takes the request over at once and the DROP completes', async () => {
    const storage = await tempDir('backstop-storage-');
    const first = await agent('first', { storage });
    const second = await agent('second', { storage, waitFor: 'standby' });
    const release = await holdLock('public.orders');

    const requester = await db.client();
    const dropped = settle(requester.query('DROP TABLE public.orders'));
    const request = await waitForRequest(admin, 'DROP TABLE public.orders');
    await captureWaitsForLock('public.orders');
    expect((await waitForStatus(admin, request.id, ['capturing'])).agent_id).toBe('first');

    const killedAt = Date.now();
    await first.stop('SIGKILL');
    await release();
    const resumed = await second.waitForLog((line) => line.msg === 'resuming request left capturing' && line.request_id === request.id, 60_000, 'the standby to take the request over');
    expect(await dropped).toEqual({ ok: true });
    const doneAt = Date.now();
    const decided = await second.waitForLog((line) => line.msg === 'request decided' && line.request_id === request.id, 10_000, 'the decision');

    const takeover = (at(resumed) - killedAt) / 1000;
    const capture = (at(decided) - at(resumed)) / 1000;
    const total = (doneAt - killedAt) / 1000;
    console.log(`leader killed mid-capture: standby resumed the request after ${takeover.toFixed(2)} s, captured in ${capture.toFixed(2)} s, DROP done ${total.toFixed(2)} s after the kill`);
    expect(takeover).toBeLessThan(10);
    expect(total).toBeLessThan(10 + capture);
    const consumed = await waitForStatus(admin, request.id, ['consumed']);
    expect(consumed).toMatchObject({ agent_id: 'second', decided_by: 'second' });
    expect(consumed.snapshot_ids).toHaveLength(1);
  });

  it('a leader that loses its leader session abandons the request in flight, and the DROP still completes', async () => {
    const storage = await tempDir('backstop-storage-');
    const first = await agent('first', { storage });
    await agent('second', { storage, waitFor: 'standby' });
    const release = await holdLock('public.orders');
    const requester = await db.client();
    const dropped = settle(requester.query('DROP TABLE public.orders'));
    const request = await waitForRequest(admin, 'DROP TABLE public.orders');
    await captureWaitsForLock('public.orders');

    // The server ends the leader's session (as a network cut would): it steps down and its
    // request in flight is left to whichever agent leads next, which takes it over.
    await admin.query(`SELECT pg_terminate_backend(h.backend_pid) FROM backstop.agent_heartbeats h WHERE h.agent_id = 'first'`);
    await first.waitForLog((line) => line.event === 'request.abandoned' && line.request_id === request.id, 60_000, 'the request to be abandoned');
    await release();
    expect(await dropped).toEqual({ ok: true });
    const consumed = await waitForStatus(admin, request.id, ['consumed']);
    // Whoever decided held the claim when it did.
    expect(consumed.decided_by).toBe(consumed.agent_id);
    expect(consumed.snapshot_ids).toHaveLength(1);
  });

  it('the only agent killed: every waiting statement is refused with BS001 within seconds', async () => {
    // Operator mode: a statement waits for an approver after the agent has captured.
    const only = await agent('only', { args: ['--approval', 'operator'] });
    const release = await holdLock('public.orders');
    try {
      const waiting = await Promise.all(['public.invoices', 'public.orders'].map(async (table) => {
        const session = await db.client();
        const outcome = settle(session.query(`DROP TABLE ${table}`));
        const request = await waitForRequest(admin, `DROP TABLE ${table}`);
        return { table, outcome, request };
      }));
      await waitForStatus(admin, waiting[0]!.request.id, ['awaiting_approval']);
      await captureWaitsForLock('public.orders');

      const killedAt = Date.now();
      await only.stop('SIGKILL');
      for (const { table, outcome, request } of waiting) {
        const result = await outcome;
        const seconds = (Date.now() - killedAt) / 1000;
        console.log(`${table} (request ${request.id}) refused ${seconds.toFixed(2)} s after the only agent was killed`);
        expect(result.ok).toBe(false);
        if (!result.ok) {
          expect(result.error.code).toBe('BS001');
          expect(result.error.message).toMatch(/the Backstop agent only is no longer connected/);
          expect(result.error.hint).toMatch(/start the agent/);
        }
        expect(seconds).toBeLessThan(10);
        expect((await waitForStatus(admin, request.id, ['expired'])).reason).toContain('no longer connected');
      }
    } finally {
      await release();
    }
    expect((await admin.query(`SELECT count(*)::int AS n FROM public.invoices`)).rows[0].n).toBe(100);
  });

  it('SIGTERM: a new DROP is refused at once, while the stopping agent finishes the request it claimed', async () => {
    const stopping = await agent('stopping');
    const release = await holdLock('public.orders');
    const requester = await db.client();
    const claimedDrop = settle(requester.query('DROP TABLE public.orders'));
    const claimed = await waitForRequest(admin, 'DROP TABLE public.orders');
    await captureWaitsForLock('public.orders');

    const exited = stopping.stop('SIGTERM', 120_000);
    await stopping.waitForLog((line) => line.event === 'agent.goodbye', 30_000, 'the goodbye');
    const { rows: [seen] } = await admin.query(`SELECT connected, available FROM backstop.agents WHERE agent_id = 'stopping'`);
    expect(seen).toEqual({ connected: true, available: false });

    const startedAt = Date.now();
    const session = await db.client();
    const refused = await settle(session.query('DROP TABLE public.refunds'));
    const seconds = (Date.now() - startedAt) / 1000;
    console.log(`DROP after SIGTERM refused in ${seconds.toFixed(2)} s`);
    expect(refused.ok).toBe(false);
    if (!refused.ok) expect(refused.error.code).toBe('BS001');
    expect(seconds).toBeLessThan(10);
    expect((await admin.query(`SELECT count(*)::int AS n FROM backstop.requests WHERE statement LIKE '%refunds%'`)).rows[0].n).toBe(0);

    // The claimed request is still the stopping agent's: it finishes it before exiting.
    await release();
    expect(await claimedDrop).toEqual({ ok: true });
    expect((await waitForStatus(admin, claimed.id, ['consumed'])).decided_by).toBe('stopping');
    expect((await exited).code).toBe(0);
  });
});

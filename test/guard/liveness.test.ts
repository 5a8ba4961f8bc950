/**
 * Liveness read from the server (0004), driven with agent doubles: a double's connection is its
 * presence session (agent_hello), so closing it is what the server sees when an agent process
 * dies. Timings are printed, and bounded only as generously as the contract states (10 s).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LEADER_LOCK_KEY } from '../../src/agent/leader.js';
import { AgentDouble } from '../support/agent-double.js';
import { guardFixture, pgError, requestRows, tableExists, type GuardFixture } from './fixture.js';

describe('liveness of the agent, read from the server', () => {
  let f: GuardFixture;
  const doubles: AgentDouble[] = [];

  beforeEach(async () => {
    // A long wait_timeout: no refusal below may come from it.
    f = await guardFixture({ waitTimeout: '5 min', roles: { reader: [] } });
  });
  afterEach(async () => {
    await Promise.all(doubles.splice(0).map((double) => double.close()));
    await f?.close();
  });

  async function double(agentId: string): Promise<AgentDouble> {
    const connected = await AgentDouble.connect(f.db.urlAs(f.roles.agent!), agentId);
    doubles.push(connected);
    return connected;
  }

  async function whyNoAgent(requestId: string): Promise<string | null> {
    return (await f.admin.query<{ why: string | null }>('SELECT backstop._why_no_agent($1) AS why', [requestId])).rows[0]!.why;
  }

  it('refuses a waiting statement with BS001 within seconds once its only agent is gone', async () => {
    const doomed = await double('doomed');
    await doomed.heartbeat();
    await f.admin.query(`CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)`);
    const session = await f.session();
    const dropped = pgError(session.query('DROP TABLE orders'));
    const request = await doomed.waitForRequest({ statement: 'DROP TABLE orders' });
    expect(await whyNoAgent(request.id)).toBeNull();

    const goneAt = Date.now();
    await doomed.close();
    const error = await dropped;
    const seconds = (Date.now() - goneAt) / 1000;
    console.log(`waiting statement refused ${seconds.toFixed(2)} s after its only agent disconnected`);
    expect(error.code).toBe('BS001');
    expect(error.message).toMatch(/request \d+ cannot be answered: the Backstop agent doomed is no longer connected/);
    expect(error.hint).toMatch(/start the agent/);
    expect(seconds).toBeLessThan(10);
    const row = (await requestRows(f.admin)).find((r) => r.id === request.id)!;
    expect(row).toMatchObject({ status: 'expired', reason: expect.stringContaining('doomed is no longer connected') });
    expect(await tableExists(f.admin, 'orders')).toBe(true);
  });

  it('keeps a statement waiting while the agent that claimed it stays connected, even after it said goodbye', async () => {
    const leaving = await double('leaving');
    await leaving.heartbeat();
    await f.admin.query(`CREATE TABLE invoices (id int)`);
    const session = await f.session();
    const dropped = session.query('DROP TABLE invoices');
    const request = await leaving.waitForRequest({ statement: 'DROP TABLE invoices' });
    await leaving.claim(request.id);
    await leaving.client.query('SELECT backstop.agent_goodbye($1)', [leaving.agentId]);
    // Two liveness checks of the waiting statement pass: its claimant finishes what it claimed.
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(await whyNoAgent(request.id)).toBeNull();
    await leaving.setTargets(request.id, ['public.invoices']);
    expect(await leaving.decide(request.id, 'approved', 'captured', ['s-1'])).toBe('approved');
    await dropped;
    expect(await tableExists(f.admin, 'invoices')).toBe(false);
  });

  it('refuses a new guarded statement at once after the only agent said goodbye, and files nothing', async () => {
    const leaving = await double('leaving');
    await leaving.heartbeat();
    await leaving.client.query('SELECT backstop.agent_goodbye($1)', [leaving.agentId]);
    const { rows: [agent] } = await f.admin.query(`SELECT connected, available, gone_at IS NOT NULL AS said_goodbye FROM backstop.agents`);
    expect(agent).toEqual({ connected: true, available: false, said_goodbye: true });
    await f.admin.query(`CREATE TABLE refunds (id int)`);
    const session = await f.session();
    const error = await pgError(session.query('DROP TABLE refunds'));
    expect(error.code).toBe('BS001');
    expect(await requestRows(f.admin)).toEqual([]);
    expect(await tableExists(f.admin, 'refunds')).toBe(true);
  });

  it('lets backstop.wait() answer BS001 when no agent can answer, and leaves the request filed', async () => {
    const session = await f.session();
    const { rows: [filed] } = await session.query<{ id: string }>(`SELECT backstop.request($$DROP TABLE later$$)::text AS id`);
    const error = await pgError(session.query(`SELECT backstop.wait($1, '5 min')`, [filed!.id]));
    expect(error.code).toBe('BS001');
    expect(error.message).toMatch(/no Backstop agent is running/);
    expect(error.hint).toContain(`SELECT backstop.wait(${filed!.id}`);
    expect((await requestRows(f.admin)).find((r) => r.id === filed!.id)!.status).toBe('pending');
  });

  it('counts only a session an agent registered itself, as a member of backstop_agent', async () => {
    // A heartbeat alone is not a running agent.
    await f.admin.query(`SELECT backstop.agent_heartbeat('heartbeat-only', '{}')`);
    expect((await f.admin.query(`SELECT connected, available FROM backstop.agents`)).rows).toEqual([{ connected: false, available: false }]);
    // A plain role can neither register a presence nor pass for one by name or advisory lock.
    const plain = await f.session('reader');
    await expect(plain.query(`SELECT backstop.agent_hello('heartbeat-only')`)).rejects.toThrow(/permission denied/);
    await plain.query(`SET application_name = 'backstop agent leader'`);
    await plain.query('SELECT pg_advisory_lock($1::bigint)', [LEADER_LOCK_KEY]);
    expect((await f.admin.query(`SELECT backstop._agent_alive() AS alive`)).rows[0].alive).toBe(false);
    // The registered backend must still be the one that registered (a reused pid does not count).
    const agent = await double('heartbeat-only');
    await agent.heartbeat();
    expect((await f.admin.query(`SELECT backstop._agent_alive() AS alive`)).rows[0].alive).toBe(true);
    await f.admin.query(`UPDATE backstop.agent_heartbeats SET backend_started_at = backend_started_at - interval '1 s'`);
    expect((await f.admin.query(`SELECT connected FROM backstop.agents`)).rows).toEqual([{ connected: false }]);
  });

  it('lets the leader take over a request left capturing, and refuses the old claimant’s decision', async () => {
    const old = await double('old-leader');
    const standby = await double('standby');
    const bystander = await double('bystander');
    for (const agent of [old, standby, bystander]) await agent.heartbeat();
    const { rows: [filed] } = await f.admin.query<{ id: string }>(`SELECT backstop.request($$DROP TABLE taken_over$$)::text AS id`);
    expect(await old.claim(filed!.id)).toBe(true);

    // Not holding the leader lock: no take-over.
    expect(await bystander.claim(filed!.id)).toBe(false);
    // Holding it (on the session it registered with agent_hello): the take-over succeeds.
    expect((await standby.client.query('SELECT pg_try_advisory_lock($1::bigint) AS locked', [LEADER_LOCK_KEY])).rows[0].locked).toBe(true);
    expect(await standby.claim(filed!.id)).toBe(true);
    expect((await requestRows(f.admin)).find((r) => r.id === filed!.id)!.status).toBe('capturing');

    const refused = await pgError(old.decide(filed!.id, 'approved', 'captured', ['s-old']));
    expect(refused.code).toBe('BS006');
    expect(refused.message).toMatch(/claimed by agent standby/);
    expect(await standby.decide(filed!.id, 'denied', 'taken_over does not exist')).toBe('denied');
  });

  it('locks the same leader key as the agent', async () => {
    const { rows: [key] } = await f.admin.query<{ key: string }>(`SELECT backstop._leader_lock_key()::text AS key`);
    expect(key!.key).toBe(LEADER_LOCK_KEY);
  });
});

describe('readiness and the agent’s storage', () => {
  let f: GuardFixture;
  beforeEach(async () => {
    f = await guardFixture();
    await f.admin.query(`CREATE TABLE ledger (id int)`);
  });
  afterEach(async () => {
    await f?.close();
  });

  const manifest = (id: string, storage: string) => ({
    snapshot_id: id, schema: 'public', table: 'ledger', row_count: 0, size_bytes: 10, checksum: 'abc', verified: true,
    created_at: new Date(Date.now() - 3_600_000).toISOString(), source: 'sidecar', location: `${storage}/snapshots/public.ledger/${id}.parquet`,
  });

  async function readiness() {
    const { rows } = await f.admin.query(`SELECT ready, failing_check, last_snapshot_id FROM backstop.readiness WHERE table_name = 'ledger'`);
    return rows[0];
  }

  it('is not ready while the agent cannot reach its storage', async () => {
    await f.agent.heartbeat({ storage_url: 'file:///srv/snapshots', storage_ok: true });
    await f.agent.client.query('SELECT backstop.agent_record_snapshot($1)', [{ ...manifest('s-1', 'file:///srv/snapshots'), created_at: new Date().toISOString() }]);
    expect(await readiness()).toMatchObject({ ready: true });
    await f.agent.heartbeat({ storage_url: 'file:///srv/snapshots', storage_ok: false, storage_error: 'EACCES: /srv/snapshots' });
    expect(await readiness()).toMatchObject({ ready: false, failing_check: `agent ${f.agent.agentId} cannot reach its storage: EACCES: /srv/snapshots` });
  });

  it('counts and confirms only snapshots in the storage the agent writes to', async () => {
    await f.agent.heartbeat({ storage_url: 'file:///srv/snapshots/', storage_ok: true });
    await f.agent.client.query('SELECT backstop.agent_record_snapshot($1)', [manifest('elsewhere', 'file:///old/snapshots')]);
    expect(await readiness()).toMatchObject({ ready: false, failing_check: expect.stringMatching(/^no snapshot yet in the agent's storage file:\/\/\/srv\/snapshots /) });
    // A storage whose URL merely starts the same is another storage.
    await f.agent.client.query('SELECT backstop.agent_record_snapshot($1)', [manifest('sibling', 'file:///srv/snapshots-old')]);
    await f.agent.client.query('SELECT backstop.agent_record_snapshot($1)', [manifest('mine', 'file:///srv/snapshots')]);
    expect(await readiness()).toMatchObject({ ready: false, last_snapshot_id: 'mine', failing_check: expect.stringContaining('not confirmed unchanged') });

    const confirm = (storage: string) =>
      f.agent.client.query<{ n: number }>(`SELECT backstop.agent_confirm_unchanged(ARRAY['public.ledger'::regclass::oid], now(), $1) AS n`, [storage]);
    expect((await confirm('file:///elsewhere')).rows[0]!.n).toBe(0);
    expect(await readiness()).toMatchObject({ ready: false });
    expect((await confirm('file:///srv/snapshots/')).rows[0]!.n).toBe(1);
    expect(await readiness()).toMatchObject({ ready: true, last_snapshot_id: 'mine' });
    const { rows } = await f.admin.query(`SELECT snapshot_id FROM backstop.snapshot_catalog WHERE confirmed_at IS NOT NULL`);
    expect(rows).toEqual([{ snapshot_id: 'mine' }]);
  });
});

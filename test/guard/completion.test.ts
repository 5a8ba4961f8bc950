/**
 * The last step of an approved DROP / ALTER: the waiting session stops writers (EXCLUSIVE lock),
 * the agent completes the before-image, and only then does the statement go on. Driven with an
 * agent double whose completions a test answers by hand.
 */
import type pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { guardFixture, pgError, tableExists, type GuardFixture } from './fixture.js';

describe('completing the before-image under the statement\'s lock', () => {
  let f: GuardFixture;

  beforeEach(async () => {
    f = await guardFixture({ waitTimeout: '5 min' });
    await f.agent.heartbeat();
    f.agent.autoComplete = false;
  });
  afterEach(async () => {
    await f?.close();
  });

  async function openCompletion(requestId: string): Promise<{ id: string; pid: number }> {
    for (let i = 0; i < 1500; i += 1) {
      const { rows } = await f.admin.query<{ id: string; pid: number }>(
        `SELECT id::text, pid FROM backstop.image_completions WHERE request_id = $1 AND status = 'requested'`, [requestId]);
      if (rows[0]) return rows[0];
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error(`no completion was filed for request ${requestId}`);
  }

  /** Can `writer` insert into `table` right now (lock_timeout 200 ms)? */
  async function canWrite(writer: pg.Client, table: string): Promise<boolean> {
    await writer.query(`SET lock_timeout = '200ms'`);
    try {
      await writer.query(`INSERT INTO ${table} VALUES (-1)`);
      return true;
    } catch (error) {
      if ((error as { code?: string }).code === '55P03') return false;
      throw error;
    }
  }

  it('writers go on while the request waits, wait only once it is approved, and the statement goes on once the image is complete', async () => {
    await f.admin.query(`CREATE TABLE ledger (id int); INSERT INTO ledger VALUES (1)`);
    const session = await f.session();
    const writer = await f.session();
    const dropped = session.query('DROP TABLE ledger');
    const request = await f.agent.waitForRequest({ statement: 'DROP TABLE ledger' });
    expect(await canWrite(writer, 'ledger')).toBe(true);
    await f.agent.claim(request.id);
    await f.agent.setTargets(request.id, ['ledger']);
    await f.agent.decide(request.id, 'approved', 'captured', ['s-1']);
    const completion = await openCompletion(request.id);
    expect((await f.admin.query('SELECT query FROM pg_stat_activity WHERE pid = $1', [completion.pid])).rows[0].query).toBe('DROP TABLE ledger');
    expect(await canWrite(writer, 'ledger')).toBe(false);
    // Readers (the agent) are not blocked.
    expect((await f.admin.query('SELECT count(*)::int AS n FROM ledger')).rows[0].n).toBe(2);
    expect(await tableExists(f.admin, 'ledger')).toBe(true);
    expect(await f.agent.finishCompletion(completion.id, request.id)).toBe('done');
    await dropped;
    expect(await tableExists(f.admin, 'ledger')).toBe(false);
    const { rows } = await f.admin.query(`SELECT status, image_completion FROM backstop.requests WHERE id = $1`, [request.id]);
    expect(rows[0].status).toBe('consumed');
  });

  it('refuses the statement with the reason when the image cannot be completed, and keeps the approval for a second try', async () => {
    await f.admin.query(`CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)`);
    const session = await f.session();
    const dropped = pgError(session.query('DROP TABLE orders'));
    const request = await f.agent.approveNext({ statement: 'DROP TABLE orders' });
    const completion = await openCompletion(request.id);
    f.agent.completionOutcome = { error: 'storage unreachable: connect ECONNREFUSED' };
    expect(await f.agent.finishCompletion(completion.id, request.id)).toBe('failed');
    const error = await dropped;
    expect(error.code).toBe('BS003');
    expect(error.message).toMatch(/could not be completed: storage unreachable/);
    expect(error.hint).toMatch(/nothing was changed/);
    expect(await tableExists(f.admin, 'orders')).toBe(true);

    f.agent.completionOutcome = {};
    f.agent.autoComplete = true;
    await session.query('DROP TABLE orders');
    expect(await tableExists(f.admin, 'orders')).toBe(false);
  });

  it('refuses with BS001 within seconds when the only agent goes away before completing', async () => {
    await f.admin.query(`CREATE TABLE stranded (id int); INSERT INTO stranded VALUES (1)`);
    const session = await f.session();
    const dropped = pgError(session.query('DROP TABLE stranded'));
    const request = await f.agent.approveNext({ statement: 'DROP TABLE stranded' });
    await openCompletion(request.id);
    const gone = Date.now();
    await f.agent.close();
    const error = await dropped;
    const seconds = (Date.now() - gone) / 1000;
    console.log(`refused ${seconds.toFixed(1)} s after the agent went away`);
    expect(error.code).toBe('BS001');
    expect(seconds).toBeLessThan(10);
    expect(await tableExists(f.admin, 'stranded')).toBe(true);
    const { rows } = await f.admin.query(`SELECT status, error FROM backstop.image_completions WHERE request_id = $1`, [request.id]);
    expect(rows[0].status).toBe('failed');
  });

  it('only the agent that holds a completion may finish it, and plain roles can do neither', async () => {
    await f.admin.query(`CREATE TABLE held (id int)`);
    const session = await f.session();
    const dropped = session.query('DROP TABLE held');
    const request = await f.agent.approveNext({ statement: 'DROP TABLE held' });
    const completion = await openCompletion(request.id);
    expect((await f.agent.client.query(`SELECT backstop.agent_claim_completion($1, 'agent-double') AS ok`, [completion.id])).rows[0].ok).toBe(true);
    expect((await f.agent.client.query(`SELECT backstop.agent_finish_completion($1, 'someone-else', '{}', null, null) AS status`, [completion.id])).rows[0].status).toBe('completing');
    expect(await tableExists(f.admin, 'held')).toBe(true);
    expect((await f.agent.client.query(`SELECT backstop.agent_finish_completion($1, 'agent-double', '{}', null, null) AS status`, [completion.id])).rows[0].status).toBe('done');
    await dropped;
    expect(await tableExists(f.admin, 'held')).toBe(false);
  });
});

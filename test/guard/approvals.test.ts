import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { guardFixture, pgError, requestRows, tableExists, type GuardFixture } from './fixture.js';

describe('approvals, roles and what plain roles cannot do', () => {
  let f: GuardFixture;
  let dev: pg.Client;
  let approver: pg.Client;
  let other: pg.Client;
  beforeAll(async () => {
    f = await guardFixture({ roles: { dev: [], approver: ['backstop_approver'], other: [] } });
    await f.agent.heartbeat();
    dev = await f.session('dev');
    approver = await f.session('approver');
    other = await f.session('other');
  });
  afterAll(async () => {
    await f?.close();
  });

  async function ownedTable(name: string, owner = 'dev'): Promise<void> {
    await f.admin.query(`CREATE TABLE ${name} (id int); INSERT INTO ${name} VALUES (1); ALTER TABLE ${name} OWNER TO ${f.roles[owner]}`);
  }

  it('operator mode: the agent passes, a member of backstop_approver approves, the DROP completes', async () => {
    await f.admin.query(`UPDATE backstop.settings SET approval_mode = 'operator'`);
    await ownedTable('op_table');
    const drop = dev.query('DROP TABLE op_table');
    const request = await f.agent.waitForRequest({ statement: 'DROP TABLE op_table' });
    expect(request.requester).toBe(f.roles.dev);
    await f.agent.claim(request.id);
    await f.agent.setTargets(request.id, ['op_table']);
    expect(await f.agent.decide(request.id, 'approved', 'gate passed')).toBe('awaiting_approval');

    const notApprover = await pgError(other.query('SELECT backstop.approve($1)', [request.id]));
    expect(notApprover.code).toBe('BS006');
    expect(notApprover.message).toMatch(new RegExp(`role ${f.roles.other} may not approve`));
    expect(notApprover.hint).toMatch(/backstop_approver/);
    const devElsewhere = await f.session('dev');
    const requesterTries = await pgError(devElsewhere.query('SELECT backstop.approve($1)', [request.id]));
    expect(requesterTries.message).toMatch(/may not approve/);
    expect(await tableExists(f.admin, 'op_table')).toBe(true);

    const { rows } = await approver.query('SELECT backstop.approve($1, $2) AS status', [request.id, 'checked with the team']);
    expect(rows[0].status).toBe('approved');
    await drop;
    expect(await tableExists(f.admin, 'op_table')).toBe(false);
    const { rows: done } = await f.admin.query('SELECT status, approved_by, approval_note FROM backstop.requests WHERE id = $1', [request.id]);
    expect(done[0]).toEqual({ status: 'consumed', approved_by: f.roles.approver, approval_note: 'checked with the team' });
  });

  it('an approval given while the agent is still capturing is granted by the agent decision', async () => {
    await ownedTable('early_table');
    const drop = dev.query('DROP TABLE early_table');
    const request = await f.agent.waitForRequest({ statement: 'DROP TABLE early_table' });
    await f.agent.claim(request.id);
    const { rows } = await approver.query('SELECT backstop.approve($1) AS status', [request.id]);
    expect(rows[0].status).toBe('capturing');
    await f.agent.setTargets(request.id, ['early_table']);
    expect(await f.agent.decide(request.id, 'approved')).toBe('approved');
    await drop;
    expect(await tableExists(f.admin, 'early_table')).toBe(false);
  });

  it('refuses self-approval unless settings.allow_self_approval', async () => {
    await ownedTable('self_table', 'approver');
    const drop = approver.query('DROP TABLE self_table');
    const request = await f.agent.waitForRequest({ statement: 'DROP TABLE self_table' });
    await f.agent.claim(request.id);
    await f.agent.setTargets(request.id, ['self_table']);
    await f.agent.decide(request.id, 'approved');
    const selfApproval = await f.session('approver');
    const error = await pgError(selfApproval.query('SELECT backstop.approve($1)', [request.id]));
    expect(error.code).toBe('BS006');
    expect(error.message).toMatch(/filed request \d+ and may not approve it/);
    expect(error.hint).toMatch(/allow_self_approval/);

    await f.admin.query(`UPDATE backstop.settings SET allow_self_approval = true`);
    try {
      await selfApproval.query('SELECT backstop.approve($1)', [request.id]);
    } finally {
      await f.admin.query(`UPDATE backstop.settings SET allow_self_approval = false`);
    }
    await drop;
    expect(await tableExists(f.admin, 'self_table')).toBe(false);
  });

  it('operator approval cannot override a missing agent (fail-closed)', async () => {
    await ownedTable('stale_table');
    const drop = pgError(dev.query('DROP TABLE stale_table'));
    const request = await f.agent.waitForRequest({ statement: 'DROP TABLE stale_table' });
    await f.agent.claim(request.id);
    await f.agent.setTargets(request.id, ['stale_table']);
    await f.agent.decide(request.id, 'approved');
    await f.admin.query(`UPDATE backstop.agent_heartbeats SET last_seen = now() - interval '1 hour'`);
    const error = await pgError(approver.query('SELECT backstop.approve($1)', [request.id]));
    expect(error.code).toBe('BS001');
    expect(error.message).toMatch(/agent is not running/);
    await f.agent.heartbeat();
    await approver.query('SELECT backstop.deny($1, $2)', [request.id, 'not today']);
    expect((await drop).message).toMatch(/denied: not today/);
    expect(await tableExists(f.admin, 'stale_table')).toBe(true);
    await f.admin.query(`UPDATE backstop.settings SET approval_mode = 'auto'`);
  });

  it('deny needs an approver (or the agent) and a reason', async () => {
    const id = (await dev.query('SELECT backstop.request($$DROP TABLE stale_table$$) AS id')).rows[0].id;
    expect((await pgError(other.query('SELECT backstop.deny($1, $2)', [id, 'no']))).message).toMatch(/may not deny/);
    expect((await pgError(approver.query('SELECT backstop.deny($1, $2)', [id, ' ']))).message).toMatch(/needs a reason/);
    await approver.query('SELECT backstop.deny($1, $2)', [id, 'no']);
    expect((await pgError(approver.query('SELECT backstop.approve($1)', [id]))).message).toMatch(/already denied/);
  });

  it('plain roles can read but cannot write a decision, settings or consumption by any path', async () => {
    const id = (await dev.query('SELECT backstop.request($$DROP TABLE stale_table$$) AS id')).rows[0].id;
    expect((await other.query('SELECT count(*)::int AS n FROM backstop.requests')).rows[0].n).toBeGreaterThan(0);
    await other.query('SELECT * FROM backstop.readiness, backstop.agents, backstop.snapshots LIMIT 1');
    const attempts = [
      [`UPDATE backstop.request_log SET status = 'approved' WHERE id = ${id}`, /permission denied/],
      [`INSERT INTO backstop.request_consumptions (request_id, txid, pid, command_tag, normalized_statement) VALUES (${id}, 1, 1, 'x', 'x')`, /permission denied/],
      [`UPDATE backstop.settings SET approval_mode = 'auto'`, /permission denied/],
      [`SELECT loopback_conninfo FROM backstop.settings`, /permission denied/],
      [`SELECT backstop.agent_decide(${id}, 'me', 'approved', null, null)`, /permission denied/],
      [`SELECT backstop.agent_heartbeat('fake', '{}')`, /permission denied/],
      [`SELECT backstop._consume(${id}, 'DROP TABLE', 'drop table stale_table')`, /permission denied/],
      [`SELECT backstop.agent_set_coverage(${id}, '[]')`, /permission denied/],
      [`SELECT backstop.agent_finish_completion(1, 'me', null, null, null)`, /permission denied/],
      [`INSERT INTO backstop.image_completions (request_id, pid) VALUES (${id}, 1)`, /permission denied/],
      [`SELECT backstop._loopback_exec('UPDATE backstop.request_log SET status = ''approved''')`, /permission denied/],
      [`SELECT backstop.dblink_exec('backstop_loopback', 'SELECT 1')`, /permission denied/],
      [`SELECT backstop.deny(${id}, 'x')`, /may not deny/],
    ] as const;
    for (const [sql, expected] of attempts) {
      const error = await pgError(other.query(sql));
      expect({ sql, message: error.message }).toEqual({ sql, message: expect.stringMatching(expected) });
    }
    // The agent role can decide, but not approve as an operator.
    expect((await pgError(f.agent.client.query('SELECT backstop.approve($1)', [id]))).message).toMatch(/may not approve/);
  });

  it('a request filed ahead and approved lets exactly that statement through, once, with no wait', async () => {
    await ownedTable('prefiled');
    const waited = dev.query(`SELECT backstop.wait(backstop.request($$DROP TABLE prefiled;$$), '20 s') AS status`);
    const request = await f.agent.approveNext({ statement: 'DROP TABLE prefiled', targets: ['prefiled'] });
    expect((await waited).rows[0].status).toBe('approved');
    const before = (await requestRows(f.admin)).length;
    await f.agent.heartbeat();
    await dev.query('DROP   TABLE prefiled');
    expect(await tableExists(f.admin, 'prefiled')).toBe(false);
    expect((await requestRows(f.admin)).length).toBe(before);
    expect((await requestRows(f.admin)).find((r) => r.id === request.id)!.status).toBe('consumed');
  });

  it('refuses for non-superusers to drop or switch off Backstop triggers, schema and tables', async () => {
    await ownedTable('protected');
    const attempts = [
      ['DROP TRIGGER backstop_truncate_guard ON protected', /Backstop's TRUNCATE guard/],
      ['ALTER TABLE protected DISABLE TRIGGER ALL', /must stay as installed/],
      ['ALTER TABLE protected DISABLE TRIGGER USER', /must stay as installed/],
      ['ALTER TABLE protected ENABLE REPLICA TRIGGER backstop_truncate_guard', /must stay as installed/],
      ['ALTER TABLE protected ENABLE TRIGGER backstop_truncate_guard', /must stay as installed/],
      ['ALTER TRIGGER backstop_truncate_guard ON protected RENAME TO harmless', /must stay as installed/],
      ['CREATE OR REPLACE TRIGGER backstop_truncate_guard BEFORE TRUNCATE ON protected EXECUTE FUNCTION suppress_redundant_updates_trigger()', /would replace the TRUNCATE guard/],
      ['DROP SCHEMA backstop CASCADE', /must be owner/],
      ['ALTER TABLE backstop.request_log DROP COLUMN reason', /must be owner/],
      ['DROP EVENT TRIGGER backstop_guard_dropped', /must be owner/],
      ['ALTER EVENT TRIGGER backstop_guard_statement DISABLE', /must be owner/],
    ] as const;
    for (const [sql, expected] of attempts) {
      const error = await pgError(dev.query(sql));
      expect({ sql, message: error.message }).toEqual({ sql, message: expect.stringMatching(expected) });
    }
    // The marker Backstop puts on its own nested DDL cannot be forged with SET: its value is a
    // secret that not even pg_read_all_data (backstop_agent) can read.
    for (const forged of ['on', 'true', '']) {
      await dev.query(`SELECT set_config('backstop.attaching', $1, false)`, [forged]);
      for (const [sql, expected] of attempts.slice(1, 7)) {
        const error = await pgError(dev.query(sql));
        expect({ sql, forged, message: error.message }).toEqual({ sql, forged, message: expect.stringMatching(expected) });
      }
    }
    await dev.query('RESET backstop.attaching');
    await f.admin.query('SET ROLE backstop_agent');
    try {
      expect((await f.admin.query('SELECT count(*)::int AS n FROM backstop.attach_secret')).rows[0].n).toBe(0);
    } finally {
      await f.admin.query('RESET ROLE');
    }
    const { rows } = await f.admin.query(`SELECT tgname, tgenabled, tgfoid::regproc::text AS fn FROM pg_trigger WHERE tgrelid = 'protected'::regclass`);
    expect(rows).toEqual([{ tgname: 'backstop_truncate_guard', tgenabled: 'A', fn: 'backstop.guard_truncate' }]);
    // Ordinary triggers of the owner's own are none of Backstop's business.
    await f.admin.query(`GRANT CREATE ON SCHEMA public TO ${f.roles.dev}`);
    await dev.query(`CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`);
    await dev.query(`CREATE TRIGGER mine BEFORE TRUNCATE ON protected EXECUTE FUNCTION noop(); ALTER TABLE protected DISABLE TRIGGER mine; ALTER TRIGGER mine ON protected RENAME TO mine2`);
  });

  it('without dblink: TRUNCATE is filed ahead; DROP is refused, since its before-image could not be completed', async () => {
    await f.admin.query('DROP EXTENSION dblink');
    await ownedTable('no_dblink');
    const error = await pgError(dev.query('TRUNCATE no_dblink'));
    expect(error.code).toBe('BS004');
    expect(error.message).toMatch(/without dblink/);
    expect(error.hint).toContain('SELECT backstop.request($$TRUNCATE no_dblink$$);');
    const id = (await dev.query('SELECT backstop.request($$TRUNCATE no_dblink$$) AS id')).rows[0].id;
    const waited = dev.query(`SELECT backstop.wait($1, '20 s') AS status`, [id]);
    await f.agent.approveNext({ statement: 'TRUNCATE no_dblink' });
    expect((await waited).rows[0].status).toBe('approved');
    await dev.query('TRUNCATE no_dblink');

    // A DROP's image is completed under the statement's lock while it waits: the agent must see
    // that request, which only the loopback can commit on the side.
    const ahead = (await dev.query('SELECT backstop.request($$DROP TABLE no_dblink$$) AS id')).rows[0].id;
    const approved = dev.query(`SELECT backstop.wait($1, '20 s') AS status`, [ahead]);
    await f.agent.approveNext({ statement: 'DROP TABLE no_dblink' });
    expect((await approved).rows[0].status).toBe('approved');
    const refused = await pgError(dev.query('DROP TABLE no_dblink'));
    expect(refused.code).toBe('BS004');
    expect(refused.hint).toMatch(/CREATE EXTENSION dblink/);
    expect(await tableExists(f.admin, 'no_dblink')).toBe(true);
  });
});

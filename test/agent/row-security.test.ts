/**
 * Row-level security and the real agent, run as the README says: an ordinary login role that is
 * a member of backstop_agent (which holds pg_read_all_data — not enough: pg_read_all_data does
 * not bypass row-level security, and BYPASSRLS is not inherited). The tables belong to a
 * non-superuser owner and hold 300 rows, 200 of which a policy hides from everyone but their
 * owner. Without BYPASSRLS the agent captures none of it (never a verified image missing rows)
 * and the DROP is denied with what to grant; with it, the before-image holds all 300 rows.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, serverInfo, type TestDatabase } from '../support/database.js';
import { startAgent, tempDir, waitUntil, type AgentProcess } from '../support/agent-process.js';
import { settle, waitForRequest, waitForStatus } from './requests.js';

interface Setting {
  db: TestDatabase;
  admin: pg.Client;
  owner: pg.Client;
  agent: AgentProcess;
  agentRole: string;
  ownerRole: string;
  close(): Promise<void>;
}

/**
 * A database with a non-superuser table owner, the protected tables `tables` (created before the
 * agent starts), and an agent running as a login role in backstop_agent.
 */
async function setting(agentAttributes: string, tables: string[] = []): Promise<Setting> {
  const db = await createTestDatabase();
  const admin = await db.client();
  const suffix = randomBytes(4).toString('hex');
  const ownerRole = `app_owner_${suffix}`;
  const agentRole = `agent_${suffix}`;
  await admin.query(`CREATE ROLE ${ownerRole} LOGIN; GRANT CREATE ON SCHEMA public TO ${ownerRole}`);
  await admin.query(`CREATE ROLE ${agentRole} LOGIN ${agentAttributes} IN ROLE backstop_agent`);
  const owner = new pg.Client({ connectionString: db.urlAs(ownerRole) });
  await owner.connect();
  owner.on('notice', () => {});
  for (const table of tables) await protectedTable(owner, table);
  const agent = await startAgent({ db: db.urlAs(agentRole), storage: await tempDir('backstop-storage-'), args: ['--interval', '1h'] });
  return {
    db, admin, owner, agent, agentRole, ownerRole,
    async close() {
      await agent.stop('SIGKILL');
      await owner.end().catch(() => {});
      await db.drop();
      const cleanup = new pg.Client({ connectionString: serverInfo().adminUrl });
      await cleanup.connect();
      for (const role of [agentRole, ownerRole]) await cleanup.query(`DROP ROLE IF EXISTS ${role}`).catch(() => {});
      await cleanup.end();
    },
  };
}

/** 300 rows; a policy shows only ids 1–100 to anyone the policies apply to (the owner is exempt). */
async function protectedTable(owner: pg.Client, name: string): Promise<void> {
  await owner.query(`CREATE TABLE public.${name} (id int PRIMARY KEY, note text);
                     INSERT INTO public.${name} SELECT g, 'row ' || g FROM generate_series(1, 300) g;
                     ALTER TABLE public.${name} ENABLE ROW LEVEL SECURITY;
                     CREATE POLICY first_hundred ON public.${name} USING (id <= 100)`);
}

async function snapshotsOf(admin: pg.Client, table: string) {
  const { rows } = await admin.query<{ row_count: number; verified: boolean; source: string }>(
    `SELECT row_count::int, verified, source FROM backstop.snapshots WHERE schema_name = 'public' AND table_name = $1 ORDER BY created_at`,
    [table],
  );
  return rows;
}

describe('an agent role without BYPASSRLS', () => {
  let s: Setting;
  beforeAll(async () => {
    s = await setting('', ['ledger']);
  });
  afterAll(async () => {
    await s?.close();
  });

  it('says at start which tables it cannot capture and what to grant', async () => {
    const warning = await s.agent.waitForLog((line) => line.event === 'agent.rows_hidden', 30_000, 'the row-level security warning');
    expect(warning).toMatchObject({ level: 'warn', role: s.agentRole, tables: ['public.ledger'] });
    expect(String(warning.hint)).toContain(`ALTER ROLE ${s.agentRole} BYPASSRLS`);
  });

  it('captures nothing of a table whose policies hide rows from it, and denies its DROP saying what to grant', async () => {
    await protectedTable(s.owner, 'accounts');
    const dropped = await settle(s.owner.query('DROP TABLE public.accounts'));
    expect(dropped.ok).toBe(false);
    if (!dropped.ok) {
      expect(dropped.error.code).toBe('BS002');
      expect(dropped.error.message).toContain('row-level security hides rows of public.accounts');
      expect(dropped.error.message).toContain(`ALTER ROLE ${s.agentRole} BYPASSRLS`);
    }
    const request = await waitForRequest(s.admin, 'DROP TABLE public.accounts');
    expect(request).toMatchObject({ status: 'denied', snapshot_ids: [] });
    expect((await s.admin.query(`SELECT count(*)::int AS n FROM public.accounts`)).rows[0].n).toBe(300);
    // Nothing was recorded for it, so nothing can claim to be a verified image of it.
    expect(await snapshotsOf(s.admin, 'accounts')).toEqual([]);
    const { rows } = await s.admin.query(`SELECT ready FROM backstop.readiness WHERE schema_name = 'public' AND table_name = 'accounts'`);
    expect(rows).toEqual([{ ready: false }]);
  });
});

describe('an agent role with BYPASSRLS', () => {
  let s: Setting;
  beforeAll(async () => {
    s = await setting('BYPASSRLS');
  });
  afterAll(async () => {
    await s?.close();
  });

  it('takes a before-image with every row of a table whose policies hide rows, and the DROP proceeds', async () => {
    await protectedTable(s.owner, 'ledger');
    expect((await settle(s.owner.query('DROP TABLE public.ledger'))).ok).toBe(true);
    const request = await waitForStatus(s.admin, (await waitForRequest(s.admin, 'DROP TABLE public.ledger')).id, ['consumed']);
    expect(request.snapshot_ids).toHaveLength(1);
    const { rows } = await s.admin.query(`SELECT row_count::int, verified, source FROM backstop.snapshots WHERE snapshot_id = $1`, [request.snapshot_ids[0]]);
    expect(rows).toEqual([{ row_count: 300, verified: true, source: 'before-image' }]);
  });

  it('exports the in-session copy of a truncated table with every row', async () => {
    await protectedTable(s.owner, 'journal');
    expect((await settle(s.owner.query('TRUNCATE public.journal'))).ok).toBe(true);
    const images = await waitUntil(async () => {
      const found = (await snapshotsOf(s.admin, 'journal')).filter((row) => row.source === 'before-image');
      return found.length > 0 ? found : undefined;
    }, 60_000, 'the TRUNCATE before-image');
    expect(images).toEqual([{ row_count: 300, verified: true, source: 'before-image' }]);
  });

  it('refuses on-demand requests it may not serve, even ones filed around backstop.snapshot()', async () => {
    await protectedTable(s.owner, 'payroll');
    // Rows written straight into the table, as a request filed before 0005 (or forged) would be:
    // Backstop's own settings, and a table whose asker sees only 100 of its 300 rows.
    const reader = `reader_${randomBytes(4).toString('hex')}`;
    await s.admin.query(`CREATE ROLE ${reader} LOGIN; GRANT SELECT ON public.payroll TO ${reader}`);
    try {
      const { rows } = await s.admin.query<{ id: string }>(
        `INSERT INTO backstop.snapshot_requests (requested_by, relid, schema_name, table_name, label)
         VALUES (current_user, 'backstop.settings'::regclass, 'backstop', 'settings', 'forged'),
                ($1, 'public.payroll'::regclass, 'public', 'payroll', 'filed before the check')
         RETURNING id::text AS id`,
        [reader],
      );
      await s.admin.query(`NOTIFY backstop_snapshots`);
      const finished = await waitUntil(async () => {
        const { rows: done } = await s.admin.query<{ status: string; error: string | null; snapshot_id: string | null }>(
          `SELECT status, error, snapshot_id FROM backstop.snapshot_requests WHERE id = ANY ($1::bigint[]) AND status <> 'pending' ORDER BY id`,
          [rows.map((row) => row.id)],
        );
        return done.length === 2 ? done : undefined;
      }, 60_000, 'the agent to answer both requests');
      expect(finished).toEqual([
        { status: 'failed', error: expect.stringContaining("one of Backstop's own tables"), snapshot_id: null },
        { status: 'failed', error: expect.stringContaining('row-level security'), snapshot_id: null },
      ]);
      const { rows: exported } = await s.admin.query(`SELECT count(*)::int AS n FROM backstop.snapshots WHERE schema_name = 'backstop' OR label = 'filed before the check'`);
      expect(exported[0].n).toBe(0);
    } finally {
      await s.admin.query(`DROP OWNED BY ${reader}; DROP ROLE ${reader}`).catch(() => {});
    }
  });
});

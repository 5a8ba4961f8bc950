import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardFixture, type GuardFixture } from './fixture.js';

describe('catalog views and the rest of the agent API', () => {
  let f: GuardFixture;
  beforeAll(async () => {
    f = await guardFixture({ roles: { reader: [] } });
    await f.admin.query(`CREATE SCHEMA "Sales"; CREATE TABLE "Sales"."Orders" (id int)`);
  });
  afterAll(async () => {
    await f?.close();
  });

  async function readiness() {
    const reader = await f.session('reader');
    const { rows } = await reader.query(`SELECT ready, failing_check, last_snapshot_id, checksum_verified FROM backstop.readiness
                                          WHERE schema_name = 'Sales' AND table_name = 'Orders'`);
    return rows[0];
  }

  it('backstop.readiness says what is missing, and turns ready with a heartbeat and a fresh verified snapshot', async () => {
    expect(await readiness()).toMatchObject({ ready: false, failing_check: 'no agent has ever sent a heartbeat' });
    await f.agent.heartbeat({ storage_url: 'file:///tmp/x' });
    expect(await readiness()).toMatchObject({ ready: false, failing_check: 'no snapshot yet' });

    const manifest = {
      snapshot_id: 'snap-1', schema: 'Sales', table: 'Orders', row_count: 3, size_bytes: 100,
      checksum: 'abc', created_at: new Date().toISOString(), source: 'sidecar', request_id: null, label: null,
      location: 'file:///tmp/x/snapshots/Sales.Orders/snap-1.parquet',
    };
    await f.agent.client.query('SELECT backstop.agent_record_snapshot($1)', [{ ...manifest, verified: false }]);
    expect(await readiness()).toMatchObject({ ready: false, failing_check: 'latest snapshot checksum not verified' });
    await f.agent.client.query('SELECT backstop.agent_record_snapshot($1)', [{ ...manifest, verified: true }]);
    expect(await readiness()).toMatchObject({ ready: true, failing_check: null, last_snapshot_id: 'snap-1', checksum_verified: true });

    const { rows } = await f.admin.query(`SELECT snapshot_id, schema_name, table_name, row_count::int, checksum, verified, source, location FROM backstop.snapshots`);
    expect(rows).toEqual([{ snapshot_id: 'snap-1', schema_name: 'Sales', table_name: 'Orders', row_count: 3, checksum: 'abc', verified: true, source: 'sidecar', location: manifest.location }]);

    await f.admin.query(`UPDATE backstop.settings SET max_snapshot_age = '1 ms'`);
    expect((await readiness()).failing_check).toMatch(/latest snapshot is .* old and the table was not confirmed unchanged since \(max 00:00:00.001\)/);
    await f.admin.query(`UPDATE backstop.settings SET max_snapshot_age = '300 s'`);
    await f.agent.client.query(`SELECT backstop.agent_forget_snapshot('snap-1')`);
    expect((await readiness()).failing_check).toBe('no snapshot yet');

    const { rows: agents } = await f.admin.query(`SELECT agent_id, storage_url, fresh FROM backstop.agents`);
    expect(agents).toEqual([{ agent_id: f.agent.agentId, storage_url: 'file:///tmp/x', fresh: true }]);
  });

  it('backstop.snapshot() asks the agent for an on-demand snapshot of a table the caller can read', async () => {
    const reader = await f.session('reader');
    await f.admin.query(`GRANT USAGE ON SCHEMA "Sales" TO ${f.roles.reader}`);
    const refused = await reader.query(`SELECT backstop.snapshot('"Sales"."Orders"', 'before cleanup')`).catch((error: Error) => error);
    expect((refused as Error).message).toMatch(/cannot read "Sales"\."Orders"/);
    await f.admin.query(`GRANT SELECT ON "Sales"."Orders" TO ${f.roles.reader}`);
    const id = (await reader.query(`SELECT backstop.snapshot('"Sales"."Orders"', 'before cleanup') AS id`)).rows[0].id;
    await f.agent.client.query(`SELECT backstop.agent_finish_snapshot_request($1, 'snap-2', NULL)`, [id]);
    const { rows } = await f.admin.query(`SELECT requested_by, schema_name, table_name, label, status, snapshot_id FROM backstop.snapshot_requests WHERE id = $1`, [id]);
    expect(rows[0]).toEqual({ requested_by: f.roles.reader, schema_name: 'Sales', table_name: 'Orders', label: 'before cleanup', status: 'done', snapshot_id: 'snap-2' });
  });

  it('agent_record_alert shows in backstop.alerts; agent_expire expires an open request', async () => {
    await f.agent.client.query(`SELECT backstop.agent_record_alert('vanished', 'Sales', 'Orders', 'gone without a consumed request')`);
    const { rows } = await f.admin.query(`SELECT kind, schema_name, table_name, acknowledged FROM backstop.alerts`);
    expect(rows).toEqual([{ kind: 'vanished', schema_name: 'Sales', table_name: 'Orders', acknowledged: false }]);

    const id = (await f.admin.query(`SELECT backstop.request($$DROP TABLE "Sales"."Orders"$$) AS id`)).rows[0].id;
    expect(await f.agent.claim(id)).toBe(true);
    expect(await f.agent.claim(id)).toBe(false);
    await f.agent.client.query(`SELECT backstop.agent_expire($1, 'capture took too long')`, [id]);
    const { rows: expired } = await f.admin.query(`SELECT status, reason, filed_ahead FROM backstop.requests WHERE id = $1`, [id]);
    expect(expired[0]).toEqual({ status: 'expired', reason: 'capture took too long', filed_ahead: true });
    // A decision on a request that is already final changes nothing.
    expect(await f.agent.decide(id, 'approved')).toBe('expired');
  });
});

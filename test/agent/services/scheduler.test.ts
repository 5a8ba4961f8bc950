/**
 * The continuous-snapshot scheduler against a real PostgreSQL and a real S3 server, connected as
 * a login member of backstop_agent (the privileges the agent really has).
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMetrics, type AgentMetrics } from '../../../src/agent/metrics.js';
import { SnapshotScheduler, type SchedulerOptions } from '../../../src/agent/scheduler.js';
import { AgentState } from '../../../src/agent/state.js';
import { silentLogger } from '../../../src/log/logger.js';
import { listManifests } from '../../../src/snapshot/list.js';
import { openStorage } from '../../../src/storage/open.js';
import type { PutOptions, Storage } from '../../../src/storage/storage.js';
import { StorageError } from '../../../src/errors/index.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';
import { startTestS3, type TestS3 } from '../../support/s3.js';
import { approveAhead, bypassGuard } from './guard-helpers.js';

/** The real storage, except that writes whose key contains `failing` are refused while it is set. */
class FlakyStorage implements Storage {
  failing: string | undefined;
  constructor(private readonly inner: Storage) {}
  get url() {
    return this.inner.url;
  }
  async put(key: string, body: Readable, options?: PutOptions) {
    if (this.failing !== undefined && key.includes(this.failing)) {
      body.destroy();
      throw new StorageError(`storage refused ${key} (test)`);
    }
    return this.inner.put(key, body, options);
  }
  get(key: string) {
    return this.inner.get(key);
  }
  head(key: string) {
    return this.inner.head(key);
  }
  list(prefix: string) {
    return this.inner.list(prefix);
  }
  delete(key: string) {
    return this.inner.delete(key);
  }
  check() {
    return this.inner.check();
  }
}

describe('continuous snapshots', () => {
  let db: TestDatabase;
  let s3: TestS3;
  let admin: pg.Client;
  let pool: pg.Pool;
  let storage: FlakyStorage;
  let agentRole: string;
  const states: AgentState[] = [];

  const newScheduler = (options: Partial<SchedulerOptions> = {}, metrics: AgentMetrics = createMetrics({ processMetrics: false })) => {
    const state = new AgentState(':memory:');
    states.push(state);
    const scheduler = new SnapshotScheduler({
      pool,
      storage,
      state,
      metrics,
      logger: silentLogger,
      // No recapture floor unless a test asks for one: these tests poll right after capturing
      // (the floor has its own test below).
      options: { interval: 60_000, everyPoll: false, concurrency: 3, schemas: ['app'], retryBackoff: { baseMs: 0, maxMs: 0 }, recaptureFactor: 0, ...options },
    });
    return { scheduler, state, metrics };
  };

  /** Make the admin session's pending statistics visible now (they are flushed within about a second anyway). */
  const flush = async () => {
    await admin.query('SELECT pg_stat_force_next_flush()');
    await admin.query('SELECT 1');
  };

  const catalogIds = async (table: string): Promise<string[]> =>
    (await admin.query<{ id: string }>(`SELECT snapshot_id AS id FROM backstop.snapshots WHERE schema_name = 'app' AND table_name = $1 ORDER BY created_at DESC`, [table])).rows.map((r) => r.id);

  beforeAll(async () => {
    db = await createTestDatabase();
    s3 = await startTestS3();
    admin = await db.client();
    agentRole = `agent_${randomBytes(4).toString('hex')}`;
    await admin.query(`CREATE ROLE ${agentRole} LOGIN IN ROLE backstop_agent`);
    await admin.query(`
      CREATE SCHEMA app;
      CREATE TABLE app.users (id int PRIMARY KEY, name text);
      CREATE TABLE app."Odd ""Name"" é" (id bigint, payload jsonb);
      CREATE TABLE app.events (id int, at date) PARTITION BY RANGE (at);
      CREATE TABLE app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
      CREATE TABLE public.outside (id int);
      INSERT INTO app.users SELECT g, 'user ' || g FROM generate_series(1, 100) g;
      INSERT INTO app."Odd ""Name"" é" VALUES (1, '{"a": 1}');
      INSERT INTO app.events VALUES (1, '2025-05-05');`);
    await flush();
    // The guard is fail-closed: readiness needs a connected agent (admin's session stands in
    // for its presence session) with a live heartbeat.
    await admin.query(`SELECT backstop.agent_hello('scheduler-test')`);
    await admin.query(`SELECT backstop.agent_heartbeat('scheduler-test', '{}'::jsonb)`);
    pool = new pg.Pool({ connectionString: db.urlAs(agentRole), max: 6 });
    storage = new FlakyStorage(openStorage(s3.url(`scheduler-${randomBytes(3).toString('hex')}`)));
  });
  afterAll(async () => {
    for (const state of states) state.close();
    await pool?.end();
    await admin?.query(`DROP OWNED BY ${agentRole}`).catch(() => {});
    await db?.drop();
    await admin?.query(`DROP ROLE IF EXISTS ${agentRole}`).catch(() => {});
    await s3?.stop();
  });

  it('captures every watched table at start, records them for psql, then nothing while nothing changes', async () => {
    const { scheduler, state } = newScheduler();
    const first = await scheduler.pollOnce();
    expect(first).toMatchObject({ tablesSeen: 4, captured: 4, failed: 0, alertsRaised: 0 });

    const { rows } = await admin.query(
      `SELECT table_name, source, row_count::int, verified FROM backstop.snapshots WHERE schema_name = 'app' ORDER BY table_name`,
    );
    expect(rows).toEqual([
      { table_name: 'Odd "Name" é', source: 'sidecar', row_count: 1, verified: true },
      { table_name: 'events', source: 'sidecar', row_count: 1, verified: true },
      { table_name: 'events_2025', source: 'sidecar', row_count: 1, verified: true },
      { table_name: 'users', source: 'sidecar', row_count: 100, verified: true },
    ]);
    const readiness = await admin.query(`SELECT table_name, ready, failing_check, last_snapshot_id FROM backstop.readiness WHERE schema_name = 'app' ORDER BY table_name`);
    expect(readiness.rows.map((r) => [r.table_name, r.ready, r.failing_check])).toEqual([
      ['Odd "Name" é', true, null],
      ['events', true, null],
      ['events_2025', true, null],
      ['users', true, null],
    ]);
    expect(state.listSnapshots({ schema: 'app', table: 'users' })).toHaveLength(1);
    expect((await listManifests(storage, { table: { schema: 'app', table: 'users' } })).map((m) => m.snapshot_id)).toEqual(await catalogIds('users'));

    const second = await scheduler.pollOnce();
    expect(second).toMatchObject({ tablesSeen: 4, captured: 0, skippedUnchanged: 4 });
  });

  it('keeps an unchanged table ready: a poll confirms its old snapshot still matches it', async () => {
    const { scheduler } = newScheduler();
    await scheduler.pollOnce();
    // Age every app snapshot past max_snapshot_age, as if the last capture was long ago.
    await admin.query(`UPDATE backstop.snapshot_catalog SET created_at = created_at - interval '1 hour', confirmed_at = NULL WHERE schema_name = 'app'`);
    const stale = await admin.query(`SELECT ready, failing_check FROM backstop.readiness WHERE schema_name = 'app' AND table_name = 'users'`);
    expect(stale.rows[0]).toMatchObject({ ready: false, failing_check: expect.stringContaining('not confirmed unchanged') });

    await admin.query(`INSERT INTO app."Odd ""Name"" é" VALUES (2, '{}')`);
    await flush();
    const report = await scheduler.pollOnce();
    expect(report).toMatchObject({ captured: 1 });
    const { rows } = await admin.query(
      `SELECT table_name, ready, snapshot_age > interval '50 minutes' AS old, current_as_of >= now() - interval '1 minute' AS current
         FROM backstop.readiness WHERE schema_name = 'app' ORDER BY table_name`,
    );
    // The changed table got a new snapshot; the unchanged ones kept their old one and are ready.
    expect(rows.map((r) => [r.table_name, r.ready, r.old, r.current])).toEqual([
      ['Odd "Name" é', true, false, true],
      ['events', true, true, true],
      ['events_2025', true, true, true],
      ['users', true, true, true],
    ]);
  });

  it('captures exactly the tables changed by insert, update, delete and DDL, and new tables', async () => {
    const { scheduler } = newScheduler();
    await scheduler.pollOnce();
    await admin.query(`INSERT INTO app.users VALUES (101, 'new')`);
    await flush();
    expect(await scheduler.pollOnce()).toMatchObject({ captured: 1, skippedUnchanged: 3 });

    await admin.query(`UPDATE app."Odd ""Name"" é" SET payload = '{"a": 2}'`);
    await admin.query(`DELETE FROM app.users WHERE id = 1`);
    await flush();
    expect(await scheduler.pollOnce()).toMatchObject({ captured: 2, skippedUnchanged: 2 });

    await admin.query(`ALTER TABLE app.users ADD COLUMN email text`);
    expect(await scheduler.pollOnce()).toMatchObject({ captured: 1 });

    await admin.query(`CREATE TABLE app.fresh (id int)`);
    expect(await scheduler.pollOnce()).toMatchObject({ tablesSeen: 5, captured: 1, skippedUnchanged: 4 });
    expect(await scheduler.pollOnce()).toMatchObject({ captured: 0 });
    expect(await catalogIds('fresh')).toHaveLength(1);
  });

  it('captures everything on every poll when asked', async () => {
    const { scheduler } = newScheduler({ everyPoll: true });
    await scheduler.pollOnce();
    expect(await scheduler.pollOnce()).toMatchObject({ captured: 5, skippedUnchanged: 0 });
  });

  it('keeps going when one table fails, retries it with backoff, and recovers', async () => {
    const metrics = createMetrics({ processMetrics: false });
    const { scheduler, state } = newScheduler({ retryBackoff: { baseMs: 60_000, maxMs: 60_000 } }, metrics);
    storage.failing = 'app.fresh';
    try {
      const first = await scheduler.pollOnce();
      expect(first).toMatchObject({ captured: 4, failed: 1 });
      expect(first.failures).toEqual([expect.objectContaining({ schema: 'app', table: 'fresh', failures: 1, error: expect.stringMatching(/storage refused/) })]);
      // Not due yet: waits for its backoff.
      expect(await scheduler.pollOnce()).toMatchObject({ captured: 0, failed: 0, waitingForRetry: 1 });
      const relid = state.retries()[0]!.relid;
      expect(state.retryState(relid)).toMatchObject({ failures: 1, lastError: expect.stringMatching(/storage refused/) });
      expect(state.retryState(relid)!.nextAttemptAt.getTime()).toBeGreaterThan(Date.now() + 20_000);
    } finally {
      storage.failing = undefined;
    }
    expect(await metrics.registry.getSingleMetricAsString('backstop_snapshot_failures_total')).toContain('backstop_snapshot_failures_total{source="sidecar"} 1');

    // Due immediately with a zero backoff: fails again (counted), then succeeds once storage heals.
    const { scheduler: quick, state: quickState } = newScheduler();
    storage.failing = 'app.users';
    try {
      expect(await quick.pollOnce()).toMatchObject({ captured: 4, failed: 1 });
      expect(await quick.pollOnce()).toMatchObject({ captured: 0, failed: 1 });
      expect(quickState.retries()).toEqual([expect.objectContaining({ table: 'users', failures: 2 })]);
    } finally {
      storage.failing = undefined;
    }
    expect(await quick.pollOnce()).toMatchObject({ captured: 1, failed: 0 });
    expect(quickState.retries()).toEqual([]);
  });

  it('prunes to --keep per table, but keeps the last snapshot of a table that drifted', async () => {
    await admin.query(`CREATE SCHEMA keepers; CREATE TABLE keepers.a (id int, secret text, other text); CREATE TABLE keepers.b (id int)`);
    const metrics = createMetrics({ processMetrics: false });
    const { scheduler } = newScheduler({ schemas: ['keepers'], keep: 2, everyPoll: true }, metrics);
    for (let i = 0; i < 3; i += 1) await scheduler.pollOnce();
    const ids = async (table: string) => (await listManifests(storage, { table: { schema: 'keepers', table } })).map((m) => m.snapshot_id);
    const inCatalog = async (table: string) =>
      (await admin.query<{ id: string }>(`SELECT snapshot_id AS id FROM backstop.snapshots WHERE schema_name = 'keepers' AND table_name = $1 ORDER BY created_at DESC`, [table])).rows.map((r) => r.id);
    expect(await ids('a')).toHaveLength(2);
    expect(await ids('b')).toHaveLength(2);
    expect(await inCatalog('a')).toEqual(await ids('a'));

    const beforeDrift = (await ids('a'))[0]!;
    await bypassGuard(admin, () => admin.query(`ALTER TABLE keepers.a DROP COLUMN secret`).then(() => undefined));
    const drifted = await scheduler.pollOnce();
    expect(drifted.alertsRaised).toBe(1);
    for (let i = 0; i < 3; i += 1) await scheduler.pollOnce();
    const kept = await ids('a');
    expect(kept).toHaveLength(3);
    expect(kept).toContain(beforeDrift);
    expect(await inCatalog('a')).toEqual(kept);
    expect(await ids('b')).toHaveLength(2);

    const alerts = await admin.query(`SELECT kind, table_name, detail FROM backstop.alerts WHERE schema_name = 'keepers'`);
    expect(alerts.rows).toEqual([{ kind: 'column_lost', table_name: 'a', detail: expect.stringContaining(`lost column(s) secret`) }]);
    expect(alerts.rows[0].detail).toContain(beforeDrift);
    expect(await metrics.registry.getSingleMetricAsString('backstop_alerts_total')).toContain('backstop_alerts_total{kind="column_lost"} 1');
  });

  it('keeps a bounded number of background snapshots by default: the last 5 (plus one per hour and per day)', async () => {
    await admin.query(`CREATE SCHEMA busy; CREATE TABLE busy.t (id int); INSERT INTO busy.t VALUES (1)`);
    const { scheduler } = newScheduler({ schemas: ['busy'], everyPoll: true });
    let pruned = 0;
    for (let i = 0; i < 7; i += 1) pruned += (await scheduler.pollOnce()).pruned;
    // Seven captures within the same hour and day: the hourly and daily slots hold the newest.
    expect(pruned).toBe(2);
    const ids = (await listManifests(storage, { table: { schema: 'busy', table: 't' } })).map((m) => m.snapshot_id);
    expect(ids).toHaveLength(5);
    const { rows } = await admin.query<{ id: string }>(`SELECT snapshot_id AS id FROM backstop.snapshots WHERE schema_name = 'busy' ORDER BY created_at DESC`);
    expect(rows.map((r) => r.id)).toEqual(ids);
  });

  it('keeps every background snapshot with --keep-all, and never prunes before-images or on-demand snapshots', async () => {
    await admin.query(`CREATE SCHEMA hoard; CREATE TABLE hoard.t (id int)`);
    const { scheduler } = newScheduler({ schemas: ['hoard'], everyPoll: true, retention: 'keep-all' });
    for (let i = 0; i < 3; i += 1) await scheduler.pollOnce();
    expect(await listManifests(storage, { table: { schema: 'hoard', table: 't' } })).toHaveLength(3);

    await admin.query(`SELECT backstop.snapshot('hoard.t'::regclass, 'named')`);
    expect(await scheduler.handleSnapshotRequests(undefined, { wait: true })).toMatchObject({ handled: 1 });
    const { scheduler: strict } = newScheduler({ schemas: ['hoard'], everyPoll: true, retention: { last: 1, hourly: 0, daily: 0 } });
    await strict.pollOnce();
    const left = await listManifests(storage, { table: { schema: 'hoard', table: 't' } });
    expect(left.map((m) => m.source).sort()).toEqual(['on-demand', 'sidecar']);
  });

  it('captures a changed table again only once 10x its last capture duration has passed', async () => {
    await admin.query(`CREATE SCHEMA floor; CREATE TABLE floor.t (id int); INSERT INTO floor.t VALUES (1)`);
    // A factor large enough that the next polls always fall inside the floor.
    const { scheduler } = newScheduler({ schemas: ['floor'], recaptureFactor: 1_000_000 });
    expect(await scheduler.pollOnce()).toMatchObject({ captured: 1 });
    await admin.query(`INSERT INTO floor.t VALUES (2)`);
    await flush();
    // Changed, but deferred: neither captured nor confirmed unchanged (its snapshot no longer matches).
    expect(await scheduler.pollOnce()).toMatchObject({ captured: 0, deferred: 1, skippedUnchanged: 0 });
    const { rows } = await admin.query(`SELECT confirmed_at FROM backstop.snapshot_catalog WHERE schema_name = 'floor'`);
    expect(rows).toEqual([{ confirmed_at: null }]);

    const { scheduler: noFloor } = newScheduler({ schemas: ['floor'], recaptureFactor: 0 });
    await noFloor.pollOnce();
    await admin.query(`INSERT INTO floor.t VALUES (3)`);
    await flush();
    expect(await noFloor.pollOnce()).toMatchObject({ captured: 1, deferred: 0 });
  });

  it('alerts when a watched table is dropped behind the guard, and not when dropped through a consumed request', async () => {
    await admin.query(`CREATE SCHEMA drops; CREATE TABLE drops.sneaky (id int); CREATE TABLE drops.approved (id int); INSERT INTO drops.sneaky VALUES (1)`);
    const metrics = createMetrics({ processMetrics: false });
    const { scheduler, state } = newScheduler({ schemas: ['drops'], keep: 1 }, metrics);
    expect(await scheduler.pollOnce()).toMatchObject({ captured: 2 });
    const sneakyLast = (await admin.query<{ id: string }>(`SELECT snapshot_id AS id FROM backstop.snapshots WHERE schema_name = 'drops' AND table_name = 'sneaky'`)).rows[0]!.id;

    await bypassGuard(admin, () => admin.query(`DROP TABLE drops.sneaky`).then(() => undefined));
    await admin.query(`SELECT backstop.agent_heartbeat('scheduler-test', '{}'::jsonb)`);
    await approveAhead(admin, 'DROP TABLE drops.approved', ['drops.approved']);
    await admin.query(`DROP TABLE drops.approved`);

    const report = await scheduler.pollOnce();
    expect(report).toMatchObject({ tablesSeen: 0, alertsRaised: 1 });
    const alerts = await admin.query(`SELECT kind, schema_name, table_name, detail FROM backstop.alerts WHERE schema_name = 'drops'`);
    expect(alerts.rows).toEqual([
      { kind: 'table_vanished', schema_name: 'drops', table_name: 'sneaky', detail: expect.stringMatching(/disappeared without a consumed Backstop request.*kept/) },
    ]);
    expect(state.isProtected(sneakyLast)).toBe(true);
    expect(state.watchedTables()).toEqual([]);
    expect(await metrics.registry.getSingleMetricAsString('backstop_alerts_total')).toContain('backstop_alerts_total{kind="table_vanished"} 1');

    // A new table under the old name is captured and pruned to --keep 1, but the old last snapshot stays.
    await admin.query(`CREATE TABLE drops.sneaky (id int, other text)`);
    await scheduler.pollOnce();
    await admin.query(`INSERT INTO drops.sneaky VALUES (2, 'x')`);
    await flush();
    await scheduler.pollOnce();
    const remaining = (await listManifests(storage, { table: { schema: 'drops', table: 'sneaky' } })).map((m) => m.snapshot_id);
    expect(remaining).toHaveLength(2);
    expect(remaining).toContain(sneakyLast);
    expect(await scheduler.pollOnce()).toMatchObject({ alertsRaised: 0 });
  });

  it('serves on-demand snapshots asked for with backstop.snapshot(regclass, label)', async () => {
    const { scheduler } = newScheduler();
    const { rows } = await admin.query<{ id: string }>(`SELECT backstop.snapshot('app.users'::regclass, 'before-migration') AS id`);
    await admin.query(`CREATE TABLE app.temporary (id int)`);
    const goneId = (await admin.query<{ id: string }>(`SELECT backstop.snapshot('app.temporary'::regclass) AS id`)).rows[0]!.id;
    await bypassGuard(admin, () => admin.query(`DROP TABLE app.temporary`).then(() => undefined));

    expect(await scheduler.handleSnapshotRequests(undefined, { wait: true })).toEqual({ started: 2, handled: 1, failed: 1 });
    const done = await admin.query(`SELECT status, snapshot_id, error FROM backstop.snapshot_requests WHERE id = $1`, [rows[0]!.id]);
    expect(done.rows[0]).toMatchObject({ status: 'done', error: null });
    const snapshot = await admin.query(`SELECT table_name, source, label, verified FROM backstop.snapshots WHERE snapshot_id = $1`, [done.rows[0].snapshot_id]);
    expect(snapshot.rows).toEqual([{ table_name: 'users', source: 'on-demand', label: 'before-migration', verified: true }]);
    const failed = await admin.query(`SELECT status, snapshot_id, error FROM backstop.snapshot_requests WHERE id = $1`, [goneId]);
    expect(failed.rows[0]).toEqual({ status: 'failed', snapshot_id: null, error: 'table app.temporary no longer exists' });
    expect(await scheduler.handleSnapshotRequests(undefined, { wait: true })).toEqual({ started: 0, handled: 0, failed: 0 });

    // Without waiting (as the agent's sweep calls it): started once however often it is called.
    const again = (await admin.query<{ id: string }>(`SELECT backstop.snapshot('app.users'::regclass, 'second') AS id`)).rows[0]!.id;
    const [first, second] = await Promise.all([scheduler.handleSnapshotRequests(), scheduler.handleSnapshotRequests()]);
    expect(first.started + second.started).toBe(1);
    await scheduler.stop();
    const finished = await admin.query(`SELECT status, error FROM backstop.snapshot_requests WHERE id = $1`, [again]);
    expect(finished.rows[0]).toEqual({ status: 'done', error: null });
    expect((await admin.query(`SELECT count(*)::int AS n FROM backstop.snapshots WHERE label = 'second'`)).rows[0].n).toBe(1);
  });

  it('stops without publishing half a snapshot, and can start again', async () => {
    await admin.query(`CREATE SCHEMA bulky; CREATE TABLE bulky.rows AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g; CREATE TABLE bulky.small (id int)`);
    const { scheduler, state } = newScheduler({ schemas: ['bulky'], interval: 10, stopTimeout: 0 });
    scheduler.start();
    await scheduler.stop();
    // Whatever was running was either finished and recorded, or abandoned without a trace.
    const objects = await storage.list('snapshots/');
    const bulky = objects.map((o) => o.key).filter((key) => key.includes('/bulky.'));
    const manifests = bulky.filter((key) => key.endsWith('.manifest.json'));
    expect(bulky.filter((key) => key.endsWith('.parquet'))).toHaveLength(manifests.length);
    const recorded = await admin.query(`SELECT count(*)::int AS n FROM backstop.snapshots WHERE schema_name = 'bulky'`);
    expect(recorded.rows[0].n).toBe(manifests.length);
    expect(state.retries()).toEqual([]);

    scheduler.start();
    // Stopping again waits for the poll that start() began (no abort needed with a generous bound).
    const again = newScheduler({ schemas: ['bulky'], interval: 10 });
    again.scheduler.start();
    await again.scheduler.stop();
    await scheduler.stop();
    expect(again.scheduler.lastPoll).toMatchObject({ tablesSeen: 2, failed: 0 });
    expect(again.state.retries()).toEqual([]);
  });
});

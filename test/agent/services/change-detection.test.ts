import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { observeTables, planCaptures, type CaptureReason } from '../../../src/agent/change-detection.js';
import { AgentState } from '../../../src/agent/state.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';

describe('change detection from one catalog query', () => {
  let db: TestDatabase;
  let client: pg.Client;
  let state: AgentState;

  /** Make this session's pending statistics visible now instead of within a second or so. */
  const flush = async (): Promise<void> => {
    await client.query('SELECT pg_stat_force_next_flush()');
    await client.query('SELECT 1');
  };

  /** Observe, plan, and record every planned table as captured; returns reasons by table name. */
  const poll = async (captureAll?: CaptureReason, schemas?: string[]): Promise<Record<string, string>> => {
    const observation = await observeTables(client, schemas);
    const watched = new Map(state.watchedTables().map((t) => [t.relid, t]));
    const plan = planCaptures(observation.tables, watched, new Map(), { now: observation.observedAt, ...(captureAll ? { captureAll } : {}) });
    state.observeTables(observation.tables, observation.observedAt);
    for (const { table } of plan.captures) state.recordCapture(table.relid, table.counters, `snap-${table.relid}`, observation.observedAt);
    return Object.fromEntries(plan.captures.map((c) => [`${c.table.schema}.${c.table.table}`, c.reason]));
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    state = new AgentState(':memory:');
    await client.query(`
      CREATE SCHEMA "Odd Schema";
      CREATE TABLE public.plain (id int PRIMARY KEY, note text);
      CREATE TABLE "Odd Schema"."Mixed ""Case"" é" (id int, v text);
      CREATE UNLOGGED TABLE public.scratch (id int);
      CREATE TABLE public.events (id int, at date) PARTITION BY RANGE (at);
      CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
      CREATE TEMP TABLE temp_ignored (id int);
      INSERT INTO public.plain VALUES (1, 'a'), (2, 'b');`);
    await flush();
  });
  afterAll(async () => {
    state?.close();
    await db?.drop();
  });

  it('sees user tables with odd names, unlogged and partitioned ones, and not temp or Backstop tables', async () => {
    const observation = await observeTables(client);
    const names = observation.tables.map((t) => `${t.schema}.${t.table}`);
    expect(names).toEqual(['Odd Schema.Mixed "Case" é', 'public.events', 'public.events_2025', 'public.plain', 'public.scratch']);
    expect(observation.tables.find((t) => t.table === 'plain')).toMatchObject({
      columns: [{ attnum: 1, name: 'id' }, { attnum: 2, name: 'note' }],
      counters: { inserted: 2, updated: 0, deleted: 0 },
    });
    expect(observation.observedAt).toBeInstanceOf(Date);
    expect((await observeTables(client, ['Odd Schema'])).tables.map((t) => t.table)).toEqual(['Mixed "Case" é']);
  });

  it('captures everything on the startup sweep, then nothing while nothing changes', async () => {
    expect(Object.values(await poll('startup'))).toHaveLength(5);
    expect(await poll()).toEqual({});
  });

  it('notices insert, update, delete, truncate and DDL at the next poll', async () => {
    await client.query(`INSERT INTO "Odd Schema"."Mixed ""Case"" é" VALUES (1, 'x')`);
    await flush();
    expect(await poll()).toEqual({ 'Odd Schema.Mixed "Case" é': 'data-changed' });

    await client.query(`UPDATE public.plain SET note = 'c' WHERE id = 1`);
    await flush();
    expect(await poll()).toEqual({ 'public.plain': 'data-changed' });

    await client.query(`DELETE FROM public.plain WHERE id = 2`);
    await flush();
    expect(await poll()).toEqual({ 'public.plain': 'data-changed' });

    await client.query(`INSERT INTO public.events VALUES (1, '2025-03-01')`);
    await flush();
    expect(await poll()).toEqual({ 'public.events': 'data-changed', 'public.events_2025': 'data-changed' });

    // A rewrite gives the table a new file node without touching the counters (as TRUNCATE does).
    await client.query(`VACUUM FULL public.plain`);
    await flush();
    expect(await poll()).toEqual({ 'public.plain': 'data-changed' });

    await client.query(`ALTER TABLE public.scratch ADD COLUMN extra text`);
    expect(await poll()).toEqual({ 'public.scratch': 'ddl-changed' });
    await client.query(`ALTER TABLE public.scratch RENAME COLUMN extra TO renamed`);
    expect(await poll()).toEqual({ 'public.scratch': 'ddl-changed' });
    expect(await poll()).toEqual({});
  });

  it('plans a new table as new', async () => {
    await client.query(`CREATE TABLE public.fresh (id int)`);
    expect(await poll()).toEqual({ 'public.fresh': 'new' });
  });

  it('plans due retries, waits for the others, and captures everything every poll when asked', async () => {
    const observation = await observeTables(client);
    const watched = new Map(state.watchedTables().map((t) => [t.relid, t]));
    const [first, second] = observation.tables;
    const now = observation.observedAt;
    const retries = new Map([
      [first!.relid, { relid: first!.relid, schema: first!.schema, table: first!.table, failures: 1, nextAttemptAt: new Date(now.getTime() - 1), lastError: 'x', lastFailureAt: now }],
      [second!.relid, { relid: second!.relid, schema: second!.schema, table: second!.table, failures: 2, nextAttemptAt: new Date(now.getTime() + 60_000), lastError: 'x', lastFailureAt: now }],
    ]);
    const plan = planCaptures(observation.tables, watched, retries, { now });
    expect(plan.captures.map((c) => [c.table.relid, c.reason])).toEqual([[first!.relid, 'retry']]);
    expect(plan.waitingForRetry).toBe(1);
    expect(plan.unchanged).toBe(observation.tables.length - 2);
    const everyPoll = planCaptures(observation.tables, watched, new Map(), { now, captureAll: 'every-poll' });
    expect(everyPoll.captures).toHaveLength(observation.tables.length);

    // Unchanged tables are re-captured once their last capture is older than refreshAfterMs.
    const later = new Date(now.getTime() + 10 * 60_000);
    expect(planCaptures(observation.tables, watched, new Map(), { now: later, refreshAfterMs: 20 * 60_000 }).captures).toEqual([]);
    const refresh = planCaptures(observation.tables, watched, new Map(), { now: later, refreshAfterMs: 5 * 60_000 });
    expect(refresh.captures.map((c) => c.reason)).toEqual(observation.tables.map(() => 'refresh'));
  });

  it('defers a changed table until 10x its last capture duration after that capture started', async () => {
    const observation = await observeTables(client);
    const watched = new Map(state.watchedTables().map((t) => [t.relid, t]));
    const [table] = observation.tables;
    const now = observation.observedAt;
    const started = new Date(now.getTime() - 60_000);
    // A capture that took 30 s, a minute ago: not again before 5 minutes after its start.
    const costs = new Map([[table!.relid, { startedAt: started, durationMs: 30_000 }]]);
    const plan = planCaptures(observation.tables, watched, new Map(), { now, captureAll: 'every-poll', recaptureFactor: 10, captureCosts: costs });
    expect(plan.deferred.map((d) => [d.table.relid, d.reason, d.notBefore.getTime()])).toEqual([[table!.relid, 'every-poll', started.getTime() + 300_000]]);
    expect(plan.captures).toHaveLength(observation.tables.length - 1);
    expect(plan.unchangedRelids).not.toContain(table!.relid);
    const due = planCaptures(observation.tables, watched, new Map(), { now: new Date(started.getTime() + 300_000), captureAll: 'every-poll', recaptureFactor: 10, captureCosts: costs });
    expect(due.deferred).toEqual([]);
    // The startup sweep and new tables are not held back.
    expect(planCaptures(observation.tables, watched, new Map(), { now, captureAll: 'startup', recaptureFactor: 10, captureCosts: costs }).deferred).toEqual([]);
  });

  it('plans zero captures over 1,000 unchanged tables with a single query', async () => {
    await client.query(`CREATE SCHEMA many`);
    await client.query(`DO $$ BEGIN FOR i IN 1..1000 LOOP EXECUTE format('CREATE TABLE many.%I (id int, v text)', 't' || i); END LOOP; END $$`);
    expect(Object.keys(await poll(undefined, ['many']))).toHaveLength(1000);
    let queries = 0;
    const counting = { query: (...args: Parameters<pg.Client['query']>) => { queries += 1; return (client.query as (...a: unknown[]) => unknown)(...args); } } as unknown as pg.Client;
    const observation = await observeTables(counting, ['many']);
    expect(queries).toBe(1);
    expect(observation.tables).toHaveLength(1000);
    const plan = planCaptures(observation.tables, new Map(state.watchedTables().map((t) => [t.relid, t])), new Map(), { now: observation.observedAt });
    expect(plan.captures).toEqual([]);
    expect(plan.unchanged).toBe(1000);
  });
});

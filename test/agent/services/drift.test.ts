import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { observeTables } from '../../../src/agent/change-detection.js';
import { coveredByConsumedRequests, findDriftCandidates, recordAlert, stillExisting, describeDrift } from '../../../src/agent/drift.js';
import { AgentState } from '../../../src/agent/state.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';
import { approveAhead, bypassGuard } from './guard-helpers.js';

describe('drift: what got around the guard', () => {
  let db: TestDatabase;
  let client: pg.Client;
  let state: AgentState;

  const observe = async () => {
    const observation = await observeTables(client);
    return observation;
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    state = new AgentState(':memory:');
    await client.query(`
      CREATE TABLE public.dropped_behind_back (id int);
      CREATE TABLE public.dropped_with_approval (id int);
      CREATE TABLE public."Loses Column" (id int, "Secret Col" text, kept text);
      CREATE TABLE public.renamed (id int, old_name text);
      CREATE SCHEMA elsewhere;`);
    const observation = await observe();
    state.observeTables(observation.tables, observation.observedAt);
  });
  afterAll(async () => {
    state?.close();
    await db?.drop();
  });

  it('finds vanished tables and lost columns by OID and attnum, not renames or moves', async () => {
    await bypassGuard(client, async () => {
      await client.query(`DROP TABLE public.dropped_behind_back`);
      await client.query(`ALTER TABLE public."Loses Column" DROP COLUMN "Secret Col"`);
    });
    await client.query(`ALTER TABLE public.renamed RENAME COLUMN old_name TO new_name`);
    await client.query(`ALTER TABLE public.renamed RENAME TO renamed_again`);
    await client.query(`ALTER TABLE public.renamed_again SET SCHEMA elsewhere`);
    const observation = await observeTables(client, ['public']);
    const candidates = findDriftCandidates(state.watchedTables(), observation.tables);
    expect(candidates.map((c) => [c.kind, c.table.table, c.lostColumns.map((col) => col.name)])).toEqual([
      ['table_vanished', 'dropped_behind_back', []],
      ['column_lost', 'Loses Column', ['Secret Col']],
      ['table_vanished', 'renamed', []],
    ]);
    const moved = candidates.find((c) => c.table.table === 'renamed')!;
    expect(await stillExisting(client, candidates.filter((c) => c.kind === 'table_vanished').map((c) => c.table.relid))).toEqual(new Set([moved.table.relid]));
    expect(describeDrift(candidates[1]!)).toMatch(/public\.Loses Column lost column\(s\) Secret Col without a consumed Backstop request/);
  });

  it('counts a drop through a consumed request as covered, and records alerts for the rest', async () => {
    await approveAhead(client, 'DROP TABLE public.dropped_with_approval', ['public.dropped_with_approval']);
    await client.query('DROP TABLE public.dropped_with_approval');
    const observation = await observeTables(client, ['public']);
    const candidates = findDriftCandidates(state.watchedTables(), observation.tables).filter((c) => c.table.table !== 'renamed');
    expect(candidates.map((c) => c.table.table)).toEqual(['dropped_behind_back', 'dropped_with_approval', 'Loses Column']);
    const covered = await coveredByConsumedRequests(client, candidates);
    expect([...covered].map((i) => candidates[i]!.table.table)).toEqual(['dropped_with_approval']);

    await recordAlert(client, candidates[0]!, describeDrift(candidates[0]!));
    const { rows } = await client.query(`SELECT kind, schema_name, table_name, acknowledged FROM backstop.alerts ORDER BY id`);
    expect(rows).toEqual([{ kind: 'table_vanished', schema_name: 'public', table_name: 'dropped_behind_back', acknowledged: false }]);
  });
});

describe('drift: an approval explains only its own object and kind of change', () => {
  let db: TestDatabase;
  let client: pg.Client;
  let state: AgentState;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    state = new AgentState(':memory:');
  });
  afterAll(async () => {
    state?.close();
    await db?.drop();
  });

  /** Record what the catalog shows now as the agent's last poll. */
  const poll = async () => {
    const observation = await observeTables(client, ['public']);
    state.observeTables(observation.tables, observation.observedAt);
  };
  const coveredNames = async (tables: string[]) => {
    const observation = await observeTables(client, ['public']);
    const candidates = findDriftCandidates(state.watchedTables(), observation.tables).filter((c) => tables.includes(c.table.table));
    const covered = await coveredByConsumedRequests(client, candidates);
    return candidates.map((c, index) => [c.kind, c.table.table, covered.has(index)]);
  };

  it('an old DROP TABLE approval does not explain a column lost by the table created again under that name', async () => {
    await client.query(`CREATE TABLE public.reborn (id int, secret text)`);
    await poll();
    await approveAhead(client, 'DROP TABLE public.reborn', ['public.reborn']);
    await client.query('DROP TABLE public.reborn');
    expect(await coveredNames(['reborn'])).toEqual([['table_vanished', 'reborn', true]]);
    await client.query(`CREATE TABLE public.reborn (id int, secret text)`);
    // The agent forgets the vanished table and watches the new one (another OID).
    for (const table of state.watchedTables().filter((t) => t.table === 'reborn')) state.forgetTable(table.relid);
    await poll();
    await bypassGuard(client, async () => {
      await client.query(`ALTER TABLE public.reborn DROP COLUMN secret`);
    });
    expect(await coveredNames(['reborn'])).toEqual([['column_lost', 'reborn', false]]);
  });

  it('a DROP COLUMN approval explains the lost column, not the table vanishing later', async () => {
    await client.query(`CREATE TABLE public.narrowed (id int, gone text)`);
    await poll();
    await approveAhead(client, 'ALTER TABLE public.narrowed DROP COLUMN gone', ['public.narrowed']);
    await client.query('ALTER TABLE public.narrowed DROP COLUMN gone');
    expect(await coveredNames(['narrowed'])).toEqual([['column_lost', 'narrowed', true]]);
    await poll();
    await bypassGuard(client, async () => {
      await client.query(`DROP TABLE public.narrowed`);
    });
    expect(await coveredNames(['narrowed'])).toEqual([['table_vanished', 'narrowed', false]]);
  });
});

import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backoffDelay } from '../../../src/retry/backoff.js';
import { AgentState, type ObservedTable } from '../../../src/agent/state.js';
import { ConfigError } from '../../../src/errors/index.js';

const counters = { inserted: 1, updated: 2, deleted: 3, liveTuples: 4, filenode: '16384', ddlFingerprint: 'abc' };
const observed = (relid: number, name: string, columns = ['id', 'name']): ObservedTable => ({
  relid,
  schema: 'public',
  table: name,
  columns: columns.map((column, i) => ({ attnum: i + 1, name: column })),
  counters,
});

describe('agent state (SQLite)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'backstop-state-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates parent folders, uses WAL and a versioned schema', () => {
    const file = path.join(dir, 'nested', 'deeper', 'agent.sqlite');
    const state = new AgentState(file);
    state.close();
    const raw = new Database(file);
    expect(raw.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(raw.pragma('user_version', { simple: true })).toBe(1);
    raw.close();
  });

  it('survives reopen: heartbeat, agent id, snapshots, counters, retries and protections', () => {
    const file = path.join(dir, 'reopen.sqlite');
    const first = new AgentState(file);
    const id = first.agentId(() => 'agent-1');
    expect(first.agentId(() => 'agent-2')).toBe(id);
    first.writeHeartbeat({ agentId: id, startedAt: new Date(1000), lastBeatAt: new Date(2000), leader: true });
    first.recordSnapshot({
      snapshotId: 's1', schema: 'public', table: 'My "Table"', createdAt: new Date(5000), source: 'sidecar',
      label: undefined, rowCount: 3, sizeBytes: 100, manifest: { snapshot_id: 's1' },
    });
    first.recordSnapshot({
      snapshotId: 's2', schema: 'public', table: 'My "Table"', createdAt: new Date(6000), source: 'on-demand',
      label: 'before-migration', rowCount: 4, sizeBytes: 120, manifest: { snapshot_id: 's2' },
    });
    first.observeTables([observed(42, 'My "Table"')], new Date(7000));
    first.recordCapture(42, counters, 's2', new Date(8000));
    first.recordFailure({ relid: 43, schema: 'public', table: 'other' }, 'permission denied', new Date(9000), { baseMs: 1000, maxMs: 60_000, random: () => 0 });
    first.protectSnapshot({ snapshotId: 's1', schema: 'public', table: 'My "Table"' }, 'table vanished');
    first.close();

    const second = new AgentState(file);
    expect(second.agentId(() => 'other')).toBe('agent-1');
    expect(second.readHeartbeat()).toEqual({ agentId: 'agent-1', startedAt: new Date(1000), lastBeatAt: new Date(2000), leader: true });
    expect(second.listSnapshots({ table: 'My "Table"' }).map((s) => s.snapshotId)).toEqual(['s2', 's1']);
    expect(second.latestSnapshot('public', 'My "Table"')).toMatchObject({ snapshotId: 's2', label: 'before-migration', source: 'on-demand', manifest: { snapshot_id: 's2' } });
    expect(second.lastSnapshotAt()).toEqual(new Date(6000));
    expect(second.watchedTable(42)).toMatchObject({ table: 'My "Table"', capturedCounters: counters, capturedSnapshotId: 's2', capturedAt: new Date(8000) });
    expect(second.retryState(43)).toMatchObject({ failures: 1, lastError: 'permission denied', nextAttemptAt: new Date(9500) });
    expect(second.isProtected('s1')).toBe(true);
    expect(second.protectedSnapshots({ table: 'My "Table"' }).map((p) => p.snapshotId)).toEqual(['s1']);
    second.forgetSnapshot('s1');
    expect(second.isProtected('s1')).toBe(false);
    second.close();
  });

  it('backs off exponentially with jitter, capped, and a success clears the retry state', () => {
    const options = { baseMs: 1000, maxMs: 10_000 };
    expect(backoffDelay(1, { ...options, random: () => 0 })).toBe(500);
    expect(backoffDelay(1, { ...options, random: () => 0.999999 })).toBe(1000);
    expect(backoffDelay(3, { ...options, random: () => 0 })).toBe(2000);
    expect(backoffDelay(3, { ...options, random: () => 0.5 })).toBe(3000);
    expect(backoffDelay(20, { ...options, random: () => 0 })).toBe(5000);
    expect(backoffDelay(20, { ...options, random: () => 0.999999 })).toBe(10_000);

    const state = new AgentState(':memory:');
    const table = { relid: 7, schema: 'public', table: 't' };
    const now = new Date(100_000);
    const delays = [1, 2, 3, 4].map(() => state.recordFailure(table, 'storage down', now, { ...options, random: () => 0.5 }).nextAttemptAt.getTime() - now.getTime());
    expect(delays).toEqual([750, 1500, 3000, 6000]);
    expect(state.retryState(7)?.failures).toBe(4);
    state.observeTables([observed(7, 't')], now);
    state.recordCapture(7, counters, 's9', now);
    expect(state.retryState(7)).toBeUndefined();
    state.close();
  });

  it('restarts columns_seen_at only when the column list changes, and keeps capture state', () => {
    const state = new AgentState(':memory:');
    state.observeTables([observed(1, 't')], new Date(1000));
    state.recordCapture(1, counters, 's1', new Date(1500));
    state.observeTables([{ ...observed(1, 't_renamed') }], new Date(2000));
    expect(state.watchedTable(1)).toMatchObject({ table: 't_renamed', columnsSeenAt: new Date(1000), lastSeenAt: new Date(2000), capturedSnapshotId: 's1' });
    state.observeTables([observed(1, 't_renamed', ['id'])], new Date(3000));
    expect(state.watchedTable(1)).toMatchObject({ columnsSeenAt: new Date(3000), columns: [{ attnum: 1, name: 'id' }] });
    state.forgetTable(1);
    expect(state.watchedTables()).toEqual([]);
    state.close();
  });

  it('belongs to one database: binding it to another is refused, nothing is forgotten', () => {
    const state = new AgentState(':memory:');
    state.bindDatabase('db-a', 'database "a"');
    state.observeTables([observed(1, 't')], new Date(1000));
    state.bindDatabase('db-a', 'database "a"');
    expect(state.watchedTables()).toHaveLength(1);
    expect(() => state.bindDatabase('db-b', 'database "b"')).toThrow(/belongs to database "a", not to database "b"/);
    expect(state.watchedTables()).toHaveLength(1);
    state.close();
  });

  it('is claimed by one live agent at a time; a dead holder is taken over', () => {
    const host = os.hostname();
    const gone = 999_999_999; // no such pid
    const dead = new AgentState(path.join(dir, 'claimed.sqlite'));
    dead.claim({ pid: gone, hostname: host });
    const live = new AgentState(path.join(dir, 'claimed.sqlite'));
    live.claim(); // the holder's process is gone: taken over by this one
    let caught: unknown;
    const other = new AgentState(path.join(dir, 'claimed.sqlite'));
    try {
      other.claim({ pid: process.ppid, hostname: host });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).message).toMatch(new RegExp(`is in use by another agent \\(pid ${process.pid}, since `));
    expect((caught as ConfigError).hint).toMatch(/--state/);
    live.close(); // releases it
    expect(() => other.claim({ pid: process.ppid, hostname: host })).not.toThrow();
    other.close();
    dead.close();
  });

  it('refuses a state file from a newer schema with a hint', () => {
    const file = path.join(dir, 'newer.sqlite');
    const raw = new Database(file);
    raw.pragma('user_version = 99');
    raw.close();
    expect(() => new AgentState(file)).toThrow(/newer Backstop/);
  });
});

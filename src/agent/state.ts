/**
 * The agent's local state: one SQLite file (better-sqlite3, WAL) that survives restarts. It holds
 * the heartbeat record, the local snapshot catalog, what the agent last saw of every watched table
 * (change counters, DDL fingerprint, columns) and when it last captured it, retry state with
 * backoff, and snapshots protected from prune because their table drifted.
 *
 * Tables are keyed by relation OID: a rename keeps the OID (same table, new name), a drop and
 * re-create gets a new one (a new table, captured as new). A state file belongs to one database
 * (bindDatabase) and one running agent (claim): pointing it at another database is refused, so
 * their OIDs never mix.
 */
import { mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { ConfigError, describeError } from '../errors/index.js';
import { backoffDelay, type BackoffOptions } from '../retry/backoff.js';

/**
 * The state file of Backstop 0.1.0, shared by every database an agent ran against from the same
 * folder. Still used when it belongs to the agent's database; otherwise each database gets its
 * own file (defaultStatePath in database-identity.ts).
 */
export const LEGACY_STATE_PATH = path.join('.backstop', 'agent.sqlite');

/** Bump when the schema below changes; add a step to MIGRATIONS. */
const MIGRATIONS: string[] = [
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  CREATE TABLE heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    agent_id TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    last_beat_at INTEGER NOT NULL,
    leader INTEGER NOT NULL
  );
  CREATE TABLE snapshots (
    snapshot_id TEXT PRIMARY KEY,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    source TEXT NOT NULL,
    label TEXT,
    row_count INTEGER,
    size_bytes INTEGER,
    manifest TEXT NOT NULL
  );
  CREATE INDEX snapshots_by_table ON snapshots (schema_name, table_name, created_at);
  CREATE TABLE tables (
    relid INTEGER PRIMARY KEY,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    columns TEXT NOT NULL,
    ddl_fingerprint TEXT NOT NULL,
    first_seen_at INTEGER NOT NULL,
    columns_seen_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    captured_counters TEXT,
    captured_at INTEGER,
    captured_snapshot_id TEXT
  );
  CREATE TABLE retries (
    relid INTEGER PRIMARY KEY,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    failures INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    last_failure_at INTEGER NOT NULL
  );
  CREATE TABLE protected_snapshots (
    snapshot_id TEXT PRIMARY KEY,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    reason TEXT NOT NULL,
    protected_at INTEGER NOT NULL
  );
  `,
];

export interface HeartbeatRecord {
  agentId: string;
  startedAt: Date;
  lastBeatAt: Date;
  leader: boolean;
}

/**
 * What tells the agent a table changed: cumulative statistics counters, the relation's file node
 * (TRUNCATE, VACUUM FULL and CLUSTER give it a new one) and a fingerprint of its columns.
 */
export interface TableCounters {
  inserted: number;
  updated: number;
  deleted: number;
  liveTuples: number;
  /** Relation file node(s): a new one means the data was replaced wholesale. */
  filenode: string;
  ddlFingerprint: string;
}

export interface ObservedColumn {
  attnum: number;
  name: string;
}

/** A user table as the catalog shows it now. */
export interface ObservedTable {
  relid: number;
  schema: string;
  table: string;
  /** Columns in attnum order (dropped columns excluded). Tracked by attnum: a rename is not a loss. */
  columns: ObservedColumn[];
  counters: TableCounters;
}

/** A table the agent watches, as recorded at the last poll. */
export interface WatchedTable {
  relid: number;
  schema: string;
  table: string;
  columns: ObservedColumn[];
  ddlFingerprint: string;
  firstSeenAt: Date;
  /** When the current column list was first seen (drift checks look for requests since then). */
  columnsSeenAt: Date;
  lastSeenAt: Date;
  /** Counters at the start of the last successful capture; undefined = never captured. */
  capturedCounters: TableCounters | undefined;
  capturedAt: Date | undefined;
  capturedSnapshotId: string | undefined;
}

export interface RetryState {
  relid: number;
  schema: string;
  table: string;
  failures: number;
  nextAttemptAt: Date;
  lastError: string;
  lastFailureAt: Date;
}

/** The local catalog entry of one snapshot: the manifest plus the columns it is looked up by. */
export interface SnapshotSummary {
  snapshotId: string;
  schema: string;
  table: string;
  createdAt: Date;
  source: string;
  label: string | undefined;
  rowCount: number | undefined;
  sizeBytes: number | undefined;
  manifest: unknown;
}

export interface ProtectedSnapshot {
  snapshotId: string;
  schema: string;
  table: string;
  reason: string;
  protectedAt: Date;
}

export type { BackoffOptions };

/** Retry delays of a table whose capture failed: 10 s, doubling, at most 15 min. */
export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 10_000, maxMs: 15 * 60_000 };

interface TableRow {
  relid: number;
  schema_name: string;
  table_name: string;
  columns: string;
  ddl_fingerprint: string;
  first_seen_at: number;
  columns_seen_at: number;
  last_seen_at: number;
  captured_counters: string | null;
  captured_at: number | null;
  captured_snapshot_id: string | null;
}

interface SnapshotRow {
  snapshot_id: string;
  schema_name: string;
  table_name: string;
  created_at: number;
  source: string;
  label: string | null;
  row_count: number | null;
  size_bytes: number | null;
  manifest: string;
}

interface RetryRow {
  relid: number;
  schema_name: string;
  table_name: string;
  failures: number;
  next_attempt_at: number;
  last_error: string;
  last_failure_at: number;
}

function toWatched(row: TableRow): WatchedTable {
  return {
    relid: row.relid,
    schema: row.schema_name,
    table: row.table_name,
    columns: JSON.parse(row.columns) as ObservedColumn[],
    ddlFingerprint: row.ddl_fingerprint,
    firstSeenAt: new Date(row.first_seen_at),
    columnsSeenAt: new Date(row.columns_seen_at),
    lastSeenAt: new Date(row.last_seen_at),
    capturedCounters: row.captured_counters === null ? undefined : (JSON.parse(row.captured_counters) as TableCounters),
    capturedAt: row.captured_at === null ? undefined : new Date(row.captured_at),
    capturedSnapshotId: row.captured_snapshot_id ?? undefined,
  };
}

function toSnapshot(row: SnapshotRow): SnapshotSummary {
  return {
    snapshotId: row.snapshot_id,
    schema: row.schema_name,
    table: row.table_name,
    createdAt: new Date(row.created_at),
    source: row.source,
    label: row.label ?? undefined,
    rowCount: row.row_count ?? undefined,
    sizeBytes: row.size_bytes ?? undefined,
    manifest: JSON.parse(row.manifest) as unknown,
  };
}

function toRetry(row: RetryRow): RetryState {
  return {
    relid: row.relid,
    schema: row.schema_name,
    table: row.table_name,
    failures: row.failures,
    nextAttemptAt: new Date(row.next_attempt_at),
    lastError: row.last_error,
    lastFailureAt: new Date(row.last_failure_at),
  };
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class AgentState {
  readonly path: string;
  private readonly db: Database.Database;
  /** The pid this process claimed the file for (see claim()); released by close(). */
  private ownedBy: number | undefined;

  constructor(statePath: string) {
    this.path = statePath;
    try {
      if (statePath !== ':memory:') mkdirSync(path.dirname(path.resolve(statePath)), { recursive: true });
      this.db = new Database(statePath);
    } catch (error) {
      throw new ConfigError(`cannot open the agent state file ${statePath}: ${describeError(error)}`, {
        cause: error,
        hint: 'pass --state with a path in a writable folder (default: one file per database under ./.backstop/)',
      });
    }
    // WAL: readers (HTTP handlers) never block the scheduler's writes; NORMAL sync is durable
    // enough for state that can be rebuilt from the database and storage.
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.migrate();
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > MIGRATIONS.length) {
      throw new ConfigError(`the agent state file ${this.path} was written by a newer Backstop (schema ${version})`, {
        hint: 'upgrade this agent, or point --state at a new file (the state is rebuilt from the database and storage)',
      });
    }
    for (let step = version; step < MIGRATIONS.length; step += 1) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[step]!);
        this.db.pragma(`user_version = ${step + 1}`);
      })();
    }
  }

  close(): void {
    if (!this.db.open) return;
    if (this.ownedBy !== undefined) {
      const current = this.getMeta('owner');
      if (current !== undefined && (JSON.parse(current) as { pid: number }).pid === this.ownedBy) this.db.prepare(`DELETE FROM meta WHERE key = 'owner'`).run();
    }
    this.db.close();
  }

  // ---- meta ----

  getMeta(key: string): string | undefined {
    const row = this.db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined;
    return row?.value;
  }

  setMeta(key: string, value: string): void {
    this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  /** This agent's id, generated once and kept across restarts. */
  agentId(generate: () => string): string {
    const existing = this.getMeta('agent_id');
    if (existing) return existing;
    const id = generate();
    this.setMeta('agent_id', id);
    return id;
  }

  /**
   * Bind the state to one database (DatabaseIdentity.key: system identifier, database OID and
   * name). A state file belongs to one database for good: its OIDs name that database's tables,
   * and its agent id is that agent's. Bound to another, it is refused, never taken over: an agent
   * that wiped or reused it raised table_vanished alerts about the other database's tables, and
   * two agents shared one id.
   */
  bindDatabase(identity: string, label: string = identity): void {
    this.db.transaction(() => {
      const previous = this.getMeta('database_identity');
      if (previous === undefined) {
        this.setMeta('database_identity', identity);
        this.setMeta('database_label', label);
        return;
      }
      if (previous === identity) return;
      const theirs = this.getMeta('database_label') ?? previous;
      throw new ConfigError(`the agent state file ${this.path} belongs to ${theirs}, not to ${label}`, {
        hint: 'each database needs its own state file: leave out --state (the default is one file per database under .backstop/) or pass another path; if that database is gone for good, remove the file',
      });
    }).immediate();
  }

  /** The database a state file is bound to, without opening it for writing; undefined if none or no file. */
  static boundIdentity(statePath: string): string | undefined {
    let db: Database.Database | undefined;
    try {
      db = new Database(statePath, { readonly: true, fileMustExist: true });
      const row = db.prepare(`SELECT value FROM meta WHERE key = 'database_identity'`).get() as { value: string } | undefined;
      return row?.value;
    } catch {
      return undefined;
    } finally {
      db?.close();
    }
  }

  /**
   * Take the file for this process: one agent per state file. Another live agent on this host
   * holding it (two agents for one database started from one folder) is refused, so that two
   * agents never share an agent id; a holder that is gone (killed, crashed) is taken over.
   */
  claim(owner: { pid: number; hostname: string } = { pid: process.pid, hostname: os.hostname() }): void {
    this.db.transaction(() => {
      const current = this.getMeta('owner');
      const holder = current === undefined ? undefined : (JSON.parse(current) as { pid: number; hostname: string; since: string });
      if (holder && holder.pid !== owner.pid && holder.hostname === owner.hostname && processAlive(holder.pid)) {
        throw new ConfigError(`the agent state file ${this.path} is in use by another agent (pid ${holder.pid}, since ${holder.since})`, {
          hint: 'a second agent for the same database needs its own state file and id: pass --state with another path (and --agent-id if you name agents)',
        });
      }
      this.setMeta('owner', JSON.stringify({ ...owner, since: new Date().toISOString() }));
      this.ownedBy = owner.pid;
    }).immediate();
  }

  // ---- heartbeat ----

  writeHeartbeat(record: HeartbeatRecord): void {
    this.db
      .prepare(
        `INSERT INTO heartbeat (id, agent_id, started_at, last_beat_at, leader) VALUES (1, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET agent_id = excluded.agent_id, started_at = excluded.started_at,
           last_beat_at = excluded.last_beat_at, leader = excluded.leader`,
      )
      .run(record.agentId, record.startedAt.getTime(), record.lastBeatAt.getTime(), record.leader ? 1 : 0);
  }

  readHeartbeat(): HeartbeatRecord | undefined {
    const row = this.db.prepare('SELECT agent_id, started_at, last_beat_at, leader FROM heartbeat WHERE id = 1').get() as
      | { agent_id: string; started_at: number; last_beat_at: number; leader: number }
      | undefined;
    if (!row) return undefined;
    return { agentId: row.agent_id, startedAt: new Date(row.started_at), lastBeatAt: new Date(row.last_beat_at), leader: row.leader === 1 };
  }

  // ---- local snapshot catalog ----

  recordSnapshot(summary: SnapshotSummary): void {
    this.db
      .prepare(
        `INSERT INTO snapshots (snapshot_id, schema_name, table_name, created_at, source, label, row_count, size_bytes, manifest)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (snapshot_id) DO UPDATE SET manifest = excluded.manifest, row_count = excluded.row_count,
           size_bytes = excluded.size_bytes, label = excluded.label`,
      )
      .run(
        summary.snapshotId,
        summary.schema,
        summary.table,
        summary.createdAt.getTime(),
        summary.source,
        summary.label ?? null,
        summary.rowCount ?? null,
        summary.sizeBytes ?? null,
        JSON.stringify(summary.manifest),
      );
  }

  forgetSnapshot(snapshotId: string): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM snapshots WHERE snapshot_id = ?').run(snapshotId);
      this.db.prepare('DELETE FROM protected_snapshots WHERE snapshot_id = ?').run(snapshotId);
    })();
  }

  /** Snapshots newest first, optionally of one table. */
  listSnapshots(filter: { schema?: string; table?: string } = {}): SnapshotSummary[] {
    const conditions: string[] = [];
    const params: string[] = [];
    if (filter.schema !== undefined) {
      conditions.push('schema_name = ?');
      params.push(filter.schema);
    }
    if (filter.table !== undefined) {
      conditions.push('table_name = ?');
      params.push(filter.table);
    }
    const where = conditions.length > 0 ? `WHERE ${conditions.join(' AND ')}` : '';
    const rows = this.db.prepare(`SELECT * FROM snapshots ${where} ORDER BY created_at DESC, snapshot_id DESC`).all(...params) as SnapshotRow[];
    return rows.map(toSnapshot);
  }

  latestSnapshot(schema: string, table: string): SnapshotSummary | undefined {
    const row = this.db
      .prepare('SELECT * FROM snapshots WHERE schema_name = ? AND table_name = ? ORDER BY created_at DESC, snapshot_id DESC LIMIT 1')
      .get(schema, table) as SnapshotRow | undefined;
    return row ? toSnapshot(row) : undefined;
  }

  /** When the newest snapshot of any table was taken. */
  lastSnapshotAt(): Date | undefined {
    const row = this.db.prepare('SELECT max(created_at) AS at FROM snapshots').get() as { at: number | null };
    return row.at === null ? undefined : new Date(row.at);
  }

  // ---- watched tables and change counters ----

  watchedTables(): WatchedTable[] {
    return (this.db.prepare('SELECT * FROM tables ORDER BY relid').all() as TableRow[]).map(toWatched);
  }

  watchedTable(relid: number): WatchedTable | undefined {
    const row = this.db.prepare('SELECT * FROM tables WHERE relid = ?').get(relid) as TableRow | undefined;
    return row ? toWatched(row) : undefined;
  }

  /**
   * Record what one poll saw, in one transaction: names, columns and fingerprints of every
   * observed table. Capture state is kept; a changed column list restarts columns_seen_at.
   */
  observeTables(tables: ObservedTable[], seenAt: Date): void {
    const at = seenAt.getTime();
    const upsert = this.db.prepare(
      `INSERT INTO tables (relid, schema_name, table_name, columns, ddl_fingerprint, first_seen_at, columns_seen_at, last_seen_at)
       VALUES (@relid, @schema, @table, @columns, @fingerprint, @at, @at, @at)
       ON CONFLICT (relid) DO UPDATE SET
         schema_name = excluded.schema_name,
         table_name = excluded.table_name,
         columns_seen_at = CASE WHEN tables.columns = excluded.columns THEN tables.columns_seen_at ELSE excluded.last_seen_at END,
         columns = excluded.columns,
         ddl_fingerprint = excluded.ddl_fingerprint,
         last_seen_at = excluded.last_seen_at`,
    );
    this.db.transaction(() => {
      for (const table of tables) {
        upsert.run({
          relid: table.relid,
          schema: table.schema,
          table: table.table,
          columns: JSON.stringify(table.columns),
          fingerprint: table.counters.ddlFingerprint,
          at,
        });
      }
    })();
  }

  /** Stop watching a table (it vanished); its retry state goes with it. */
  forgetTable(relid: number): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM tables WHERE relid = ?').run(relid);
      this.db.prepare('DELETE FROM retries WHERE relid = ?').run(relid);
    })();
  }

  /** A successful capture: remember the counters it started from and clear any retry state. */
  recordCapture(relid: number, counters: TableCounters, snapshotId: string, capturedAt: Date): void {
    this.db.transaction(() => {
      this.db
        .prepare('UPDATE tables SET captured_counters = ?, captured_at = ?, captured_snapshot_id = ? WHERE relid = ?')
        .run(JSON.stringify(counters), capturedAt.getTime(), snapshotId, relid);
      this.db.prepare('DELETE FROM retries WHERE relid = ?').run(relid);
    })();
  }

  // ---- retries ----

  /** Count a failed capture and schedule the next attempt with backoff; returns the new state. */
  recordFailure(
    table: { relid: number; schema: string; table: string },
    error: string,
    now: Date,
    backoff: BackoffOptions = DEFAULT_BACKOFF,
  ): RetryState {
    return this.db.transaction(() => {
      const previous = this.db.prepare('SELECT failures FROM retries WHERE relid = ?').get(table.relid) as { failures: number } | undefined;
      const failures = (previous?.failures ?? 0) + 1;
      const nextAttemptAt = now.getTime() + backoffDelay(failures, backoff);
      this.db
        .prepare(
          `INSERT INTO retries (relid, schema_name, table_name, failures, next_attempt_at, last_error, last_failure_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (relid) DO UPDATE SET schema_name = excluded.schema_name, table_name = excluded.table_name,
             failures = excluded.failures, next_attempt_at = excluded.next_attempt_at,
             last_error = excluded.last_error, last_failure_at = excluded.last_failure_at`,
        )
        .run(table.relid, table.schema, table.table, failures, nextAttemptAt, error, now.getTime());
      return {
        relid: table.relid,
        schema: table.schema,
        table: table.table,
        failures,
        nextAttemptAt: new Date(nextAttemptAt),
        lastError: error,
        lastFailureAt: now,
      };
    })();
  }

  clearFailure(relid: number): void {
    this.db.prepare('DELETE FROM retries WHERE relid = ?').run(relid);
  }

  retryState(relid: number): RetryState | undefined {
    const row = this.db.prepare('SELECT * FROM retries WHERE relid = ?').get(relid) as RetryRow | undefined;
    return row ? toRetry(row) : undefined;
  }

  retries(): RetryState[] {
    return (this.db.prepare('SELECT * FROM retries ORDER BY relid').all() as RetryRow[]).map(toRetry);
  }

  // ---- protection from prune ----

  protectSnapshot(snapshot: { snapshotId: string; schema: string; table: string }, reason: string, at: Date = new Date()): void {
    this.db
      .prepare(
        `INSERT INTO protected_snapshots (snapshot_id, schema_name, table_name, reason, protected_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (snapshot_id) DO NOTHING`,
      )
      .run(snapshot.snapshotId, snapshot.schema, snapshot.table, reason, at.getTime());
  }

  protectedSnapshots(filter: { schema?: string; table?: string } = {}): ProtectedSnapshot[] {
    const rows = this.db.prepare('SELECT * FROM protected_snapshots ORDER BY protected_at').all() as Array<{
      snapshot_id: string;
      schema_name: string;
      table_name: string;
      reason: string;
      protected_at: number;
    }>;
    return rows
      .filter((row) => (filter.schema === undefined || row.schema_name === filter.schema) && (filter.table === undefined || row.table_name === filter.table))
      .map((row) => ({ snapshotId: row.snapshot_id, schema: row.schema_name, table: row.table_name, reason: row.reason, protectedAt: new Date(row.protected_at) }));
  }

  isProtected(snapshotId: string): boolean {
    return this.db.prepare('SELECT 1 FROM protected_snapshots WHERE snapshot_id = ?').get(snapshotId) !== undefined;
  }
}

/**
 * Which tables need a new snapshot. One catalog query reads, for every watched table at once, the
 * cumulative statistics counters (pg_stat_user_tables), the relation file node and a fingerprint
 * of the column list; the plan compares them with what the last successful capture started from.
 * No per-table round trips: a poll over 1,000 unchanged tables is one query and zero captures.
 *
 * Statistics are flushed by each backend at most about once a second after its transaction
 * commits, so a change shows up at the next poll after that, never lost: counters only grow (or
 * reset, which also reads as a change).
 */
import type pg from 'pg';
import type { ObservedTable, RetryState, TableCounters, WatchedTable } from './state.js';

export interface CatalogObservation {
  /** The server's clock when the catalog was read (drift checks compare it with request times). */
  observedAt: Date;
  tables: ObservedTable[];
}

/**
 * Tables as listUserTables (src/db/catalog.ts) selects them: ordinary, partitioned and unlogged
 * tables outside the system and Backstop schemas, no temporary tables. A partitioned table has no
 * data or statistics of its own, so its counters are the sums over its leaf partitions.
 */
const OBSERVE_SQL = `
WITH watched AS (
  SELECT c.oid, n.nspname, c.relname, c.relkind
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p')
     AND c.relpersistence IN ('p', 'u')
     AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema', 'backstop', 'backstop_images', 'pg_toast'])
     AND n.nspname NOT LIKE 'pg\\_temp\\_%'
     AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
     AND ($1::text[] IS NULL OR n.nspname = ANY ($1::text[]))
),
leaves AS (
  SELECT w.oid AS table_oid, w.oid AS leaf_oid FROM watched w WHERE w.relkind = 'r'
  UNION ALL
  SELECT w.oid, t.relid FROM watched w, LATERAL pg_catalog.pg_partition_tree(w.oid) t
   WHERE w.relkind = 'p' AND t.isleaf
),
data AS (
  SELECT l.table_oid,
         coalesce(sum(pg_catalog.pg_stat_get_tuples_inserted(l.leaf_oid)), 0)::int8 AS inserted,
         coalesce(sum(pg_catalog.pg_stat_get_tuples_updated(l.leaf_oid)), 0)::int8 AS updated,
         coalesce(sum(pg_catalog.pg_stat_get_tuples_deleted(l.leaf_oid)), 0)::int8 AS deleted,
         coalesce(sum(pg_catalog.pg_stat_get_live_tuples(l.leaf_oid)), 0)::int8 AS live_tuples,
         coalesce(string_agg(pg_catalog.pg_relation_filenode(l.leaf_oid)::text, ',' ORDER BY l.leaf_oid), '') AS filenode
    FROM leaves l
   GROUP BY l.table_oid
),
columns AS (
  SELECT a.attrelid AS table_oid,
         json_agg(json_build_object('attnum', a.attnum, 'name', a.attname) ORDER BY a.attnum) AS columns,
         md5(string_agg(format('%s %I %s %s %s', a.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
                               CASE WHEN a.attnotnull THEN 'not null' ELSE 'null' END, a.attgenerated), ',' ORDER BY a.attnum)) AS fingerprint
    FROM pg_catalog.pg_attribute a
    JOIN watched w ON w.oid = a.attrelid
   WHERE a.attnum > 0 AND NOT a.attisdropped
   GROUP BY a.attrelid
)
SELECT w.oid::int8 AS relid, w.nspname AS schema_name, w.relname AS table_name,
       coalesce(c.columns, '[]'::json) AS columns, coalesce(c.fingerprint, md5('')) AS fingerprint,
       coalesce(d.inserted, 0) AS inserted, coalesce(d.updated, 0) AS updated, coalesce(d.deleted, 0) AS deleted,
       coalesce(d.live_tuples, 0) AS live_tuples, coalesce(d.filenode, '') AS filenode,
       pg_catalog.statement_timestamp() AS observed_at
  FROM watched w
  LEFT JOIN data d ON d.table_oid = w.oid
  LEFT JOIN columns c ON c.table_oid = w.oid
 ORDER BY w.nspname, w.relname`;

interface ObserveRow {
  relid: string;
  schema_name: string;
  table_name: string;
  columns: Array<{ attnum: number; name: string }>;
  fingerprint: string;
  inserted: string;
  updated: string;
  deleted: string;
  live_tuples: string;
  filenode: string;
  observed_at: Date;
}

/** Read every watched table's counters and fingerprint in one query. */
export async function observeTables(db: pg.Pool | pg.ClientBase, schemas?: string[]): Promise<CatalogObservation> {
  const { rows } = await db.query<ObserveRow>(OBSERVE_SQL, [schemas && schemas.length > 0 ? schemas : null]);
  // An empty database still has a clock.
  const observedAt = rows[0]?.observed_at ?? (await db.query<{ now: Date }>('SELECT pg_catalog.statement_timestamp() AS now')).rows[0]!.now;
  return {
    observedAt,
    tables: rows.map((row) => ({
      relid: Number(row.relid),
      schema: row.schema_name,
      table: row.table_name,
      columns: row.columns,
      counters: {
        inserted: Number(row.inserted),
        updated: Number(row.updated),
        deleted: Number(row.deleted),
        liveTuples: Number(row.live_tuples),
        filenode: row.filenode,
        ddlFingerprint: row.fingerprint,
      },
    })),
  };
}

export type CaptureReason = 'startup' | 'every-poll' | 'new' | 'data-changed' | 'ddl-changed' | 'retry' | 'refresh';

export interface PlannedCapture {
  table: ObservedTable;
  reason: CaptureReason;
}

export interface CapturePlan {
  captures: PlannedCapture[];
  /**
   * Tables that changed but whose last capture was too recent for what it cost (see
   * PlanOptions.recaptureFactor): captured at a later poll. Their snapshot does not match them,
   * so they are not confirmed unchanged either.
   */
  deferred: Array<{ table: ObservedTable; reason: CaptureReason; notBefore: Date }>;
  /** Tables unchanged since their last successful capture. */
  unchanged: number;
  /** Their OIDs: their latest snapshots still match them (see backstop.agent_confirm_unchanged). */
  unchangedRelids: number[];
  /** Tables that failed before and whose next attempt is not due yet. */
  waitingForRetry: number;
}

/**
 * n_live_tup is left out of the comparison on purpose: VACUUM and ANALYZE re-estimate it without
 * any change to the data, which would cause captures of unchanged tables.
 */
export function countersChanged(before: TableCounters, now: TableCounters): 'data-changed' | 'ddl-changed' | undefined {
  if (before.ddlFingerprint !== now.ddlFingerprint) return 'ddl-changed';
  if (before.inserted !== now.inserted || before.updated !== now.updated || before.deleted !== now.deleted || before.filenode !== now.filenode) {
    return 'data-changed';
  }
  return undefined;
}

/** A changed table waits at least this many times its last capture's duration (from that capture's start). */
export const DEFAULT_RECAPTURE_FACTOR = 10;

/** What a table's last successful background capture cost: when it started and how long it took. */
export interface CaptureCost {
  startedAt: Date;
  durationMs: number;
}

/** Reasons that wait for a table's recapture floor; a new table, the startup sweep and retries (which have their own backoff) do not. */
const FLOORED: ReadonlySet<CaptureReason> = new Set(['every-poll', 'data-changed', 'ddl-changed', 'refresh']);

/** The earliest time a table may be captured again: its last start plus `factor` times its duration. */
export function recaptureNotBefore(cost: CaptureCost, factor: number): Date {
  return new Date(cost.startedAt.getTime() + factor * cost.durationMs);
}

export interface PlanOptions {
  /** Capture every table regardless (first poll after start, or --snapshot-every-poll). */
  captureAll?: CaptureReason;
  /** Re-capture an unchanged table whose last capture is older than this (ms); undefined = never. */
  refreshAfterMs?: number;
  /**
   * A table is captured again no sooner than this many times its last capture's duration after
   * that capture started (so one table takes at most 1/factor of the agent's time); 0 or
   * undefined = no floor. Needs `captureCosts`.
   */
  recaptureFactor?: number;
  captureCosts?: ReadonlyMap<number, CaptureCost>;
  now: Date;
}

export function planCaptures(
  observed: ObservedTable[],
  watched: ReadonlyMap<number, WatchedTable>,
  retries: ReadonlyMap<number, RetryState>,
  options: PlanOptions,
): CapturePlan {
  const plan: CapturePlan = { captures: [], deferred: [], unchanged: 0, unchangedRelids: [], waitingForRetry: 0 };
  const capture = (table: ObservedTable, reason: CaptureReason): void => {
    const cost = options.captureCosts?.get(table.relid);
    if (cost && options.recaptureFactor && FLOORED.has(reason)) {
      const notBefore = recaptureNotBefore(cost, options.recaptureFactor);
      if (notBefore.getTime() > options.now.getTime()) {
        plan.deferred.push({ table, reason, notBefore });
        // A refresh is due to age alone: the table is unchanged and its snapshot still matches it.
        if (reason === 'refresh') plan.unchangedRelids.push(table.relid);
        return;
      }
    }
    plan.captures.push({ table, reason });
  };
  for (const table of observed) {
    const retry = retries.get(table.relid);
    if (retry) {
      // A failing table waits for its backoff even on a startup or every-poll sweep.
      if (retry.nextAttemptAt.getTime() <= options.now.getTime()) plan.captures.push({ table, reason: 'retry' });
      else plan.waitingForRetry += 1;
      continue;
    }
    if (options.captureAll) {
      capture(table, options.captureAll);
      continue;
    }
    const known = watched.get(table.relid);
    const previous = known?.capturedCounters;
    if (!previous) {
      plan.captures.push({ table, reason: 'new' });
      continue;
    }
    const change = countersChanged(previous, table.counters);
    if (change) capture(table, change);
    else if (options.refreshAfterMs !== undefined && (known?.capturedAt?.getTime() ?? 0) < options.now.getTime() - options.refreshAfterMs) {
      capture(table, 'refresh');
    } else {
      plan.unchanged += 1;
      plan.unchangedRelids.push(table.relid);
    }
  }
  return plan;
}

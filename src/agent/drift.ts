/**
 * Noticing what got around the guard. A superuser can always disable the event triggers; the
 * agent then sees the result at its next poll: a watched table vanished, or lost a column, with no
 * consumed request covering it. Such drift is recorded with backstop.agent_record_alert (visible
 * in backstop.alerts), logged, counted, and the table's last snapshot is protected from prune.
 */
import type pg from 'pg';
import { parseStatement, StatementParseError, type CriticalOperation } from '../request/statement.js';
import type { ObservedColumn, ObservedTable, WatchedTable } from './state.js';

export type DriftKind = 'table_vanished' | 'column_lost';

export interface DriftCandidate {
  kind: DriftKind;
  table: WatchedTable;
  /** For column_lost: the columns that are gone. */
  lostColumns: ObservedColumn[];
}

/**
 * Compare what the previous poll recorded with what the catalog shows now. Tables are matched by
 * OID and columns by attnum, so renames are not drift. A watched table that is merely out of view
 * (moved to an unwatched schema) is told apart later by `stillExisting`.
 */
export function findDriftCandidates(watched: WatchedTable[], observed: ObservedTable[]): DriftCandidate[] {
  const current = new Map(observed.map((table) => [table.relid, table]));
  const candidates: DriftCandidate[] = [];
  for (const table of watched) {
    const now = current.get(table.relid);
    if (!now) {
      candidates.push({ kind: 'table_vanished', table, lostColumns: [] });
      continue;
    }
    const present = new Set(now.columns.map((column) => column.attnum));
    const lost = table.columns.filter((column) => !present.has(column.attnum));
    if (lost.length > 0) candidates.push({ kind: 'column_lost', table, lostColumns: lost });
  }
  return candidates;
}

/** OIDs among `relids` that still name a table (e.g. moved out of the watched schemas). */
export async function stillExisting(db: pg.Pool | pg.ClientBase, relids: number[]): Promise<Set<number>> {
  if (relids.length === 0) return new Set();
  const { rows } = await db.query<{ relid: string }>(
    `SELECT oid::int8 AS relid FROM pg_catalog.pg_class WHERE oid = ANY ($1::int8[]::oid[]) AND relkind IN ('r', 'p')`,
    [relids],
  );
  return new Set(rows.map((row) => Number(row.relid)));
}

/**
 * How far before "when the agent saw the table (or its column list) first" a consumed request
 * still counts: the consuming transaction's timestamps can predate the agent's observation when the
 * transaction was already open then.
 */
export const CONSUMPTION_SLACK_SECONDS = 3600;

/** The operations in a request's statement that explain each kind of drift. */
const EXPLAINS: Record<DriftKind, ReadonlySet<CriticalOperation['kind']>> = {
  table_vanished: new Set(['drop_table', 'drop_schema']),
  column_lost: new Set(['drop_column']),
};

/**
 * Which candidates are covered by a consumed request. The request must match the object and the
 * kind of change: its consumption covered the table's OID (a name can belong to a table dropped
 * earlier and created again: an old DROP TABLE approval says nothing about the new table), it was
 * consumed after the agent first saw what is now gone, and its statement performs that kind of
 * change (a DROP TABLE or DROP SCHEMA for a vanished table, an ALTER TABLE … DROP COLUMN for a
 * lost column; the statement is parsed, as the client string may hold several statements).
 * One query for all candidates. Returns the indexes of covered candidates.
 */
export async function coveredByConsumedRequests(db: pg.Pool | pg.ClientBase, candidates: DriftCandidate[]): Promise<Set<number>> {
  if (candidates.length === 0) return new Set();
  const { rows } = await db.query<{ index: string; request_id: string; statement: string }>(
    `SELECT c.index, l.id::text AS request_id, l.statement
       FROM unnest($1::int8[], $2::timestamptz[]) WITH ORDINALITY AS c(relid, since, index)
       JOIN backstop.request_consumptions rc
         ON c.relid::oid = ANY (rc.covered_oids)
        AND rc.consumed_at >= c.since - make_interval(secs => $3)
       JOIN backstop.request_log l ON l.id = rc.request_id`,
    [
      candidates.map((c) => c.table.relid),
      candidates.map((c) => (c.kind === 'table_vanished' ? c.table.firstSeenAt : c.table.columnsSeenAt).toISOString()),
      CONSUMPTION_SLACK_SECONDS,
    ],
  );
  const operations = new Map<string, Set<CriticalOperation['kind']>>();
  const covered = new Set<number>();
  for (const row of rows) {
    const index = Number(row.index) - 1;
    let kinds = operations.get(row.request_id);
    if (!kinds) {
      kinds = await operationKinds(row.statement);
      operations.set(row.request_id, kinds);
    }
    if ([...kinds].some((kind) => EXPLAINS[candidates[index]!.kind].has(kind))) covered.add(index);
  }
  return covered;
}

/** The kinds of critical operation a statement performs; none when it cannot be parsed. */
async function operationKinds(statement: string): Promise<Set<CriticalOperation['kind']>> {
  try {
    return new Set((await parseStatement(statement)).operations.map((operation) => operation.kind));
  } catch (error) {
    if (error instanceof StatementParseError) return new Set();
    throw error;
  }
}

export function describeDrift(candidate: DriftCandidate): string {
  const name = `${candidate.table.schema}.${candidate.table.table}`;
  if (candidate.kind === 'table_vanished') {
    return `table ${name} disappeared without a consumed Backstop request (were the guard's event triggers disabled?)`;
  }
  const columns = candidate.lostColumns.map((column) => column.name).join(', ');
  return `table ${name} lost column(s) ${columns} without a consumed Backstop request (were the guard's event triggers disabled?)`;
}

/** Record one alert in the database (backstop.alerts). */
export async function recordAlert(db: pg.Pool | pg.ClientBase, candidate: DriftCandidate, detail: string): Promise<void> {
  await db.query('SELECT backstop.agent_record_alert($1, $2, $3, $4)', [candidate.kind, candidate.table.schema, candidate.table.table, detail]);
}

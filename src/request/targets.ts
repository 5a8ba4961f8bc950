/**
 * From parsed operations to the exact tables a request touches, resolved in the catalog the way
 * PostgreSQL will resolve them when the statement runs: unqualified names through the
 * requester's search_path, partitions and inheritance children, tables reached by
 * TRUNCATE … CASCADE through foreign keys, and every table of a dropped schema.
 */
import type pg from 'pg';
import { quoteIdent } from '../db/identifiers.js';
import type { CriticalOperation, RelationName } from './statement.js';
import { searchPathSchemas } from './search-path.js';

export interface Queryable {
  query<R extends pg.QueryResultRow = any>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
}

export type TargetOrigin = 'named' | 'partition or child' | 'foreign key cascade' | 'schema';

export interface ResolvedTarget {
  oid: number;
  schema: string;
  table: string;
  origin: TargetOrigin;
  /** A partition (its rows are also read through its partitioned parent). */
  partition: boolean;
}

/** What an approval allows, item by item (the SQL checks each dropped / rewritten / truncated object against these). */
export type CoverageKind = 'drop table' | 'drop column' | 'alter column type' | 'truncate';

export interface CoverageItem {
  kind: CoverageKind;
  relid: number;
  /** The column, for drop column / alter column type (each table has its own attnum). */
  attnum?: number;
}

export interface Resolution {
  targets: ResolvedTarget[];
  /** Exactly what the statement reaches: its kind, tables and columns. */
  coverage: CoverageItem[];
  /** Why a named target cannot be guarded (missing, not a table); the request is denied with these. */
  problems: string[];
}

export interface ResolveContext {
  searchPath: string | null;
  requester: string;
}

interface RelationRow {
  oid: number;
  schema: string;
  table: string;
  relkind: string;
  partition: boolean;
}

const TABLE_KINDS = new Set(['r', 'p']);
const KIND_NAMES: Record<string, string> = {
  v: 'a view', m: 'a materialized view', i: 'an index', I: 'an index', S: 'a sequence', f: 'a foreign table', c: 'a composite type', t: 'a TOAST table',
};

/** Quoted only where PostgreSQL needs it (as quote_ident does), so messages read like SQL a DBA types. */
export function readableIdent(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : quoteIdent(name);
}

function written(relation: RelationName): string {
  return relation.schema ? `${readableIdent(relation.schema)}.${readableIdent(relation.name)}` : readableIdent(relation.name);
}

export function qualifiedTarget(target: { schema: string; table: string }): string {
  return `${readableIdent(target.schema)}.${readableIdent(target.table)}`;
}

async function findRelation(db: Queryable, relation: RelationName, context: ResolveContext): Promise<RelationRow | undefined> {
  const schemas = relation.schema ? [relation.schema] : searchPathSchemas(context.searchPath, context.requester);
  const { rows } = await db.query<RelationRow>(
    `SELECT c.oid AS oid, n.nspname AS schema, c.relname AS table, c.relkind::text AS relkind, c.relispartition AS partition
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relname = $1 AND n.nspname = ANY($2::text[])
      ORDER BY array_position($2::text[], n.nspname::text) LIMIT 1`,
    [relation.name, schemas],
  );
  return rows[0];
}

/** Every partition and inheritance descendant of the given tables. */
async function descendants(db: Queryable, oids: number[]): Promise<RelationRow[]> {
  if (oids.length === 0) return [];
  const { rows } = await db.query<RelationRow>(
    `WITH RECURSIVE tree(oid) AS (
        SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = ANY($1::oid[])
        UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.oid)
     SELECT c.oid AS oid, n.nspname AS schema, c.relname AS table, c.relkind::text AS relkind, c.relispartition AS partition
       FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.oid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p')`,
    [oids],
  );
  return rows;
}

/** Tables whose foreign keys reference the given tables (one step; the caller iterates). */
async function referencing(db: Queryable, oids: number[]): Promise<RelationRow[]> {
  if (oids.length === 0) return [];
  const { rows } = await db.query<RelationRow>(
    `SELECT DISTINCT c.oid AS oid, n.nspname AS schema, c.relname AS table, c.relkind::text AS relkind, c.relispartition AS partition
       FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE k.contype = 'f' AND k.confrelid = ANY($1::oid[]) AND c.relkind IN ('r', 'p')`,
    [oids],
  );
  return rows;
}

async function schemaTables(db: Queryable, schema: string): Promise<{ exists: boolean; tables: RelationRow[] }> {
  const { rows } = await db.query<RelationRow & { has_schema: boolean }>(
    `SELECT c.oid AS oid, n.nspname AS schema, c.relname AS table, c.relkind::text AS relkind, c.relispartition AS partition
       FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')`,
    [schema],
  );
  if (rows.length > 0) return { exists: true, tables: rows };
  const found = await db.query(`SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1`, [schema]);
  return { exists: (found.rowCount ?? 0) > 0, tables: [] };
}

/** attnum of the live column `column` in each table (tables without it are left out). */
async function columnNumbers(db: Queryable, oids: number[], column: string): Promise<Map<number, number>> {
  const { rows } = await db.query<{ relid: number; attnum: number }>(
    `SELECT a.attrelid::bigint AS relid, a.attnum::integer AS attnum FROM pg_catalog.pg_attribute a
      WHERE a.attrelid = ANY($1::oid[]) AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped`,
    [oids, column],
  );
  return new Map(rows.map((row) => [Number(row.relid), row.attnum]));
}

const COVERAGE_KIND: Record<CriticalOperation['kind'], CoverageKind> = {
  drop_table: 'drop table',
  drop_schema: 'drop table',
  drop_column: 'drop column',
  alter_column_type: 'alter column type',
  truncate: 'truncate',
};

export async function resolveTargets(db: Queryable, operations: CriticalOperation[], context: ResolveContext): Promise<Resolution> {
  const targets = new Map<number, ResolvedTarget>();
  const coverage = new Map<string, CoverageItem>();
  const problems: string[] = [];
  const add = (row: RelationRow, origin: TargetOrigin): boolean => {
    const known = targets.get(row.oid);
    // A table the statement names is imaged on its own, even when it was first reached as a
    // partition of another (it may be detached before the statement runs).
    if (known && origin === 'named') known.origin = 'named';
    if (known) return false;
    targets.set(row.oid, { oid: row.oid, schema: row.schema, table: row.table, origin, partition: row.partition });
    return true;
  };
  const cover = (item: CoverageItem) => coverage.set(`${item.kind}/${item.relid}/${item.attnum ?? ''}`, item);

  for (const operation of operations) {
    const kind = COVERAGE_KIND[operation.kind];
    if (operation.kind === 'drop_schema') {
      const { exists, tables } = await schemaTables(db, operation.schema);
      if (!exists && !operation.missingOk) problems.push(`schema ${readableIdent(operation.schema)} does not exist`);
      for (const table of tables) {
        add(table, 'schema');
        cover({ kind, relid: table.oid });
      }
      continue;
    }
    const row = await findRelation(db, operation.relation, context);
    if (!row) {
      const missingOk = operation.kind === 'truncate' ? false : operation.missingOk;
      if (!missingOk) problems.push(`table ${written(operation.relation)} does not exist (searched ${operation.relation.schema ? 'its schema' : `search_path ${context.searchPath ?? '(default)'}`})`);
      continue;
    }
    if (!TABLE_KINDS.has(row.relkind)) {
      problems.push(`${qualifiedTarget(row)} is ${KIND_NAMES[row.relkind] ?? `a relation of kind ${row.relkind}`}, not a table`);
      continue;
    }
    add(row, 'named');
    // The tables the statement itself reaches: DROP TABLE always takes partitions along;
    // ALTER / TRUNCATE do unless ONLY was written (a partitioned table always recurses).
    const reached = [row.oid];
    const withChildren = operation.kind === 'drop_table' || row.relkind === 'p' || operation.includeChildren;
    if (withChildren) {
      for (const child of await descendants(db, [row.oid])) {
        add(child, 'partition or child');
        reached.push(child.oid);
      }
    }
    if (operation.kind === 'truncate' && operation.cascade) {
      // TRUNCATE … CASCADE also empties every table that references one being emptied.
      let frontier = [...reached];
      while (frontier.length > 0) {
        const next: number[] = [];
        for (const ref of await referencing(db, frontier)) {
          add(ref, 'foreign key cascade');
          if (!reached.includes(ref.oid)) {
            reached.push(ref.oid);
            next.push(ref.oid);
          }
        }
        for (const child of await descendants(db, next)) {
          add(child, 'partition or child');
          if (!reached.includes(child.oid)) {
            reached.push(child.oid);
            next.push(child.oid);
          }
        }
        frontier = next;
      }
    }
    if (operation.kind === 'drop_column' || operation.kind === 'alter_column_type') {
      const attnums = await columnNumbers(db, reached, operation.column);
      for (const [relid, attnum] of attnums) cover({ kind, relid, attnum });
    } else {
      for (const relid of reached) cover({ kind, relid });
    }
  }
  return { targets: [...targets.values()], coverage: [...coverage.values()], problems };
}

/**
 * The order-independent content hash of a table: the row count and the sum, as numeric, of the
 * first 64 bits (signed) of md5(t::text) over every row, under the canonical session settings.
 * Capture records it in the manifest; restore computes it on the restored table with this same
 * function and compares. Identical rows in any order give the identical hash.
 */
import type pg from 'pg';
import { NotFoundError } from '../errors/index.js';
import { displayName, quoteQualified, type QualifiedName } from '../db/identifiers.js';
import { withCanonicalSettings } from './session-settings.js';

export const CONTENT_HASH_ALGORITHM = 'sum-md5-int64/v1';

export interface ContentHash {
  algorithm: string;
  row_count: number;
  /** Decimal text of the sum (may exceed 64 bits). */
  value: string;
}

/** SQL for the hash of one row's text form (`t::text`). */
export function hashOfTextSql(rowText: string): string {
  return `('x' || pg_catalog.substr(pg_catalog.md5(${rowText}), 1, 16))::bit(64)::bigint::numeric`;
}

/** SQL for one row's hash, given the alias of the row in FROM. */
export function rowHashSql(rowAlias: string): string {
  return hashOfTextSql(`${rowAlias}::text`);
}

/** The SELECT-list items that produce `row_count` and `hash_value` over rows aliased `rowAlias`. */
export function contentHashSelectSql(rowAlias: string): string {
  return `pg_catalog.count(*)::bigint AS row_count, COALESCE(pg_catalog.sum(${rowHashSql(rowAlias)}), 0)::text AS hash_value`;
}

/**
 * FROM target for a relation's own rows: a partitioned table includes its partitions, while a
 * plain table excludes inheritance children (they are tables of their own).
 */
export async function rowSourceSql(client: pg.ClientBase, relation: QualifiedName): Promise<string> {
  const { rows } = await client.query<{ relkind: string }>(
    `SELECT c.relkind::text AS relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'm', 'f', 'v')`,
    [relation.schema, relation.table],
  );
  const relkind = rows[0]?.relkind;
  if (!relkind) throw new NotFoundError(`table ${displayName(relation)} does not exist`, { hint: 'check the schema and table name (quote names with capitals: "My Table")' });
  return relkind === 'r' ? `ONLY ${quoteQualified(relation)}` : quoteQualified(relation);
}

/** Compute the content hash of a relation's rows as the current transaction sees them. */
export async function contentHash(client: pg.ClientBase, relation: QualifiedName): Promise<ContentHash> {
  const source = await rowSourceSql(client, relation);
  return withCanonicalSettings(client, async () => {
    const { rows } = await client.query<{ row_count: string; hash_value: string }>(`SELECT ${contentHashSelectSql('t')} FROM ${source} AS t`);
    return { algorithm: CONTENT_HASH_ALGORITHM, row_count: Number(rows[0]!.row_count), value: rows[0]!.hash_value };
  });
}

/** True when two hashes describe the same rows. */
export function sameContent(a: ContentHash, b: ContentHash): boolean {
  return a.algorithm === b.algorithm && a.row_count === b.row_count && a.value === b.value;
}

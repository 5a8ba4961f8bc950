/**
 * The order-independent content hash of a table's rows, recorded in every manifest and checked on
 * restore. Identical rows in any order give the identical hash.
 *
 * row-fields-sum128/v2 (current): every row as PostgreSQL prints it under the canonical session
 * settings (COPY text format, every column in attnum order), decoded into fields and hashed by
 * src/snapshot/row-hash; the hash is the 128-bit sum of the row hashes. Capture computes it on the
 * COPY it encodes; restore on the COPY text it loads, and, when that is inconclusive, on the
 * loaded rows read back with COPY.
 *
 * sum-md5-int64/v1 (snapshots of earlier versions): the sum, as numeric, of the first 64 bits
 * (signed) of md5(t::text) over every row, computed by the server.
 */
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import copyStreams from 'pg-copy-streams';
import { displayName, quoteIdent, quoteQualified, type QualifiedName } from '../db/identifiers.js';
import { NotFoundError } from '../errors/index.js';
import { ROW_HASH_ALGORITHM, RowHasher, hashingStream, type RowHashResult } from './row-hash/row-hasher.js';
import { withCanonicalEveryRowSettings } from './session-settings.js';

export const CONTENT_HASH_ALGORITHM = ROW_HASH_ALGORITHM;
export const LEGACY_MD5_ALGORITHM = 'sum-md5-int64/v1';

export interface ContentHash {
  algorithm: string;
  row_count: number;
  /** Decimal text of the sum. */
  value: string;
}

export function contentHashOf(result: RowHashResult): ContentHash {
  return { algorithm: CONTENT_HASH_ALGORITHM, row_count: result.rows, value: result.value };
}

export interface RowSource {
  /**
   * FROM target for the relation's own rows: a partitioned table includes its partitions, while
   * a plain table excludes inheritance children (they are tables of their own).
   */
  from: string;
  /** pg_class.relkind: r, p, m, f or v. */
  relkind: string;
  /**
   * Row-level security applies to the connected role on this relation (row_security_active):
   * policies would hide rows from it, and a read with row_security = off fails.
   */
  rowSecurityApplies: boolean;
}

export async function rowSource(client: pg.ClientBase, relation: QualifiedName): Promise<RowSource> {
  const { rows } = await client.query<{ relkind: string; row_security: boolean }>(
    `SELECT c.relkind::text AS relkind, pg_catalog.row_security_active(c.oid) AS row_security
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'm', 'f', 'v')`,
    [relation.schema, relation.table],
  );
  const row = rows[0];
  if (!row) throw new NotFoundError(`table ${displayName(relation)} does not exist`, { hint: 'check the schema and table name (quote names with capitals: "My Table")' });
  return { from: row.relkind === 'r' ? `ONLY ${quoteQualified(relation)}` : quoteQualified(relation), relkind: row.relkind, rowSecurityApplies: row.row_security };
}

/** The FROM target of rowSource. */
export async function rowSourceSql(client: pg.ClientBase, relation: QualifiedName): Promise<string> {
  return (await rowSource(client, relation)).from;
}

/** The COPY (text format) that prints `columns` (all of them, in attnum order, when omitted) of rows from `source`. */
export function copyOutSql(source: string, columns?: readonly string[], where?: string): string {
  const list = columns ? columns.map(quoteIdent).join(', ') : '*';
  return `COPY (SELECT ${list} FROM ${source} AS t${where ? ` WHERE ${where}` : ''}) TO STDOUT`;
}

/** The sum of two content hashes of the same algorithm: the hash of both row sets together. */
export function addContentHashes(a: ContentHash, b: ContentHash): ContentHash {
  if (a.algorithm !== b.algorithm || a.algorithm !== CONTENT_HASH_ALGORITHM) {
    throw new Error(`content hashes ${a.algorithm} and ${b.algorithm} cannot be added`);
  }
  const sum = (BigInt(a.value) + BigInt(b.value)) % (1n << 128n);
  return { algorithm: a.algorithm, row_count: a.row_count + b.row_count, value: sum.toString() };
}

/** Run a COPY … TO STDOUT (text format) and hash its rows; the caller sets the session settings. */
async function hashCopyOut(client: pg.ClientBase, copySql: string): Promise<RowHashResult> {
  const hasher = new RowHasher();
  const discard = new Writable({
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
  await pipeline(client.query(copyStreams.to(copySql)), hashingStream(hasher), discard);
  return hasher.result();
}

/**
 * The content hash of a relation's rows as the current transaction sees them, read with COPY
 * under the canonical settings and row_security = off (every row, or an error). `columns`
 * (names, in the snapshot's order) defaults to every column in attnum order.
 */
export async function contentHash(client: pg.ClientBase, relation: QualifiedName, columns?: readonly string[]): Promise<ContentHash> {
  const source = await rowSourceSql(client, relation);
  const result = await withCanonicalEveryRowSettings(client, () => hashCopyOut(client, copyOutSql(source, columns)));
  return contentHashOf(result);
}

/** The v1 hash (sum of md5(t::text) prefixes), for snapshots captured before v2. */
export async function legacyContentHash(client: pg.ClientBase, relation: QualifiedName): Promise<ContentHash> {
  const source = await rowSourceSql(client, relation);
  return withCanonicalEveryRowSettings(client, async () => {
    const { rows } = await client.query<{ row_count: string; hash_value: string }>(
      `SELECT pg_catalog.count(*)::bigint AS row_count,
              COALESCE(pg_catalog.sum(('x' || pg_catalog.substr(pg_catalog.md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text AS hash_value
         FROM ${source} AS t`,
    );
    return { algorithm: LEGACY_MD5_ALGORITHM, row_count: Number(rows[0]!.row_count), value: rows[0]!.hash_value };
  });
}

/** True when two hashes describe the same rows. */
export function sameContent(a: ContentHash, b: ContentHash): boolean {
  return a.algorithm === b.algorithm && a.row_count === b.row_count && a.value === b.value;
}

/**
 * A census of a table's row versions, taken inside the transaction snapshot a capture reads in, so
 * that a later transaction can prove — exactly, without reading the rows again — that the table
 * still holds the same rows. Statistics counters lag and prove nothing; row versions do:
 *
 * Every visible row version has an inserting transaction (xmin). Measured from the capture
 * snapshot's xmin (B) and span (xmax − xmin), modulo 2^32, each version is
 *   - old:   inserted before B, so it was visible to the capture (and stays the same version until
 *            it is updated or deleted, which gives a new version or none);
 *   - mid:   inserted by a transaction in the capture snapshot's in-flight window: visible to it
 *            or not, which only the identity (tableoid, ctid, xmin) of each such version settles;
 *   - newer: inserted after the capture snapshot was taken: not in the image.
 * The old versions a later snapshot sees are a subset of the old versions the capture saw, so
 * equal counts per relation mean the same old versions. Hence: same old counts, the same mid
 * versions and no newer versions per relation, and the same columns ⇒ the same rows. (Frozen
 * versions of long ago keep their raw xmin and can fall in any class; they are in both censuses
 * in the same class, and a capture that sees a "newer" one records that no proof is possible.)
 */
import type pg from 'pg';

/** Counts per relation (tableoid) holding rows, with the identities of its mid versions. */
export interface RelationCensus {
  old: number;
  mid: number;
  newer: number;
}

export interface RowCensus {
  /** The capture snapshot's xmin modulo 2^32, and xmax − xmin: the class boundaries. */
  xmin32: number;
  span: number;
  relations: Record<string, RelationCensus>;
  /** `tableoid:ctid:xmin` of every mid version, sorted; null when there were too many to keep. */
  midVersions: string[] | null;
  /**
   * `tableoid:ctid` of every newer version (inserted after the capture's snapshot), sorted, when
   * few: under the statement's lock they locate the added rows without another scan. Absent in
   * censuses taken with a capture (which sees none) and when there were too many.
   */
  newerVersions?: string[];
  /** attnum:name:type:typmod of the table's columns. */
  columns: string;
}

/** Mid versions kept for a proof; beyond this the completion captures again. */
export const MAX_MID_VERSIONS = 10_000;

/** Places of newer versions kept to read the added rows directly (beyond this: one more scan). */
export const MAX_NEWER_VERSIONS = 100_000;

/**
 * How far a row version's xmin lies past the boundary B, as integers only (text conversions of
 * xmin cost 5× the scan): age(x) is (N − x) for this transaction's stable N, so with
 * K = age(B), x − B = K − age(x). Young versions (inserted at or after B) have age(x) ≤ K; the
 * special xids (frozen in old clusters) have age INT_MAX and count as old.
 */
function youngSql(k: number): string {
  return `pg_catalog.age(t.xmin) <= ${k}`;
}
function pastBoundarySql(k: number): string {
  return `(${k} - pg_catalog.age(t.xmin))`;
}

/** pg_current_snapshot() text `xmin:xmax:xip,...` → class boundaries. */
export function censusBounds(snapshot: string): { xmin32: number; span: number } {
  const match = /^(\d+):(\d+):/.exec(snapshot);
  if (!match) throw new Error(`not a pg_snapshot: ${snapshot}`);
  const xmin = BigInt(match[1]!);
  const xmax = BigInt(match[2]!);
  return { xmin32: Number(xmin % 4294967296n), span: Number(xmax - xmin) };
}

/** The current transaction snapshot, as pg_current_snapshot() prints it. */
export async function currentSnapshot(client: pg.ClientBase): Promise<string> {
  const { rows } = await client.query<{ snapshot: string }>('SELECT pg_catalog.pg_current_snapshot()::text AS snapshot');
  return rows[0]!.snapshot;
}


/**
 * Count the row versions of `from` (a FROM target: `ONLY t`, or a partitioned table with its
 * partitions) by class, in the calling transaction's snapshot, with boundaries `bounds`.
 * One sequential scan reading only system columns (≈ 0.1 s per million rows).
 */
/** age(B) in the calling transaction (see youngSql); null when B is not a normal xid. */
async function boundaryAge(client: pg.ClientBase, xmin32: number): Promise<number | null> {
  if (xmin32 < 3) return null;
  const { rows } = await client.query<{ k: number }>('SELECT pg_catalog.age($1::text::xid) AS k', [String(xmin32)]);
  const k = rows[0]!.k;
  return k === 2147483647 ? null : k;
}

/**
 * What a census of `relation` (a quoted, qualified name) counts, in one catalog query: the
 * table's oid, its columns (attnum:name:type:typmod) and the relations holding its rows — its
 * leaf partitions when it is partitioned, else itself — with their quoted names.
 */
async function censusSubject(client: pg.ClientBase, relation: string): Promise<{ columns: string; relations: Array<{ relid: number; name: string }> }> {
  const { rows } = await client.query<{ columns: string | null; relations: Array<{ relid: number; name: string }> }>(
    `WITH subject AS (SELECT $1::regclass::oid AS relid),
          holding AS (
            SELECT p.relid FROM subject, pg_catalog.pg_partition_tree(subject.relid) AS p WHERE p.isleaf
            UNION SELECT subject.relid FROM subject JOIN pg_catalog.pg_class c ON c.oid = subject.relid WHERE c.relkind = 'r')
     SELECT (SELECT pg_catalog.string_agg(a.attnum || ':' || a.attname || ':' || a.atttypid || ':' || a.atttypmod, ',' ORDER BY a.attnum)
               FROM pg_catalog.pg_attribute a, subject WHERE a.attrelid = subject.relid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
            (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_object('relid', c.oid::bigint, 'name', pg_catalog.format('%I.%I', n.nspname, c.relname)) ORDER BY c.oid), '[]')
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid IN (SELECT relid FROM holding) AND c.relkind IN ('r', 'p')) AS relations`,
    [relation],
  );
  return { columns: rows[0]?.columns ?? '', relations: (rows[0]?.relations ?? []).map((r) => ({ relid: Number(r.relid), name: r.name })) };
}

/**
 * Count the row versions of table `relation` (quoted, qualified) (its own rows, or its leaf partitions' rows) by class,
 * in the calling transaction's snapshot, with boundaries `bounds`. One sequential scan of each
 * relation reading only system columns (≈ 0.13 s per million rows), with the identities of the
 * (few) mid versions: the in-flight window is a handful of transactions; a capture that raced a
 * bulk load keeps at most MAX_MID_VERSIONS of them and otherwise records that no proof is possible.
 */
export async function takeCensus(
  client: pg.ClientBase,
  relation: string,
  bounds: { xmin32: number; span: number },
): Promise<RowCensus> {
  const { columns, relations: holding } = await censusSubject(client, relation);
  const k = await boundaryAge(client, bounds.xmin32);
  if (k === null) return { ...bounds, relations: {}, midVersions: null, columns };
  const young = youngSql(k);
  const past = pastBoundarySql(k);
  const relations: Record<string, RelationCensus> = {};
  const versions: string[] = [];
  const newerVersions: string[] = [];
  for (const { relid: physical, name } of holding) {
    const { rows } = await client.query<{ total: string; mid: string; newer: string; versions: string[] | null; newer_versions: string[] | null }>(
      `SELECT pg_catalog.count(*) AS total,
              pg_catalog.count(*) FILTER (WHERE ${young} AND ${past} < ${bounds.span}) AS mid,
              pg_catalog.count(*) FILTER (WHERE ${young} AND ${past} >= ${bounds.span}) AS newer,
              pg_catalog.array_agg(t.tableoid::oid::text || ':' || t.ctid::text || ':' || t.xmin::text)
                FILTER (WHERE ${young} AND ${past} < ${bounds.span}) AS versions,
              pg_catalog.array_agg(t.tableoid::oid::text || ':' || t.ctid::text)
                FILTER (WHERE ${young} AND ${past} >= ${bounds.span}) AS newer_versions
         FROM ONLY ${name} AS t`,
    );
    const row = rows[0]!;
    const mid = Number(row.mid);
    const newer = Number(row.newer);
    relations[String(physical)] = { old: Number(row.total) - mid - newer, mid, newer };
    versions.push(...(row.versions ?? []));
    newerVersions.push(...(row.newer_versions ?? []));
  }
  const midVersions = versions.length > MAX_MID_VERSIONS ? null : versions.sort();
  return {
    ...bounds, relations, midVersions, columns,
    ...(newerVersions.length <= MAX_NEWER_VERSIONS ? { newerVersions: newerVersions.sort() } : {}),
  };
}


export type CensusVerdict =
  | { unchanged: true }
  /** Rows were only added: every version the capture saw is still there. `added` selects the new ones. */
  | { unchanged: false; added: true; reason: string }
  | { unchanged: false; added: false; reason: string };

/**
 * Does `later` (taken in a snapshot after every writer stopped) prove the table holds exactly
 * the rows the capture behind `earlier` saw — or those plus rows added since? Pure: the reason says
 * what differs.
 */
export function compareCensus(earlier: RowCensus, later: RowCensus): CensusVerdict {
  const changed = (reason: string): CensusVerdict => ({ unchanged: false, added: false, reason });
  if (earlier.xmin32 !== later.xmin32 || earlier.span !== later.span) return changed('the censuses were taken with different boundaries');
  if (earlier.columns !== later.columns) return changed('the columns changed');
  if (earlier.midVersions === null || later.midVersions === null) return changed('too many row versions from the capture\'s in-flight window to compare');
  let newer = 0;
  const relids = new Set([...Object.keys(earlier.relations), ...Object.keys(later.relations)]);
  for (const relid of relids) {
    const before = earlier.relations[relid] ?? { old: 0, mid: 0, newer: 0 };
    const after = later.relations[relid] ?? { old: 0, mid: 0, newer: 0 };
    if (before.newer > 0) return changed('the capture saw row versions it cannot place (frozen long ago)');
    if (after.old !== before.old) return changed(`${Math.abs(before.old - after.old)} row(s) updated or deleted since the capture (or moved between relations)`);
    newer += after.newer;
  }
  const seen = new Set(earlier.midVersions);
  const kept = later.midVersions.filter((version) => seen.has(version));
  if (kept.length !== earlier.midVersions.length) return changed('rows of transactions in flight during the capture were updated or deleted');
  const addedMid = later.midVersions.length - kept.length;
  if (newer === 0 && addedMid === 0) return { unchanged: true };
  return { unchanged: false, added: true, reason: `${newer + addedMid} row(s) written since the capture` };
}

/**
 * The SQL condition (over the alias `t` of the census's FROM target) that selects the row
 * versions `later` found and `earlier` did not: newer ones, and mid ones it did not see. When
 * `later` knows where each of them lies (tableoid and ctid, taken under the same lock, so they
 * cannot move), the condition names them and PostgreSQL reads just those (a TID scan); otherwise
 * it classifies every row again. Only numbers and version identities reach it, quoted as literals.
 */
export function addedRowsCondition(earlier: RowCensus, later: RowCensus, quoteLiteral: (value: string) => string): string {
  const seen = new Set(earlier.midVersions ?? []);
  const unseenMid = (later.midVersions ?? []).filter((version) => !seen.has(version));
  if (later.newerVersions && later.midVersions) {
    const places = [...later.newerVersions, ...unseenMid.map((version) => version.slice(0, version.lastIndexOf(':')))];
    if (places.length === 0) return 'false';
    const tids = `{${places.map((place) => `"${place.slice(place.indexOf(':') + 1)}"`).join(',')}}`;
    const ids = `{${places.map((place) => `"${place}"`).join(',')}}`;
    return `t.ctid = ANY (${quoteLiteral(tids)}::tid[]) AND (t.tableoid::oid::text || ':' || t.ctid::text) = ANY (${quoteLiteral(ids)}::text[])`;
  }
  const k = `pg_catalog.age(${quoteLiteral(String(Math.trunc(earlier.xmin32)))}::xid)`;
  const young = `pg_catalog.age(t.xmin) <= ${k}`;
  const past = `(${k} - pg_catalog.age(t.xmin))`;
  const version = `t.tableoid::oid::text || ':' || t.ctid::text || ':' || t.xmin::text`;
  const seenLiteral = `{${(earlier.midVersions ?? []).map((v) => `"${v}"`).join(',')}}`;
  const span = Math.trunc(earlier.span);
  return `${young} AND (${past} >= ${span} OR (${version}) <> ALL (${quoteLiteral(seenLiteral)}::text[]))`;
}

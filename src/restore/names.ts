/**
 * Names for the objects a restore creates. Indexes, sequences, partitions and index-backed
 * constraints share one namespace per schema with tables, so restoring `users` into
 * `users_recovered` beside the original needs new names for all of them: the original name with
 * the table's name replaced (`users_pkey` → `users_recovered_pkey`), or prefixed when it does not
 * contain it, then made free with `_2`, `_3`, … PostgreSQL truncates names to 63 bytes; so do we,
 * on a character boundary, before checking.
 */
import type pg from 'pg';

export const MAX_IDENTIFIER_BYTES = 63;

export function truncateIdentifier(name: string, maxBytes = MAX_IDENTIFIER_BYTES): string {
  if (Buffer.byteLength(name) <= maxBytes) return name;
  let out = '';
  for (const char of name) {
    if (Buffer.byteLength(out + char) > maxBytes) break;
    out += char;
  }
  return out;
}

/** `users_pkey` for table `users` restored as `users_recovered` → `users_recovered_pkey`. */
export function renameForTable(original: string, sourceTable: string, targetTable: string): string {
  if (sourceTable === targetTable) return original;
  const at = original.indexOf(sourceTable);
  const renamed = at === -1 ? `${targetTable}_${original}` : original.slice(0, at) + targetTable + original.slice(at + sourceTable.length);
  return truncateIdentifier(renamed);
}

/** Tracks which relation names in one schema are taken, and hands out free ones. */
export class SchemaNames {
  private readonly taken: Set<string>;

  constructor(taken: Iterable<string>) {
    this.taken = new Set(taken);
  }

  isTaken(name: string): boolean {
    return this.taken.has(name);
  }

  /** `wanted` if free, else `wanted_2`, `wanted_3`, … (truncated to fit); marks it taken. */
  claim(wanted: string): string {
    let name = truncateIdentifier(wanted);
    for (let n = 2; this.taken.has(name); n += 1) {
      const suffix = `_${n}`;
      name = truncateIdentifier(wanted, MAX_IDENTIFIER_BYTES - suffix.length) + suffix;
    }
    this.taken.add(name);
    return name;
  }

  /** Mark a name taken without checking (e.g. the table being created). */
  reserve(name: string): void {
    this.taken.add(name);
  }

  release(name: string): void {
    this.taken.delete(name);
  }
}

/**
 * Relation names taken in `schema` (tables, indexes, sequences, views, types' relations…). With
 * `ignoringTable`, the names that vanish when that table is dropped (itself, its partitions,
 * their indexes and owned sequences) count as free.
 */
export async function takenRelationNames(client: pg.ClientBase, schema: string, ignoringTable?: string): Promise<SchemaNames> {
  const { rows } = await client.query<{ name: string }>(
    `WITH doomed AS (
       -- pg_partition_tree lists nothing for a plain table: add the table itself.
       SELECT u.oid
         FROM pg_catalog.pg_namespace n
         JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = $2
         CROSS JOIN LATERAL (SELECT c.oid UNION SELECT t.relid FROM pg_catalog.pg_partition_tree(c.oid) t) AS u(oid)
        WHERE n.nspname = $1
     ), doomed_all AS (
       SELECT oid FROM doomed
       UNION SELECT i.indexrelid FROM pg_catalog.pg_index i WHERE i.indrelid IN (SELECT oid FROM doomed)
       UNION SELECT d.objid FROM pg_catalog.pg_depend d
              WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
                AND d.deptype IN ('a', 'i') AND d.refobjid IN (SELECT oid FROM doomed)
     )
     SELECT c.relname AS name
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.oid NOT IN (SELECT oid FROM doomed_all)`,
    [schema, ignoringTable ?? null],
  );
  return new SchemaNames(rows.map((row) => row.name));
}

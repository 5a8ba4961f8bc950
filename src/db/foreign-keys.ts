/**
 * Reading a foreign key out of the catalog, shared by a table's own constraints (catalog.ts) and
 * other tables' keys to it (dependents.ts): its columns and, cut from pg_get_constraintdef, the
 * actions that follow `REFERENCES t(cols)`, kept as PostgreSQL prints them.
 */
/**
 * A foreign key's parts as SQL select items, over pg_constraint `con` and its referenced table
 * `rc` in schema `rn`: `columns`, `referenced_columns`, and `fk_prefix`, the text
 * pg_get_constraintdef starts with before the actions (null for other constraints).
 */
export const FOREIGN_KEY_PARTS_SQL = `ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
                    JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord)::text[] AS columns,
            ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
                    JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.ord)::text[] AS referenced_columns,
            'FOREIGN KEY (' || (SELECT string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY k.ord)
                                  FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
                                  JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num)
            || ') REFERENCES ' || pg_catalog.quote_ident(rn.nspname) || '.' || pg_catalog.quote_ident(rc.relname)
            || '(' || (SELECT string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY k.ord)
                         FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
                         JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num) || ')' AS fk_prefix`;

/** What follows `REFERENCES t(cols)` in a foreign key's definition (MATCH, ON DELETE/UPDATE, DEFERRABLE, NOT VALID). */
export function foreignKeyActions(name: string, definition: string, prefix: string): string {
  if (!definition.startsWith(prefix)) throw new Error(`unexpected foreign key definition for ${name}: ${definition}`);
  return definition.slice(prefix.length);
}

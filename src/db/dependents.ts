/**
 * What a `DROP TABLE … CASCADE` or `DROP SCHEMA … CASCADE` takes besides the table itself, read
 * while the table still exists so that a restore under the table's own name can undo the drop:
 * the views and materialized views built on it (directly or through other views), the foreign
 * keys of other tables that reference it, its schema, and the user-defined types of that schema
 * its columns need. describeTable (catalog.ts) stores them as optional fields of the
 * TableDefinition; manifests written before they existed simply lack them.
 *
 * Definitions are printed with search_path set to the table's schema followed by the schemas of
 * its dependent views (see `searchPath` below), not with the empty path the rest of the catalog
 * uses. PostgreSQL then leaves every reference to a relation or type of those schemas
 * unqualified, and a restore can replay the text with a search_path that finds the restored
 * objects first — in their own schema (the CLI), or in a staging schema where the agent builds
 * them before moving them into place. Names in any other schema stay qualified, and a replay
 * checks afterwards that each view reads the same relations it read when it was captured.
 */
import type pg from 'pg';
import { FOREIGN_KEY_PARTS_SQL, foreignKeyActions } from './foreign-keys.js';
import type { QualifiedName } from './identifiers.js';

/** One privilege of an ACL (aclexplode), in the ACL's order. `grantee` null is PUBLIC. */
export interface AclEntry {
  grantee: string | null;
  grantor: string;
  privilege: string;
  grantable: boolean;
}

/** null: the default privileges (never granted or revoked); [] : everything revoked. */
export type Acl = AclEntry[] | null;

export interface DependentColumn {
  name: string;
  comment: string | null;
  /** A view column's default (ALTER VIEW … ALTER COLUMN … SET DEFAULT), printed under `searchPath`. */
  default: string | null;
  acl: Acl;
}

export interface DependentIndex {
  name: string;
  unique: boolean;
  /** Everything after `USING ` in pg_get_indexdef (printed under `searchPath`): renders the index on any relation. */
  usingClause: string;
  clustered: boolean;
  comment: string | null;
}

export interface DependentTrigger {
  name: string;
  /**
   * pg_get_triggerdef split around ` ON <the view, qualified> `, so that it renders on the view
   * wherever it is placed: `head` is `CREATE TRIGGER name INSTEAD OF …`, `tail` the rest.
   */
  head: string;
  tail: string;
  comment: string | null;
}

export interface DependentView {
  kind: 'view' | 'materialized view';
  schema: string;
  name: string;
  /** pg_get_viewdef under `searchPath`, without the trailing semicolon. */
  definition: string;
  /** The search_path the definition (and the column defaults, indexes and triggers) were printed under. */
  searchPath: string[];
  /** reloptions in stored order: security_barrier, check_option, security_invoker; storage parameters of a materialized view. */
  options: Array<{ name: string; value: string }>;
  owner: string;
  acl: Acl;
  comment: string | null;
  columns: DependentColumn[];
  /** Materialized views: whether it held data (created WITH DATA or WITH NO DATA). Always true for views. */
  populated: boolean;
  indexes: DependentIndex[];
  triggers: DependentTrigger[];
  /** The relations its query reads (its rule's dependencies): what a replay must bind it to again. */
  reads: QualifiedName[];
}

/** A foreign key of another table that references this one (a CASCADE drops it). */
export interface ReferencingKey {
  /** The referencing table. */
  schema: string;
  table: string;
  name: string;
  columns: string[];
  /** Columns of this table. */
  referencedColumns: string[];
  /** What follows `REFERENCES t(cols)`: MATCH, ON UPDATE/DELETE, DEFERRABLE, NOT VALID. */
  actions: string;
  comment: string | null;
}

export interface SchemaDefinition {
  name: string;
  owner: string;
  acl: Acl;
  comment: string | null;
}

interface TypeCommon {
  schema: string;
  name: string;
  owner: string;
  acl: Acl;
  comment: string | null;
  /** The search_path the type names and expressions inside were printed under. */
  searchPath: string[];
}

export interface EnumTypeDefinition extends TypeCommon {
  kind: 'enum';
  /** In sort order. */
  labels: string[];
}

export interface CompositeTypeDefinition extends TypeCommon {
  kind: 'composite';
  attributes: Array<{ name: string; type: string; collation: string | null }>;
}

export interface DomainTypeDefinition extends TypeCommon {
  kind: 'domain';
  baseType: string;
  collation: string | null;
  default: string | null;
  /** Set when the domain is NOT NULL; `name` is known from PostgreSQL 17 on (earlier ones do not name it). */
  notNull: { name: string | null } | null;
  /** pg_get_constraintdef (` NOT VALID` included when it was not validated), by name. */
  checks: Array<{ name: string; definition: string; validated: boolean }>;
}

export interface RangeTypeDefinition extends TypeCommon {
  kind: 'range';
  subtype: string;
  /** The subtype's operator class when it is not the default one, qualified. */
  opclass: string | null;
  collation: string | null;
  /** A canonical function, as regproc text (a range with one cannot be recreated here). */
  canonical: string | null;
  subtypeDiff: string | null;
  multirangeName: string | null;
}

export type TypeDefinition = EnumTypeDefinition | CompositeTypeDefinition | DomainTypeDefinition | RangeTypeDefinition;

export interface Surroundings {
  dependents: DependentView[];
  referencedBy: ReferencingKey[];
  schemaDefinition: SchemaDefinition;
  types: TypeDefinition[];
}

/** JSON of an aclitem[] expression: null stays null (default privileges), an empty ACL is []. */
function aclJson(expression: string): string {
  return `CASE WHEN ${expression} IS NULL THEN NULL ELSE coalesce((
            SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                     'grantee', CASE WHEN x.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(x.grantee)::text END,
                     'grantor', pg_catalog.pg_get_userbyid(x.grantor)::text,
                     'privilege', x.privilege_type, 'grantable', x.is_grantable) ORDER BY x.ord)
              FROM pg_catalog.aclexplode(${expression}) WITH ORDINALITY AS x(grantor, grantee, privilege_type, is_grantable, ord)), '[]'::json) END`;
}

function qualifiedCollation(collationOid: string): string {
  return `(SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname)
             FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = ${collationOid})`;
}

/** Run `work` with search_path set to `path`, then put the session's path back. */
async function withSearchPath<T>(client: pg.ClientBase, path: string[], work: () => Promise<T>): Promise<T> {
  const { rows } = await client.query<{ previous: string }>(
    `SELECT pg_catalog.current_setting('search_path') AS previous,
            pg_catalog.set_config('search_path', coalesce((SELECT pg_catalog.string_agg(pg_catalog.quote_ident(s), ', ' ORDER BY o)
                                                              FROM unnest($1::text[]) WITH ORDINALITY AS u(s, o)), ''), false)`,
    [path],
  );
  try {
    return await work();
  } finally {
    // In a transaction that work() aborted this fails too; the rollback undoes the change then.
    await client.query(`SELECT pg_catalog.set_config('search_path', $1, false)`, [rows[0]!.previous]).catch(() => {});
  }
}

interface FoundView {
  oid: string;
  schema: string;
  name: string;
  reads: Array<{ oid: string; schema: string; table: string }>;
}

/** Views and materialized views that read `oid` (or one of its partitions), directly or through other views. */
async function findDependentViews(client: pg.ClientBase, oid: number): Promise<FoundView[]> {
  // Only a view's own _RETURN rule makes it a dependent that dies with the table; a rule of any
  // other kind that mentions the table is dropped alone, and not recreated (README, Limitations).
  const { rows } = await client.query<FoundView>(
    `WITH RECURSIVE roots AS (
       SELECT $1::oid AS oid UNION SELECT t.relid FROM pg_catalog.pg_partition_tree($1::oid) AS t
     ), found(oid) AS (
       SELECT r.ev_class
         FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
        WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
          AND d.refobjid IN (SELECT oid FROM roots) AND r.rulename = '_RETURN' AND r.ev_class NOT IN (SELECT oid FROM roots)
       UNION
       SELECT r.ev_class
         FROM found f
         JOIN pg_catalog.pg_depend d ON d.refobjid = f.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass
                                    AND d.classid = 'pg_catalog.pg_rewrite'::regclass
         JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
        WHERE r.rulename = '_RETURN' AND r.ev_class <> f.oid
     )
     SELECT c.oid::int8::text AS oid, n.nspname AS schema, c.relname AS name,
            coalesce((SELECT pg_catalog.json_agg(DISTINCT pg_catalog.jsonb_build_object('oid', rc.oid::int8::text, 'schema', rn.nspname, 'table', rc.relname))
                        FROM pg_catalog.pg_rewrite r
                        JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
                                                   AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'n'
                        JOIN pg_catalog.pg_class rc ON rc.oid = d.refobjid
                        JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace
                       WHERE r.ev_class = c.oid AND r.rulename = '_RETURN' AND d.refobjid <> c.oid), '[]'::json) AS reads
       FROM found f
       JOIN pg_catalog.pg_class c ON c.oid = f.oid AND c.relkind IN ('v', 'm')
       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname NOT LIKE 'pg\\_temp\\_%'
      ORDER BY c.oid`,
    [oid],
  );
  return rows;
}

/**
 * Views in an order they can be created in: each after the views it reads, otherwise in the
 * given order (capture: by oid, which is creation order; restore: as the snapshots list them).
 */
export function dependentOrder<T extends Pick<DependentView, 'schema' | 'name' | 'reads'>>(views: readonly T[]): T[] {
  const key = (name: QualifiedName) => `${name.schema}\u0000${name.table}`;
  const present = new Set(views.map((v) => key({ schema: v.schema, table: v.name })));
  const placed = new Set<string>();
  const remaining = [...views];
  const ordered: T[] = [];
  while (remaining.length > 0) {
    const next = remaining.findIndex((v) => v.reads.every((read) => !present.has(key(read)) || placed.has(key(read))));
    // A cycle cannot be built with views; should one appear, keep the given order rather than loop.
    const at = next === -1 ? 0 : next;
    const [view] = remaining.splice(at, 1);
    ordered.push(view!);
    placed.add(key({ schema: view!.schema, table: view!.name }));
  }
  return ordered;
}

async function readDependentViews(client: pg.ClientBase, found: FoundView[], searchPath: string[]): Promise<DependentView[]> {
  if (found.length === 0) return [];
  const { rows } = await client.query(
    `SELECT c.oid::int8::text AS oid, CASE c.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END AS kind,
            pg_catalog.pg_get_viewdef(c.oid) AS definition,
            coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object('name', o.option_name, 'value', o.option_value) ORDER BY o.ord)
                        FROM pg_catalog.pg_options_to_table(c.reloptions) WITH ORDINALITY AS o(option_name, option_value, ord)), '[]'::json) AS options,
            pg_catalog.pg_get_userbyid(c.relowner)::text AS owner,
            ${aclJson('c.relacl')} AS acl,
            pg_catalog.obj_description(c.oid, 'pg_class') AS comment,
            c.relispopulated AS populated,
            (SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                      'name', a.attname, 'comment', pg_catalog.col_description(c.oid, a.attnum),
                      'default', pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), 'acl', ${aclJson('a.attacl')}) ORDER BY a.attnum)
               FROM pg_catalog.pg_attribute a
               LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
            coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                      'name', ic.relname, 'unique', i.indisunique, 'clustered', i.indisclustered,
                      'definition', pg_catalog.pg_get_indexdef(i.indexrelid),
                      'prefix', 'CREATE ' || CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END || 'INDEX ' || pg_catalog.quote_ident(ic.relname)
                                || ' ON ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) || ' USING ',
                      'comment', pg_catalog.obj_description(ic.oid, 'pg_class')) ORDER BY ic.relname)
               FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
              WHERE i.indrelid = c.oid), '[]'::json) AS indexes,
            coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                      'name', t.tgname, 'definition', pg_catalog.pg_get_triggerdef(t.oid),
                      'on', ' ON ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) || ' ',
                      'comment', pg_catalog.obj_description(t.oid, 'pg_trigger')) ORDER BY t.tgname)
               FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal), '[]'::json) AS triggers
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.oid = ANY ($1::oid[])`,
    [found.map((view) => view.oid)],
  );
  const byOid = new Map(rows.map((row) => [row.oid as string, row]));
  const views: DependentView[] = [];
  for (const view of found) {
    const row = byOid.get(view.oid);
    if (!row) continue; // dropped between the two reads
    views.push({
      kind: row.kind,
      schema: view.schema,
      name: view.name,
      definition: (row.definition as string).trim().replace(/;$/, ''),
      searchPath,
      options: row.options,
      owner: row.owner,
      acl: row.acl,
      comment: row.comment,
      columns: (row.columns ?? []).map((column: DependentColumn) => ({ name: column.name, comment: column.comment, default: column.default, acl: column.acl })),
      populated: row.populated,
      indexes: row.indexes.map((index: { name: string; unique: boolean; clustered: boolean; definition: string; prefix: string; comment: string | null }) => {
        if (!index.definition.startsWith(index.prefix)) throw new Error(`unexpected index definition for ${index.name}: ${index.definition}`);
        return { name: index.name, unique: index.unique, usingClause: index.definition.slice(index.prefix.length), clustered: index.clustered, comment: index.comment };
      }),
      triggers: row.triggers.map((trigger: { name: string; definition: string; on: string; comment: string | null }) => {
        const at = trigger.definition.indexOf(trigger.on);
        if (at === -1) throw new Error(`unexpected trigger definition for ${trigger.name}: ${trigger.definition}`);
        return { name: trigger.name, head: trigger.definition.slice(0, at), tail: trigger.definition.slice(at + trigger.on.length), comment: trigger.comment };
      }),
      reads: view.reads.map((read) => ({ schema: read.schema, table: read.table })).sort(compareNames),
    });
  }
  return views;
}

export function compareNames(a: QualifiedName, b: QualifiedName): number {
  return a.schema < b.schema ? -1 : a.schema > b.schema ? 1 : a.table < b.table ? -1 : a.table > b.table ? 1 : 0;
}

/** Foreign keys of other tables referencing `oid` (not its own self-references, which are its constraints). */
async function readReferencingKeys(client: pg.ClientBase, oid: number): Promise<ReferencingKey[]> {
  // Printed under the empty search_path, like the table's own constraints, so that the
  // REFERENCES prefix (qualified) can be cut off and the actions kept. conparentid = 0: the
  // constraint as declared, not its clones on partitions.
  const { rows } = await client.query(
    `SELECT n.nspname AS schema, c.relname AS table, con.conname AS name,
            pg_catalog.pg_get_constraintdef(con.oid) AS definition,
            ${FOREIGN_KEY_PARTS_SQL},
            pg_catalog.obj_description(con.oid, 'pg_constraint') AS comment
       FROM pg_catalog.pg_constraint con
       JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_catalog.pg_class rc ON rc.oid = con.confrelid
       JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace
      WHERE con.contype = 'f' AND con.confrelid = $1 AND con.conrelid <> $1 AND con.conparentid = 0
      ORDER BY n.nspname, c.relname, con.conname`,
    [oid],
  );
  return rows.map((row) => {
    return {
      schema: row.schema,
      table: row.table,
      name: row.name,
      columns: row.columns,
      referencedColumns: row.referenced_columns,
      actions: foreignKeyActions(row.name, row.definition, row.fk_prefix),
      comment: row.comment,
    };
  });
}

/**
 * The details of the types `oids` (enum, composite, domain or range; in the order given), printed
 * under the current search_path.
 */
async function readTypeDetails(client: pg.ClientBase, oids: string[], searchPath: string[]): Promise<TypeDefinition[]> {
  if (oids.length === 0) return [];
  const { rows } = await client.query(
    `SELECT t.oid::int8::text AS oid, n.nspname AS schema, t.typname AS name, t.typtype::text AS typtype,
            pg_catalog.pg_get_userbyid(t.typowner)::text AS owner, ${aclJson('t.typacl')} AS acl,
            pg_catalog.obj_description(t.oid, 'pg_type') AS comment,
            ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) AS labels,
            (SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                      'name', a.attname, 'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
                      'collation', CASE WHEN a.attcollation <> 0 AND a.attcollation <> at.typcollation THEN ${qualifiedCollation('a.attcollation')} END)
                    ORDER BY a.attnum)
               FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type at ON at.oid = a.atttypid
              WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) AS attributes,
            CASE WHEN t.typtype = 'd' THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END AS base_type,
            CASE WHEN t.typtype = 'd' AND t.typcollation <> 0 AND t.typcollation <> bt.typcollation THEN ${qualifiedCollation('t.typcollation')} END AS domain_collation,
            CASE WHEN t.typtype = 'd' THEN coalesce(pg_catalog.pg_get_expr(t.typdefaultbin, 0), t.typdefault) END AS "default",
            t.typnotnull AS not_null,
            (SELECT con.conname FROM pg_catalog.pg_constraint con WHERE con.contypid = t.oid AND con.contype = 'n' LIMIT 1) AS not_null_name,
            coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                               'name', con.conname, 'definition', pg_catalog.pg_get_constraintdef(con.oid), 'validated', con.convalidated) ORDER BY con.conname)
                        FROM pg_catalog.pg_constraint con WHERE con.contypid = t.oid AND con.contype = 'c'), '[]'::json) AS checks,
            pg_catalog.format_type(r.rngsubtype, NULL) AS subtype,
            CASE WHEN r.rngsubopc IS NOT NULL AND NOT oc.opcdefault
                 THEN (SELECT pg_catalog.quote_ident(ocn.nspname) || '.' || pg_catalog.quote_ident(oc.opcname)
                         FROM pg_catalog.pg_namespace ocn WHERE ocn.oid = oc.opcnamespace) END AS opclass,
            CASE WHEN r.rngcollation <> 0 AND r.rngcollation <> st.typcollation THEN ${qualifiedCollation('r.rngcollation')} END AS range_collation,
            CASE WHEN r.rngcanonical <> 0 THEN r.rngcanonical::regproc::text END AS canonical,
            CASE WHEN r.rngsubdiff <> 0 THEN r.rngsubdiff::regproc::text END AS subtype_diff,
            (SELECT mt.typname FROM pg_catalog.pg_type mt WHERE mt.oid = r.rngmultitypid) AS multirange_name
       FROM pg_catalog.pg_type t
       JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
       LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype
       LEFT JOIN pg_catalog.pg_range r ON r.rngtypid = t.oid
       LEFT JOIN pg_catalog.pg_type st ON st.oid = r.rngsubtype
       LEFT JOIN pg_catalog.pg_opclass oc ON oc.oid = r.rngsubopc
      WHERE t.oid = ANY ($1::oid[])`,
    [oids],
  );
  const byOid = new Map(rows.map((row) => [row.oid as string, row]));
  const types: TypeDefinition[] = [];
  for (const oid of oids) {
    const row = byOid.get(oid);
    if (!row) continue;
    const common = { schema: row.schema, name: row.name, owner: row.owner, acl: row.acl, comment: row.comment, searchPath };
    if (row.typtype === 'e') types.push({ ...common, kind: 'enum', labels: row.labels });
    else if (row.typtype === 'c') types.push({ ...common, kind: 'composite', attributes: row.attributes ?? [] });
    else if (row.typtype === 'd') {
      types.push({
        ...common,
        kind: 'domain',
        baseType: row.base_type,
        collation: row.domain_collation,
        default: row.default,
        notNull: row.not_null ? { name: row.not_null_name } : null,
        checks: row.checks,
      });
    } else if (row.typtype === 'r') {
      types.push({
        ...common,
        kind: 'range',
        subtype: row.subtype,
        opclass: row.opclass,
        collation: row.range_collation,
        canonical: row.canonical,
        subtypeDiff: row.subtype_diff,
        multirangeName: row.multirange_name,
      });
    }
  }
  return types;
}

/** The types a type refers to directly: a domain's base, a range's subtype, a composite's attributes. */
const DIRECT_TYPE_REFERENCES = `
  SELECT t.typbasetype WHERE t.typtype = 'd'
  UNION ALL SELECT g.rngsubtype FROM pg_catalog.pg_range g WHERE g.rngtypid = t.oid
  UNION ALL SELECT g.rngtypid FROM pg_catalog.pg_range g WHERE g.rngmultitypid = t.oid
  UNION ALL SELECT a.atttypid FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid AND c.relkind = 'c'
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped`;

/** An array type stands for its element (the array is created with it). */
const IS_ARRAY = `t.typelem <> 0 AND t.typsubscript = 'pg_catalog.array_subscript_handler'::regproc`;

/**
 * User-defined types of `schema` that the columns of `oid` need — directly, as array elements,
 * through domains, composite attributes and ranges — in an order they can be created in (what a
 * type needs comes before it). Table row types are not among them (their table is restored on its
 * own), nor array types (created with their element).
 */
async function neededTypeOids(client: pg.ClientBase, oid: number, schema: string): Promise<string[]> {
  const { rows } = await client.query<{ oid: string; needs: string[] }>(
    `WITH RECURSIVE needed(oid) AS (
       SELECT a.atttypid FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
       UNION
       SELECT x.oid FROM needed r JOIN pg_catalog.pg_type t ON t.oid = r.oid
        CROSS JOIN LATERAL (SELECT t.typelem WHERE ${IS_ARRAY} UNION ALL ${DIRECT_TYPE_REFERENCES}) AS x(oid)
     )
     SELECT t.oid::int8::text AS oid,
            ARRAY(SELECT DISTINCT CASE WHEN ${IS_ARRAY.replaceAll('t.', 'e.')} THEN e.typelem ELSE e.oid END::int8::text
                    FROM (${DIRECT_TYPE_REFERENCES}) AS x(oid) JOIN pg_catalog.pg_type e ON e.oid = x.oid) AS needs
       FROM pg_catalog.pg_type t
       JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
       LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid
      WHERE t.oid IN (SELECT oid FROM needed) AND n.nspname = $2 AND t.typtype IN ('e', 'c', 'd', 'r')
        AND (t.typtype <> 'c' OR c.relkind = 'c')
      ORDER BY t.oid`,
    [oid, schema],
  );
  const ordered: string[] = [];
  const remaining = [...rows];
  const present = new Set(rows.map((row) => row.oid));
  while (remaining.length > 0) {
    const next = remaining.findIndex((type) => type.needs.every((need) => !present.has(need) || ordered.includes(need)));
    ordered.push(remaining.splice(next === -1 ? 0 : next, 1)[0]!.oid);
  }
  return ordered;
}

/**
 * The type `name` as it is now: null when there is none; `definition` null when it is of a kind
 * not described here (a base type, a table's row type…). Printed under `searchPath` so that it
 * compares with a captured definition printed under the same path.
 */
export async function readTypeDefinition(client: pg.ClientBase, name: QualifiedName, searchPath: string[]): Promise<{ definition: TypeDefinition | null } | null> {
  const { rows } = await client.query<{ oid: string; standalone: boolean }>(
    `SELECT t.oid::int8::text AS oid, (t.typtype <> 'c' OR c.relkind = 'c') AS standalone
       FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
       LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid
      WHERE n.nspname = $1 AND t.typname = $2`,
    [name.schema, name.table],
  );
  if (rows.length === 0) return null;
  if (!rows[0]!.standalone) return { definition: null };
  const [type] = await withSearchPath(client, searchPath, () => readTypeDetails(client, [rows[0]!.oid], searchPath));
  return { definition: type ?? null };
}

interface Probe {
  schema: SchemaDefinition;
  hasViews: boolean;
  hasReferencingKeys: boolean;
  hasUserTypes: boolean;
}

/**
 * The table's schema, and whether there is anything else to read at all. Most tables have no
 * views, no foreign keys pointing at them and no user-defined column types: for those one cheap
 * query is all a capture pays (the detailed queries cost a few milliseconds of planning each).
 */
async function probe(client: pg.ClientBase, oid: number, schema: string): Promise<Probe> {
  const { rows } = await client.query(
    `SELECT n.nspname AS name, pg_catalog.pg_get_userbyid(n.nspowner)::text AS owner, ${aclJson('n.nspacl')} AS acl,
            pg_catalog.obj_description(n.oid, 'pg_namespace') AS comment,
            EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                     WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
                       AND d.refobjid IN (SELECT $1::oid UNION ALL SELECT t.relid FROM pg_catalog.pg_partition_tree($1::oid) AS t)) AS has_views,
            EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con WHERE con.confrelid = $1 AND con.conrelid <> $1 AND con.contype = 'f') AS has_referencing_keys,
            EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                      JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
                      LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND ${IS_ARRAY}
                     WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
                       AND coalesce(e.typtype, t.typtype) IN ('c', 'd', 'e', 'r', 'm')) AS has_user_types
       FROM pg_catalog.pg_namespace n WHERE n.nspname = $2`,
    [oid, schema],
  );
  const row = rows[0]!;
  return {
    schema: { name: row.name, owner: row.owner, acl: row.acl, comment: row.comment },
    hasViews: row.has_views,
    hasReferencingKeys: row.has_referencing_keys,
    hasUserTypes: row.has_user_types,
  };
}

/** Everything around the table `oid` that a CASCADE or DROP SCHEMA takes with it (see the module comment). */
export async function describeSurroundings(client: pg.ClientBase, oid: number, table: QualifiedName): Promise<Surroundings> {
  const probed = await probe(client, oid, table.schema);
  const found = probed.hasViews ? await findDependentViews(client, oid) : [];
  const referencedBy = probed.hasReferencingKeys ? await readReferencingKeys(client, oid) : [];
  const typeOids = probed.hasUserTypes ? await neededTypeOids(client, oid, table.schema) : [];
  const surroundings = { dependents: [], referencedBy, schemaDefinition: probed.schema, types: [] };
  if (found.length === 0 && typeOids.length === 0) return surroundings;
  const searchPath = [...new Set([table.schema, ...found.map((view) => view.schema)])];
  return withSearchPath(client, searchPath, async () => ({
    ...surroundings,
    dependents: dependentOrder(await readDependentViews(client, found, searchPath)),
    types: await readTypeDetails(client, typeOids, searchPath),
  }));
}

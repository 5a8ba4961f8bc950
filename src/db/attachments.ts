/**
 * What is attached to a table besides its columns, indexes and constraints — the rest of what
 * `pg_dump -s -t` shows for it: owner, privileges (table, columns, owned sequences), comments,
 * triggers, row-level security and policies, storage parameters, column settings, replica
 * identity and CLUSTER ON. Read by describeTable (with search_path '', so expressions and
 * trigger definitions come out schema-qualified) into TableDefinition.attachments; restore
 * recreates it with src/restore/attach.ts.
 *
 * Roles are kept by name: a snapshot restored in another cluster finds (or misses) them by name,
 * as pg_dump's output would.
 */
import type pg from 'pg';

/** One aclitem: what `grantor` granted `grantee`. */
export interface AclEntry {
  /** null: PUBLIC. */
  grantee: string | null;
  grantor: string;
  /** Privilege names as GRANT spells them (SELECT, INSERT, … MAINTAIN), each WITH GRANT OPTION or not. */
  privileges: Array<{ name: string; grantable: boolean }>;
}

/** An object's ACL, exactly. */
export interface Privileges {
  /** Every aclitem in ACL order; null when the ACL is NULL (never granted or revoked: the defaults). */
  acl: AclEntry[] | null;
  /**
   * True when the owner's own entry is the default one of the capturing server (all privileges
   * it knew): a restore then leaves the owner with all privileges of the restoring server, as
   * pg_dump's script would, instead of revoking one the capturing server did not have.
   */
  ownerHasDefaults: boolean;
}

export interface ColumnAttachments {
  name: string;
  comment: string | null;
  /** Column privileges (attacl) in ACL order; empty when none. */
  acl: AclEntry[];
  /** ALTER COLUMN … SET STATISTICS; null: the default. */
  statistics: number | null;
  /** ALTER COLUMN … SET STORAGE (PLAIN, EXTERNAL, EXTENDED, MAIN) where it differs from the type's; else null. */
  storage: string | null;
  /** ALTER COLUMN … SET COMPRESSION (pglz, lz4); null: the default. */
  compression: string | null;
  /** ALTER COLUMN … SET (n_distinct=…): `name=value` as in attoptions. */
  options: string[];
}

export interface NamedComment {
  name: string;
  comment: string;
}

export interface TriggerDefinition {
  name: string;
  /** pg_get_triggerdef, schema-qualified, on the captured table. */
  definition: string;
  /** The definition up to the table name (`CREATE TRIGGER t BEFORE UPDATE OF "a" ON `) … */
  beforeTable: string;
  /** … and after it (`FOR EACH ROW EXECUTE FUNCTION public.f()`): renders the trigger on any table. */
  afterTable: string;
  /** pg_trigger.tgenabled: O enabled (origin and local), D disabled, R replica only, A always. */
  enabled: 'O' | 'D' | 'R' | 'A';
  /** The trigger function it runs, `schema.name()` as regprocedure prints it. */
  function: string;
  comment: string | null;
}

export interface PolicyDefinition {
  name: string;
  permissive: boolean;
  /** ALL, SELECT, INSERT, UPDATE, DELETE. */
  command: 'ALL' | 'SELECT' | 'INSERT' | 'UPDATE' | 'DELETE';
  /** The roles it applies to, in order; null: PUBLIC (every role). */
  roles: string[] | null;
  /** pg_get_expr of USING / WITH CHECK, schema-qualified; null when absent. */
  using: string | null;
  withCheck: string | null;
  comment: string | null;
}

export type ReplicaIdentity = { kind: 'default' | 'nothing' | 'full' } | { kind: 'index'; index: string };

/** An owned sequence's own privileges and comment (pg_dump -t shows them with the table). */
export interface SequenceAttachments {
  /** The captured sequence's name (OwnedSequence.name). */
  name: string;
  privileges: Privileges;
  comment: string | null;
}

export interface TableAttachments {
  owner: string;
  privileges: Privileges;
  comment: string | null;
  /** Columns with a comment, privileges or a non-default setting. */
  columns: ColumnAttachments[];
  /** Comments on constraints (by constraint name) and on indexes (by index name). */
  constraintComments: NamedComment[];
  indexComments: NamedComment[];
  /** User triggers: neither internal (foreign keys) nor clones of a parent's nor Backstop's own. */
  triggers: TriggerDefinition[];
  rowSecurity: { enabled: boolean; forced: boolean };
  policies: PolicyDefinition[];
  /** reloptions of the table and of its TOAST table, `name=value`. */
  storageParameters: string[];
  toastStorageParameters: string[];
  replicaIdentity: ReplicaIdentity;
  /** The index CLUSTER ON names; null when none. */
  clusterIndex: string | null;
  sequences: SequenceAttachments[];
}

/** Backstop attaches its own TRUNCATE guard to every new table: leave triggers into its schema out. */
const BACKSTOP_SCHEMA = 'backstop';

interface AclRow {
  key: string;
  grantee: string | null;
  grantor: string;
  privilege: string;
  grantable: boolean;
}

/** aclexplode rows (ordered by aclitem, then privilege) folded into one entry per aclitem. */
function foldAcl(rows: AclRow[]): Map<string, AclEntry[]> {
  const byKey = new Map<string, AclEntry[]>();
  for (const row of rows) {
    const entries = byKey.get(row.key) ?? [];
    byKey.set(row.key, entries);
    const last = entries.at(-1);
    if (last && last.grantee === row.grantee && last.grantor === row.grantor) {
      last.privileges.push({ name: row.privilege, grantable: row.grantable });
    } else {
      entries.push({ grantee: row.grantee, grantor: row.grantor, privileges: [{ name: row.privilege, grantable: row.grantable }] });
    }
  }
  return byKey;
}

/**
 * SQL for the aclexplode rows of `acl` (an expression over the FROM item), with role names, in
 * ACL order. aclexplode lists the privileges of one aclitem together, in the item's order.
 */
function explodeAcl(acl: string): string {
  return `CROSS JOIN LATERAL pg_catalog.aclexplode(${acl}) WITH ORDINALITY AS x(grantor, grantee, privilege_type, is_grantable, ord)
          JOIN pg_catalog.pg_roles gr ON gr.oid = x.grantor
          LEFT JOIN pg_catalog.pg_roles ge ON ge.oid = x.grantee`;
}

/**
 * Is the owner's entry in `acl` the default one (acldefault)? As SQL over `acl`, the object type
 * letter for acldefault and the owner's oid.
 */
function ownerHasDefaultsSql(acl: string, objectType: string, owner: string): string {
  const ownEntry = (expr: string) =>
    `(SELECT pg_catalog.array_agg(e.privilege_type || e.is_grantable::text ORDER BY e.privilege_type, e.is_grantable)
        FROM pg_catalog.aclexplode(${expr}) e WHERE e.grantee = ${owner} AND e.grantor = ${owner})`;
  return `(${acl} IS NULL OR ${ownEntry(acl)} IS NOT DISTINCT FROM ${ownEntry(`pg_catalog.acldefault('${objectType}', ${owner})`)})`;
}

async function readTableFacts(client: pg.ClientBase, oid: number) {
  const { rows } = await client.query(
    `SELECT o.rolname AS owner, c.relacl IS NULL AS acl_is_null,
            ${ownerHasDefaultsSql('c.relacl', 'r', 'c.relowner')} AS owner_has_defaults,
            pg_catalog.obj_description(c.oid, 'pg_class') AS comment,
            c.relrowsecurity AS rls_enabled, c.relforcerowsecurity AS rls_forced,
            coalesce(c.reloptions, '{}') AS storage_parameters, coalesce(t.reloptions, '{}') AS toast_storage_parameters,
            c.relreplident::text AS replica_identity,
            (SELECT ic.relname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
              WHERE i.indrelid = c.oid AND i.indisreplident) AS replica_index,
            (SELECT ic.relname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
              WHERE i.indrelid = c.oid AND i.indisclustered) AS cluster_index
       FROM pg_catalog.pg_class c
       JOIN pg_catalog.pg_roles o ON o.oid = c.relowner
       LEFT JOIN pg_catalog.pg_class t ON t.oid = c.reltoastrelid
      WHERE c.oid = $1`,
    [oid],
  );
  return rows[0]!;
}

async function readTableAcl(client: pg.ClientBase, oid: number): Promise<AclEntry[]> {
  const { rows } = await client.query<AclRow>(
    `SELECT '' AS key, ge.rolname AS grantee, gr.rolname AS grantor, x.privilege_type AS privilege, x.is_grantable AS grantable
       FROM pg_catalog.pg_class c ${explodeAcl('c.relacl')}
      WHERE c.oid = $1
      ORDER BY x.ord`,
    [oid],
  );
  return foldAcl(rows).get('') ?? [];
}

async function readColumnAttachments(client: pg.ClientBase, oid: number): Promise<ColumnAttachments[]> {
  const version = await client.query<{ num: string }>(`SELECT pg_catalog.current_setting('server_version_num') AS num`);
  // attcompression exists from PostgreSQL 14 on.
  const compression = Number(version.rows[0]!.num) >= 140000 ? `CASE a.attcompression WHEN 'p' THEN 'pglz' WHEN 'l' THEN 'lz4' END` : 'NULL::text';
  const { rows } = await client.query(
    `SELECT a.attname AS name, pg_catalog.col_description(a.attrelid, a.attnum) AS comment,
            CASE WHEN a.attstattarget >= 0 THEN a.attstattarget::int END AS statistics,
            CASE WHEN a.attstorage <> t.typstorage
                 THEN CASE a.attstorage WHEN 'p' THEN 'PLAIN' WHEN 'e' THEN 'EXTERNAL' WHEN 'm' THEN 'MAIN' WHEN 'x' THEN 'EXTENDED' END END AS storage,
            ${compression} AS compression,
            coalesce(a.attoptions, '{}') AS options, a.attacl IS NOT NULL AS has_acl
       FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
      WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum`,
    [oid],
  );
  const acls = rows.some((row) => row.has_acl)
    ? foldAcl(
        (
          await client.query<AclRow>(
            `SELECT a.attname AS key, ge.rolname AS grantee, gr.rolname AS grantor, x.privilege_type AS privilege, x.is_grantable AS grantable
               FROM pg_catalog.pg_attribute a ${explodeAcl('a.attacl')}
              WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum, x.ord`,
            [oid],
          )
        ).rows,
      )
    : new Map<string, AclEntry[]>();
  return rows
    .map((row) => ({
      name: row.name as string,
      comment: (row.comment ?? null) as string | null,
      acl: acls.get(row.name) ?? [],
      statistics: (row.statistics ?? null) as number | null,
      storage: (row.storage ?? null) as string | null,
      compression: (row.compression ?? null) as string | null,
      options: row.options as string[],
    }))
    .filter((c) => c.comment !== null || c.acl.length > 0 || c.statistics !== null || c.storage !== null || c.compression !== null || c.options.length > 0);
}

async function readComments(client: pg.ClientBase, oid: number): Promise<{ constraints: NamedComment[]; indexes: NamedComment[] }> {
  const constraints = await client.query<NamedComment>(
    `SELECT con.conname AS name, d.description AS comment
       FROM pg_catalog.pg_constraint con
       JOIN pg_catalog.pg_description d ON d.classoid = 'pg_catalog.pg_constraint'::regclass AND d.objoid = con.oid AND d.objsubid = 0
      WHERE con.conrelid = $1
      ORDER BY con.conname`,
    [oid],
  );
  const indexes = await client.query<NamedComment>(
    `SELECT ic.relname AS name, d.description AS comment
       FROM pg_catalog.pg_index i
       JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
       JOIN pg_catalog.pg_description d ON d.classoid = 'pg_catalog.pg_class'::regclass AND d.objoid = i.indexrelid AND d.objsubid = 0
      WHERE i.indrelid = $1
      ORDER BY ic.relname`,
    [oid],
  );
  return { constraints: constraints.rows, indexes: indexes.rows };
}

async function readTriggers(client: pg.ClientBase, oid: number): Promise<TriggerDefinition[]> {
  // The text up to the table name is rebuilt the way pg_get_triggerdef writes it (timing, events,
  // UPDATE OF columns), so the table name is found by position, never by searching the text
  // (a column or a WHEN literal may contain anything).
  const { rows } = await client.query(
    `SELECT t.tgname AS name, pg_catalog.pg_get_triggerdef(t.oid) AS definition, t.tgenabled::text AS enabled,
            t.tgfoid::regprocedure::text AS function, pg_catalog.obj_description(t.oid, 'pg_trigger') AS comment,
            'CREATE ' || CASE WHEN t.tgconstraint <> 0 THEN 'CONSTRAINT ' ELSE '' END || 'TRIGGER ' || pg_catalog.quote_ident(t.tgname) || ' '
              || CASE WHEN t.tgtype & 2 <> 0 THEN 'BEFORE' WHEN t.tgtype & 64 <> 0 THEN 'INSTEAD OF' ELSE 'AFTER' END || ' '
              || concat_ws(' OR ',
                   CASE WHEN t.tgtype & 4 <> 0 THEN 'INSERT' END,
                   CASE WHEN t.tgtype & 8 <> 0 THEN 'DELETE' END,
                   CASE WHEN t.tgtype & 16 <> 0 THEN 'UPDATE' || coalesce(' OF ' || (
                     SELECT string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY k.ord)
                       FROM unnest(t.tgattr::int2[]) WITH ORDINALITY k(num, ord)
                       JOIN pg_catalog.pg_attribute a ON a.attrelid = t.tgrelid AND a.attnum = k.num), '') END,
                   CASE WHEN t.tgtype & 32 <> 0 THEN 'TRUNCATE' END)
              || ' ON ' AS before_table,
            pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) || ' ' AS table_part
       FROM pg_catalog.pg_trigger t
       JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
       JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
      WHERE t.tgrelid = $1 AND NOT t.tgisinternal AND t.tgparentid = 0 AND pn.nspname <> $2
      ORDER BY t.tgname`,
    [oid, BACKSTOP_SCHEMA],
  );
  return rows.map((row) => {
    const definition: string = row.definition;
    const head = `${row.before_table}${row.table_part}`;
    if (!definition.startsWith(head)) throw new Error(`unexpected trigger definition for ${row.name}: ${definition}`);
    return {
      name: row.name,
      definition,
      beforeTable: row.before_table,
      afterTable: definition.slice(head.length),
      enabled: row.enabled,
      function: row.function,
      comment: row.comment ?? null,
    };
  });
}

async function readPolicies(client: pg.ClientBase, oid: number): Promise<PolicyDefinition[]> {
  // There is no pg_get_policydef: this reads what pg_dump reads (polroles holds 0 for PUBLIC).
  const { rows } = await client.query(
    `SELECT pol.polname AS name, pol.polpermissive AS permissive,
            CASE pol.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS command,
            CASE WHEN 0 = ANY (pol.polroles) THEN NULL
                 ELSE ARRAY(SELECT r.rolname FROM unnest(pol.polroles) WITH ORDINALITY u(oid, ord)
                              JOIN pg_catalog.pg_roles r ON r.oid = u.oid ORDER BY u.ord)::text[] END AS roles,
            pg_catalog.pg_get_expr(pol.polqual, pol.polrelid) AS using,
            pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid) AS with_check,
            pg_catalog.obj_description(pol.oid, 'pg_policy') AS comment
       FROM pg_catalog.pg_policy pol
      WHERE pol.polrelid = $1
      ORDER BY pol.polname`,
    [oid],
  );
  return rows.map((row) => ({
    name: row.name,
    permissive: row.permissive,
    command: row.command,
    roles: row.roles ?? null,
    using: row.using ?? null,
    withCheck: row.with_check ?? null,
    comment: row.comment ?? null,
  }));
}

async function readSequenceAttachments(client: pg.ClientBase, oid: number): Promise<SequenceAttachments[]> {
  const { rows } = await client.query(
    `SELECT sc.relname AS name, sc.relacl IS NULL AS acl_is_null,
            ${ownerHasDefaultsSql('sc.relacl', 's', 'sc.relowner')} AS owner_has_defaults,
            pg_catalog.obj_description(sc.oid, 'pg_class') AS comment
       FROM pg_catalog.pg_depend d
       JOIN pg_catalog.pg_class sc ON sc.oid = d.objid AND sc.relkind = 'S'
      WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
        AND d.refobjid = $1 AND d.deptype IN ('a', 'i')
      ORDER BY sc.relname`,
    [oid],
  );
  const acls = foldAcl(
    (
      await client.query<AclRow>(
        `SELECT sc.relname AS key, ge.rolname AS grantee, gr.rolname AS grantor, x.privilege_type AS privilege, x.is_grantable AS grantable
           FROM pg_catalog.pg_depend d
           JOIN pg_catalog.pg_class sc ON sc.oid = d.objid AND sc.relkind = 'S'
           ${explodeAcl('sc.relacl')}
          WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
            AND d.refobjid = $1 AND d.deptype IN ('a', 'i')
          ORDER BY sc.relname, x.ord`,
        [oid],
      )
    ).rows,
  );
  return rows.map((row) => ({
    name: row.name,
    privileges: { acl: row.acl_is_null ? null : acls.get(row.name) ?? [], ownerHasDefaults: row.owner_has_defaults },
    comment: row.comment ?? null,
  }));
}

function replicaIdentity(code: string, index: string | null): ReplicaIdentity {
  if (code === 'i' && index) return { kind: 'index', index };
  if (code === 'n') return { kind: 'nothing' };
  if (code === 'f') return { kind: 'full' };
  return { kind: 'default' };
}

/** Everything attached to the table `oid` (call with search_path '': see describeTable). */
export async function readAttachments(client: pg.ClientBase, oid: number): Promise<TableAttachments> {
  const facts = await readTableFacts(client, oid);
  const comments = await readComments(client, oid);
  return {
    owner: facts.owner,
    privileges: { acl: facts.acl_is_null ? null : await readTableAcl(client, oid), ownerHasDefaults: facts.owner_has_defaults },
    comment: facts.comment ?? null,
    columns: await readColumnAttachments(client, oid),
    constraintComments: comments.constraints,
    indexComments: comments.indexes,
    triggers: await readTriggers(client, oid),
    rowSecurity: { enabled: facts.rls_enabled, forced: facts.rls_forced },
    policies: await readPolicies(client, oid),
    storageParameters: facts.storage_parameters,
    toastStorageParameters: facts.toast_storage_parameters,
    replicaIdentity: replicaIdentity(facts.replica_identity, facts.replica_index ?? null),
    clusterIndex: facts.cluster_index ?? null,
    sequences: await readSequenceAttachments(client, oid),
  };
}

/**
 * Undoing a drop: when a table is restored under its original schema and name, the restore also
 * brings back what the DROP … CASCADE or DROP SCHEMA took with it (captured in the table's
 * definition, src/db/dependents.ts) — as separate parts of the plan:
 *
 * - before the table: its schema when it is missing (owner, grants, comment) and the missing
 *   types of that schema its columns need; an existing type is used as it is;
 * - after every table of the run exists: the foreign keys of other tables that reference it
 *   (referencing table still there and lacking the constraint), and the dependent views and
 *   materialized views whose names are free — created once per run even when several restored
 *   tables list them, after what they read, never replacing an existing relation.
 *
 * Restored under another name (`--into`), a table gets none of it: views must not end up reading
 * a copy. What is left out is reported with its reason, never silently dropped.
 */
import type pg from 'pg';
import type { TableDefinition } from '../db/catalog.js';
import { dependentOrder, readTypeDefinition, type DependentView, type ReferencingKey, type TypeDefinition } from '../db/dependents.js';
import { displayName, type QualifiedName } from '../db/identifiers.js';
import {
  dependentCreateSql,
  dependentGrantSql,
  dependentOwnerSql,
  referencingKeySql,
  rolesNamed,
  schemaCreateSql,
  schemaGrantSql,
  schemaOwnerSql,
  typeCreateSql,
  typeGrantSql,
  typeNotRecreatable,
  typeOwnerSql,
  typeShape,
} from './dependents-sql.js';

export interface NotRestored {
  kind: 'schema' | 'type' | 'view' | 'materialized view' | 'foreign key' | 'owner' | 'grant';
  /** schema.name (a foreign key: `schema.table.constraint`). */
  name: string;
  reason: string;
}

/** What the restores of one run have already planned to create (several tables share a schema and types). */
export interface UndoDropRun {
  schemas: Set<string>;
  types: Set<string>;
}

export function newUndoDropRun(): UndoDropRun {
  return { schemas: new Set(), types: new Set() };
}

/** Is the table restored as itself (an undo of its drop), rather than as a copy under another name? */
export function undoesDrop(def: TableDefinition, target: QualifiedName): boolean {
  return def.schema === target.schema && def.table === target.table;
}

export interface PlannedPrerequisites {
  /** Run before the table is created: CREATE SCHEMA / TYPE with owners, grants, comments. */
  statements: string[];
  /** Said in the script: types used as they are though they differ, owners or grantees that are gone. */
  notes: string[];
  notRestored: NotRestored[];
}

export interface PlannedReferencingKey {
  key: ReferencingKey;
  statements: string[];
}

export interface PlannedDependent {
  view: DependentView;
  /** Creation (search path first), then owner, then grants: see dependents-sql.ts. */
  create: string[];
  owner: string[];
  grants: string[];
}

interface RoleCheck {
  missing: Set<string>;
  current: string;
}

async function checkRoles(client: pg.ClientBase, roles: string[]): Promise<RoleCheck> {
  const { rows } = await client.query<{ missing: string[]; current: string }>(
    `SELECT ARRAY(SELECT r FROM unnest($1::text[]) AS r WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r)) AS missing,
            current_user::text AS current`,
    [roles],
  );
  return { missing: new Set(rows[0]!.missing), current: rows[0]!.current };
}

/**
 * Owner and grants for an object, given which roles are gone: a missing owner leaves the object
 * to the restoring role (and its grants start from that role's defaults); grants to a missing
 * role are left out. Both are reported.
 */
function ownership<T extends { owner: string }>(
  object: T,
  roles: RoleCheck,
  name: string,
  notRestored: NotRestored[],
  notes: string[],
): { object: T; changeOwner: boolean } {
  const gone = [...roles.missing].filter((role) => role !== object.owner);
  if (gone.length > 0) {
    const reason = `the roles ${gone.join(', ')} no longer exist: their privileges were not granted`;
    notRestored.push({ kind: 'grant', name, reason });
    notes.push(`${name}: ${reason}`);
  }
  if (!roles.missing.has(object.owner)) return { object, changeOwner: true };
  const reason = `its owner ${object.owner} no longer exists: it is left owned by ${roles.current}`;
  notRestored.push({ kind: 'owner', name, reason });
  notes.push(`${name}: ${reason}`);
  return { object: { ...object, owner: roles.current }, changeOwner: false };
}

async function schemaExists(client: pg.ClientBase, schema: string): Promise<boolean> {
  const { rows } = await client.query<{ exists: boolean }>(`SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1) AS exists`, [schema]);
  return rows[0]!.exists;
}

/** The schema (when missing) and the missing types a table restored as itself needs before its CREATE TABLE. */
export async function planPrerequisites(client: pg.ClientBase, def: TableDefinition, run: UndoDropRun): Promise<PlannedPrerequisites> {
  const planned: PlannedPrerequisites = { statements: [], notes: [], notRestored: [] };
  const schema = def.schemaDefinition;
  if (schema && schema.name === def.schema && !run.schemas.has(schema.name)) {
    run.schemas.add(schema.name);
    if (!(await schemaExists(client, schema.name))) {
      const roles = await checkRoles(client, rolesNamed(schema.owner, schema.acl));
      const { object, changeOwner } = ownership(schema, roles, `schema ${schema.name}`, planned.notRestored, planned.notes);
      planned.statements.push(...schemaCreateSql(object));
      if (changeOwner) planned.statements.push(schemaOwnerSql(object));
      planned.statements.push(...schemaGrantSql(object, roles.missing));
    }
  }
  for (const type of def.types ?? []) {
    const name = displayName({ schema: type.schema, table: type.name });
    if (type.schema !== def.schema || run.types.has(name)) continue;
    run.types.add(name);
    const existing = await readTypeDefinition(client, { schema: type.schema, table: type.name }, type.searchPath);
    if (existing) {
      const now = existing.definition;
      if (!now || typeShape(now) !== typeShape(type)) {
        planned.notes.push(`type ${name} exists and differs from the snapshot's (${now ? describeType(now) : 'another kind of type'} now, ${describeType(type)} then): it is used as it is`);
      }
      continue;
    }
    const reason = typeNotRecreatable(type);
    if (reason) {
      planned.notRestored.push({ kind: 'type', name, reason });
      planned.notes.push(`type ${name} is not recreated: ${reason}`);
      continue;
    }
    const roles = await checkRoles(client, rolesNamed(type.owner, type.acl));
    const { object, changeOwner } = ownership<TypeDefinition>(type, roles, `type ${name}`, planned.notRestored, planned.notes);
    const at = { schema: type.schema, table: type.name };
    planned.statements.push(...typeCreateSql(object, { schema: type.schema }));
    if (changeOwner) planned.statements.push(typeOwnerSql(object, at));
    planned.statements.push(...typeGrantSql(object, at, roles.missing));
  }
  return planned;
}

function describeType(type: TypeDefinition): string {
  switch (type.kind) {
    case 'enum':
      return `enum (${type.labels.join(', ')})`;
    case 'composite':
      return `(${type.attributes.map((a) => `${a.name} ${a.type}`).join(', ')})`;
    case 'domain':
      return `domain over ${type.baseType}${type.notNull ? ' NOT NULL' : ''}${type.checks.map((c) => ` ${c.definition}`).join('')}`;
    case 'range':
      return `range of ${type.subtype}`;
  }
}

async function constraintExists(client: pg.ClientBase, table: QualifiedName, name: string): Promise<boolean> {
  const { rows } = await client.query<{ exists: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
                      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relname = $2 AND con.conname = $3) AS exists`,
    [table.schema, table.table, name],
  );
  return rows[0]!.exists;
}

async function tableExistsNamed(client: pg.ClientBase, table: QualifiedName): Promise<boolean> {
  const { rows } = await client.query<{ exists: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')) AS exists`,
    [table.schema, table.table],
  );
  return rows[0]!.exists;
}

/**
 * Foreign keys of other tables to re-add against the restored table. A referencing table restored
 * in the same run is left out: its own restore adds its foreign keys.
 */
export async function planReferencingKeys(
  client: pg.ClientBase,
  def: TableDefinition,
  target: QualifiedName,
  restoredInRun: ReadonlySet<string>,
): Promise<{ keys: PlannedReferencingKey[]; notRestored: NotRestored[] }> {
  const keys: PlannedReferencingKey[] = [];
  const notRestored: NotRestored[] = [];
  for (const key of def.referencedBy ?? []) {
    const table = { schema: key.schema, table: key.table };
    if (restoredInRun.has(displayName(table))) continue;
    const name = `${displayName(table)}.${key.name}`;
    if (!(await tableExistsNamed(client, table))) {
      notRestored.push({ kind: 'foreign key', name, reason: `the referencing table ${displayName(table)} no longer exists` });
    } else if (await constraintExists(client, table, key.name)) {
      notRestored.push({ kind: 'foreign key', name, reason: `${displayName(table)} already has a constraint named "${key.name}"` });
    } else {
      keys.push({ key, statements: referencingKeySql(key, target) });
    }
  }
  return { keys, notRestored };
}

async function relationNamed(client: pg.ClientBase, name: QualifiedName): Promise<string | null> {
  const { rows } = await client.query<{ kind: string }>(
    `SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                           WHEN 'i' THEN 'index' WHEN 'I' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' ELSE 'relation' END AS kind
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2`,
    [name.schema, name.table],
  );
  return rows[0]?.kind ?? null;
}

/**
 * The dependent views of every table restored as itself, once each (the first table to list a
 * view wins), in an order they can be created in. A view whose name is taken is left alone.
 */
export async function planDependents(client: pg.ClientBase, defs: readonly TableDefinition[]): Promise<{ views: PlannedDependent[]; notRestored: NotRestored[] }> {
  const seen = new Set<string>();
  const candidates: DependentView[] = [];
  for (const def of defs) {
    for (const view of def.dependents ?? []) {
      const key = displayName({ schema: view.schema, table: view.name });
      if (seen.has(key)) continue;
      seen.add(key);
      candidates.push(view);
    }
  }
  const views: PlannedDependent[] = [];
  const notRestored: NotRestored[] = [];
  for (const view of dependentOrder(candidates)) {
    const at = { schema: view.schema, table: view.name };
    const name = displayName(at);
    const taken = await relationNamed(client, at);
    if (taken) {
      notRestored.push({ kind: view.kind, name, reason: `a ${taken} named ${name} exists (it is never replaced)` });
      continue;
    }
    const roles = await checkRoles(client, rolesNamed(view.owner, view.acl, ...view.columns.map((c) => c.acl)));
    const notes: string[] = [];
    const { object, changeOwner } = ownership(view, roles, `${view.kind} ${name}`, notRestored, notes);
    views.push({
      view: object,
      create: dependentCreateSql(object, { schema: view.schema }),
      owner: changeOwner ? [dependentOwnerSql(object, at)] : [],
      grants: dependentGrantSql(object, at, roles.missing),
    });
  }
  return { views, notRestored };
}

/**
 * The SQL that recreates what a DROP … CASCADE or DROP SCHEMA took with a table (see
 * src/db/dependents.ts): views and materialized views, types, the schema, foreign keys of other
 * tables. Pure functions of a captured definition and a placement, shared by two callers:
 *
 * - `backstop restore` creates everything in place, as one role, in one transaction;
 * - the agent stages a restore in a private schema (tables under their original names there),
 *   creates views and types inside that schema with the staging schema searched first, and
 *   later moves every object to its real schema and gives it its owner.
 *
 * So creation, the owner change and the grants are separate steps. Grants are rendered for after
 * the owner change: they start from the owner's default privileges (REVOKE from PUBLIC and the
 * owner), then grant the captured ACL item by item in its order, so the ACL comes back exactly
 * (grantors excepted: a grant runs as the owner, or as a superuser acting for it).
 */
import pg from 'pg';
import type {
  Acl,
  CompositeTypeDefinition,
  DependentView,
  DomainTypeDefinition,
  EnumTypeDefinition,
  RangeTypeDefinition,
  ReferencingKey,
  SchemaDefinition,
  TypeDefinition,
} from '../db/dependents.js';
import { quoteIdent, quoteQualified, type QualifiedName } from '../db/identifiers.js';

/**
 * Where an object is created. `readFirst`: a schema searched before the captured search path —
 * the staging schema, where the relations and types the definition names are found first.
 */
export interface Placement {
  schema: string;
  readFirst?: string | null;
}

/** A string literal that reads back the same whatever standard_conforming_strings says. */
export function quoteLiteral(text: string): string {
  return pg.Client.prototype.escapeLiteral(text).trim();
}

/** The search path a captured definition replays under: the staging schema (if any), then the captured path. */
export function replayPath(captured: readonly string[], readFirst?: string | null): string[] {
  return [...new Set([...(readFirst ? [readFirst] : []), ...captured])];
}

export function setSearchPathSql(path: readonly string[]): string {
  return `SET LOCAL search_path TO ${path.map(quoteIdent).join(', ')}`;
}

type AclObject = 'TABLE' | 'TYPE' | 'DOMAIN' | 'SCHEMA';

/**
 * GRANT / REVOKE that give `object` exactly the captured ACL once `owner` owns it. A null ACL
 * (default privileges) needs nothing. Entries naming a role in `missingRoles` are left out (the
 * caller reports them).
 */
export function aclSql(kind: AclObject, object: string, owner: string, acl: Acl, missingRoles: ReadonlySet<string> = new Set()): string[] {
  if (acl === null) return [];
  const statements = [`REVOKE ALL ON ${kind} ${object} FROM PUBLIC`];
  if (!missingRoles.has(owner)) statements.push(`REVOKE ALL ON ${kind} ${object} FROM ${quoteIdent(owner)}`);
  for (const group of grantGroups(acl)) {
    if (group.grantee !== null && missingRoles.has(group.grantee)) continue;
    statements.push(`GRANT ${group.privileges.join(', ')} ON ${kind} ${object} TO ${grantee(group.grantee)}${group.grantable ? ' WITH GRANT OPTION' : ''}`);
  }
  return statements;
}

/** Column privileges (they start empty: no REVOKE needed). */
function columnAclSql(relation: string, column: string, acl: Acl, missingRoles: ReadonlySet<string>): string[] {
  if (acl === null) return [];
  return grantGroups(acl)
    .filter((group) => group.grantee === null || !missingRoles.has(group.grantee))
    .map(
      (group) =>
        `GRANT ${group.privileges.map((privilege) => `${privilege} (${quoteIdent(column)})`).join(', ')} ON TABLE ${relation} TO ${grantee(group.grantee)}${group.grantable ? ' WITH GRANT OPTION' : ''}`,
    );
}

/** ACL entries folded into one GRANT per grantee and grant option, in the order they first appear. */
function grantGroups(acl: NonNullable<Acl>): Array<{ grantee: string | null; grantable: boolean; privileges: string[] }> {
  const groups = new Map<string, { grantee: string | null; grantable: boolean; privileges: string[] }>();
  for (const entry of acl) {
    const key = `${entry.grantee === null ? '' : `r${entry.grantee}`}\u0000${entry.grantable}`;
    const group = groups.get(key) ?? { grantee: entry.grantee, grantable: entry.grantable, privileges: [] };
    group.privileges.push(entry.privilege);
    groups.set(key, group);
  }
  return [...groups.values()];
}

function grantee(name: string | null): string {
  return name === null ? 'PUBLIC' : quoteIdent(name);
}

/** Every role an owner or ACL names (PUBLIC aside): what must exist for the owner change and grants. */
export function rolesNamed(owner: string, ...acls: Acl[]): string[] {
  const roles = new Set([owner]);
  for (const acl of acls) for (const entry of acl ?? []) if (entry.grantee !== null) roles.add(entry.grantee);
  return [...roles];
}

// ---- views and materialized views ----

function viewKeyword(view: DependentView): string {
  return view.kind === 'view' ? 'VIEW' : 'MATERIALIZED VIEW';
}

/**
 * CREATE VIEW / MATERIALIZED VIEW in `placement.schema` under the view's own name, with its
 * options, column defaults, indexes, triggers and comments — everything but the owner and the
 * grants. The first statement sets the search path the definition replays under (SET LOCAL: the
 * caller puts its own back afterwards). A materialized view is populated by its CREATE (WITH
 * DATA) when it was populated at capture.
 */
export function dependentCreateSql(view: DependentView, placement: Placement): string[] {
  const at = quoteQualified({ schema: placement.schema, table: view.name });
  const options = view.options.length > 0 ? ` WITH (${view.options.map((o) => `${quoteIdent(o.name)} = ${quoteLiteral(o.value)}`).join(', ')})` : '';
  const statements = [setSearchPathSql(replayPath(view.searchPath, placement.readFirst))];
  if (view.kind === 'view') {
    statements.push(`CREATE VIEW ${at}${options} AS\n${view.definition}`);
  } else {
    statements.push(`CREATE MATERIALIZED VIEW ${at}${options} AS\n${view.definition}\nWITH ${view.populated ? '' : 'NO '}DATA`);
  }
  for (const column of view.columns) {
    if (column.default !== null) statements.push(`ALTER VIEW ${at} ALTER COLUMN ${quoteIdent(column.name)} SET DEFAULT ${column.default}`);
  }
  for (const index of view.indexes) {
    statements.push(`CREATE ${index.unique ? 'UNIQUE ' : ''}INDEX ${quoteIdent(index.name)} ON ${at} USING ${index.usingClause}`);
    if (index.clustered) statements.push(`ALTER MATERIALIZED VIEW ${at} CLUSTER ON ${quoteIdent(index.name)}`);
  }
  for (const trigger of view.triggers) statements.push(`${trigger.head} ON ${at} ${trigger.tail}`);
  if (view.comment !== null) statements.push(`COMMENT ON ${viewKeyword(view)} ${at} IS ${quoteLiteral(view.comment)}`);
  for (const column of view.columns) {
    if (column.comment !== null) statements.push(`COMMENT ON COLUMN ${at}.${quoteIdent(column.name)} IS ${quoteLiteral(column.comment)}`);
  }
  for (const index of view.indexes) {
    if (index.comment !== null) statements.push(`COMMENT ON INDEX ${quoteQualified({ schema: placement.schema, table: index.name })} IS ${quoteLiteral(index.comment)}`);
  }
  for (const trigger of view.triggers) {
    if (trigger.comment !== null) statements.push(`COMMENT ON TRIGGER ${quoteIdent(trigger.name)} ON ${at} IS ${quoteLiteral(trigger.comment)}`);
  }
  return statements;
}

export function dependentOwnerSql(view: DependentView, at: QualifiedName): string {
  return `ALTER ${viewKeyword(view)} ${quoteQualified(at)} OWNER TO ${quoteIdent(view.owner)}`;
}

/** The view's and its columns' privileges, for after the owner change (see the module comment). */
export function dependentGrantSql(view: DependentView, at: QualifiedName, missingRoles: ReadonlySet<string> = new Set()): string[] {
  const relation = quoteQualified(at);
  return [
    ...aclSql('TABLE', relation, view.owner, view.acl, missingRoles),
    ...view.columns.flatMap((column) => columnAclSql(relation, column.name, column.acl, missingRoles)),
  ];
}

// ---- types ----

function typeKeyword(type: TypeDefinition): 'TYPE' | 'DOMAIN' {
  return type.kind === 'domain' ? 'DOMAIN' : 'TYPE';
}

/** Why a captured type cannot be recreated from its definition, or null when it can. */
export function typeNotRecreatable(type: TypeDefinition): string | null {
  if (type.kind === 'range' && type.canonical !== null) return `a range type with a canonical function (${type.canonical}) must be created by hand`;
  return null;
}

function typeBody(type: TypeDefinition, placement: Placement): { create: string; after: string[] } {
  const at = quoteQualified({ schema: placement.schema, table: type.name });
  switch (type.kind) {
    case 'enum':
      return { create: enumSql(type, at), after: [] };
    case 'composite':
      return { create: compositeSql(type, at), after: [] };
    case 'domain':
      return domainSql(type, at);
    case 'range':
      return { create: rangeSql(type, at, placement), after: [] };
  }
}

function enumSql(type: EnumTypeDefinition, at: string): string {
  return `CREATE TYPE ${at} AS ENUM (${type.labels.map(quoteLiteral).join(', ')})`;
}

function compositeSql(type: CompositeTypeDefinition, at: string): string {
  const attributes = type.attributes.map((a) => `${quoteIdent(a.name)} ${a.type}${a.collation ? ` COLLATE ${a.collation}` : ''}`);
  return `CREATE TYPE ${at} AS (${attributes.join(', ')})`;
}

function domainSql(type: DomainTypeDefinition, at: string): { create: string; after: string[] } {
  const parts = [`CREATE DOMAIN ${at} AS ${type.baseType}`];
  if (type.collation) parts.push(`COLLATE ${type.collation}`);
  if (type.default !== null) parts.push(`DEFAULT ${type.default}`);
  if (type.notNull) parts.push(type.notNull.name ? `CONSTRAINT ${quoteIdent(type.notNull.name)} NOT NULL` : 'NOT NULL');
  // CREATE DOMAIN takes no NOT VALID check: those are added after, as they were.
  for (const check of type.checks) if (check.validated) parts.push(`CONSTRAINT ${quoteIdent(check.name)} ${check.definition}`);
  const after = type.checks.filter((check) => !check.validated).map((check) => `ALTER DOMAIN ${at} ADD CONSTRAINT ${quoteIdent(check.name)} ${check.definition}`);
  return { create: parts.join(' '), after };
}

function rangeSql(type: RangeTypeDefinition, at: string, placement: Placement): string {
  const options = [`SUBTYPE = ${type.subtype}`];
  if (type.opclass) options.push(`SUBTYPE_OPCLASS = ${type.opclass}`);
  if (type.collation) options.push(`COLLATION = ${type.collation}`);
  if (type.subtypeDiff) options.push(`SUBTYPE_DIFF = ${type.subtypeDiff}`);
  if (type.multirangeName) options.push(`MULTIRANGE_TYPE_NAME = ${quoteQualified({ schema: placement.schema, table: type.multirangeName })}`);
  return `CREATE TYPE ${at} AS RANGE (${options.join(', ')})`;
}

/** CREATE TYPE / DOMAIN in `placement.schema`, with its comment; not the owner, not the grants. */
export function typeCreateSql(type: TypeDefinition, placement: Placement): string[] {
  const reason = typeNotRecreatable(type);
  if (reason) throw new Error(`${type.schema}.${type.name}: ${reason}`);
  const at = quoteQualified({ schema: placement.schema, table: type.name });
  const body = typeBody(type, placement);
  const statements = [setSearchPathSql(replayPath(type.searchPath, placement.readFirst)), body.create, ...body.after];
  if (type.comment !== null) statements.push(`COMMENT ON ${typeKeyword(type)} ${at} IS ${quoteLiteral(type.comment)}`);
  return statements;
}

export function typeOwnerSql(type: TypeDefinition, at: QualifiedName): string {
  return `ALTER ${typeKeyword(type)} ${quoteQualified(at)} OWNER TO ${quoteIdent(type.owner)}`;
}

export function typeGrantSql(type: TypeDefinition, at: QualifiedName, missingRoles: ReadonlySet<string> = new Set()): string[] {
  return aclSql(typeKeyword(type), quoteQualified(at), type.owner, type.acl, missingRoles);
}

/** The captured type's definition without who owns it or may use it: what "the same type" means. */
export function typeShape(type: TypeDefinition): string {
  const { owner: _owner, acl: _acl, comment: _comment, searchPath: _path, schema: _schema, ...shape } = type;
  return JSON.stringify(shape);
}

// ---- the schema ----

export function schemaCreateSql(schema: SchemaDefinition): string[] {
  const statements = [`CREATE SCHEMA ${quoteIdent(schema.name)}`];
  if (schema.comment !== null) statements.push(`COMMENT ON SCHEMA ${quoteIdent(schema.name)} IS ${quoteLiteral(schema.comment)}`);
  return statements;
}

export function schemaOwnerSql(schema: SchemaDefinition): string {
  return `ALTER SCHEMA ${quoteIdent(schema.name)} OWNER TO ${quoteIdent(schema.owner)}`;
}

export function schemaGrantSql(schema: SchemaDefinition, missingRoles: ReadonlySet<string> = new Set()): string[] {
  return aclSql('SCHEMA', quoteIdent(schema.name), schema.owner, schema.acl, missingRoles);
}

// ---- foreign keys of other tables ----

/** Re-add another table's foreign key to `referenced` (the restored table), with its comment. */
export function referencingKeySql(key: ReferencingKey, referenced: QualifiedName): string[] {
  const table = quoteQualified({ schema: key.schema, table: key.table });
  const statements = [
    `ALTER TABLE ${table} ADD CONSTRAINT ${quoteIdent(key.name)} FOREIGN KEY (${key.columns.map(quoteIdent).join(', ')}) REFERENCES ${quoteQualified(referenced)}(${key.referencedColumns.map(quoteIdent).join(', ')})${key.actions}`,
  ];
  if (key.comment !== null) statements.push(`COMMENT ON CONSTRAINT ${quoteIdent(key.name)} ON ${table} IS ${quoteLiteral(key.comment)}`);
  return statements;
}

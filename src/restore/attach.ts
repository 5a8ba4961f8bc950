/**
 * What a restore gives the table once its rows are loaded: everything captured in
 * TableDefinition.attachments (src/db/attachments.ts) — privileges, comments, triggers, row-level
 * security and policies, storage parameters, column settings, replica identity, CLUSTER ON.
 *
 * The statements are planned purely (planAttachments) from the captured attachments and a few
 * facts about this cluster read beforehand (readAttachContext). They name the table and its
 * indexes and sequences by their final names, and are written to be run by whoever owns the
 * table at that moment — the restoring role — with no more than an owner's privileges: privileges
 * are granted relative to the owner (the captured owner's own entry becomes CURRENT_USER's), and
 * the transfer to the captured owner is a separate last step (ownershipSql), after which
 * PostgreSQL rewrites every entry of the old owner as the new owner's.
 */
import type pg from 'pg';
import type { AclEntry, Privileges, TableAttachments } from '../db/attachments.js';
import { quoteIdent, quoteLiteral, quoteQualified, type QualifiedName } from '../db/identifiers.js';
import { MissingTriggerFunctionError } from '../errors/index.js';

export interface SkippedAttachment {
  /** What was not recreated as captured, e.g. `GRANT SELECT ON TABLE public.people TO ghost`. */
  what: string;
  reason: string;
}

/** Grantees that ALTER DEFAULT PRIVILEGES gives every new table (or sequence) of the restoring role. */
export interface DefaultGrants {
  /** Role names; null: PUBLIC. */
  grantees: Array<string | null>;
  /** A database-wide entry replaces the owner's own defaults, which may then lack privileges. */
  ownerChanged: boolean;
}

/** What planAttachments needs to know about this cluster and the restoring role. */
export interface AttachContext {
  /** Roles (named by the attachments) that exist here. */
  existingRoles: Set<string>;
  /** Roles the restoring role may SET ROLE to, to grant as a grantor other than the owner. */
  settableRoles: Set<string>;
  /** Privilege names this server knows (MAINTAIN exists since PostgreSQL 17). */
  knownPrivileges: Set<string>;
  defaultGrants: { table: DefaultGrants; sequence: DefaultGrants };
}

export interface AttachTargets {
  /** The table under its final name (plan.target). */
  table: QualifiedName;
  /** Final names of the restored indexes, index-backed constraints included, by captured name. */
  indexNames: Map<string, string>;
  /** Final names of the restored constraints that attach comments on (not foreign keys), by captured name. */
  constraintNames: Map<string, string>;
  /** Final names of the restored owned sequences, by captured name. */
  sequenceNames: Map<string, QualifiedName>;
}

export interface AttachPlan {
  attach: string[];
  skipped: SkippedAttachment[];
}

const BASE_PRIVILEGES = ['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER', 'USAGE'];
// Keywords a manifest carries as words: only these ever reach the SQL (a manifest is data).
const STORAGE_KINDS = new Set(['PLAIN', 'EXTERNAL', 'EXTENDED', 'MAIN']);
const COMPRESSIONS = new Set(['pglz', 'lz4']);
const POLICY_COMMANDS = new Set(['SELECT', 'INSERT', 'UPDATE', 'DELETE']);
const NO_DEFAULT_GRANTS: DefaultGrants = { grantees: [], ownerChanged: false };

/** Every role the attachments name. */
function rolesNamed(attachments: TableAttachments): string[] {
  const names = new Set<string>([attachments.owner]);
  const fromAcl = (acl: AclEntry[] | null) => {
    for (const entry of acl ?? []) {
      if (entry.grantee !== null) names.add(entry.grantee);
      names.add(entry.grantor);
    }
  };
  fromAcl(attachments.privileges.acl);
  for (const column of attachments.columns) fromAcl(column.acl);
  for (const sequence of attachments.sequences) fromAcl(sequence.privileges.acl);
  for (const policy of attachments.policies) for (const role of policy.roles ?? []) names.add(role);
  return [...names];
}

async function defaultGrantsOf(client: pg.ClientBase, schema: string, objectType: 'r' | 'S'): Promise<DefaultGrants> {
  const { rows } = await client.query<{ grantee: string | null; global: boolean; to_self: boolean }>(
    `SELECT r.rolname AS grantee, d.defaclnamespace = 0 AS global, e.grantee = d.defaclrole AS to_self
       FROM pg_catalog.pg_default_acl d
       CROSS JOIN LATERAL pg_catalog.aclexplode(d.defaclacl) e
       LEFT JOIN pg_catalog.pg_roles r ON r.oid = e.grantee
      WHERE d.defaclrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
        AND d.defaclobjtype = $2
        AND (d.defaclnamespace = 0 OR d.defaclnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1))`,
    [schema, objectType],
  );
  const grantees = [...new Set(rows.filter((row) => !row.to_self).map((row) => row.grantee))];
  return { grantees, ownerChanged: rows.some((row) => row.global) };
}

/** Read what planAttachments needs, as the role that will run the statements, into `schema`. */
export async function readAttachContext(client: pg.ClientBase, attachments: TableAttachments, schema: string): Promise<AttachContext> {
  const version = await client.query<{ num: string }>(`SELECT pg_catalog.current_setting('server_version_num') AS num`);
  const versionNum = Number(version.rows[0]!.num);
  // From PostgreSQL 16 on, SET ROLE needs a membership's SET option, not membership alone.
  const canSet = versionNum >= 160000 ? `pg_catalog.pg_has_role(r.oid, 'SET')` : `pg_catalog.pg_has_role(r.oid, 'MEMBER')`;
  const { rows } = await client.query<{ name: string; settable: boolean }>(
    `SELECT r.rolname AS name, ${canSet} AS settable FROM pg_catalog.pg_roles r WHERE r.rolname = ANY ($1::text[])`,
    [rolesNamed(attachments)],
  );
  return {
    existingRoles: new Set(rows.map((row) => row.name)),
    settableRoles: new Set(rows.filter((row) => row.settable).map((row) => row.name)),
    knownPrivileges: new Set(versionNum >= 170000 ? [...BASE_PRIVILEGES, 'MAINTAIN'] : BASE_PRIVILEGES),
    defaultGrants: { table: await defaultGrantsOf(client, schema, 'r'), sequence: await defaultGrantsOf(client, schema, 'S') },
  };
}

/** Refuse, before anything is created, a trigger whose function this database lacks. */
export async function requireTriggerFunctions(client: pg.ClientBase, attachments: TableAttachments, table: QualifiedName): Promise<void> {
  for (const trigger of attachments.triggers) {
    const { rows } = await client.query<{ found: boolean }>(`SELECT pg_catalog.to_regprocedure($1) IS NOT NULL AS found`, [trigger.function]);
    if (!rows[0]!.found) throw new MissingTriggerFunctionError(trigger.function, trigger.name, quoteQualified(table));
  }
}

/** `name=value` of reloptions/attoptions as a SET (…) item: the value quoted, the name where it must be. */
function optionItem(option: string, prefix = ''): string {
  const at = option.indexOf('=');
  const name = at === -1 ? option : option.slice(0, at);
  const value = at === -1 ? 'true' : option.slice(at + 1);
  return `${prefix}${/^[a-z_][a-z0-9_]*$/.test(name) ? name : quoteIdent(name)}=${quoteLiteral(value)}`;
}

/** A DO block's dollar quote that does not occur in its body. */
function dollarQuote(body: string): string {
  let tag = '$backstop$';
  for (let n = 1; body.includes(tag); n += 1) tag = `$backstop_${n}$`;
  return `${tag}${body}${tag}`;
}

interface AclObject {
  /** `TABLE "s"."t"` or `SEQUENCE "s"."q"`. */
  on: string;
  /** For column privileges: the column, quoted. */
  column?: string;
}

class PrivilegePlanner {
  constructor(
    private readonly owner: string,
    private readonly context: AttachContext,
    private readonly skipped: SkippedAttachment[],
  ) {}

  /** Statements that give `object` the captured ACL, relative to the owner. */
  statements(object: AclObject, privileges: Privileges, defaults: DefaultGrants): string[] {
    const out: string[] = [];
    // ALTER DEFAULT PRIVILEGES of the restoring role added entries the captured table never had.
    if (!object.column && defaults.grantees.length > 0) {
      out.push(`REVOKE ALL ON ${object.on} FROM ${defaults.grantees.map((g) => (g === null ? 'PUBLIC' : quoteIdent(g))).join(', ')}`);
    }
    if (!object.column && defaults.ownerChanged) out.push(`GRANT ALL ON ${object.on} TO CURRENT_USER`);
    if (privileges.acl === null) return out;

    // The owner's own entry differs from the defaults (a privilege revoked from the owner): start
    // from none, as pg_dump does. The owner may grant without holding a privilege itself.
    const ownerEntryDiffers = !object.column && !privileges.ownerHasDefaults;
    if (ownerEntryDiffers) out.push(`REVOKE ALL ON ${object.on} FROM CURRENT_USER`);
    // In ACL order, which is the order they were granted in: a grantor's grant option is granted
    // before the grantor uses it, and the ACL comes out in the same order.
    for (const entry of privileges.acl) {
      const ownEntry = !object.column && entry.grantee === this.owner && entry.grantor === this.owner;
      if (ownEntry && !ownerEntryDiffers) continue;
      out.push(...this.entry(object, entry));
    }
    return out;
  }

  private entry(object: AclObject, entry: AclEntry): string[] {
    const grantee = entry.grantee === null ? 'PUBLIC' : entry.grantee === this.owner ? 'CURRENT_USER' : quoteIdent(entry.grantee);
    const shown = `GRANT ${entry.privileges.map((p) => p.name).join(', ')}${object.column ? ` (${object.column})` : ''} ON ${object.on} TO ${entry.grantee === null ? 'PUBLIC' : quoteIdent(entry.grantee)}`;
    // The owner's entries go to CURRENT_USER (the owner now): whether its role exists here is the owner transfer's business.
    if (entry.grantee !== null && entry.grantee !== this.owner && !this.context.existingRoles.has(entry.grantee)) {
      this.skipped.push({ what: shown, reason: `role "${entry.grantee}" does not exist in this cluster` });
      return [];
    }
    if (entry.grantor === this.owner) return this.grants(object, entry, grantee);
    if (entry.grantee === this.owner) {
      this.skipped.push({ what: `${shown} (granted by "${entry.grantor}")`, reason: 'a grant to the owner by another role gives the owner nothing: not recreated' });
      return [];
    }
    if (this.context.settableRoles.has(entry.grantor)) {
      // Recorded with its own grantor, as pg_dump does it: the grant is made as that role. The
      // role is put back to the one running the restore (a SET LOCAL ROLE would otherwise last
      // until the end of the transaction).
      const body = [
        '',
        'DECLARE restoring text := current_user;',
        'BEGIN',
        `  SET LOCAL ROLE ${quoteIdent(entry.grantor)};`,
        ...this.grants(object, entry, grantee).map((sql) => `  ${sql};`),
        `  EXECUTE pg_catalog.format('SET LOCAL ROLE %I', restoring);`,
        'END',
        '',
      ].join('\n');
      return [`DO ${dollarQuote(body)}`];
    }
    const why = this.context.existingRoles.has(entry.grantor)
      ? `the restoring role cannot act as "${entry.grantor}" (SET ROLE)`
      : `the grantor "${entry.grantor}" does not exist in this cluster`;
    this.skipped.push({ what: `${shown} (granted by "${entry.grantor}")`, reason: `${why}: granted by the owner instead` });
    return this.grants(object, entry, grantee);
  }

  /** GRANT statements for one entry: the plain privileges, then those WITH GRANT OPTION. */
  private grants(object: AclObject, entry: AclEntry, grantee: string): string[] {
    const known = entry.privileges.filter((p) => this.context.knownPrivileges.has(p.name));
    for (const p of entry.privileges.filter((p) => !known.includes(p))) {
      this.skipped.push({ what: `GRANT ${p.name} ON ${object.on}`, reason: `this PostgreSQL version has no ${p.name} privilege` });
    }
    const column = object.column ? ` (${object.column})` : '';
    const out: string[] = [];
    for (const grantable of [false, true]) {
      const names = known.filter((p) => p.grantable === grantable).map((p) => p.name);
      if (names.length === 0) continue;
      out.push(`GRANT ${names.join(', ')}${column} ON ${object.on} TO ${grantee}${grantable ? ' WITH GRANT OPTION' : ''}`);
    }
    return out;
  }
}

/** The statements that give the restored table what was attached to it (see the file comment). */
export function planAttachments(attachments: TableAttachments, targets: AttachTargets, context: AttachContext): AttachPlan {
  const table = quoteQualified(targets.table);
  const attach: string[] = [];
  const skipped: SkippedAttachment[] = [];
  const alterOnly = (action: string) => attach.push(`ALTER TABLE ONLY ${table} ${action}`);
  if (!context.existingRoles.has(attachments.owner)) {
    skipped.push({ what: `ALTER TABLE ${table} OWNER TO ${quoteIdent(attachments.owner)}`, reason: `role "${attachments.owner}" does not exist in this cluster: the table stays the restoring role's` });
  }

  // Storage parameters, column settings, replica identity, CLUSTER ON: ONLY, as pg_dump writes
  // them (partitions keep what they were created with).
  const parameters = [...attachments.storageParameters.map((o) => optionItem(o)), ...attachments.toastStorageParameters.map((o) => optionItem(o, 'toast.'))];
  if (parameters.length > 0) alterOnly(`SET (${parameters.join(', ')})`);
  const columnSettings = attachments.columns.flatMap((column) => {
    const alter = `ALTER COLUMN ${quoteIdent(column.name)}`;
    return [
      ...(column.statistics !== null && Number.isInteger(column.statistics) ? [`${alter} SET STATISTICS ${column.statistics}`] : []),
      ...(column.storage !== null && STORAGE_KINDS.has(column.storage) ? [`${alter} SET STORAGE ${column.storage}`] : []),
      ...(column.compression !== null && COMPRESSIONS.has(column.compression) ? [`${alter} SET COMPRESSION ${column.compression}`] : []),
      ...(column.options.length > 0 ? [`${alter} SET (${column.options.map((o) => optionItem(o)).join(', ')})`] : []),
    ];
  });
  if (columnSettings.length > 0) alterOnly(columnSettings.join(',\n  '));
  const identity = attachments.replicaIdentity;
  if (identity.kind === 'index') {
    const index = targets.indexNames.get(identity.index);
    if (index) alterOnly(`REPLICA IDENTITY USING INDEX ${quoteIdent(index)}`);
    else skipped.push({ what: `REPLICA IDENTITY USING INDEX ${quoteIdent(identity.index)}`, reason: 'the index was not restored' });
  } else if (identity.kind !== 'default') {
    alterOnly(`REPLICA IDENTITY ${identity.kind.toUpperCase()}`);
  }
  const cluster = attachments.clusterIndex === null ? undefined : targets.indexNames.get(attachments.clusterIndex);
  if (cluster) alterOnly(`CLUSTER ON ${quoteIdent(cluster)}`);

  // Comments.
  const comment = (on: string, text: string | null) => {
    if (text !== null) attach.push(`COMMENT ON ${on} IS ${quoteLiteral(text)}`);
  };
  comment(`TABLE ${table}`, attachments.comment);
  for (const column of attachments.columns) comment(`COLUMN ${table}.${quoteIdent(column.name)}`, column.comment);
  for (const { name, comment: text } of attachments.constraintComments) {
    const final = targets.constraintNames.get(name);
    if (final !== undefined) comment(`CONSTRAINT ${quoteIdent(final)} ON ${table}`, text);
  }
  for (const { name, comment: text } of attachments.indexComments) {
    const final = targets.indexNames.get(name);
    if (final !== undefined) comment(`INDEX ${quoteQualified({ schema: targets.table.schema, table: final })}`, text);
  }

  // Triggers, in their captured state.
  const enable = new Map([['D', 'DISABLE'], ['R', 'ENABLE REPLICA'], ['A', 'ENABLE ALWAYS']]);
  for (const trigger of attachments.triggers) {
    attach.push(`${trigger.beforeTable}${table} ${trigger.afterTable}`);
    const state = enable.get(trigger.enabled);
    if (state) attach.push(`ALTER TABLE ${table} ${state} TRIGGER ${quoteIdent(trigger.name)}`);
    comment(`TRIGGER ${quoteIdent(trigger.name)} ON ${table}`, trigger.comment);
  }

  // Row-level security and policies. A policy keeps only the roles that exist here; one whose
  // roles are all missing applies to no role here, and is left out (never widened to PUBLIC).
  if (attachments.rowSecurity.enabled) attach.push(`ALTER TABLE ${table} ENABLE ROW LEVEL SECURITY`);
  if (attachments.rowSecurity.forced) attach.push(`ALTER TABLE ${table} FORCE ROW LEVEL SECURITY`);
  for (const policy of attachments.policies) {
    const missing = (policy.roles ?? []).filter((role) => !context.existingRoles.has(role));
    const roles = (policy.roles ?? []).filter((role) => context.existingRoles.has(role));
    const what = `POLICY ${quoteIdent(policy.name)} ON ${table}`;
    if (missing.length > 0) {
      const gone = missing.map((role) => `"${role}"`).join(', ');
      skipped.push({ what: roles.length > 0 ? `${what} TO ${gone}` : what, reason: `role(s) ${gone} do not exist in this cluster${roles.length > 0 ? '' : ': the policy applies to no role here'}` });
      if (roles.length === 0) continue;
    }
    const clauses = [
      `CREATE POLICY ${quoteIdent(policy.name)} ON ${table}`,
      ...(policy.permissive ? [] : ['AS RESTRICTIVE']),
      ...(POLICY_COMMANDS.has(policy.command) ? [`FOR ${policy.command}`] : []),
      ...(policy.roles === null ? [] : [`TO ${roles.map(quoteIdent).join(', ')}`]),
      ...(policy.using !== null ? [`USING (${policy.using})`] : []),
      ...(policy.withCheck !== null ? [`WITH CHECK (${policy.withCheck})`] : []),
    ];
    attach.push(clauses.join(' '));
    comment(what, policy.comment);
  }

  // Privileges: the table's, its columns', its owned sequences'.
  const privileges = new PrivilegePlanner(attachments.owner, context, skipped);
  attach.push(...privileges.statements({ on: `TABLE ${table}` }, attachments.privileges, context.defaultGrants.table));
  for (const column of attachments.columns) {
    if (column.acl.length === 0) continue;
    attach.push(...privileges.statements({ on: `TABLE ${table}`, column: quoteIdent(column.name) }, { acl: column.acl, ownerHasDefaults: true }, NO_DEFAULT_GRANTS));
  }
  for (const sequence of attachments.sequences) {
    const name = targets.sequenceNames.get(sequence.name);
    if (!name) continue;
    comment(`SEQUENCE ${quoteQualified(name)}`, sequence.comment);
    attach.push(...privileges.statements({ on: `SEQUENCE ${quoteQualified(name)}` }, sequence.privileges, context.defaultGrants.sequence));
  }
  return { attach, skipped };
}

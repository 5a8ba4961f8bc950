/**
 * Staging an undo or a restore asked for from psql (sql/0007_undo.sql: `backstop.undo(42)`,
 * `backstop.restore('<snapshot id>', 'x')`).
 *
 * The agent builds, in the private schema backstop_restore_<id> and in ONE transaction, what the
 * caller's statement will then adopt: the tables of the before-images (or of the snapshot) with
 * their rows verified against the manifest, indexes, constraints and what is attached to them
 * (restoreItems, the same engine as `backstop restore`), and for a column or a TRUNCATE a bare
 * image to read the rows back from. `backstop.agent_staged` runs in that transaction, so
 * "staged" and what it describes commit together; a failure commits nothing and is reported
 * with its reason and hint. The caller's session then moves everything into place with its own
 * rights (backstop._adopt_staged): the agent never runs anything in another role's name.
 *
 * planStaging decides what to stage from the claim and the manifests (pure); stageRestore does it.
 */
import type pg from 'pg';
import { displayName, parseQualifiedName, quoteIdent, quoteQualified, type QualifiedName } from '../db/identifiers.js';
import { BackstopError, ConfigError, NotFoundError, describeError, type BackstopErrorOptions } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import { findManifest } from '../snapshot/list.js';
import type { Manifest } from '../snapshot/manifest.js';
import type { Storage } from '../storage/storage.js';
import type { Acl, DependentView, TypeDefinition } from '../db/dependents.js';
import { dependentOrder } from '../db/dependents.js';
import { dependentCreateSql, dependentGrantSql, typeCreateSql, typeGrantSql, typeNotRecreatable } from './dependents-sql.js';
import { foreignKeyOrder } from './group-order.js';
import { keepingSearchPath, restoreItems, type RestoreItem } from './restore.js';

/** What backstop.agent_claim_restore hands the agent. */
export interface ClaimedRestore {
  restore: {
    id: number;
    kind: 'undo' | 'restore';
    request_id: number | null;
    snapshot_id: string | null;
    into_schema: string | null;
    into_table: string | null;
    requested_by: string;
    staging_schema: string;
  };
  request: {
    id: number;
    command_tag: string;
    targets: string[];
    target_oids: Array<number | string>;
    coverage: CoverageItem[] | null;
    snapshot_ids: string[];
  } | null;
}

export interface CoverageItem {
  kind: 'drop table' | 'drop column' | 'alter column type' | 'truncate';
  relid: number;
  attnum?: number | null;
}

/** A table as it is now (for the kinds that leave the table in place). */
export interface LiveTable {
  relid: number;
  name: QualifiedName;
  /** Primary key (or unique replica identity) columns, in order; empty when there is none. */
  key: string[];
  /** A partitioned table holds no rows of its own: its partitions have their own images. */
  partitioned?: boolean;
}

/** One object the caller's statement moves into place (see backstop._adopt_object). */
export interface StagedObject {
  kind: 'table' | 'view' | 'materialized view' | 'sequence' | 'type';
  /** Its name in the staging schema. */
  staged: string;
  schema: string;
  name: string;
  owner: string | null;
  /** The caller owns it when it may not become `owner` (a restore into a new name). */
  owner_optional?: boolean;
}

/** An image the caller's statement reads rows back from (see backstop._restore_image). */
export interface StagedImage {
  kind: 'drop column' | 'alter column type' | 'truncate';
  relid: number;
  image: string;
  column?: string;
  attnums?: number[];
  key: string[];
}

export interface StagedForeignKey {
  table: { schema: string; name: string };
  name: string;
  columns: string[];
  references: { schema: string; name: string };
  referenced_columns: string[];
  actions: string;
  comment?: string | null;
}

export interface StagingPlan {
  items: RestoreItem[];
  /** Types a DROP SCHEMA took (created before the tables), and views a CASCADE took (after). */
  types: TypeDefinition[];
  views: DependentView[];
  objects: StagedObject[];
  images: StagedImage[];
  schemas: Array<{ name: string; owner: string | null; comment: string | null; acl: Acl }>;
  foreignKeys: StagedForeignKey[];
  notes: string[];
}

/** The owner a snapshot captured for its table, when its manifest says (older ones do not). */
export function capturedOwner(manifest: Manifest): string | null {
  return manifest.definition.attachments?.owner ?? null;
}

/** What was asked cannot be staged; the reason reaches psql as the undo's error. */
export class StagingRefusal extends BackstopError {
  constructor(message: string, options: BackstopErrorOptions = {}) {
    super('staging_refused', message, options);
  }
}

function sameName(a: QualifiedName, b: QualifiedName): boolean {
  return a.schema === b.schema && a.table === b.table;
}

/**
 * What a DROP … CASCADE / DROP SCHEMA took with the tables, from their manifests: the views on
 * them (once each, in creation order), other tables' foreign keys to them (re-added by the
 * caller: the agent has no right to alter those tables), and for a DROP SCHEMA the schema itself
 * and the types of it the tables need. Older manifests carry none of it.
 */
function planDroppedSurroundings(plan: StagingPlan, manifests: Manifest[], dropSchema: boolean, stagingName: (wanted: string) => string): void {
  const key = (schema: string, name: string) => `${schema}\u0000${name}`;
  const restored = new Set(manifests.map((m) => key(m.schema, m.table)));
  const views = new Map<string, DependentView>();
  const types = new Map<string, TypeDefinition>();
  for (const manifest of manifests) {
    const def = manifest.definition;
    for (const view of def.dependents ?? []) views.set(key(view.schema, view.name), view);
    for (const fk of def.referencedBy ?? []) {
      if (restored.has(key(fk.schema, fk.table))) continue;  // restored in the same run: restoreItems re-adds it
      plan.foreignKeys.push({
        table: { schema: fk.schema, name: fk.table }, name: fk.name, columns: fk.columns,
        references: { schema: def.schema, name: def.table }, referenced_columns: fk.referencedColumns, actions: fk.actions, comment: fk.comment,
      });
    }
    if (!dropSchema) continue;
    for (const type of def.types ?? []) {
      const reason = typeNotRecreatable(type);
      if (reason) plan.notes.push(`type ${displayName({ schema: type.schema, table: type.name })} not restored: ${reason}`);
      else types.set(key(type.schema, type.name), type);
    }
    const schema = def.schemaDefinition;
    if (schema && !plan.schemas.some((s) => s.name === schema.name)) {
      plan.schemas.push({ name: schema.name, owner: schema.owner, comment: schema.comment, acl: schema.acl });
    }
  }
  plan.views = dependentOrder([...views.values()]);
  plan.types = [...types.values()];
  for (const type of plan.types) {
    plan.objects.push({ kind: 'type', staged: stagingName(type.name), schema: type.schema, name: type.name, owner: type.owner });
  }
}

/**
 * What to stage for a claimed restore, given the manifests of its snapshots and the tables it
 * touches as they are now. Tables keep their own names in the staging schema (two of the same
 * name from different schemas get a suffix there and are renamed back on adoption).
 */
export function planStaging(claim: ClaimedRestore, manifests: Manifest[], live: LiveTable[]): StagingPlan {
  const staging = claim.restore.staging_schema;
  const plan: StagingPlan = { items: [], types: [], views: [], objects: [], images: [], schemas: [], foreignKeys: [], notes: [] };
  const stagedNames = new Set<string>();
  const stagingName = (wanted: string): string => {
    let name = wanted;
    for (let n = 2; stagedNames.has(name); n += 1) name = `${wanted.slice(0, 55)}_${n}`;
    stagedNames.add(name);
    return name;
  };
  const stageTable = (manifest: Manifest, final: QualifiedName, ownerOptional: boolean): void => {
    const staged = stagingName(final.table);
    plan.items.push({ manifest, target: { schema: staging, table: staged } });
    plan.objects.push({
      kind: 'table', staged, schema: final.schema, name: final.table, owner: capturedOwner(manifest),
      ...(ownerOptional ? { owner_optional: true } : {}),
    });
  };

  if (claim.restore.kind === 'restore') {
    const manifest = manifests[0];
    if (!manifest) throw new NotFoundError(`snapshot ${claim.restore.snapshot_id} was not found in storage`, { hint: 'SELECT * FROM backstop.snapshots;' });
    const final = claim.restore.into_table
      ? { schema: claim.restore.into_schema ?? manifest.schema, table: claim.restore.into_table }
      : { schema: manifest.schema, table: manifest.table };
    const intoAnotherName = !sameName(final, { schema: manifest.schema, table: manifest.table });
    stageTable(manifest, final, intoAnotherName);
    return plan;
  }

  const request = claim.request;
  if (!request) throw new StagingRefusal(`restore ${claim.restore.id} names no request`);
  if (request.command_tag === 'DROP TABLE' || request.command_tag === 'DROP SCHEMA') {
    planDroppedSurroundings(plan, manifests, request.command_tag === 'DROP SCHEMA', stagingName);
    for (const manifest of manifests) stageTable(manifest, { schema: manifest.schema, table: manifest.table }, false);
    for (const view of plan.views) {
      plan.objects.push({ kind: view.kind, staged: stagingName(view.name), schema: view.schema, name: view.name, owner: view.owner });
    }
    return plan;
  }

  // ALTER TABLE and TRUNCATE: the tables are still there; images are read back by key.
  /** What a table is called now (when it is still there), and what it was called when the request was filed. */
  const namesOf = (relid: number): QualifiedName[] => {
    const index = request.target_oids.findIndex((oid) => Number(oid) === relid);
    return [live.find((table) => table.relid === relid)?.name, index >= 0 ? parseQualifiedName(request.targets[index]!) : undefined]
      .filter((name): name is QualifiedName => name !== undefined);
  };
  const manifestFor = (relid: number): Manifest => {
    const names = namesOf(relid);
    const found = manifests.find((m) => names.some((name) => sameName(name, { schema: m.schema, table: m.table })));
    if (!found) {
      const name = names[0];
      throw new StagingRefusal(`request ${request.id} has no before-image of ${name ? displayName(name) : `table ${relid}`}`, {
        hint: request.command_tag === 'TRUNCATE TABLE'
          ? 'the image of a TRUNCATE is exported by the agent right after the TRUNCATE commits: try again in a moment (SELECT * FROM backstop.snapshots WHERE request_id = …)'
          : 'SELECT snapshot_ids FROM backstop.requests WHERE id = …',
      });
    }
    return found;
  };
  // A partitioned table's rows are in its partitions, each covered (and imaged) on its own.
  const items = (request.coverage ?? []).filter((item) => item.kind !== 'drop table')
    .filter((item) => !(item.kind === 'truncate' && live.find((t) => t.relid === Number(item.relid))?.partitioned));
  for (const item of items) {
    const relid = Number(item.relid);
    const manifest = manifestFor(relid);
    const table = live.find((t) => t.relid === relid);
    const image = stagingName(`image_${plan.images.length + 1}`);
    plan.items.push({ manifest, target: { schema: staging, table: image }, bare: true });
    if (item.kind === 'truncate') {
      plan.images.push({ kind: 'truncate', relid, image, key: table?.key ?? [] });
      continue;
    }
    const column = manifest.definition.columns.find((c) => c.attnum === item.attnum);
    if (!column) {
      throw new StagingRefusal(`the before-image of ${displayName({ schema: manifest.schema, table: manifest.table })} has no column number ${item.attnum}`, {
        hint: 'restore the before-image under another name instead: SELECT backstop.restore(\'<snapshot id>\', \'name\');',
      });
    }
    const keyInImage = (table?.key ?? []).every((name) => manifest.definition.columns.some((c) => c.name === name));
    plan.images.push({ kind: item.kind as 'drop column' | 'alter column type', relid, image, column: column.name, attnums: [Number(item.attnum)], key: keyInImage ? table?.key ?? [] : [] });
  }
  if (plan.images.length === 0) throw new StagingRefusal(`request ${request.id} destroyed nothing undo can put back`);
  // Rows go back referenced tables first (a TRUNCATE … CASCADE emptied both sides of a key).
  const manifestOf = new Map(plan.items.map((item) => [item.target.table, item.manifest]));
  plan.images = foreignKeyOrder(plan.images, (image) => manifestOf.get(image.image)!.definition);
  return plan;
}

export interface StageOptions {
  /** A dedicated connection, not in a transaction (the staging transaction runs on it). */
  client: pg.ClientBase;
  /** For progress (committed apart from the staging transaction). */
  pool: Pick<pg.Pool, 'query'>;
  storage: Storage;
  agentId: string;
  logger: Logger;
}

/** The manifests an undo or restore stages from, read (and checked) from storage. */
async function manifestsOf(options: StageOptions, claim: ClaimedRestore): Promise<Manifest[]> {
  if (claim.restore.kind === 'restore') return [await findManifest(options.storage, claim.restore.snapshot_id!)];
  const { rows } = await options.client.query<{ snapshot_id: string }>(
    `SELECT s.snapshot_id FROM backstop.snapshot_catalog s
      WHERE s.snapshot_id = ANY ($1::text[])
         OR (s.request_id = $2 AND s.source = 'before-image' AND s.verified)
      ORDER BY s.created_at, s.snapshot_id`,
    [claim.request?.snapshot_ids ?? [], claim.restore.request_id],
  );
  const ids = [...new Set([...(claim.request?.snapshot_ids ?? []), ...rows.map((row) => row.snapshot_id)])];
  const manifests: Manifest[] = [];
  for (const id of ids) manifests.push(await findManifest(options.storage, id));
  // One image per table: the newest (a completion's re-capture replaces the bulk image).
  const newest = new Map<string, Manifest>();
  for (const manifest of manifests) {
    const key = displayName({ schema: manifest.schema, table: manifest.table });
    const seen = newest.get(key);
    if (!seen || seen.created_at < manifest.created_at) newest.set(key, manifest);
  }
  return [...newest.values()];
}

/** The tables an undo leaves in place, as they are now, with the key their rows match by. */
async function liveTables(client: pg.ClientBase, claim: ClaimedRestore): Promise<LiveTable[]> {
  const relids = (claim.request?.coverage ?? []).map((item) => Number(item.relid));
  if (relids.length === 0) return [];
  const { rows } = await client.query<{ relid: string; schema: string; table: string; key: string[] | null; partitioned: boolean }>(
    `SELECT c.oid::int8::text AS relid, n.nspname AS schema, c.relname AS table, c.relkind = 'p' AS partitioned,
            (SELECT array_agg(a.attname::text ORDER BY k.ord)
               FROM (SELECT i.indexrelid, i.indkey FROM pg_catalog.pg_index i
                      WHERE i.indrelid = c.oid AND (i.indisprimary OR (i.indisreplident AND i.indisunique))
                        AND i.indpred IS NULL AND i.indexprs IS NULL
                      ORDER BY i.indisprimary DESC LIMIT 1) AS pk,
                    unnest(pk.indkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum) AS key
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.oid = ANY ($1::oid[])`,
    [relids],
  );
  return rows.map((row) => ({ relid: Number(row.relid), name: { schema: row.schema, table: row.table }, key: row.key ?? [], partitioned: row.partitioned }));
}

/** At most one progress write per interval (they are for the NOTICE a person reads). */
function throttled(intervalMs: number, write: (rows: number) => void): (rows: number) => void {
  let last = 0;
  return (rows) => {
    const now = Date.now();
    if (now - last < intervalMs) return;
    last = now;
    write(rows);
  };
}

export interface StageResult {
  rows: number;
  verifiedBy: string;
  plan: StagingPlan;
}

/**
 * Stage a claimed restore: everything in one transaction that ends with agent_staged. Throws on
 * failure (the caller reports it with agent_fail_restore); nothing is left staged then.
 */
export async function stageRestore(options: StageOptions, claim: ClaimedRestore): Promise<StageResult> {
  const { client, pool, logger } = options;
  const restoreId = claim.restore.id;
  const manifests = await manifestsOf(options, claim);
  if (manifests.length === 0) throw new StagingRefusal(`request ${claim.restore.request_id} has no before-image in storage`, { hint: 'SELECT * FROM backstop.snapshots;' });
  const plan = planStaging(claim, manifests, await liveTables(client, claim));
  const totalRows = plan.items.reduce((sum, item) => sum + item.manifest.row_count, 0);
  const loadedBefore = new Map<RestoreItem, number>();
  const report = throttled(500, (rows) => {
    pool.query('SELECT backstop.agent_restore_progress($1, $2, $3, $4)', [restoreId, options.agentId, rows, totalRows])
      .catch((error: unknown) => logger.debug('restore progress not recorded', { restore_id: restoreId, error: describeError(error) }));
  });
  let verifiedBy = 'content hash';
  const staging = claim.restore.staging_schema;
  const placement = { schema: staging, readFirst: staging };
  const result = await restoreItems(client, options.storage, plan.items, {
    logger,
    progress: false,
    // The caller's statement gives each object its owner, once it checked it may (_adopt_object),
    // and brings back the surroundings staged here (types, views, other tables' foreign keys).
    transferOwnership: false,
    surroundings: false,
    prepare: async (tx) => {
      const agentRole = await currentRole(tx);
      await keepingSearchPath(tx, async () => {
        for (const type of plan.types) {
          const staged = stagedName(plan, 'type', type.schema, type.name);
          for (const sql of typeCreateSql({ ...type, name: staged }, placement)) await tx.query(sql);
          const at = { schema: staging, table: staged };
          for (const sql of typeGrantSql({ ...type, owner: agentRole, acl: ownedBy(type.acl, type.owner, agentRole) }, at)) await tx.query(sql);
        }
      });
    },
    onRows: (item, rows) => {
      loadedBefore.set(item, rows);
      report([...loadedBefore.values()].reduce((sum, n) => sum + n, 0));
    },
    beforeCommit: async (tx, restored) => {
      verifiedBy = [...new Set(restored.tables.map((table) => table.verifiedBy ?? 'content hash'))].join(', ');
      // Foreign keys the agent could not add (they point at tables outside the staging schema,
      // on which it has no REFERENCES right) are re-added by the caller after adoption.
      // restoreItems restores referenced tables first: match each result to its item by target.
      for (const table of restored.tables) {
        const item = plan.items.find((candidate) => candidate.target.table === table.target.table)!;
        if (item.bare) continue;
        const object = plan.objects.find((o) => o.kind === 'table' && o.staged === item.target.table)!;
        for (const skipped of table.skippedForeignKeys) {
          const fk = item.manifest.definition.constraints.find((c) => c.name === skipped.name && c.references);
          if (!fk?.references) continue;
          plan.foreignKeys.push({
            table: { schema: object.schema, name: object.name },
            name: fk.name,
            columns: fk.references.columns,
            references: { schema: fk.references.schema, name: fk.references.table },
            referenced_columns: fk.references.referencedColumns,
            actions: fk.references.actions,
          });
        }
      }
      const agentRole = await currentRole(tx);
      await keepingSearchPath(tx, async () => {
        for (const view of plan.views) {
          const staged = stagedName(plan, view.kind, view.schema, view.name);
          for (const sql of dependentCreateSql({ ...view, name: staged }, placement)) await tx.query(sql);
          const at = { schema: staging, table: staged };
          const asAgent = { ...view, owner: agentRole, acl: ownedBy(view.acl, view.owner, agentRole), columns: view.columns.map((c) => ({ ...c, acl: ownedBy(c.acl, view.owner, agentRole) })) };
          for (const sql of dependentGrantSql(asAgent, at)) await tx.query(sql);
        }
      });
      // An image holds a table's rows: readable only by a requester who may read that table
      // (the caller's statement says so clearly when it may not; backstop._image_refusal).
      for (const image of plan.images) {
        const { rows: [may] } = await tx.query<{ read: boolean }>(
          `SELECT pg_catalog.has_table_privilege($1, $2::oid, 'SELECT') AS read`, [claim.restore.requested_by, image.relid]);
        if (!may?.read) continue;
        await tx.query(`GRANT SELECT ON ${quoteQualified({ schema: claim.restore.staging_schema, table: image.image })} TO ${quoteIdent(claim.restore.requested_by)}`);
      }
      const staged = { schemas: plan.schemas, objects: plan.objects, images: plan.images, foreign_keys: plan.foreignKeys, notes: plan.notes };
      const { rows } = await tx.query<{ staged: boolean }>('SELECT backstop.agent_staged($1, $2, $3, $4, $5) AS staged', [restoreId, options.agentId, JSON.stringify(staged), totalRows, verifiedBy]);
      if (!rows[0]?.staged) throw new ConfigError(`restore ${restoreId} is no longer this agent's to stage`, { hint: 'another agent took it over, or its session gave up' });
    },
  });
  logger.info('restore staged', { event: 'restore.staged', restore_id: restoreId, tables: result.tables.length, rows: totalRows, ms: result.durationMs });
  return { rows: totalRows, verifiedBy, plan };
}

/** The name an object of the plan has in the staging schema. */
function stagedName(plan: StagingPlan, kind: StagedObject['kind'], schema: string, name: string): string {
  return plan.objects.find((o) => o.kind === kind && o.schema === schema && o.name === name)?.staged ?? name;
}

async function currentRole(client: pg.ClientBase): Promise<string> {
  const { rows } = await client.query<{ role: string }>('SELECT current_user AS role');
  return rows[0]!.role;
}

/**
 * The captured ACL as the agent's role must grant it while it owns the staged object: the
 * captured owner's own entries become the agent role's, which the owner change on adoption turns
 * back into the owner's (PostgreSQL rewrites the old owner's entries to the new owner).
 */
function ownedBy(acl: Acl, capturedOwner: string, role: string): Acl {
  return acl === null ? null : acl.map((entry) => ({ ...entry, grantee: entry.grantee === capturedOwner ? role : entry.grantee, grantor: entry.grantor === capturedOwner ? role : entry.grantor }));
}

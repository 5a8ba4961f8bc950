/**
 * Restore snapshots into tables.
 *
 * Every data file is downloaded and checked against its manifest's SHA-256 before anything is
 * created. Then, in ONE transaction: each table is created from its captured definition (without
 * identity), loaded with COPY, its row count and content hash verified against the manifest
 * (verify-rows.ts), and only then given its identity, sequences, indexes and constraints; `--replace` drops the
 * original and renames the verified build into place; foreign keys come once every table of the
 * run exists under its final name; then what was attached to each table (privileges, comments,
 * triggers, policies…: attach.ts) and, last, its captured owner. Any failure rolls the whole transaction back: no table
 * is ever left half-restored, and an original is never dropped for a copy that did not verify.
 *
 * A table restored under its own name undoes its drop (undo-drop.ts): its schema and types come
 * back before it, and once every table of the run is in place, the foreign keys of other tables
 * that referenced it and the views built on it. Each of those is added under a savepoint: one
 * that cannot be (a referencing table gone, rows that violate a key, a view name taken) is
 * reported and left out, never the reason the tables are not restored.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { displayName, parseQualifiedName, quoteIdent, quoteQualified, type QualifiedName } from '../db/identifiers.js';
import { BackstopError, ConfigError, ConflictError, DatabaseError, NotFoundError, VerificationError, describeError } from '../errors/index.js';
import { silentLogger, type Logger } from '../log/logger.js';
import { createProgress, type ProgressReporter } from '../log/progress.js';
import type { ContentHash } from '../snapshot/content-hash.js';
import { findManifest, listManifests } from '../snapshot/list.js';
import type { Manifest } from '../snapshot/manifest.js';
import { setCanonicalSettingsLocal } from '../snapshot/session-settings.js';
import type { Storage } from '../storage/storage.js';
import { startCopyRenderer } from './copy-text.js';
import { foreignKeyOrder } from './group-order.js';
import { copyColumnsFor, copyStatement, loadRows, maintenanceWorkMemKb, raiseMaintenanceWorkMemLocal } from './load.js';
import { takenRelationNames, truncateIdentifier } from './names.js';
import type { SkippedAttachment } from './attach.js';
import { foreignKeyCommentSql, foreignKeySql, ownershipSql, planRestore, sequenceResetSql, type PlannedForeignKey, type RestorePlan, type SkippedForeignKey } from './plan.js';
import { readsInPlace, verifyDataFiles, type VerifiedDataFile } from './verified-file.js';
import { verifyRestoredRows, type RowCheck } from './verify-rows.js';
import { relationExists } from '../db/catalog.js';
import { compareNames } from '../db/dependents.js';
import { newUndoDropRun, planDependents, undoesDrop, type NotRestored, type PlannedDependent } from './undo-drop.js';

export interface RestoreItem {
  manifest: Manifest;
  /** Where the table goes. */
  target: QualifiedName;
  /**
   * Only the table and its rows (verified), without indexes, constraints, identity, foreign keys
   * or anything attached: the images an undo reads from (src/restore/stage.ts).
   */
  bare?: boolean;
}

export interface RunOptions {
  /** Drop and replace a target that exists (after the new copy verified). Default: refuse. */
  replace?: boolean;
  /** Plan and check only (download and checksum included); change nothing. */
  dryRun?: boolean;
  /**
   * ANALYZE each restored table after the commit. Default: only tables that replaced an existing
   * one (--replace), which queries use at once; a table restored beside the original (for
   * inspection or copy-back) is left to autovacuum, as pg_restore leaves it.
   */
  analyze?: boolean;
  /**
   * maintenance_work_mem for the index and constraint builds, as `512MB`, `2GB`…, raised for the
   * restore transaction only, never lowered; `server` keeps the server's (load.ts). Default 512MB.
   */
  maintenanceWorkMem?: string;
  logger?: Logger;
  /** Show progress (bar on a terminal, log lines otherwise). Default: true when a logger is given. */
  progress?: boolean;
  /** Where the progress bar is drawn (default stderr). */
  progressStream?: NodeJS.WriteStream;
  /** Rows loaded so far into the table being loaded (running total), besides the progress display. */
  onRows?(item: RestoreItem, rows: number): void;
  /**
   * Bring back what a DROP … CASCADE / DROP SCHEMA took with a table restored as itself (its
   * schema and types, other tables' foreign keys, dependent views: undo-drop.ts). Default true;
   * the undo's staging does that itself, where the caller's session can adopt it (stage.ts).
   */
  surroundings?: boolean;
  /** Runs inside the restore's transaction, right after BEGIN, before any table is created. */
  prepare?(client: pg.ClientBase): Promise<void>;
  /** Runs inside the restore's transaction after everything is built and verified, just before COMMIT. */
  beforeCommit?(client: pg.ClientBase, result: RestoreResult): Promise<void>;
  /**
   * Give each table its captured owner at the end (default true). A caller that moves the table
   * elsewhere and transfers it itself passes false: the table stays the restoring role's.
   */
  transferOwnership?: boolean;
}

export interface RestoredTable {
  snapshotId: string;
  source: QualifiedName;
  target: QualifiedName;
  rows: number;
  contentHash: ContentHash;
  /** How the rows were checked against the snapshot (src/restore/verify-rows.ts); null on a dry run. */
  verifiedBy: RowCheck | null;
  /** True when an existing table was replaced. */
  replaced: boolean;
  /** Foreign keys not restored, and why. */
  skippedForeignKeys: SkippedForeignKey[];
  /** Privileges, policies, the owner… not recreated as captured (a role missing here), and why. */
  skippedAttachments: SkippedAttachment[];
  /** Restored as itself: what of its schema, types and referencing foreign keys was left out, and why. */
  notRestored: NotRestored[];
  plan: RestorePlan;
  /** The script --dry-run prints (and a real run executes). */
  script: string;
  loadMs: number;
}

export interface RestoredDependents {
  /** Views and materialized views recreated (planned, on a dry run), `schema.name`, in creation order. */
  created: string[];
  notRestored: NotRestored[];
  /** The SQL that creates them, for --dry-run ('' when there are none). */
  script: string;
}

export interface RestoreResult {
  dryRun: boolean;
  tables: RestoredTable[];
  /** The views of the tables restored as themselves (see undo-drop.ts). */
  dependents: RestoredDependents;
  durationMs: number;
}

interface ReplacedOriginal {
  table: QualifiedName;
  /** Foreign keys of other tables that reference the original: re-added against the restored table. */
  referencingForeignKeys: Array<{ table: QualifiedName; name: string; definition: string }>;
}

/** Resolve a user-written table name; an unqualified name means the snapshot's schema. */
export function resolveTableName(input: string | QualifiedName, defaultSchema: string): QualifiedName {
  return typeof input === 'string' ? parseQualifiedName(input, defaultSchema) : input;
}

async function ensureSchema(client: pg.ClientBase, schema: string): Promise<void> {
  // CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists: a
  // role restoring into a schema it was given (not a superuser) may lack it.
  const { rows } = await client.query<{ exists: boolean }>(`SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1) AS exists`, [schema]);
  if (!rows[0]!.exists) await client.query(`CREATE SCHEMA ${quoteIdent(schema)}`);
}

/** Foreign keys on other tables that point at `table`, as schema-qualified definitions. */
async function referencingForeignKeys(client: pg.ClientBase, table: QualifiedName): Promise<ReplacedOriginal['referencingForeignKeys']> {
  // An empty search_path makes pg_get_constraintdef qualify the referenced table.
  const saved = await client.query<{ path: string }>(`SELECT pg_catalog.current_setting('search_path') AS path`);
  await client.query(`SELECT pg_catalog.set_config('search_path', '', true)`);
  try {
    const { rows } = await client.query<{ schema: string; table: string; name: string; definition: string }>(
      `SELECT n.nspname AS schema, c.relname AS table, con.conname AS name, pg_catalog.pg_get_constraintdef(con.oid) AS definition
         FROM pg_catalog.pg_constraint con
         JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_catalog.pg_class r ON r.oid = con.confrelid
         JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
        WHERE con.contype = 'f' AND rn.nspname = $1 AND r.relname = $2 AND con.conrelid <> con.confrelid AND con.conparentid = 0`,
      [table.schema, table.table],
    );
    return rows.map((row) => ({ table: { schema: row.schema, table: row.table }, name: row.name, definition: row.definition }));
  } finally {
    await client.query(`SELECT pg_catalog.set_config('search_path', $1, true)`, [saved.rows[0]!.path]);
  }
}

function temporaryBuildName(target: QualifiedName): QualifiedName {
  const suffix = `_backstop_${randomBytes(3).toString('hex')}`;
  return { schema: target.schema, table: truncateIdentifier(target.table, 63 - suffix.length) + suffix };
}

/** The SQL a restore runs for one table, for --dry-run and logs. */
export function restoreScript(plan: RestorePlan, manifest: Manifest, replaced: boolean, withOwner = true): string {
  const lines: string[] = [];
  const statement = (sql: string) => lines.push(`${sql};`);
  lines.push(`-- restore snapshot ${manifest.snapshot_id} of ${displayName(plan.source)} (${manifest.row_count} rows, captured ${manifest.created_at}) into ${displayName(plan.target)}`);
  if (replaced) lines.push(`-- ${displayName(plan.target)} exists: the copy is built as ${displayName(plan.build)} and swapped in after verification`);
  for (const note of plan.prerequisites.notes) lines.push(`-- ${note}`);
  plan.prerequisites.statements.forEach(statement);
  plan.create.forEach(statement);
  lines.push(`${copyStatement(plan.build, plan.copyColumns, manifest.definition.relkind === 'table')};  -- ${manifest.row_count} rows from the verified data file`);
  lines.push(`-- verify: row count = ${manifest.row_count}, content hash ${manifest.content_hash.algorithm} = ${manifest.content_hash.value}`);
  plan.afterLoad.forEach(statement);
  for (const reset of plan.sequenceResets) {
    lines.push(`-- set sequence ${displayName(reset.sequence)} past the restored "${reset.column}" values (captured last_value ${reset.lastValue})`);
  }
  if (replaced) {
    statement(`DROP TABLE ${quoteQualified(plan.target)}`);
    plan.swap.forEach(statement);
  }
  for (const fk of plan.foreignKeys) {
    statement(foreignKeySql(plan.target, fk));
    const comment = foreignKeyCommentSql(plan.target, fk);
    if (comment) statement(comment);
  }
  for (const skipped of plan.skippedForeignKeys) lines.push(`-- foreign key "${skipped.name}" skipped: ${skipped.reason}`);
  plan.attach.forEach(statement);
  if (withOwner) ownershipSql(plan).forEach(statement);
  for (const skipped of plan.skippedAttachments) lines.push(`-- not recreated: ${skipped.what}: ${skipped.reason}`);
  for (const { statements } of plan.referencingKeys) statements.forEach(statement);
  for (const skipped of plan.notRestored) if (skipped.kind === 'foreign key') lines.push(`-- foreign key ${skipped.name} not restored: ${skipped.reason}`);
  return `${lines.join('\n')}\n`;
}

/** The SQL that recreates the dependent views of a run, for --dry-run and logs. */
export function dependentsScript(views: PlannedDependent[], notRestored: NotRestored[]): string {
  if (views.length === 0 && notRestored.length === 0) return '';
  const lines = ['-- views and materialized views built on the restored tables (each under a savepoint: one that fails is reported and left out)'];
  for (const skipped of notRestored) lines.push(`-- ${skipped.kind} ${skipped.name} not restored: ${skipped.reason}`);
  for (const planned of views) {
    for (const sql of [...planned.create, ...planned.owner, ...planned.grants]) lines.push(`${sql};`);
  }
  return `${lines.join('\n')}\n`;
}

/** A progress reporter that also hands every running total to `onRows`. */
function reportingRows(display: ProgressReporter | undefined, onRows: (rows: number) => void): ProgressReporter {
  return {
    update(rows, bytes) {
      display?.update(rows, bytes);
      onRows(rows);
    },
    done(rows, bytes) {
      display?.done(rows, bytes);
      onRows(rows);
    },
  };
}

function wrapFailure(error: unknown, what: string): BackstopError {
  if (error instanceof BackstopError) return error;
  // PostgreSQL's own hint (e.g. Backstop's guard refusing the DROP of a replaced table) comes first.
  const serverHint = typeof (error as { hint?: unknown }).hint === 'string' ? `${(error as { hint: string }).hint}; ` : '';
  return new DatabaseError(`${what} failed: ${describeError(error)}`, {
    cause: error,
    hint: `${serverHint}the restore was rolled back: nothing was created or changed`,
  });
}

/**
 * Restore several snapshots (one table, or a recovery group) in one transaction, referenced
 * tables first. The client must be a dedicated connection that is not inside a transaction.
 */
export async function restoreItems(client: pg.ClientBase, storage: Storage, items: RestoreItem[], options: RunOptions = {}): Promise<RestoreResult> {
  const started = Date.now();
  const logger = options.logger ?? silentLogger;
  const showProgress = options.progress ?? options.logger !== undefined;
  const ordered = foreignKeyOrder(items, (item) => item.manifest.definition);
  const restoredAs = new Map(ordered.map((item) => [displayName({ schema: item.manifest.schema, table: item.manifest.table }), item.target]));
  const targets = new Set<string>();
  for (const item of ordered) {
    const key = displayName(item.target);
    if (targets.has(key)) throw new ConfigError(`two snapshots would be restored into ${quoteQualified(item.target)}`, { hint: 'restore them one at a time with --into' });
    targets.add(key);
  }
  const workMemKb = maintenanceWorkMemKb(options.maintenanceWorkMem);

  // Verify every data file before creating anything. DuckDB starts meanwhile; it opens a file
  // only after the check. Files in a local folder are checked while the transaction opens and
  // plans the first table (catalog reads only); downloads finish before the transaction opens, so
  // that it never waits on the network.
  const renderer = startCopyRenderer();
  const files: VerifiedDataFile[] = [];
  const stopChecks = new AbortController();
  const checking = verifyDataFiles(storage, ordered.map((item) => item.manifest), files, (manifest, file) => {
    logger.info('checksum verified', { snapshot_id: manifest.snapshot_id, table: displayName(ordered.find((item) => item.manifest === manifest)!.target), bytes: file.size });
  }, stopChecks.signal);
  checking.catch(() => {});
  try {
    if (!ordered.every((item) => readsInPlace(storage, item.manifest))) await checking;

    const restored: RestoredTable[] = [];
    const replacedOriginals: ReplacedOriginal[] = [];
    const undoDrop = newUndoDropRun();
    let dependents: RestoredDependents = { created: [], notRestored: [], script: '' };
    await client.query('BEGIN');
    try {
      await setCanonicalSettingsLocal(client);
      await raiseMaintenanceWorkMemLocal(client, workMemKb);
      await client.query(`SELECT pg_catalog.set_config('statement_timeout', '0', true)`);
      if (!options.dryRun && options.prepare) await options.prepare(client);
      for (const [index, item] of ordered.entries()) {
        const { manifest, target } = item;
        const exists = await relationExists(client, target);
        if (exists && !options.replace) {
          throw new ConflictError(`${quoteQualified(target)} already exists`, {
            hint: 'restore into another name with --into NAME, or pass --replace to swap the table after the restored copy verifies',
          });
        }
        const build = exists ? temporaryBuildName(target) : target;
        const buildNames = await takenRelationNames(client, target.schema);
        const finalNames = exists ? await takenRelationNames(client, target.schema, target.table) : buildNames;
        const plan = await planRestore({ def: manifest.definition, target, build, buildNames, finalNames, restoredAs, client, undoDrop, surroundings: options.surroundings ?? true });
        const script = restoreScript(plan, manifest, exists, options.transferOwnership ?? true);
        const result: RestoredTable = {
          snapshotId: manifest.snapshot_id,
          source: plan.source,
          target,
          rows: manifest.row_count,
          contentHash: manifest.content_hash,
          verifiedBy: null,
          replaced: exists,
          skippedForeignKeys: plan.skippedForeignKeys,
          skippedAttachments: [...plan.skippedAttachments],
          notRestored: plan.notRestored,
          plan,
          script,
          loadMs: 0,
        };
        restored.push(result);
        if (exists) replacedOriginals.push({ table: target, referencingForeignKeys: await referencingForeignKeys(client, target) });
        await checking;
        const file = files[index]!;

        if (options.dryRun) {
          // Check that every column can be rendered from the file, without loading it.
          const reader = await renderer.open(file.paths, copyColumnsFor(manifest, plan.copyColumns));
          try {
            const rows = await reader.rowCount();
            if (rows !== manifest.row_count) throw new VerificationError(`snapshot ${manifest.snapshot_id} holds ${rows} rows, its manifest says ${manifest.row_count}`, { hint: 'pick another snapshot' });
          } finally {
            await reader.close();
          }
          continue;
        }

        const log = logger.child({ snapshot_id: manifest.snapshot_id, table: displayName(target) });
        await keepingSearchPath(client, async () => {
          for (const sql of plan.prerequisites.statements) await client.query(sql);
        });
        await ensureSchema(client, target.schema);
        for (const sql of plan.create) await client.query(sql);
        const loadStarted = Date.now();
        const display = showProgress
          ? createProgress({ label: `restore ${displayName(target)}`, logger: log, totalRows: manifest.row_count, ...(options.progressStream ? { stream: options.progressStream } : {}) })
          : undefined;
        const progress = options.onRows ? reportingRows(display, (rows) => options.onRows!(item, rows)) : display;
        const loaded = await loadRows({ client, manifest, file: file.paths, workDir: file.workDir, table: plan.build, columns: plan.copyColumns, freeze: manifest.definition.relkind === 'table', renderer, ...(progress ? { progress } : {}) });
        result.loadMs = Date.now() - loadStarted;
        // DuckDB's work ends with the last load: it closes while the server builds the indexes.
        if (index === ordered.length - 1) void renderer.close();

        const verification = await verifyRestoredRows(client, manifest, plan.build, plan.copyColumns, loaded);
        result.contentHash = verification.hash;
        result.verifiedBy = verification.method;
        log.info('rows verified', { rows: loaded.rows, content_hash: verification.hash.value, verified_by: verification.method, load_ms: result.loadMs });

        if (item.bare) continue;
        for (const sql of plan.afterLoad) await client.query(sql);
        for (const reset of plan.sequenceResets) {
          const { text, values } = sequenceResetSql(reset, plan.build);
          await client.query(text, values);
        }
      }

      const undone = ordered.filter((item) => (options.surroundings ?? true) && undoesDrop(item.manifest.definition, item.target)).map((item) => item.manifest.definition);
      const plannedDependents = await planDependents(client, undone);
      dependents = { created: [], notRestored: plannedDependents.notRestored, script: dependentsScript(plannedDependents.views, plannedDependents.notRestored) };
      if (options.dryRun) dependents.created = plannedDependents.views.map((planned) => displayName({ schema: planned.view.schema, table: planned.view.name }));

      if (!options.dryRun) {
        for (const original of replacedOriginals) await swapIn(client, original, restored.find((r) => r.target === original.table)!.plan);
        // Bare images get nothing but their rows.
        const built = restored.filter((_, index) => !ordered[index]!.bare);
        for (const table of built) {
          for (const fk of table.plan.foreignKeys) await addForeignKey(client, table, fk, logger);
        }
        for (const original of replacedOriginals) {
          for (const fk of original.referencingForeignKeys) {
            try {
              await client.query(`ALTER TABLE ${quoteQualified(fk.table)} ADD CONSTRAINT ${quoteIdent(fk.name)} ${fk.definition}`);
            } catch (error) {
              throw new VerificationError(`foreign key "${fk.name}" of ${displayName(fk.table)} does not hold against the restored ${displayName(original.table)}: ${describeError(error)}`, {
                cause: error,
                hint: 'the restore was rolled back and the original table kept; restore into another name with --into and reconcile the rows',
              });
            }
          }
        }
        // Last, once the rows are in and every constraint holds: triggers must not fire on the
        // load, and row-level security must not filter the restore's own reads.
        for (const table of built) {
          for (const sql of table.plan.attach) await client.query(sql);
        }
        if (options.transferOwnership ?? true) {
          for (const table of built) await transferOwnership(client, table);
        }
        await addReferencingKeys(client, restored);
        await createDependents(client, plannedDependents.views, dependents, logger);
      }
      if (!options.dryRun && options.beforeCommit) await options.beforeCommit(client, { dryRun: false, tables: restored, dependents, durationMs: Date.now() - started });
      await client.query(options.dryRun ? 'ROLLBACK' : 'COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      throw wrapFailure(error, `restore of ${ordered.map((item) => displayName(item.target)).join(', ')}`);
    }

    if (!options.dryRun) {
      for (const table of restored) {
        if (options.analyze ?? table.replaced) {
          await client.query(`ANALYZE ${quoteQualified(table.target)}`).catch((error) => logger.warn('ANALYZE failed', { table: displayName(table.target), error: describeError(error) }));
        }
        logger.info('restored', { snapshot_id: table.snapshotId, table: displayName(table.target), rows: table.rows, replaced: table.replaced });
        for (const skipped of table.skippedForeignKeys) logger.warn(`foreign key "${skipped.name}" was not restored: ${skipped.reason}`, { table: displayName(table.target) });
        for (const skipped of table.skippedAttachments) logger.warn('not recreated as captured', { table: displayName(table.target), what: skipped.what, reason: skipped.reason });
      }
    }
    if (!options.dryRun) {
      for (const table of restored) {
        for (const skipped of table.notRestored) logger.warn(`${skipped.kind} ${skipped.name} was not restored: ${skipped.reason}`, { table: displayName(table.target) });
      }
      for (const skipped of dependents.notRestored) logger.warn(`${skipped.kind} ${skipped.name} was not restored: ${skipped.reason}`);
      if (dependents.created.length > 0) logger.info('views restored', { views: dependents.created });
    }
    return { dryRun: Boolean(options.dryRun), tables: restored, dependents, durationMs: Date.now() - started };
  } finally {
    stopChecks.abort();
    await checking.catch(() => {});
    await renderer.close();
    await Promise.all(files.map((file) => file.remove()));
  }
}

/** Drop the original (its referencing foreign keys first) and rename the verified build into place. */
async function swapIn(client: pg.ClientBase, original: ReplacedOriginal, plan: RestorePlan): Promise<void> {
  for (const fk of original.referencingForeignKeys) {
    await client.query(`ALTER TABLE ${quoteQualified(fk.table)} DROP CONSTRAINT ${quoteIdent(fk.name)}`);
  }
  try {
    await client.query(`DROP TABLE ${quoteQualified(original.table)}`);
  } catch (error) {
    // 2BP01 dependent_objects_still_exist; anything else (e.g. the guard refusing) keeps its own hint.
    if ((error as { code?: string }).code !== '2BP01') throw error;
    throw new ConflictError(`cannot replace ${quoteQualified(original.table)}: ${describeError(error)}`, {
      cause: error,
      hint: 'other objects (views, …) depend on it; the restore was rolled back — restore with --into a new name instead',
    });
  }
  for (const sql of plan.swap) await client.query(sql);
}

/**
 * Give the table (and its partitions) the captured owner. A role missing here was reported by
 * the plan; a restoring role that may not give the table away (not a superuser, nor a member of
 * the owner) keeps it: both are reported, neither fails the restore.
 */
async function transferOwnership(client: pg.ClientBase, table: RestoredTable): Promise<void> {
  const owner = table.plan.owner;
  if (owner === null) return;
  const { rows } = await client.query<{ exists: boolean }>(`SELECT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = $1) AS exists`, [owner]);
  if (!rows[0]!.exists) return;
  await client.query('SAVEPOINT backstop_owner');
  try {
    for (const sql of ownershipSql(table.plan)) await client.query(sql);
    await client.query('RELEASE SAVEPOINT backstop_owner');
  } catch (error) {
    if ((error as { code?: string }).code !== '42501') throw error;
    await client.query('ROLLBACK TO SAVEPOINT backstop_owner');
    table.skippedAttachments.push({ what: `ALTER TABLE ${quoteQualified(table.target)} OWNER TO ${quoteIdent(owner)}`, reason: `${describeError(error)}: the table stays the restoring role's` });
  }
}

/** Other tables' foreign keys to the tables restored as themselves; one that cannot be added is reported. */
async function addReferencingKeys(client: pg.ClientBase, restored: RestoredTable[]): Promise<void> {
  for (const table of restored) {
    for (const { key, statements } of table.plan.referencingKeys) {
      const failure = await underSavepoint(client, async () => {
        for (const sql of statements) await client.query(sql);
      });
      if (failure) table.notRestored.push({ kind: 'foreign key', name: `${displayName({ schema: key.schema, table: key.table })}.${key.name}`, reason: failure });
    }
  }
}

/**
 * The planned dependent views, in order, each under its own savepoint. A view reading one whose
 * name was taken reads the relation that took it; one reading a view that failed is left out at
 * once rather than failing on a missing relation.
 */
async function createDependents(client: pg.ClientBase, views: PlannedDependent[], outcome: RestoredDependents, logger: Logger): Promise<void> {
  const failed = new Set<string>();
  for (const planned of views) {
    const name = displayName({ schema: planned.view.schema, table: planned.view.name });
    const missing = planned.view.reads.find((read) => failed.has(displayName(read)));
    const failure = missing ? `it reads ${displayName(missing)}, which was not restored` : await underSavepoint(client, () => createDependent(client, planned));
    if (failure) {
      failed.add(name);
      outcome.notRestored.push({ kind: planned.view.kind, name, reason: failure });
      logger.debug('dependent skipped', { name, reason: failure });
    } else {
      outcome.created.push(name);
    }
  }
}

/** Run `work` under a savepoint: its error (described) when it failed and was rolled back, else null. */
async function underSavepoint(client: pg.ClientBase, work: () => Promise<void>): Promise<string | null> {
  await client.query('SAVEPOINT backstop_part');
  try {
    await work();
    await client.query('RELEASE SAVEPOINT backstop_part');
    return null;
  } catch (error) {
    await client.query('ROLLBACK TO SAVEPOINT backstop_part');
    return describeError(error);
  }
}

/** Run statements that set their own search path (captured definitions), then put the transaction's back. */
export async function keepingSearchPath(client: pg.ClientBase, work: () => Promise<void>): Promise<void> {
  const { rows } = await client.query<{ path: string }>(`SELECT pg_catalog.current_setting('search_path') AS path`);
  await work();
  await client.query(`SELECT pg_catalog.set_config('search_path', $1, true)`, [rows[0]!.path]);
}

/**
 * Create one dependent view in place: its definition replayed under its captured search path,
 * then a check that it reads the very relations it read at capture — a name the path resolved to
 * another relation (one created meanwhile earlier in the path) fails it — then owner and grants.
 */
async function createDependent(client: pg.ClientBase, planned: PlannedDependent): Promise<void> {
  await keepingSearchPath(client, async () => {
    for (const sql of planned.create) await client.query(sql);
  });
  const at = { schema: planned.view.schema, table: planned.view.name };
  const reads = await relationsRead(client, at);
  const expected = planned.view.reads.map(displayName);
  if (reads.join('\u0000') !== expected.join('\u0000')) {
    throw new VerificationError(`${displayName(at)} would read ${reads.join(', ')} instead of ${expected.join(', ')}`, {
      hint: 'a relation of the same name was created meanwhile earlier in its search path; recreate the view by hand',
    });
  }
  for (const sql of [...planned.owner, ...planned.grants]) await client.query(sql);
}

/** The relations a view's query reads, `schema.name`, sorted as captured (src/db/dependents.ts). */
async function relationsRead(client: pg.ClientBase, view: QualifiedName): Promise<string[]> {
  const { rows } = await client.query<{ schema: string; table: string }>(
    `SELECT DISTINCT rn.nspname AS schema, rc.relname AS table
       FROM pg_catalog.pg_class c
       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_catalog.pg_rewrite r ON r.ev_class = c.oid AND r.rulename = '_RETURN'
       JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
                                  AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'n' AND d.refobjid <> c.oid
       JOIN pg_catalog.pg_class rc ON rc.oid = d.refobjid
       JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2`,
    [view.schema, view.table],
  );
  return rows.map((row) => ({ schema: row.schema, table: row.table })).sort(compareNames).map(displayName);
}

/** Add a foreign key (and its comment); one that does not hold (missing referenced rows) is reported and skipped. */
async function addForeignKey(client: pg.ClientBase, table: RestoredTable, fk: PlannedForeignKey, logger: Logger): Promise<void> {
  const failure = await underSavepoint(client, async () => {
    await client.query(foreignKeySql(table.target, fk));
    const comment = foreignKeyCommentSql(table.target, fk);
    if (comment) await client.query(comment);
  });
  if (failure) {
    table.skippedForeignKeys.push({ name: fk.name, references: fk.references, reason: failure });
    logger.debug('foreign key skipped', { name: fk.name, error: failure });
  }
}

export interface RestoreSnapshotOptions extends RunOptions {
  client: pg.ClientBase;
  storage: Storage;
  snapshotId: string;
  /** The snapshot's table (--table); checked against the snapshot, also when `into` is given. */
  table?: string | QualifiedName;
  /** Restore under this name (--into); an unqualified name lands in the snapshot's schema. */
  into?: string | QualifiedName;
}

/** Restore one snapshot (see restoreItems for the guarantees). */
export async function restoreSnapshot(options: RestoreSnapshotOptions): Promise<RestoreResult> {
  const manifest = await findManifest(options.storage, options.snapshotId);
  const source = { schema: manifest.schema, table: manifest.table };
  const named = options.table === undefined ? undefined : resolveTableName(options.table, manifest.schema);
  // --table names the snapshot's table, as a check, with or without --into: a mismatch means the
  // operator picked the wrong snapshot id (or table), and restoring it anyway would put another
  // table's rows where they expect these.
  if (named && (named.schema !== source.schema || named.table !== source.table)) {
    throw new ConfigError(`snapshot ${manifest.snapshot_id} is of ${quoteQualified(source)}, not ${quoteQualified(named)}`, {
      hint:
        options.into === undefined
          ? `to restore it under another name pass --into ${quoteQualified(named)}; to restore it as itself pass --table ${quoteQualified(source)}`
          : `check the snapshot id (backstop snapshots list --table ${quoteQualified(named)}), or pass --table ${quoteQualified(source)} to restore this one into ${quoteQualified(resolveTableName(options.into, manifest.schema))}`,
    });
  }
  const target = options.into !== undefined ? resolveTableName(options.into, manifest.schema) : named ?? source;
  return restoreItems(options.client, options.storage, [{ manifest, target }], options);
}

export interface RestoreGroupOptions extends RunOptions {
  client: pg.ClientBase;
  storage: Storage;
  /** Any snapshot of the recovery group. */
  snapshotId: string;
  /** Restore every table into this schema instead of its own. */
  intoSchema?: string;
  /** Append this to every table name (e.g. `_restored`). */
  suffix?: string;
}

/** Every snapshot of the recovery group `snapshotId` belongs to, captured together. */
export async function groupManifests(storage: Storage, snapshotId: string): Promise<Manifest[]> {
  const first = await findManifest(storage, snapshotId);
  const group = first.group;
  if (!group) {
    throw new ConfigError(`snapshot ${snapshotId} was not captured as part of a recovery group`, { hint: 'restore it on its own (without --group)' });
  }
  const members: Manifest[] = [];
  for (const table of group.tables) {
    const found = (await listManifests(storage, { table })).find((m) => m.group?.id === group.id);
    if (!found) {
      throw new NotFoundError(`recovery group "${group.name}" (${group.id}) lacks its snapshot of ${displayName(table)}`, {
        hint: 'the group is incomplete (pruned or deleted); restore the remaining tables one by one',
      });
    }
    members.push(found);
  }
  return members;
}

/** Restore a whole recovery group in one transaction, referenced tables first. */
export async function restoreGroup(options: RestoreGroupOptions): Promise<RestoreResult> {
  const manifests = await groupManifests(options.storage, options.snapshotId);
  const items = manifests.map((manifest) => ({
    manifest,
    target: { schema: options.intoSchema ?? manifest.schema, table: truncateIdentifier(`${manifest.table}${options.suffix ?? ''}`) },
  }));
  return restoreItems(options.client, options.storage, items, options);
}

/**
 * Restore snapshots into tables.
 *
 * Every data file is downloaded and checked against its manifest's SHA-256 before anything is
 * created. Then, in ONE transaction: each table is created from its captured definition (without
 * identity), loaded with COPY, its row count and content hash verified against the manifest
 * (verify-rows.ts), and only then given its identity, sequences, indexes and constraints; `--replace` drops the
 * original and renames the verified build into place; foreign keys come last, once every table
 * of the run exists under its final name. Any failure rolls the whole transaction back: no table
 * is ever left half-restored, and an original is never dropped for a copy that did not verify.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { displayName, parseQualifiedName, quoteIdent, quoteQualified, type QualifiedName } from '../db/identifiers.js';
import { BackstopError, ConfigError, ConflictError, DatabaseError, NotFoundError, VerificationError, describeError } from '../errors/index.js';
import { silentLogger, type Logger } from '../log/logger.js';
import { createProgress } from '../log/progress.js';
import type { ContentHash } from '../snapshot/content-hash.js';
import { findManifest, listManifests } from '../snapshot/list.js';
import type { Manifest } from '../snapshot/manifest.js';
import { setCanonicalSettingsLocal } from '../snapshot/session-settings.js';
import type { Storage } from '../storage/storage.js';
import { startCopyRenderer } from './copy-text.js';
import { foreignKeyOrder } from './group-order.js';
import { copyColumnsFor, copyStatement, loadRows, maintenanceWorkMemKb, raiseMaintenanceWorkMemLocal } from './load.js';
import { takenRelationNames, truncateIdentifier } from './names.js';
import { foreignKeySql, planRestore, sequenceResetSql, type RestorePlan, type SkippedForeignKey } from './plan.js';
import { readsInPlace, verifyDataFiles, type VerifiedDataFile } from './verified-file.js';
import { verifyRestoredRows, type RowCheck } from './verify-rows.js';
import { relationExists } from '../db/catalog.js';

export interface RestoreItem {
  manifest: Manifest;
  /** Where the table goes. */
  target: QualifiedName;
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
  plan: RestorePlan;
  /** The script --dry-run prints (and a real run executes). */
  script: string;
  loadMs: number;
}

export interface RestoreResult {
  dryRun: boolean;
  tables: RestoredTable[];
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
  await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
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
export function restoreScript(plan: RestorePlan, manifest: Manifest, replaced: boolean): string {
  const lines: string[] = [];
  const statement = (sql: string) => lines.push(`${sql};`);
  lines.push(`-- restore snapshot ${manifest.snapshot_id} of ${displayName(plan.source)} (${manifest.row_count} rows, captured ${manifest.created_at}) into ${displayName(plan.target)}`);
  if (replaced) lines.push(`-- ${displayName(plan.target)} exists: the copy is built as ${displayName(plan.build)} and swapped in after verification`);
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
  for (const fk of plan.foreignKeys) statement(foreignKeySql(plan.target, fk));
  for (const skipped of plan.skippedForeignKeys) lines.push(`-- foreign key "${skipped.name}" skipped: ${skipped.reason}`);
  return `${lines.join('\n')}\n`;
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
    await client.query('BEGIN');
    try {
      await setCanonicalSettingsLocal(client);
      await raiseMaintenanceWorkMemLocal(client, workMemKb);
      await client.query(`SELECT pg_catalog.set_config('statement_timeout', '0', true)`);
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
        const plan = await planRestore({ def: manifest.definition, target, build, buildNames, finalNames, restoredAs, client });
        const script = restoreScript(plan, manifest, exists);
        const result: RestoredTable = {
          snapshotId: manifest.snapshot_id,
          source: plan.source,
          target,
          rows: manifest.row_count,
          contentHash: manifest.content_hash,
          verifiedBy: null,
          replaced: exists,
          skippedForeignKeys: plan.skippedForeignKeys,
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
        await ensureSchema(client, target.schema);
        for (const sql of plan.create) await client.query(sql);
        const loadStarted = Date.now();
        const progress = showProgress
          ? createProgress({ label: `restore ${displayName(target)}`, logger: log, totalRows: manifest.row_count, ...(options.progressStream ? { stream: options.progressStream } : {}) })
          : undefined;
        const loaded = await loadRows({ client, manifest, file: file.paths, workDir: file.workDir, table: plan.build, columns: plan.copyColumns, freeze: manifest.definition.relkind === 'table', renderer, ...(progress ? { progress } : {}) });
        result.loadMs = Date.now() - loadStarted;
        // DuckDB's work ends with the last load: it closes while the server builds the indexes.
        if (index === ordered.length - 1) void renderer.close();

        const verification = await verifyRestoredRows(client, manifest, plan.build, plan.copyColumns, loaded);
        result.contentHash = verification.hash;
        result.verifiedBy = verification.method;
        log.info('rows verified', { rows: loaded.rows, content_hash: verification.hash.value, verified_by: verification.method, load_ms: result.loadMs });

        for (const sql of plan.afterLoad) await client.query(sql);
        for (const reset of plan.sequenceResets) {
          const { text, values } = sequenceResetSql(reset, plan.build);
          await client.query(text, values);
        }
      }

      if (!options.dryRun) {
        for (const original of replacedOriginals) await swapIn(client, original, restored.find((r) => r.target === original.table)!.plan);
        for (const table of restored) {
          for (const fk of table.plan.foreignKeys) await addForeignKey(client, table, fk.name, foreignKeySql(table.target, fk), logger);
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
      }
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
      }
    }
    return { dryRun: Boolean(options.dryRun), tables: restored, durationMs: Date.now() - started };
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

/** Add a foreign key; one that does not hold (missing referenced rows) is reported and skipped. */
async function addForeignKey(client: pg.ClientBase, table: RestoredTable, name: string, sql: string, logger: Logger): Promise<void> {
  await client.query('SAVEPOINT backstop_fk');
  try {
    await client.query(sql);
    await client.query('RELEASE SAVEPOINT backstop_fk');
  } catch (error) {
    await client.query('ROLLBACK TO SAVEPOINT backstop_fk');
    const fk = table.plan.foreignKeys.find((f) => f.name === name)!;
    table.skippedForeignKeys.push({ name, references: fk.references, reason: describeError(error) });
    logger.debug('foreign key skipped', { name, error: describeError(error) });
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

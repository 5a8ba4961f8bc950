/**
 * Guided recovery of one table: show the verified recovery points, pick one (prompt, flag or
 * --yes), restore it beside the original as `<table>_recovered` (or the next free name) — never
 * over the original — check it, and only then print the copy-back SQL for the operator to run.
 */
import type pg from 'pg';
import { displayName, parseQualifiedName, quoteQualified, type QualifiedName } from '../db/identifiers.js';
import { BackstopError, ConfigError, NotFoundError, VerificationError } from '../errors/index.js';
import { silentLogger, type Logger } from '../log/logger.js';
import type { Storage } from '../storage/storage.js';
import { copyBackSql, type CopyBack } from './copy-back.js';
import { takenRelationNames } from './names.js';
import type { Prompter } from './prompt.js';
import { formatRecoveryPoints, listRecoveryPoints, type RecoveryPoint } from './recovery-points.js';
import { restoreItems } from './restore.js';

export interface RecoverOptions {
  client: pg.ClientBase;
  storage: Storage;
  /** The table to recover (as the user wrote it; unqualified means `public`). */
  table: string | QualifiedName;
  /** Take this recovery point (it must be one of the verified ones). */
  snapshotId?: string;
  /** Take the newest verified point (unless snapshotId is given) and do not ask for confirmation. */
  yes?: boolean;
  /** Ask the operator (interactive). Without one, snapshotId or yes is required. */
  prompter?: Prompter;
  /** Where the listing and messages go (stderr for the CLI, beside the prompts). */
  out: NodeJS.WritableStream;
  /** Where the copy-back SQL goes (stdout for the CLI); default `out`. */
  sqlOut?: NodeJS.WritableStream;
  logger?: Logger;
  progress?: boolean;
  progressStream?: NodeJS.WriteStream;
  /** How many verified points to look for (default 10). */
  limit?: number;
  /**
   * Copy-back also sets rows changed since the snapshot back to their snapshot values (INSERT …
   * ON CONFLICT (pk) DO UPDATE). Default: only missing rows are inserted; the other form is
   * printed commented out.
   */
  overwriteChanged?: boolean;
}

export interface RecoverResult {
  snapshotId: string;
  table: QualifiedName;
  recovered: QualifiedName;
  rows: number;
  copyBack: CopyBack;
}

export class RecoveryCancelledError extends BackstopError {
  constructor() {
    super('cancelled', 'recovery cancelled: nothing was changed', { hint: 'run backstop recover again when ready' });
  }
}

async function choosePoint(points: RecoveryPoint[], options: RecoverOptions): Promise<RecoveryPoint> {
  if (options.snapshotId) {
    const chosen = points.find((point) => point.manifest.snapshot_id === options.snapshotId);
    if (!chosen) {
      throw new NotFoundError(`snapshot ${options.snapshotId} is not a verified recovery point of this table`, {
        hint: 'pick one of the snapshot ids listed above',
      });
    }
    return chosen;
  }
  if (options.yes) return points[0]!;
  if (!options.prompter) {
    throw new ConfigError('choose a recovery point: there is no terminal to ask on', {
      hint: 'pass --snapshot-id ID (one of those listed above), or --yes to take the newest',
    });
  }
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const answer = await options.prompter.ask(`Restore which recovery point? [1-${points.length}, Enter = 1, q = quit] `);
    if (answer === '') return points[0]!;
    if (/^q(uit)?$/i.test(answer)) throw new RecoveryCancelledError();
    const byNumber = /^\d+$/.test(answer) ? points[Number(answer) - 1] : undefined;
    const chosen = byNumber ?? points.find((point) => point.manifest.snapshot_id === answer);
    if (chosen) return chosen;
    options.out.write(`"${answer}" is not one of the listed points.\n`);
  }
  throw new RecoveryCancelledError();
}

export async function recover(options: RecoverOptions): Promise<RecoverResult> {
  const logger = options.logger ?? silentLogger;
  const table = typeof options.table === 'string' ? parseQualifiedName(options.table) : options.table;
  const list = await listRecoveryPoints(options.storage, table, options.limit === undefined ? {} : { limit: options.limit });
  options.out.write(formatRecoveryPoints(list));
  if (list.points.length === 0) {
    throw new NotFoundError(`no verified recovery point for ${quoteQualified(table)} in ${options.storage.url}`, {
      hint: list.rejected.length > 0 ? 'every snapshot of this table failed verification (see above)' : 'check --storage and the table name (backstop snapshots list --table NAME)',
    });
  }
  const point = await choosePoint(list.points, options);
  const manifest = point.manifest;

  const names = await takenRelationNames(options.client, table.schema);
  const recovered = { schema: table.schema, table: names.claim(`${table.table}_recovered`) };
  if (options.prompter && !options.yes) {
    const answer = await options.prompter.ask(
      `Restore snapshot ${manifest.snapshot_id} (${manifest.row_count.toLocaleString('en-US')} rows, ${manifest.created_at}) into ${displayName(recovered)}? [y/N] `,
    );
    if (!/^y(es)?$/i.test(answer)) throw new RecoveryCancelledError();
  }

  const restored = await restoreItems(options.client, options.storage, [{ manifest, target: recovered }], {
    logger,
    ...(options.progress === undefined ? {} : { progress: options.progress }),
    ...(options.progressStream ? { progressStream: options.progressStream } : {}),
  });
  // restoreItems verified count and content hash inside its transaction; check the committed table too.
  const { rows } = await options.client.query<{ n: string }>(`SELECT count(*) AS n FROM ${quoteQualified(recovered)}`);
  if (Number(rows[0]!.n) !== manifest.row_count) {
    throw new VerificationError(`${displayName(recovered)} holds ${rows[0]!.n} rows, the snapshot ${manifest.row_count}`, {
      hint: `inspect ${displayName(recovered)} before using it; do not copy it back`,
    });
  }
  const copyBack = await copyBackSql(options.client, table, recovered, manifest, { overwriteChanged: Boolean(options.overwriteChanged) });
  for (const skipped of restored.tables[0]!.skippedForeignKeys) {
    options.out.write(`note: foreign key "${skipped.name}" was not restored on ${displayName(recovered)}: ${skipped.reason}\n`);
  }
  for (const skipped of restored.tables[0]!.skippedAttachments) {
    options.out.write(`note: not recreated as captured on ${displayName(recovered)}: ${skipped.what}: ${skipped.reason}\n`);
  }
  options.out.write(`Recovered ${displayName(table)} into ${displayName(recovered)}: ${manifest.row_count} rows, validated. Review, then run the SQL below to copy it back.\n`);
  if (copyBack.changedRows !== null && copyBack.changedRows > 0) {
    options.out.write(
      copyBack.mode === 'upsert-rows'
        ? `note: ${copyBack.changedRows} row(s) of ${displayName(table)} changed since the snapshot (matched by primary key); the SQL below sets them back to their snapshot values.\n`
        : `note: ${copyBack.changedRows} row(s) of ${displayName(table)} changed since the snapshot (matched by primary key); the SQL below leaves them as they are. The form that sets them back too follows it, commented out (or rerun with --overwrite-changed).\n`,
    );
  }
  const sqlOut = options.sqlOut ?? options.out;
  sqlOut.write(copyBack.sql);
  // The other form commented out: piping the output into psql still runs one transaction only.
  if (copyBack.alternative) {
    sqlOut.write(`\n-- To set the ${copyBack.alternative.changedRows} changed row(s) back to their snapshot values too, run this INSTEAD of the transaction above:\n`);
    sqlOut.write(copyBack.alternative.sql.trimEnd().split('\n').map((line) => `-- ${line}`).join('\n') + '\n');
  }
  return { snapshotId: manifest.snapshot_id, table, recovered, rows: manifest.row_count, copyBack };
}

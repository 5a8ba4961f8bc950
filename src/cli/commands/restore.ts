/** `backstop restore` (one snapshot or a recovery group) and `backstop recover` (guided). */
import type { Command } from 'commander';
import { connect, resolveDatabase } from '../../db/connection.js';
import { displayName } from '../../db/identifiers.js';
import { ConfigError } from '../../errors/index.js';
import { createLogger } from '../../log/logger.js';
import { DEFAULT_MAINTENANCE_WORK_MEM } from '../../restore/load.js';
import { createLinePrompter } from '../../restore/prompt.js';
import { recover } from '../../restore/recover.js';
import { restoreGroup, restoreSnapshot, type RestoreResult } from '../../restore/restore.js';
import { openStorage } from '../../storage/open.js';
import { withDatabaseOption, withStorageOption } from '../program.js';

interface RestoreCommandOptions {
  db?: string;
  storage?: string;
  snapshotId: string;
  table?: string;
  into?: string;
  group?: boolean;
  intoSchema?: string;
  suffix?: string;
  dryRun?: boolean;
  replace?: boolean;
  /** --analyze / --no-analyze; undefined when neither is given. */
  analyze?: boolean;
  maintenanceWorkMem?: string;
  json?: boolean;
}

interface RecoverCommandOptions {
  db?: string;
  storage?: string;
  table: string;
  snapshotId?: string;
  yes?: boolean;
  limit?: string;
  overwriteChanged?: boolean;
}

function resultJson(result: RestoreResult): unknown {
  return {
    dry_run: result.dryRun,
    duration_ms: result.durationMs,
    tables: result.tables.map((table) => ({
      snapshot_id: table.snapshotId,
      source: displayName(table.source),
      table: displayName(table.target),
      rows: table.rows,
      content_hash: table.contentHash,
      verified_by: table.verifiedBy,
      replaced: table.replaced,
      load_ms: table.loadMs,
      skipped_foreign_keys: table.skippedForeignKeys.map((fk) => ({ name: fk.name, references: displayName(fk.references), reason: fk.reason })),
      skipped_attachments: table.skippedAttachments.map((skipped) => ({ what: skipped.what, reason: skipped.reason })),
      not_restored: table.notRestored,
      ...(result.dryRun ? { script: table.script } : {}),
    })),
    views: {
      created: result.dependents.created,
      not_restored: result.dependents.notRestored,
      ...(result.dryRun ? { script: result.dependents.script } : {}),
    },
  };
}

export function registerRestoreCommands(program: Command): void {
  withStorageOption(withDatabaseOption(program.command('restore')))
    .description('restore a snapshot into a table: checksum verified first, rows loaded with COPY, indexes and constraints reapplied, row count and content hash verified, all in one transaction')
    .requiredOption('--snapshot-id <id>', 'the snapshot to restore (backstop snapshots list shows them)')
    .option('--table <name>', "the snapshot's table, as a check (schema.table; unqualified means the snapshot's schema)")
    .option('--into <name>', "restore under this name instead (unqualified: in the snapshot's schema)")
    .option('--group', "restore the snapshot's whole recovery group, referenced tables first")
    .option('--into-schema <schema>', 'with --group: restore every table into this schema')
    .option('--suffix <text>', 'with --group: append this to every table name, e.g. _restored')
    .option('--replace', 'replace an existing table: the restored copy is built aside and swapped in only after it verifies')
    .option('--dry-run', 'print the SQL that would run (after checking the checksum) and change nothing')
    .option('--analyze', 'ANALYZE the restored tables (default: only with --replace; otherwise autovacuum does it)')
    .option('--no-analyze', 'do not ANALYZE, even with --replace')
    .option('--maintenance-work-mem <size>', 'maintenance_work_mem for building the indexes, for the restore transaction only and never lowered (e.g. 1GB; "server" keeps the server\'s)', DEFAULT_MAINTENANCE_WORK_MEM)
    .option('--json', 'print the result as JSON')
    .action(async (options: RestoreCommandOptions) => {
      if (options.group && (options.table || options.into)) {
        throw new ConfigError('--group restores every table of the group under its own name', { hint: 'use --into-schema and/or --suffix with --group, not --table/--into' });
      }
      if (!options.group && (options.intoSchema || options.suffix)) {
        throw new ConfigError('--into-schema and --suffix apply to --group only', { hint: 'use --into NAME to restore one snapshot under another name' });
      }
      const logger = createLogger();
      const storage = openStorage(options.storage);
      const client = await connect(resolveDatabase(options.db), 'backstop restore');
      try {
        const common = {
          client,
          storage,
          snapshotId: options.snapshotId,
          logger,
          replace: Boolean(options.replace),
          dryRun: Boolean(options.dryRun),
          progress: !options.json,
          ...(options.analyze === undefined ? {} : { analyze: options.analyze }),
          ...(options.maintenanceWorkMem === undefined ? {} : { maintenanceWorkMem: options.maintenanceWorkMem }),
        };
        const result = options.group
          ? await restoreGroup({ ...common, ...(options.intoSchema ? { intoSchema: options.intoSchema } : {}), ...(options.suffix ? { suffix: options.suffix } : {}) })
          : await restoreSnapshot({ ...common, ...(options.table ? { table: options.table } : {}), ...(options.into ? { into: options.into } : {}) });
        if (options.json) {
          process.stdout.write(`${JSON.stringify(resultJson(result), null, 2)}\n`);
        } else if (result.dryRun) {
          const scripts = [...result.tables.map((t) => t.script), ...(result.dependents.script ? [result.dependents.script] : [])];
          process.stdout.write(`-- dry run: nothing was changed; checksums verified\n${scripts.join('\n')}`);
        } else {
          for (const table of result.tables) {
            process.stdout.write(`restored ${displayName(table.target)} from snapshot ${table.snapshotId}: ${table.rows} rows, content hash verified${table.verifiedBy === 'read-back' ? ' (rows read back)' : ''}${table.replaced ? ' (replaced the existing table)' : ''}\n`);
            for (const fk of table.skippedForeignKeys) process.stdout.write(`  foreign key "${fk.name}" not restored: ${fk.reason}\n`);
            for (const skipped of table.skippedAttachments) process.stdout.write(`  not recreated as captured: ${skipped.what}: ${skipped.reason}\n`);
            for (const skipped of table.notRestored) process.stdout.write(`  ${skipped.kind} ${skipped.name} not restored: ${skipped.reason}\n`);
          }
          if (result.dependents.created.length > 0) process.stdout.write(`restored views: ${result.dependents.created.join(', ')}\n`);
          for (const skipped of result.dependents.notRestored) process.stdout.write(`  ${skipped.kind} ${skipped.name} not restored: ${skipped.reason}\n`);
        }
      } finally {
        await client.end().catch(() => {});
      }
    });

  withStorageOption(withDatabaseOption(program.command('recover')))
    .description('guided recovery: pick a verified recovery point, restore it beside the original as <table>_recovered, validate, and print the copy-back SQL')
    .requiredOption('--table <name>', 'the table to recover (schema.table; unqualified means public)')
    .option('--snapshot-id <id>', 'take this recovery point instead of asking')
    .option('--yes', 'take the newest verified point (unless --snapshot-id) and do not ask')
    .option('--limit <n>', 'how many verified recovery points to look for', '10')
    .option('--overwrite-changed', 'copy-back also sets rows changed since the snapshot back to their snapshot values (default: only missing rows are inserted)')
    .action(async (options: RecoverCommandOptions) => {
      const limit = Number(options.limit ?? '10');
      if (!Number.isInteger(limit) || limit < 1) throw new ConfigError(`--limit must be a positive whole number, not "${options.limit}"`, { hint: 'e.g. --limit 5' });
      const interactive = Boolean(process.stdin.isTTY && process.stderr.isTTY) && !options.yes;
      const prompter = interactive ? createLinePrompter(process.stdin, process.stderr) : undefined;
      const storage = openStorage(options.storage);
      const client = await connect(resolveDatabase(options.db), 'backstop recover');
      try {
        await recover({
          client,
          storage,
          table: options.table,
          ...(options.snapshotId ? { snapshotId: options.snapshotId } : {}),
          yes: Boolean(options.yes),
          ...(prompter ? { prompter } : {}),
          out: process.stderr,
          sqlOut: process.stdout,
          logger: createLogger(),
          limit,
          overwriteChanged: Boolean(options.overwriteChanged),
        });
      } finally {
        prompter?.close();
        await client.end().catch(() => {});
      }
    });
}

/**
 * `backstop snapshot` (capture tables, or a consistent recovery group), `backstop snapshots list`,
 * `backstop verify` and `backstop prune`.
 */
import type { Command } from 'commander';
import type pg from 'pg';
import { connect, databaseConfigured, readEmbeddedConnection, resolveDatabase } from '../../db/connection.js';
import { displayName, parseQualifiedName, quoteIdent, type QualifiedName } from '../../db/identifiers.js';
import { ConfigError, NotFoundError } from '../../errors/index.js';
import { createLogger } from '../../log/logger.js';
import { formatBytes } from '../../log/progress.js';
import { captureGroup, captureTable } from '../../snapshot/capture.js';
import { listSnapshots, type SnapshotEntry } from '../../snapshot/list.js';
import type { Manifest } from '../../snapshot/manifest.js';
import { pruneWithReport } from '../../snapshot/prune.js';
import { DEFAULT_RETENTION, describePolicy, type RetentionPolicy } from '../../snapshot/retention.js';
import { verifySnapshot } from '../../snapshot/verify.js';
import { openStorage } from '../../storage/open.js';
import { cleanUpUnfinishedUploads } from '../../storage/unfinished-uploads.js';
import { withDatabaseOption, withStorageOption } from '../program.js';

interface SnapshotCommandOptions {
  db?: string;
  storage?: string;
  table: string[];
  group?: string;
  label?: string;
  concurrency?: string;
  json?: boolean;
}

interface ListCommandOptions {
  db?: string;
  storage?: string;
  table?: string;
  json?: boolean;
}

interface VerifyCommandOptions {
  storage?: string;
  snapshotId: string;
  json?: boolean;
}

interface PruneCommandOptions {
  storage?: string;
  keep?: string;
  keepLast?: string;
  keepHourly?: string;
  keepDaily?: string;
  verify: string;
  table?: string;
  dryRun?: boolean;
  json?: boolean;
}

const UNQUALIFIED = '\u0000';

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function wholeNumber(text: string, flag: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value)) {
    throw new ConfigError(`${flag} must be a whole number of 0 or more (got "${text}")`, { hint: `for example ${describePolicy(DEFAULT_RETENTION)}` });
  }
  return value;
}

/** --keep N (the newest N), or a policy from --keep-last / --keep-hourly / --keep-daily (unnamed rules keep 0). */
function prunePolicy(options: PruneCommandOptions): { keep: number } | { policy: RetentionPolicy } {
  const rules = [options.keepLast, options.keepHourly, options.keepDaily];
  if (options.keep !== undefined) {
    if (rules.some((rule) => rule !== undefined)) {
      throw new ConfigError('give either --keep or --keep-last / --keep-hourly / --keep-daily, not both', { hint: '--keep N is the same as --keep-last N' });
    }
    return { keep: positiveInteger(options.keep, '--keep') };
  }
  if (rules.every((rule) => rule === undefined)) {
    throw new ConfigError('say what to keep', { hint: `e.g. backstop prune --storage URL ${describePolicy(DEFAULT_RETENTION)} (the agent's default), or --keep N` });
  }
  return {
    policy: {
      last: options.keepLast === undefined ? 0 : wholeNumber(options.keepLast, '--keep-last'),
      hourly: options.keepHourly === undefined ? 0 : wholeNumber(options.keepHourly, '--keep-hourly'),
      daily: options.keepDaily === undefined ? 0 : wholeNumber(options.keepDaily, '--keep-daily'),
    },
  };
}

function positiveInteger(text: string, flag: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < 1) {
    throw new ConfigError(`${flag} must be a whole number of at least 1 (got "${text}")`, { hint: `for example ${flag} 3` });
  }
  return value;
}

/** Resolve a user-written table name; an unqualified name goes through the server's search_path. */
async function resolveTable(client: pg.ClientBase, input: string): Promise<QualifiedName> {
  const parsed = parseQualifiedName(input, UNQUALIFIED);
  if (parsed.schema !== UNQUALIFIED) return parsed;
  const { rows } = await client.query<{ schema: string; table: string }>(
    `SELECT n.nspname AS schema, c.relname AS table FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.oid = pg_catalog.to_regclass($1)`,
    [quoteIdent(parsed.table)],
  );
  if (!rows[0]) throw new NotFoundError(`table "${parsed.table}" is not on the search_path of the database`, { hint: 'write schema.table' });
  return rows[0];
}

/** Without a database, an unqualified name means schema public. */
function tableWithoutDatabase(input: string): QualifiedName {
  return parseQualifiedName(input, 'public');
}

type SnapshotLineFields = Pick<SnapshotEntry, 'snapshot_id' | 'schema' | 'table' | 'row_count' | 'checksum' | 'parquet_path' | 'location' | 'size_bytes' | 'created_at' | 'duration_ms' | 'warnings'> & {
  group: { name: string; id: string } | null;
};

function snapshotLine(manifest: SnapshotLineFields): Record<string, unknown> {
  return {
    snapshot_id: manifest.snapshot_id,
    table: displayName({ schema: manifest.schema, table: manifest.table }),
    schema: manifest.schema,
    table_name: manifest.table,
    row_count: manifest.row_count,
    checksum: manifest.checksum,
    parquet_path: manifest.parquet_path,
    location: manifest.location,
    size_bytes: manifest.size_bytes,
    created_at: manifest.created_at,
    duration_ms: manifest.duration_ms,
    group: manifest.group ? { name: manifest.group.name, id: manifest.group.id } : null,
    warnings: manifest.warnings,
  };
}


function formatAge(createdAt: string, now = Date.now()): string {
  const seconds = Math.max(0, Math.round((now - Date.parse(createdAt)) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86400)}d`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => [...row[column]!].length)));
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd()).join('\n');
}

/** Abort the work on the first SIGINT/SIGTERM (no manifest is written); a second one exits at once. */
function interruptSignal(): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onSignal = () => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

export function registerSnapshotCommands(program: Command): void {
  withStorageOption(withDatabaseOption(program.command('snapshot')))
    .description('capture tables to Parquet + manifest in storage; with --group, several tables in one consistent database snapshot')
    .option('--table <name>', 'table to capture (schema.table; repeat for several)', collect, [])
    .option('--group <name>', 'capture all --table tables in one database snapshot, recorded as a recovery group')
    .option('--label <text>', 'a label stored in the manifest')
    .option('--concurrency <n>', 'with --group: tables encoded at the same time (default 2)')
    .option('--json', 'print one JSON object per snapshot on stdout')
    .action(async (options: SnapshotCommandOptions) => {
      if (options.table.length === 0) throw new ConfigError('name at least one table to snapshot', { hint: 'backstop snapshot --table public.users' });
      const concurrency = options.concurrency ? positiveInteger(options.concurrency, '--concurrency') : undefined;
      const logger = createLogger();
      const storage = openStorage(options.storage);
      const database = resolveDatabase(options.db);
      const interrupt = interruptSignal();
      try {
        const tables: QualifiedName[] = [];
        const client = await connect(database, 'backstop snapshot');
        try {
          for (const name of options.table) tables.push(await resolveTable(client, name));
        } finally {
          await client.end().catch(() => {});
        }
        const common = {
          database,
          storage,
          logger,
          progress: true,
          source: 'on-demand' as const,
          signal: interrupt.signal,
          ...(options.label ? { label: options.label } : {}),
        };
        const print = (manifest: Manifest) => {
          if (options.json) process.stdout.write(`${JSON.stringify(snapshotLine(manifest))}\n`);
          else {
            process.stdout.write(
              `captured ${displayName(manifest)}: ${manifest.row_count} rows, ${formatBytes(manifest.size_bytes)}, snapshot ${manifest.snapshot_id}${manifest.group ? ` (group ${manifest.group.name})` : ''}\n`,
            );
            for (const warning of manifest.warnings) process.stdout.write(`  warning: ${warning}\n`);
          }
        };
        if (options.group) {
          const manifests = await captureGroup({ ...common, group: options.group, tables: tables.map((t) => ({ table: t })), ...(concurrency ? { concurrency } : {}) });
          manifests.forEach(print);
        } else {
          if (concurrency) throw new ConfigError('--concurrency applies to --group only', { hint: 'add --group NAME, or leave out --concurrency' });
          for (const t of tables) print(await captureTable({ ...common, table: t }));
        }
      } finally {
        interrupt.dispose();
      }
    });

  const snapshots = program.command('snapshots').description('look at stored snapshots');
  withStorageOption(withDatabaseOption(snapshots.command('list')))
    .description('list snapshots in storage, newest first')
    .option('--table <name>', 'only this table (schema.table; unqualified: resolved on --db if given, else schema public)')
    .option('--json', 'print a JSON array of snapshot summaries (the manifest without columns and definition; manifest_key names the whole one)')
    .action(async (options: ListCommandOptions) => {
      const storage = openStorage(options.storage);
      let filter: QualifiedName | undefined;
      if (options.table) {
        // An unqualified name goes through the server's search_path when a server is named (or
        // the embedded one of this folder is known); a listing never fails for want of one.
        const unqualified = parseQualifiedName(options.table, UNQUALIFIED).schema === UNQUALIFIED;
        const wantsServer = unqualified && (databaseConfigured(options.db) || readEmbeddedConnection() !== undefined);
        filter = tableWithoutDatabase(options.table);
        if (wantsServer) {
          const client = await connect(resolveDatabase(options.db), 'backstop snapshots list').catch((error: unknown) => {
            if (options.db) throw error;
            return undefined;
          });
          try {
            if (client) filter = await resolveTable(client, options.table).catch(() => tableWithoutDatabase(options.table!));
          } finally {
            await client?.end().catch(() => {});
          }
        }
      }
      const logger = createLogger();
      const manifests = await listSnapshots(storage, {
        ...(filter ? { table: filter } : {}),
        logger,
        onInvalid: (key, error) => logger.warn('unreadable manifest left out', { key, error: error instanceof Error ? error.message : String(error) }),
      });
      if (options.json) {
        process.stdout.write(`${JSON.stringify(manifests, null, 2)}\n`);
        return;
      }
      if (manifests.length === 0) {
        process.stdout.write(`no snapshots${filter ? ` of ${displayName(filter)}` : ''} in ${storage.url}\n`);
        return;
      }
      const rows = [['SNAPSHOT', 'TABLE', 'CREATED (UTC)', 'AGE', 'ROWS', 'SIZE', 'SOURCE', 'GROUP', 'LABEL']];
      for (const m of manifests) {
        rows.push([
          m.snapshot_id,
          displayName(m),
          m.created_at.replace('T', ' ').replace(/\.\d+Z$/, ''),
          formatAge(m.created_at),
          String(m.row_count),
          formatBytes(m.size_bytes),
          m.source === 'sidecar' ? 'sidecar (background)' : m.source,
          m.group?.name ?? '',
          m.label ?? '',
        ]);
      }
      process.stdout.write(`${table(rows)}\n`);
    });

  withStorageOption(program.command('verify'))
    .description("re-read a snapshot's data file and check its size and SHA-256 against the manifest")
    .requiredOption('--snapshot-id <id>', 'the snapshot to verify')
    .option('--json', 'print the result as JSON')
    .action(async (options: VerifyCommandOptions) => {
      const storage = openStorage(options.storage);
      const result = await verifySnapshot(storage, options.snapshotId);
      if (options.json) {
        process.stdout.write(`${JSON.stringify({ snapshot_id: result.manifest.snapshot_id, ok: true, size_bytes: result.actual?.size, checksum: result.actual?.sha256 })}\n`);
      } else {
        process.stdout.write(
          `snapshot ${result.manifest.snapshot_id} of ${displayName(result.manifest)} verified: ${result.actual?.size} bytes, sha256 ${result.actual?.sha256}\n`,
        );
      }
    });

  withStorageOption(program.command('prune'))
    .description(
      'apply a retention policy to every table\'s snapshots (all sources: before-images and named snapshots too; never the newest verified one), remove orphaned data files, and abort multipart uploads that killed captures left behind',
    )
    .option('--keep <n>', 'keep the newest N verified snapshots per table (the same as --keep-last N)')
    .option('--keep-last <n>', 'keep the newest N snapshots per table')
    .option('--keep-hourly <n>', 'keep the newest snapshot of each of the N most recent hours (UTC) that have one')
    .option('--keep-daily <n>', 'keep the newest snapshot of each of the N most recent days (UTC) that have one')
    .option('--verify <how>', 'how kept snapshots are checked where something is removed: sha256 (re-read each data file) or size (the listed size only)', 'sha256')
    .option('--table <name>', 'only this table (schema.table; unqualified means schema public)')
    .option('--dry-run', 'report what would be removed and remove nothing')
    .option('--json', 'print the report as JSON')
    .action(async (options: PruneCommandOptions) => {
      const retention = prunePolicy(options);
      if (options.verify !== 'sha256' && options.verify !== 'size') {
        throw new ConfigError(`--verify: "${options.verify}" is not sha256 or size`, { hint: 'sha256 re-reads every kept data file of a table that loses snapshots; size only compares the listed sizes' });
      }
      const storage = openStorage(options.storage);
      const logger = createLogger();
      const report = await pruneWithReport(storage, {
        ...retention,
        verification: options.verify,
        logger,
        ...(options.table ? { table: tableWithoutDatabase(options.table) } : {}),
        ...(options.dryRun ? { dryRun: true } : {}),
      });
      const uploads = await cleanUpUnfinishedUploads(storage, { ...(options.dryRun ? { dryRun: true } : {}), logger });
      if (options.json) {
        const decision = (d: { upload: { key: string; uploadId: string }; why: string }) => ({ key: d.upload.key, upload_id: d.upload.uploadId, why: d.why });
        const uploadReport = uploads.supported
          ? {
              aborted: uploads.aborted.map(decision),
              left: uploads.left.map(decision),
              failed: uploads.failed.map((f) => ({ ...decision(f), error: f.error })),
              listing_error: uploads.listingError ?? null,
            }
          : null;
        process.stdout.write(
          `${JSON.stringify({ dry_run: Boolean(options.dryRun), removed: report.removed.map(snapshotLine), orphans: report.orphans, kept: report.kept, corrupt: report.corrupt, uploads: uploadReport }, null, 2)}\n`,
        );
        return;
      }
      const verb = options.dryRun ? 'would remove' : 'removed';
      for (const m of report.removed) process.stdout.write(`${verb} snapshot ${m.snapshot_id} of ${displayName(m)} (${m.created_at})\n`);
      for (const key of report.orphans) process.stdout.write(`${verb} orphaned file ${key}\n`);
      for (const c of report.corrupt) process.stdout.write(`left in place: snapshot ${c.snapshot_id} fails verification: ${c.problem}\n`);
      const abortVerb = options.dryRun ? 'would abort' : 'aborted';
      for (const d of uploads.aborted) process.stdout.write(`${abortVerb} unfinished upload of ${d.upload.key} (${d.why})\n`);
      for (const f of uploads.failed) process.stdout.write(`could not abort the unfinished upload of ${f.upload.key}: ${f.error}\n`);
      for (const d of uploads.left) process.stdout.write(`left running: unfinished upload of ${d.upload.key} (${d.why})\n`);
      process.stdout.write(`${report.removed.length} snapshot(s) and ${report.orphans.length} orphaned file(s) ${verb}; ${report.kept.length} kept\n`);
      if (uploads.supported) {
        process.stdout.write(`${uploads.aborted.length} unfinished upload(s) ${abortVerb}, ${uploads.failed.length} could not be, ${uploads.left.length} left running\n`);
        if (uploads.listingError) {
          process.stdout.write(`note: ListMultipartUploads is not available (${uploads.listingError}); only uploads Backstop recorded were seen — an S3 lifecycle rule with AbortIncompleteMultipartUpload covers the rest\n`);
        }
      }
    });
}

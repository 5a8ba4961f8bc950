/**
 * `backstop install` / `backstop uninstall`: apply the numbered migrations in migrations/ (each
 * one runs a file from sql/) with node-pg-migrate, keeping its bookkeeping in
 * backstop.migrations. All pending migrations run in one transaction: an error leaves nothing
 * behind. Then put back what the migrations made and something removed or switched off since
 * (src/install/repair.ts: event triggers, TRUNCATE guards, dblink). Running install twice on an
 * intact guard is a no-op.
 */
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { runner } from 'node-pg-migrate';
import { DatabaseError, SchemaVersionError, describeError } from '../errors/index.js';
import { BACKSTOP_VERSION } from '../version.js';
import { silentLogger, type Logger } from '../log/logger.js';
import { agentLoginGaps, rowSecurityTables, type RowSecurityGap } from '../db/row-security.js';
import { assertCanInstall } from './privileges.js';
import { migrationsDir, sqlDir } from './paths.js';
import { applyGuardRepairs, planGuardRepairs } from './repair.js';

export const MIGRATIONS_SCHEMA = 'backstop';
export const MIGRATIONS_TABLE = 'migrations';

export interface InstallResult {
  applied: string[];
  dblink: boolean;
  /** What was found missing or switched off and put back (empty when the guard was whole). */
  repaired: string[];
  rowSecurity: RowSecurityReport;
}

/**
 * Tables with row-level security, and the agent's login roles (members of backstop_agent) that
 * could not capture them. Install does not know which role the agent will log in as: with such
 * tables, that role needs BYPASSRLS itself.
 */
export interface RowSecurityReport {
  tables: string[];
  agentLoginGaps: RowSecurityGap[];
}

export interface InstallOptions {
  logger?: Logger;
}

/** Migration names in order (file names without extension), as node-pg-migrate sees them. */
export async function listMigrations(): Promise<string[]> {
  const files = await readdir(migrationsDir);
  return files
    .filter((file) => file.endsWith('.js') && !file.startsWith('.'))
    .map((file) => file.replace(/\.js$/, ''))
    .sort();
}

/** Names of the migrations already applied here (empty when Backstop is not installed). */
export async function appliedMigrations(client: Pick<pg.ClientBase, 'query'>): Promise<Set<string>> {
  const { rows } = await client.query<{ exists: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS exists`, [
    `${MIGRATIONS_SCHEMA}.${MIGRATIONS_TABLE}`,
  ]);
  if (!rows[0]?.exists) return new Set();
  const applied = await client.query<{ name: string }>(`SELECT name FROM backstop.migrations`);
  return new Set(applied.rows.map((row) => row.name));
}

/**
 * How the schema installed in a database compares with this build's migrations: `pending` ones
 * are not applied yet (an older schema: run install), `unknown` ones were applied by a newer
 * Backstop than this one (upgrade this build before running it against that database).
 */
export interface SchemaVersion {
  applied: string[];
  pending: string[];
  unknown: string[];
}

export async function schemaVersion(client: Pick<pg.ClientBase, 'query'>): Promise<SchemaVersion> {
  const known = await listMigrations();
  const applied = [...(await appliedMigrations(client))].sort();
  return {
    applied,
    pending: known.filter((name) => !applied.includes(name)),
    unknown: applied.filter((name) => !known.includes(name)),
  };
}

/** The SQL file a migration runs: migrations/0001_core.js runs sql/0001_core.sql. */
export async function migrationSql(name: string): Promise<string> {
  return readFile(path.join(sqlDir, `${name}.sql`), 'utf8');
}

async function dblinkInstalled(client: pg.Client): Promise<boolean> {
  const { rows } = await client.query<{ installed: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'dblink') AS installed`,
  );
  return rows[0]!.installed;
}

export async function install(client: pg.Client, options: InstallOptions = {}): Promise<InstallResult> {
  const logger = options.logger ?? silentLogger;
  await assertCanInstall(client);
  const version = await schemaVersion(client);
  if (version.unknown.length > 0) {
    throw new SchemaVersionError(`the Backstop schema here has migration(s) this Backstop (${BACKSTOP_VERSION}) does not know: ${version.unknown.join(', ')}`, {
      hint: 'a newer Backstop installed it: run install (and the agents) from that version; nothing was changed',
    });
  }
  const before = new Set(version.applied);
  try {
    await runner({
      dbClient: client,
      dir: migrationsDir,
      direction: 'up',
      migrationsSchema: MIGRATIONS_SCHEMA,
      migrationsTable: MIGRATIONS_TABLE,
      createMigrationsSchema: true,
      singleTransaction: true,
      checkOrder: true,
      log: (message: string) => logger.debug(message),
    });
  } catch (error) {
    throw new DatabaseError(`install failed and was rolled back: ${describeError(error)}`, {
      cause: error,
      hint: 'nothing was changed; fix the cause above and run backstop install again',
    });
  }
  const after = await appliedMigrations(client);
  const applied = [...after].filter((name) => !before.has(name)).sort();
  const repairs = await planGuardRepairs(client, await listMigrations());
  try {
    await applyGuardRepairs(client, repairs);
  } catch (error) {
    throw new DatabaseError(`repairing the guard failed and was rolled back: ${describeError(error)}`, {
      cause: error,
      hint: 'the migrations are applied; fix the cause above and run backstop install again',
    });
  }
  for (const repair of repairs) logger.debug('guard repaired', { finding: repair.finding, sql: repair.sql });
  return {
    applied,
    dblink: await dblinkInstalled(client),
    repaired: repairs.map((repair) => repair.finding),
    rowSecurity: { tables: await rowSecurityTables(client), agentLoginGaps: await agentLoginGaps(client) },
  };
}

/**
 * The SQL that install would run, as one script a DBA can review and apply with psql (for
 * managed services where they prefer to run DDL themselves). Includes the bookkeeping rows so a
 * later `backstop install` sees the migrations as applied.
 */
export async function installScript(client: pg.Client | null): Promise<string> {
  const applied = client ? await appliedMigrations(client) : new Set<string>();
  const migrations = await listMigrations();
  const pending = migrations.filter((name) => !applied.has(name));
  if (pending.length === 0) {
    // Up to date: what install would still put back (planned on the database as it is now).
    const repairs = client ? await planGuardRepairs(client, migrations) : [];
    if (repairs.length === 0) return '-- Backstop is installed and up to date: nothing to run.\n';
    const parts = ['-- Backstop is installed and up to date; these parts of the guard were removed or switched off since:', 'BEGIN;'];
    for (const repair of repairs) parts.push(`-- ${repair.finding}`, ...repair.sql.map((sql) => `${sql};`));
    parts.push('COMMIT;');
    return `${parts.join('\n')}\n`;
  }
  const parts = ['BEGIN;', `CREATE SCHEMA IF NOT EXISTS ${MIGRATIONS_SCHEMA};`,
    `CREATE TABLE IF NOT EXISTS ${MIGRATIONS_SCHEMA}.${MIGRATIONS_TABLE} (id SERIAL PRIMARY KEY, name varchar(255) NOT NULL, run_on timestamp NOT NULL);`];
  for (const name of pending) {
    parts.push(`-- migration ${name}`, (await migrationSql(name)).trim(), `INSERT INTO ${MIGRATIONS_SCHEMA}.${MIGRATIONS_TABLE} (name, run_on) VALUES ('${name.replace(/'/g, "''")}', now());`);
  }
  parts.push('COMMIT;');
  if (applied.size > 0) {
    parts.push('-- Then run backstop install --dry-run again: it prints what else install would put back (event triggers, TRUNCATE guards, dblink).');
  }
  return `${parts.join('\n\n')}\n`;
}

/** Remove every Backstop object (sql/uninstall.sql); user tables and their data stay. */
export async function uninstall(client: pg.Client): Promise<void> {
  await assertCanInstall(client);
  const script = await readFile(path.join(sqlDir, 'uninstall.sql'), 'utf8');
  try {
    await client.query('BEGIN');
    await client.query(script);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw new DatabaseError(`uninstall failed and was rolled back: ${describeError(error)}`, { cause: error });
  }
}

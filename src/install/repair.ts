/**
 * What `backstop install` puts back on every run, after the migrations. A migration runs once, so
 * running install again changes nothing the migrations made; but parts of the guard live outside
 * Backstop's own tables and can go missing later (a superuser disabled or dropped an event
 * trigger, a table was created where the ddl_command_end trigger did not attach the TRUNCATE
 * guard, dblink was installed on the server after Backstop). These are repaired on every
 * install, idempotently, so that "run backstop install again" (doctor's hint) really fixes them:
 *
 * - the guard's event triggers, as the migrations in sql/ leave them: created when missing,
 *   re-created when they call another function or fire on other tags, re-armed (ENABLE ALWAYS)
 *   when disabled;
 * - the TRUNCATE guard on every guarded table that lacks it or where it is not as installed;
 * - dblink, when the server offers it and it is not installed.
 *
 * Planned from the catalogs first (`planGuardRepairs`), then run (`install`) or printed
 * (`install --dry-run`). `doctor` reports from the same queries, so the two agree.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { loadModule, parseSync } from 'libpg-query';
import { quoteIdent } from '../db/identifiers.js';
import { sqlDir } from './paths.js';

export interface EventTriggerDefinition {
  name: string;
  event: string;
  /** WHEN TAG IN (...), upper case and sorted; null when it fires for every tag. */
  tags: string[] | null;
  /** Qualified function name, e.g. backstop.guard_statement. */
  function: string;
  /** 'A' (ENABLE ALWAYS), 'O' (ENABLE), 'R' (REPLICA) or 'D' (DISABLE). */
  enabled: string;
  /** The CREATE EVENT TRIGGER statement as the migration wrote it. */
  createSql: string;
}

export interface GuardRepair {
  /** What is wrong now, for people ("event trigger x is disabled", "public.t has no TRUNCATE guard"). */
  finding: string;
  /** The statements that put it back, in order. */
  sql: string[];
}

type Node = Record<string, any>;

function names(list: Node[] | undefined): string[] {
  return (list ?? []).map((item) => String(item.String?.sval));
}

function normalizedTags(tags: string[] | null): string[] | null {
  return tags === null ? null : [...new Set(tags.map((tag) => tag.toUpperCase()))].sort();
}

/**
 * The event triggers the migrations leave behind, read from their SQL in order (a later
 * migration may drop or re-create one). `migrations` are migration names, as listMigrations
 * gives them; each runs sql/<name>.sql.
 */
export async function expectedEventTriggers(migrations: string[]): Promise<EventTriggerDefinition[]> {
  await loadModule();
  const found = new Map<string, EventTriggerDefinition>();
  for (const migration of migrations) {
    const text = await readFile(path.join(sqlDir, `${migration}.sql`), 'utf8').catch(() => null);
    if (text === null) continue;
    // Statement locations are byte offsets into the UTF-8 text.
    const bytes = Buffer.from(text, 'utf8');
    for (const { stmt, stmt_location: location = 0, stmt_len: length = 0 } of parseSync(text).stmts as Array<{ stmt: Node; stmt_location?: number; stmt_len?: number }>) {
      if (stmt.CreateEventTrigStmt) {
        const create = stmt.CreateEventTrigStmt;
        const when = (create.whenclause as Node[] | undefined)?.find((clause) => clause.DefElem?.defname === 'tag');
        const statement = bytes.subarray(location, length > 0 ? location + length : bytes.length).toString('utf8').trim();
        found.set(create.trigname, {
          name: create.trigname,
          event: create.eventname,
          tags: when ? normalizedTags(names(when.DefElem.arg?.List?.items)) : null,
          function: names(create.funcname).join('.'),
          enabled: 'O',
          createSql: statement,
        });
      } else if (stmt.AlterEventTrigStmt) {
        const existing = found.get(stmt.AlterEventTrigStmt.trigname);
        if (existing) existing.enabled = stmt.AlterEventTrigStmt.tgenabled;
      } else if (stmt.DropStmt?.removeType === 'OBJECT_EVENT_TRIGGER') {
        for (const name of names(stmt.DropStmt.objects)) found.delete(name);
      }
    }
  }
  return [...found.values()];
}

interface InstalledEventTrigger {
  name: string;
  event: string;
  tags: string[] | null;
  function: string;
  enabled: string;
}

async function installedEventTriggers(client: pg.ClientBase, names: string[]): Promise<Map<string, InstalledEventTrigger>> {
  const { rows } = await client.query<InstalledEventTrigger>(
    `SELECT e.evtname AS name, e.evtevent AS event, e.evttags AS tags, n.nspname || '.' || p.proname AS function, e.evtenabled AS enabled
       FROM pg_catalog.pg_event_trigger e
       JOIN pg_catalog.pg_proc p ON p.oid = e.evtfoid
       JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE e.evtname = ANY ($1::text[])`,
    [names],
  );
  return new Map(rows.map((row) => [row.name, { ...row, tags: normalizedTags(row.tags) }]));
}

const ENABLED_WORDS: Record<string, string> = { A: 'ENABLE ALWAYS', O: 'ENABLE', R: 'ENABLE REPLICA', D: 'DISABLE' };

/** Compare what is installed with what the migrations define: pure. */
export function planEventTriggerRepairs(expected: EventTriggerDefinition[], installed: Map<string, InstalledEventTrigger>): GuardRepair[] {
  const repairs: GuardRepair[] = [];
  for (const definition of expected) {
    const arm = `ALTER EVENT TRIGGER ${quoteIdent(definition.name)} ${ENABLED_WORDS[definition.enabled] ?? 'ENABLE'}`;
    const current = installed.get(definition.name);
    if (!current) {
      repairs.push({ finding: `event trigger ${definition.name} is missing`, sql: [definition.createSql, arm] });
      continue;
    }
    const sameTags = JSON.stringify(current.tags) === JSON.stringify(definition.tags);
    if (current.event !== definition.event || current.function !== definition.function || !sameTags) {
      repairs.push({
        finding: `event trigger ${definition.name} differs from Backstop's (${current.event}, ${current.function}${current.tags ? `, tags ${current.tags.join(', ')}` : ''})`,
        sql: [`DROP EVENT TRIGGER ${quoteIdent(definition.name)}`, definition.createSql, arm],
      });
    } else if (current.enabled !== definition.enabled) {
      repairs.push({ finding: `event trigger ${definition.name} is ${current.enabled === 'D' ? 'disabled' : `not ${ENABLED_WORDS[definition.enabled]}`}`, sql: [arm] });
    }
  }
  return repairs;
}

/**
 * Guarded tables (ordinary and partitioned, not temporary, outside the system and Backstop
 * schemas: backstop._is_guarded_table) whose TRUNCATE guard is not as installed: a trigger named
 * backstop_truncate_guard running backstop.guard_truncate(), ENABLE ALWAYS, and no other trigger
 * running that function. Readable by any role (doctor may run as the agent's).
 */
export const TRUNCATE_GUARD_GAPS_SQL = `
  SELECT c.oid::int8::text AS relid, pg_catalog.format('%I.%I', n.nspname, c.relname) AS name,
         pg_catalog.array_remove(pg_catalog.array_agg(t.tgname::text ORDER BY t.tgname)
           FILTER (WHERE (t.tgname = 'backstop_truncate_guard') <> (t.tgfoid = g.oid)), NULL) AS strays,
         pg_catalog.bool_or(t.tgname = 'backstop_truncate_guard' AND t.tgfoid = g.oid) AS present,
         pg_catalog.bool_or(t.tgname = 'backstop_truncate_guard' AND t.tgfoid = g.oid AND t.tgenabled = 'A') AS armed
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    CROSS JOIN (SELECT pg_catalog.to_regprocedure('backstop.guard_truncate()')::oid AS oid) AS g
    LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = c.oid AND NOT t.tgisinternal
   WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
     AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'backstop', 'backstop_images')
     AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
   GROUP BY c.oid, n.nspname, c.relname
  HAVING NOT coalesce(pg_catalog.bool_or(t.tgname = 'backstop_truncate_guard' AND t.tgfoid = g.oid AND t.tgenabled = 'A'), false)
      OR pg_catalog.bool_or((t.tgname = 'backstop_truncate_guard') <> (t.tgfoid = g.oid))
   ORDER BY 2`;

export interface TruncateGuardGap {
  relid: string;
  /** Qualified, quoted. */
  name: string;
  /** Triggers in the way: named backstop_truncate_guard but running another function, or running guard_truncate() under another name. */
  strays: string[];
  /** The guard is there (right name, right function). */
  present: boolean;
  /** …and ENABLE ALWAYS. */
  armed: boolean;
}

export async function truncateGuardGaps(client: pg.ClientBase): Promise<TruncateGuardGap[]> {
  const { rows } = await client.query<TruncateGuardGap>(TRUNCATE_GUARD_GAPS_SQL);
  return rows.map((row) => ({ ...row, strays: row.strays ?? [], present: row.present === true, armed: row.armed === true }));
}

/** What is wrong with one table's guard, for people. */
export function describeTruncateGuardGap(gap: TruncateGuardGap): string {
  if (gap.strays.length > 0) return `${gap.name}: trigger(s) ${gap.strays.join(', ')} stand in for the TRUNCATE guard`;
  if (gap.present) return `${gap.name}: the TRUNCATE guard is not ENABLE ALWAYS`;
  return `${gap.name}: no TRUNCATE guard`;
}

/** Put every table's guard back: strays dropped, then backstop._attach_truncate_guard (idempotent). Pure. */
export function planTruncateGuardRepairs(gaps: TruncateGuardGap[]): GuardRepair[] {
  return gaps.map((gap) => ({
    finding: describeTruncateGuardGap(gap),
    sql: [
      ...gap.strays.map((trigger) => `DROP TRIGGER ${quoteIdent(trigger)} ON ${gap.name}`),
      `SELECT backstop._attach_truncate_guard(${gap.relid}::oid)`,
    ],
  }));
}

/** dblink is on the server but not installed: install it where 0001 would have (schema backstop). */
async function planDblinkRepair(client: pg.ClientBase): Promise<GuardRepair[]> {
  const { rows } = await client.query<{ missing: boolean }>(
    `SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'dblink')
            AND EXISTS (SELECT FROM pg_catalog.pg_available_extensions WHERE name = 'dblink') AS missing`,
  );
  return rows[0]?.missing ? [{ finding: 'dblink is available but not installed', sql: ['CREATE EXTENSION dblink SCHEMA backstop'] }] : [];
}

/** Everything install would put back in this database now (empty when the guard is whole). */
export async function planGuardRepairs(client: pg.ClientBase, migrations: string[]): Promise<GuardRepair[]> {
  const expected = await expectedEventTriggers(migrations);
  const installed = await installedEventTriggers(client, expected.map((definition) => definition.name));
  return [
    ...planEventTriggerRepairs(expected, installed),
    ...planTruncateGuardRepairs(await truncateGuardGaps(client)),
    ...(await planDblinkRepair(client)),
  ];
}

/** Run the repairs in one transaction: all or nothing. */
export async function applyGuardRepairs(client: pg.ClientBase, repairs: GuardRepair[]): Promise<void> {
  if (repairs.length === 0) return;
  await client.query('BEGIN');
  try {
    for (const repair of repairs) for (const sql of repair.sql) await client.query(sql);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  }
}

/** The event triggers' installed state for doctor: same comparison as the repair. */
export async function eventTriggerFindings(client: pg.ClientBase, migrations: string[]): Promise<{ expected: EventTriggerDefinition[]; repairs: GuardRepair[] }> {
  const expected = await expectedEventTriggers(migrations);
  const installed = await installedEventTriggers(client, expected.map((definition) => definition.name));
  return { expected, repairs: planEventTriggerRepairs(expected, installed) };
}

/**
 * Session settings under which values are turned into text, both when a snapshot is captured
 * and when it is restored and verified. Text forms (and so the content hash over `t::text`)
 * depend on them: timestamptz on TimeZone, dates on DateStyle, intervals on IntervalStyle,
 * floats on extra_float_digits, bytea on bytea_output, money on lc_monetary.
 */
import type pg from 'pg';

export const CANONICAL_SETTINGS: Readonly<Record<string, string>> = Object.freeze({
  TimeZone: 'UTC',
  DateStyle: 'ISO, MDY',
  IntervalStyle: 'postgres',
  // 1 (or more) = shortest text that reads back to the identical float (PostgreSQL 12+).
  extra_float_digits: '1',
  bytea_output: 'hex',
  lc_monetary: 'C',
  client_encoding: 'UTF8',
});

/**
 * Reads that must see every row (captures, TRUNCATE image exports, restore's read-back): with
 * row_security = off, a query that row-level security would filter raises an error (42501)
 * instead of returning fewer rows, so a snapshot can never silently miss rows a policy hides
 * from the reading role. Kept apart from CANONICAL_SETTINGS: it changes which rows are read,
 * not how values print, and is not part of a manifest's session_settings.
 */
export const EVERY_ROW_SETTINGS: Readonly<Record<string, string>> = Object.freeze({ row_security: 'off' });

/** Apply the canonical settings for the rest of the current transaction (SET LOCAL). */
export async function setCanonicalSettingsLocal(client: pg.ClientBase): Promise<void> {
  await setLocal(client, CANONICAL_SETTINGS);
}

/** Apply EVERY_ROW_SETTINGS for the rest of the current transaction (SET LOCAL). */
export async function setEveryRowSettingsLocal(client: pg.ClientBase): Promise<void> {
  await setLocal(client, EVERY_ROW_SETTINGS);
}

async function setLocal(client: pg.ClientBase, settings: Readonly<Record<string, string>>): Promise<void> {
  for (const [name, value] of Object.entries(settings)) {
    await client.query(`SELECT pg_catalog.set_config($1, $2, true)`, [name, value]);
  }
}

/**
 * Run `work` — a read of every row of a table — under the canonical settings and
 * EVERY_ROW_SETTINGS, then put the session's previous values back. Works inside or outside a
 * transaction block.
 */
export async function withCanonicalEveryRowSettings<T>(client: pg.ClientBase, work: () => Promise<T>): Promise<T> {
  return withSettings(client, { ...CANONICAL_SETTINGS, ...EVERY_ROW_SETTINGS }, work);
}

async function withSettings<T>(client: pg.ClientBase, settings: Readonly<Record<string, string>>, work: () => Promise<T>): Promise<T> {
  const names = Object.keys(settings);
  const { rows } = await client.query<{ name: string; value: string }>(
    `SELECT n AS name, pg_catalog.current_setting(n) AS value FROM unnest($1::text[]) AS n`,
    [names],
  );
  const previous = rows.filter((row) => row.value !== settings[row.name]);
  for (const row of previous) await client.query(`SELECT pg_catalog.set_config($1, $2, false)`, [row.name, settings[row.name]]);
  try {
    return await work();
  } finally {
    for (const row of previous) await client.query(`SELECT pg_catalog.set_config($1, $2, false)`, [row.name, row.value]).catch(() => {});
  }
}

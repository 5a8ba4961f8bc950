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

/** Apply the canonical settings for the rest of the current transaction (SET LOCAL). */
export async function setCanonicalSettingsLocal(client: pg.ClientBase): Promise<void> {
  for (const [name, value] of Object.entries(CANONICAL_SETTINGS)) {
    await client.query(`SELECT pg_catalog.set_config($1, $2, true)`, [name, value]);
  }
}

/**
 * Run `work` under the canonical settings, then put the session's previous values back. Works
 * inside or outside a transaction block.
 */
export async function withCanonicalSettings<T>(client: pg.ClientBase, work: () => Promise<T>): Promise<T> {
  const names = Object.keys(CANONICAL_SETTINGS);
  const { rows } = await client.query<{ name: string; value: string }>(
    `SELECT n AS name, pg_catalog.current_setting(n) AS value FROM unnest($1::text[]) AS n`,
    [names],
  );
  const previous = rows.filter((row) => row.value !== CANONICAL_SETTINGS[row.name]);
  for (const row of previous) await client.query(`SELECT pg_catalog.set_config($1, $2, false)`, [row.name, CANONICAL_SETTINGS[row.name]]);
  try {
    return await work();
  } finally {
    for (const row of previous) await client.query(`SELECT pg_catalog.set_config($1, $2, false)`, [row.name, row.value]).catch(() => {});
  }
}

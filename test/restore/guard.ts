/**
 * Tests that drop tables on purpose (to restore them) get around Backstop's own guard the way a
 * superuser always can: its event triggers disabled for the duration, then enabled ALWAYS again.
 */
import type pg from 'pg';
import { quoteIdent } from '../../src/db/identifiers.js';

export async function withoutGuard<T>(client: pg.Client, work: () => Promise<T>): Promise<T> {
  const { rows } = await client.query<{ name: string }>(`SELECT evtname AS name FROM pg_event_trigger WHERE evtname LIKE 'backstop%'`);
  for (const { name } of rows) await client.query(`ALTER EVENT TRIGGER ${quoteIdent(name)} DISABLE`);
  try {
    return await work();
  } finally {
    for (const { name } of rows) await client.query(`ALTER EVENT TRIGGER ${quoteIdent(name)} ENABLE ALWAYS`);
  }
}

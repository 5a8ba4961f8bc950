/**
 * The loopback connection a guarded session uses to file requests and read decisions: opened
 * once per session and reused, so the LISTEN on backstop_decisions stays in place while a
 * statement waits, and no call pays for a new backend.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

describe('loopback connection', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('is reused across calls in one session', async () => {
    const client = await db.client();
    const pid = async () => (await client.query<{ pid: string }>(`SELECT backstop._loopback_value('SELECT pg_backend_pid()::text') AS pid`)).rows[0]!.pid;
    const first = await pid();
    expect(first).not.toBe(String((await client.query('SELECT pg_backend_pid() AS p')).rows[0].p));
    expect(await pid()).toBe(first);
    expect(await pid()).toBe(first);
  });

  it('is replaced when its backend died', async () => {
    const client = await db.client();
    const pid = async () => (await client.query<{ pid: string }>(`SELECT backstop._loopback_value('SELECT pg_backend_pid()::text') AS pid`)).rows[0]!.pid;
    const first = await pid();
    const killer = await db.client();
    await killer.query('SELECT pg_terminate_backend($1::int)', [first]);
    await killer.query(`SELECT pg_sleep(0.2)`);
    const second = await pid();
    expect(second).not.toBe(first);
  });
});

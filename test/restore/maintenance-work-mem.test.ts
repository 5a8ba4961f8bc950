/**
 * maintenance_work_mem for a restore's index builds (src/restore/load.ts): raised for the restore
 * transaction only, never lowered below the session's, given as a size with a unit or `server`.
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors/index.js';
import { maintenanceWorkMemKb, raiseMaintenanceWorkMemLocal } from '../../src/restore/load.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

describe('maintenance_work_mem of a restore', () => {
  let db: TestDatabase;
  let client: pg.Client;
  const current = async () => (await client.query<{ value: string }>(`SELECT current_setting('maintenance_work_mem') AS value`)).rows[0]!.value;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('reads sizes with a unit, 512MB by default, and "server" as keep the server\'s', () => {
    expect(maintenanceWorkMemKb()).toBe(512 * 1024);
    expect(maintenanceWorkMemKb('2GB')).toBe(2 * 1024 * 1024);
    expect(maintenanceWorkMemKb('65536kB')).toBe(65536);
    expect(maintenanceWorkMemKb(' 1 GB ')).toBe(1024 * 1024);
    expect(maintenanceWorkMemKb('server')).toBeUndefined();
  });

  it.each(['512', 'lots', '0MB', '32kB', '3000GB', '1.5GB', '512mb'])('refuses "%s" with a hint', (setting) => {
    expect(() => maintenanceWorkMemKb(setting)).toThrow(ConfigError);
    try {
      maintenanceWorkMemKb(setting);
    } catch (error) {
      expect((error as ConfigError).hint).toMatch(/--maintenance-work-mem/);
    }
  });

  it('raises it for the transaction only', async () => {
    await client.query(`SET maintenance_work_mem = '64MB'`);
    await client.query('BEGIN');
    await raiseMaintenanceWorkMemLocal(client, maintenanceWorkMemKb('512MB'));
    expect(await current()).toBe('512MB');
    await client.query('ROLLBACK');
    expect(await current()).toBe('64MB');
  });

  it('never lowers what the session already has, and leaves it alone for "server"', async () => {
    await client.query(`SET maintenance_work_mem = '1GB'`);
    await client.query('BEGIN');
    await raiseMaintenanceWorkMemLocal(client, maintenanceWorkMemKb('512MB'));
    expect(await current()).toBe('1GB');
    await client.query('ROLLBACK');
    await client.query(`SET maintenance_work_mem = '64MB'`);
    await client.query('BEGIN');
    await raiseMaintenanceWorkMemLocal(client, maintenanceWorkMemKb('server'));
    expect(await current()).toBe('64MB');
    await client.query('ROLLBACK');
    await client.query('RESET maintenance_work_mem');
  });
});

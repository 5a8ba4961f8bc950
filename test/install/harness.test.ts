import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, serverInfo, type TestDatabase } from '../support/database.js';

describe('test harness', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('gives each file its own database cloned from the template with Backstop installed', async () => {
    const client = await db.client();
    const { rows } = await client.query(`SELECT current_database() AS name, to_regnamespace('backstop') IS NOT NULL AS installed, current_setting('server_version_num')::int / 10000 AS major`);
    expect(rows[0]).toEqual({ name: db.name, installed: true, major: serverInfo().major });
  });
});

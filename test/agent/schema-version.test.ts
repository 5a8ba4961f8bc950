/**
 * Schema versions: an agent refuses a database whose Backstop schema has migrations this build
 * does not know (upgrade the agent) or lacks ones it needs (run install), and doctor and install
 * say the same.
 */
import { spawn } from 'node:child_process';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDoctor } from '../../src/doctor/checks.js';
import { SchemaVersionError } from '../../src/errors/index.js';
import { install, schemaVersion } from '../../src/install/install.js';
import { createLoginRoles } from '../support/agent-double.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { BACKSTOP_BIN, tempDir } from '../support/agent-process.js';

async function failedStart(url: string): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [BACKSTOP_BIN, 'agent', '--db', url, '--storage', await tempDir('backstop-storage-'), '--state', `${await tempDir('backstop-state-')}/a.sqlite`, '--http', 'off'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  return { code, stderr };
}

describe('schema versions', () => {
  let db: TestDatabase;
  let client: pg.Client;
  let cleanup: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
  });
  afterAll(async () => {
    await db?.drop();
    await cleanup?.();
  });

  it('is read by the agent role (a member of backstop_agent, not a superuser)', async () => {
    const { roles, dropRoles } = await createLoginRoles(db, ['agent'], { agent: ['backstop_agent'] });
    const agent = new pg.Client({ connectionString: db.urlAs(roles.agent!) });
    await agent.connect();
    cleanup = dropRoles;
    try {
      expect(await schemaVersion(agent)).toMatchObject({ pending: [], unknown: [] });
    } finally {
      await agent.end();
    }
  });

  it('a newer schema: the agent refuses to start, doctor fails, install changes nothing — each saying to upgrade', async () => {
    await client.query(`INSERT INTO backstop.migrations (name, run_on) VALUES ('9999_from_the_future', now())`);
    try {
      const agent = await failedStart(db.url);
      expect(agent.code).toBe(1);
      expect(agent.stderr).toMatch(/^error: the Backstop schema in .* has migration\(s\) this agent \(\S+\) does not know: 9999_from_the_future\nhint: .*upgrade this agent/m);

      const install_ = (await runDoctor(client)).find((result) => result.check === 'install');
      expect(install_).toMatchObject({ status: 'fail', detail: expect.stringContaining('does not know: 9999_from_the_future'), hint: expect.stringContaining('upgrade') });

      await expect(install(client)).rejects.toBeInstanceOf(SchemaVersionError);
    } finally {
      await client.query(`DELETE FROM backstop.migrations WHERE name = '9999_from_the_future'`);
    }
  });

  it('an older schema: the agent refuses to start and doctor fails, each saying to run install', async () => {
    const { rows: [last] } = await client.query<{ name: string }>(`SELECT name FROM backstop.migrations ORDER BY name DESC LIMIT 1`);
    await client.query(`DELETE FROM backstop.migrations WHERE name = $1`, [last!.name]);
    try {
      const agent = await failedStart(db.url);
      expect(agent.code).toBe(1);
      expect(agent.stderr).toContain(`lacks migration(s) this agent needs: ${last!.name}`);
      expect(agent.stderr).toMatch(/hint: run backstop install/);
      expect((await runDoctor(client)).find((result) => result.check === 'install')).toMatchObject({ status: 'fail', hint: expect.stringContaining('backstop install') });
    } finally {
      await client.query(`INSERT INTO backstop.migrations (name, run_on) VALUES ($1, now())`, [last!.name]);
    }
  });
});

/**
 * The identity a state file is bound to: the cluster's system identifier (readable by the agent's
 * role: pg_control_system() is executable by PUBLIC) with the database's OID and name; the
 * server's address stands in where a service refuses pg_control_system().
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultStatePath, identityFrom, readDatabaseIdentity } from '../../../src/agent/database-identity.js';
import { createLoginRoles } from '../../support/agent-double.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';

describe('database identity', () => {
  let db: TestDatabase;
  let dropRoles: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
    await dropRoles?.();
  });

  it('reads the system identifier as the agent role, with the database OID and name', async () => {
    const created = await createLoginRoles(db, ['agent'], { agent: ['backstop_agent'] });
    dropRoles = created.dropRoles;
    const client = new pg.Client({ connectionString: db.urlAs(created.roles.agent!) });
    await client.connect();
    try {
      const identity = await readDatabaseIdentity(client);
      const { rows: [expected] } = await client.query<{ oid: string }>(`SELECT oid::text FROM pg_database WHERE datname = current_database()`);
      expect(identity.systemIdentifier).toMatch(/^\d+$/);
      expect(identity.key).toBe(`${identity.systemIdentifier}:${expected!.oid}:${db.name}`);
      expect(identity.label).toBe(`database "${db.name}" (oid ${expected!.oid}) of cluster ${identity.systemIdentifier}`);
      expect(defaultStatePath(identity, '.backstop')).toMatch(new RegExp(`^\\.backstop/agent-${db.name}-[0-9a-f]{10}\\.sqlite$`));
    } finally {
      await client.end();
    }
  });

  it('falls back to the server address when the system identifier cannot be read', () => {
    const identity = identityFrom({ system_identifier: null, server_address: '10.0.0.5:5432', oid: 16384, datname: 'app "eu"' });
    expect(identity.key).toBe('server 10.0.0.5:5432:16384:app "eu"');
    expect(identity.label).toBe('database "app "eu"" (oid 16384) of the server at 10.0.0.5:5432');
    expect(defaultStatePath(identity, '.backstop')).toMatch(/^\.backstop\/agent-app_eu_-[0-9a-f]{10}\.sqlite$/);
  });
});

/**
 * Where a command connects when it is given no --db: DATABASE_URL, the PG* variables, the
 * embedded server `npm start` runs from this folder (.backstop/embedded.json), or the default —
 * each described truthfully, with a hint that says what to pass. Bad connection strings are
 * refused before connecting (exit 2).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EMBEDDED_CONNECTION_FILE, keywordValueToUrl, resolveDatabase } from '../../src/db/connection.js';
import { ConfigError } from '../../src/errors/index.js';
import { tempDir } from '../support/agent-process.js';

let saved: NodeJS.ProcessEnv;
beforeEach(() => {
  saved = { ...process.env };
  for (const name of Object.keys(process.env)) if (name === 'DATABASE_URL' || name.startsWith('PG')) delete process.env[name];
});
afterEach(() => {
  process.env = saved;
});

function refusal(run: () => unknown): ConfigError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('resolving the database', () => {
  it('never claims PG* variables when none is set, and says what to pass', async () => {
    const target = resolveDatabase(undefined, { cwd: await tempDir('backstop-conn-') });
    expect(target.connectionString).toBeUndefined();
    expect(target.description).not.toMatch(/from PG/);
    expect(target.description).toMatch(/no --db, DATABASE_URL or PG\* variable is set/);
    expect(target.hint).toMatch(/--db postgres:\/\//);
  });

  it('names the PG* variables it uses', async () => {
    process.env.PGHOST = '/var/run/postgresql';
    process.env.PGPORT = '5433';
    const target = resolveDatabase(undefined, { cwd: await tempDir('backstop-conn-') });
    expect(target.description).toBe(`/var/run/postgresql:5433/${process.env.USER ?? 'postgres'} (from PGHOST, PGPORT)`);
  });

  it('finds the embedded server the agent started from this folder', async () => {
    const cwd = await tempDir('backstop-conn-');
    await mkdir(path.join(cwd, '.backstop'));
    await writeFile(path.join(cwd, EMBEDDED_CONNECTION_FILE), JSON.stringify({ url: 'postgres://postgres@127.0.0.1:54329/postgres', port: 54329, data_dir: `${cwd}/.backstop/pg` }));
    const target = resolveDatabase(undefined, { cwd });
    expect(target.connectionString).toBe('postgres://postgres@127.0.0.1:54329/postgres');
    expect(target.description).toMatch(/^the embedded PostgreSQL of this folder/);
    expect(target.hint).toMatch(/npm start/);
    // Anything configured wins over the file.
    process.env.DATABASE_URL = 'postgres://app@db-host/app';
    expect(resolveDatabase(undefined, { cwd }).connectionString).toBe('postgres://app@db-host/app');
  });

  it('refuses a URL whose port is not a number, naming it, without the password', () => {
    const error = refusal(() => resolveDatabase('postgresql://alice:s3cret@db-host:notaport/app'));
    expect(error.message).toBe('--db: "postgresql://alice:***@db-host:notaport/app" cannot be used: its port "notaport" is not a number');
    expect(error.exitCode).toBe(2);
    expect(error.hint).toMatch(/postgres:\/\/user@host:5432\/dbname/);
  });

  it('refuses what is not a connection string', () => {
    expect(refusal(() => resolveDatabase('db-host:5432')).message).toMatch(/is not a PostgreSQL connection string/);
    expect(refusal(() => resolveDatabase('host=/tmp dbname')).message).toMatch(/not a valid keyword=value connection string/);
  });

  it('reads libpq keyword=value strings, which node-postgres does not', () => {
    expect(keywordValueToUrl("host=/tmp port=5433 dbname='my db' user=alice password='it\\'s' sslmode=disable")).toBe(
      "postgres://alice:it's@/my%20db?host=%2Ftmp&port=5433&sslmode=disable",
    );
    expect(resolveDatabase('host=127.0.0.1 dbname=app').connectionString).toBe('postgres:///app?host=127.0.0.1');
  });
});

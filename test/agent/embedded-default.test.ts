/**
 * `backstop agent` with nothing configured, from a clean folder: it starts an embedded
 * PostgreSQL under ./.backstop/pg, installs Backstop, creates the demo table, prints how to try
 * it, answers a DROP of the demo table, and stops its server on SIGTERM. Slow (initdb) but it is
 * the README's first command.
 */
import { execFile } from 'node:child_process';
import { chmod, stat } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { serverInfo } from '../support/database.js';
import { startAgent, tempDir, type AgentProcess } from '../support/agent-process.js';
import { settle, waitForRequest, waitForStatus } from './requests.js';

function withoutDatabaseEnvironment(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of Object.keys(env)) if (name === 'DATABASE_URL' || name.startsWith('PG')) delete env[name];
  return env;
}

// The embedded server is always the PostgreSQL 17 binaries: run it once, in the pg17 project.
describe.skipIf(serverInfo().major !== 17)('embedded defaults', () => {
  let agent: AgentProcess | undefined;
  afterAll(async () => {
    await agent?.stop('SIGTERM');
  });

  it('runs from a clean folder with no database configured', async () => {
    const cwd = await tempDir('backstop-embedded-');
    // As root the server runs as the postgres user, which must be able to enter the folder.
    await chmod(cwd, 0o755);
    agent = await startAgent({ cwd, env: withoutDatabaseEnvironment(), args: ['--interval', '1h'], timeoutMs: 240_000 });
    const running = agent.lines.find((line) => line.msg === 'embedded PostgreSQL running');
    expect(running).toBeDefined();
    const url = String(running!.url);
    expect(agent.stdout()).toContain('DROP TABLE customers;');
    expect(agent.stdout()).toContain(`psql "${url}"`);
    expect((await stat(path.join(cwd, '.backstop', 'pg', 'PG_VERSION'))).isFile()).toBe(true);

    // The banner's commands run as printed from this folder (a clone has no `backstop` on
    // PATH), and find the embedded server with no --db: doctor passes.
    const check = /^Check: +(.+)$/m.exec(agent.stdout())?.[1];
    expect(check).toMatch(/^node \S+backstop\.js doctor$/);
    const [program, ...args] = check!.split(' ');
    const doctor = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(program === 'node' ? process.execPath : program!, args, { cwd, env: withoutDatabaseEnvironment() }, (error, stdout, stderr) =>
        resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
      );
    });
    expect(doctor.stderr).toBe('');
    expect(doctor.code).toBe(0);
    expect(doctor.stdout).toMatch(/^ok +agent +1 live agent/m);

    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      expect((await client.query(`SELECT count(*)::int AS n FROM public.customers`)).rows[0].n).toBe(300);
      const outcome = await settle(client.query('DROP TABLE customers'));
      expect(outcome).toEqual({ ok: true });
      const request = await waitForRequest(client, 'DROP TABLE customers');
      const consumed = await waitForStatus(client, request.id, ['consumed']);
      expect(consumed.snapshot_ids).toHaveLength(1);
    } finally {
      await client.end();
    }
    expect((await stat(path.join(cwd, 'backstop-data', 'snapshots'))).isDirectory()).toBe(true);

    expect((await agent.stop('SIGTERM')).code).toBe(0);
    agent = undefined;

    // Killed without a chance to stop its server: the next start finds it running and uses it;
    // the dropped demo table is not brought back.
    const killed = await startAgent({ cwd, env: withoutDatabaseEnvironment(), args: ['--interval', '1h'], timeoutMs: 240_000 });
    await killed.stop('SIGKILL');
    agent = await startAgent({ cwd, env: withoutDatabaseEnvironment(), args: ['--interval', '1h'], timeoutMs: 240_000 });
    expect(agent.lines.some((line) => line.msg.startsWith('the embedded PostgreSQL is already running'))).toBe(true);
    const again = new pg.Client({ connectionString: String(agent.lines.find((line) => line.msg === 'embedded PostgreSQL running')!.url) });
    await again.connect();
    expect((await again.query(`SELECT to_regclass('public.customers') IS NULL AS gone`)).rows[0].gone).toBe(true);
    await again.end();
    expect((await agent.stop('SIGTERM')).code).toBe(0);
    agent = undefined;

    const probe = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3_000 });
    await expect(probe.connect()).rejects.toThrow();
    await probe.end().catch(() => {});
  });
});

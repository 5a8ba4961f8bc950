/**
 * Bad invocations exit 2 with one `error:` line and a hint (README, "Exit codes"), before anything
 * connects or writes: a missing required flag, an unknown flag, a misspelt storage URL, a --db
 * URL node-postgres cannot read.
 */
import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BACKSTOP_BIN, REPO_ROOT } from '../support/agent-process.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function backstop(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BACKSTOP_BIN, ...args], { cwd: REPO_ROOT, env: { ...process.env, BACKSTOP_LOG_LEVEL: 'warn' } }, (error, stdout, stderr) =>
      resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('bad invocations', () => {
  it('exit 2 when a required flag is missing', async () => {
    const run = await backstop(['verify']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^error: required option '--snapshot-id <id>' not specified/);
  });

  it('exit 2 on an unknown flag', async () => {
    const run = await backstop(['doctor', '--no-such-flag']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^error: unknown option '--no-such-flag'/);
  });

  it('exit 0 for --help and --version', async () => {
    expect((await backstop(['--version'])).code).toBe(0);
    expect((await backstop(['restore', '--help'])).code).toBe(0);
  });

  it.each([['s3:/bkt'], ['s3//bkt']])('refuse the misspelt storage URL %s instead of writing to a local folder', async (url) => {
    const run = await backstop(['snapshots', 'list', '--storage', url]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^error: storage URL ".*" is misspelt .*\nhint: did you mean s3:\/\/bkt\?/);
  });

  it('refuse a --db URL with a port that is not a number, saying so', async () => {
    const run = await backstop(['doctor', '--db', 'postgresql://alice:s3cret@db-host:notaport/f']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^error: --db: "postgresql:\/\/alice:\*\*\*@db-host:notaport\/f" cannot be used: its port "notaport" is not a number\nhint: /);
    expect(run.stderr).not.toMatch(/report it|s3cret/);
  });
});

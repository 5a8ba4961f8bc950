/**
 * On a Node.js older than 22 every command stops at once — exit 2, one error line and a hint
 * saying how to get Node 24 — before a native module loads or anything is started (on Node 20
 * better-sqlite3 segfaults, and `npm start` left its embedded PostgreSQL running). npm refuses to
 * install there too (engine-strict in the committed .npmrc).
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BACKSTOP_BIN, REPO_ROOT, tempDir } from '../support/agent-process.js';

/** A node binary older than 22 on this machine (e.g. the system's Node 20), if any. */
function oldNode(): string | undefined {
  const candidates = new Set(['/usr/bin/node', '/usr/local/bin/node']);
  try {
    for (const line of execFileSync('which', ['-a', 'node'], { encoding: 'utf8' }).split('\n')) if (line.trim()) candidates.add(line.trim());
  } catch {
    // no `which`: the fixed candidates only
  }
  for (const candidate of candidates) {
    if (!existsSync(candidate)) continue;
    try {
      const major = Number(execFileSync(candidate, ['-p', 'process.versions.node.split(".")[0]'], { encoding: 'utf8' }).trim());
      if (major < 22) return candidate;
    } catch {
      // not runnable: try the next one
    }
  }
  return undefined;
}

const OLD_NODE = oldNode();

function withoutDatabaseEnvironment(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of Object.keys(env)) if (name === 'DATABASE_URL' || name.startsWith('PG')) delete env[name];
  return env;
}

describe.skipIf(!OLD_NODE)(`the CLI on an old Node.js (${OLD_NODE ?? 'none found'})`, () => {
  it('exits 2 with the Node.js it needs and how to get it, starting nothing', async () => {
    const cwd = await tempDir('backstop-old-node-');
    const run = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(OLD_NODE!, [BACKSTOP_BIN, 'agent'], { cwd, env: withoutDatabaseEnvironment() }, (error, stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr }),
      );
    });
    expect(run.code).toBe(2);
    const lines = run.stderr.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^error: Backstop needs Node\.js 22 or newer/);
    expect(lines[1]).toMatch(/^hint: install Node 24 .*@24/);
    // Nothing was started: the embedded default would have created ./.backstop first.
    expect(await readdir(cwd)).toEqual([]);
  });
});

describe('the Node.js requirement', () => {
  it('is the same in package.json, the launcher and the committed .npmrc', () => {
    const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { engines: { node: string } };
    expect(pkg.engines.node).toBe('>=22');
    expect(readFileSync(BACKSTOP_BIN, 'utf8')).toMatch(/MINIMUM_NODE_MAJOR = 22;/);
    expect(readFileSync(path.join(REPO_ROOT, '.npmrc'), 'utf8')).toMatch(/^engine-strict=true$/m);
  });
});

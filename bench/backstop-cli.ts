/**
 * Backstop as the benchmarks run it: the built CLI (`node bin/backstop.js …`) as a child
 * process, so wall time includes process start (as pg_dump's does) and peak RSS is the
 * Backstop process's own.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { runMeasured, type MeasuredRun } from './processes.js';

const exec = promisify(execFile);

export class BackstopCli {
  readonly bin: string;

  constructor(readonly repoRoot: string) {
    this.bin = path.join(repoRoot, 'bin', 'backstop.js');
  }

  /** Build dist/ (tsc); returns the compiler output on failure. */
  async build(): Promise<string | undefined> {
    try {
      await exec(process.execPath, [path.join(this.repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], {
        cwd: this.repoRoot,
        maxBuffer: 16 * 1024 * 1024,
      });
      return undefined;
    } catch (error) {
      const { stdout, stderr } = error as { stdout?: string; stderr?: string };
      return `${stdout ?? ''}${stderr ?? ''}`.trim().split('\n').slice(0, 5).join(' | ') || String(error);
    }
  }

  /** Why `backstop <command>` cannot be benchmarked yet, or undefined when it can. */
  async unavailable(command: string): Promise<string | undefined> {
    if (!existsSync(path.join(this.repoRoot, 'dist', 'cli', 'main.js'))) return 'dist/ is not built';
    // commander answers `<unknown> --help` with the program's help and exit code 0, so look
    // for the command's own usage line.
    const { stdout } = await exec(process.execPath, [this.bin, command, '--help'], { cwd: this.repoRoot }).catch(
      (error: { stdout?: string }) => ({ stdout: error.stdout ?? '' }),
    );
    return new RegExp(`^Usage: backstop ${command}\\b`, 'm').test(stdout) ? undefined : `\`backstop ${command}\` does not exist yet`;
  }

  private run(args: string[], env?: NodeJS.ProcessEnv): Promise<MeasuredRun> {
    return runMeasured(process.execPath, [this.bin, ...args], { cwd: this.repoRoot, env: { ...(env ?? process.env), BACKSTOP_LOG_LEVEL: 'warn' } });
  }

  snapshot(db: string, storage: string, table: string, env?: NodeJS.ProcessEnv): Promise<MeasuredRun> {
    return this.run(['snapshot', '--db', db, '--storage', storage, '--table', table], env);
  }

  /** `replace`: `--replace` (the target exists; ANALYZE runs after the commit, as the CLI does by default then). */
  restore(db: string, storage: string, snapshotId: string, table: string, into: string, options: { replace?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<MeasuredRun> {
    return this.run(['restore', '--db', db, '--storage', storage, '--snapshot-id', snapshotId, '--table', table, '--into', into, ...(options.replace ? ['--replace'] : [])], options.env);
  }
}

export interface LocalSnapshot {
  snapshotId: string;
  manifestPath: string;
  dataBytes: number;
}

/** The newest committed snapshot (one with a manifest) of a table in a local storage folder. */
export async function latestLocalSnapshot(storageDir: string, qualifiedTable: string): Promise<LocalSnapshot | undefined> {
  const dir = path.join(storageDir, 'snapshots', qualifiedTable);
  if (!existsSync(dir)) return undefined;
  const manifests = (await readdir(dir)).filter((name) => name.endsWith('.manifest.json')).sort();
  const newest = manifests.at(-1);
  if (!newest) return undefined;
  const manifestPath = path.join(dir, newest);
  const manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as { snapshot_id?: string };
  if (!manifest.snapshot_id) throw new Error(`${manifestPath} has no snapshot_id`);
  const dataFile = manifestPath.replace(/\.manifest\.json$/, '.parquet');
  const { size } = await stat(dataFile).catch(() => ({ size: 0 }));
  return { snapshotId: manifest.snapshot_id, manifestPath, dataBytes: size };
}

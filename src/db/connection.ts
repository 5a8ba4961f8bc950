/**
 * Where the database is and how to reach it. `--db` wins, then DATABASE_URL, then the libpq PG*
 * variables (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD), which node-postgres reads itself
 * when no connection string is given. With none of these, the embedded PostgreSQL that
 * `backstop agent` (`npm start`) runs from the current folder is used when its connection file
 * exists (.backstop/embedded.json), so that `backstop doctor` or `recover` work beside it with no
 * flags; otherwise node-postgres's defaults (localhost:5432), and a failure says what to pass.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { ConfigError, DatabaseError, describeError } from '../errors/index.js';

export interface DatabaseTarget {
  /** Connection string, or undefined to let node-postgres use the PG* variables. */
  connectionString: string | undefined;
  /** Where it points, safe to print (no password), and where that came from. */
  description: string;
  /** What to do when connecting fails (default: check --db, the server, pg_hba.conf). */
  hint?: string;
}

/** The file the agent's embedded defaults write, relative to the folder it runs in. */
export const EMBEDDED_CONNECTION_FILE = path.join('.backstop', 'embedded.json');

/** What `.backstop/embedded.json` holds. */
export interface EmbeddedConnection {
  url: string;
  port: number;
  data_dir: string;
}

/** The libpq variables that say where to connect (PGPASSWORD alone does not). */
const PG_LOCATION_VARIABLES = ['PGHOST', 'PGHOSTADDR', 'PGPORT', 'PGDATABASE', 'PGUSER', 'PGSERVICE'];

function pgVariablesSet(): string[] {
  return PG_LOCATION_VARIABLES.filter((name) => Boolean(process.env[name]));
}

/** True when the environment names a database at all (used to decide on embedded defaults). */
export function databaseConfigured(flag?: string): boolean {
  return Boolean(flag || process.env.DATABASE_URL || process.env.PGHOST || process.env.PGDATABASE);
}

/** The embedded server's connection file in `cwd`, if an agent wrote one there. */
export function readEmbeddedConnection(cwd = process.cwd()): EmbeddedConnection | undefined {
  try {
    const parsed = JSON.parse(readFileSync(path.join(cwd, EMBEDDED_CONNECTION_FILE), 'utf8')) as Partial<EmbeddedConnection>;
    if (typeof parsed.url !== 'string' || typeof parsed.port !== 'number') return undefined;
    return { url: parsed.url, port: parsed.port, data_dir: String(parsed.data_dir ?? '') };
  } catch {
    return undefined;
  }
}

const URL_HINT = 'use a URL such as postgres://user@host:5432/dbname (percent-encode @ : / in the password, e.g. @ as %40), or key=value pairs such as "host=/tmp dbname=app"';

/**
 * libpq keyword/value text (`host=/tmp port=5433 dbname='my db'`) as the URL node-postgres reads
 * (node-postgres itself does not read keyword/value strings).
 */
export function keywordValueToUrl(text: string): string {
  const pairs = new Map<string, string>();
  const pattern = /\s*([A-Za-z_]+)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S+))/gy;
  let consumed = 0;
  for (let match = pattern.exec(text); match; match = pattern.exec(text)) {
    pairs.set(match[1]!.toLowerCase(), match[2] !== undefined ? match[2].replace(/\\(.)/g, '$1') : match[3]!);
    consumed = pattern.lastIndex;
  }
  if (pairs.size === 0 || text.slice(consumed).trim() !== '') {
    throw new ConfigError(`"${redact(text)}" is not a valid keyword=value connection string`, { hint: URL_HINT });
  }
  const user = pairs.get('user');
  const password = pairs.get('password');
  const auth = user !== undefined ? `${encodeURIComponent(user)}${password !== undefined ? `:${encodeURIComponent(password)}` : ''}@` : '';
  const database = pairs.get('dbname') ?? '';
  const query = new URLSearchParams();
  for (const [key, value] of pairs) if (!['user', 'password', 'dbname'].includes(key)) query.set(key, value);
  const search = query.toString();
  return `postgres://${auth}/${encodeURIComponent(database)}${search ? `?${search}` : ''}`;
}

/** Check a connection string as node-postgres will read it; a ConfigError (exit 2) when it cannot. */
function checkedConnectionString(text: string, from: string): string {
  const isUrl = /^postgres(ql)?:\/\//i.test(text);
  if (!isUrl && !text.includes('=')) {
    throw new ConfigError(`${from}: "${redact(text)}" is not a PostgreSQL connection string`, { hint: URL_HINT });
  }
  const url = isUrl ? text : keywordValueToUrl(text);
  if (!nodePostgresReads(url)) {
    const port = /^[^/]*\/\/(?:[^@/]*@)?[^/:?]*:([^/?]*)/.exec(url)?.[1];
    const detail = port !== undefined && !/^\d{1,5}$/.test(port) ? `its port "${port}" is not a number` : 'it is not a valid URL';
    throw new ConfigError(`${from}: "${redact(text)}" cannot be used: ${detail}`, { hint: URL_HINT });
  }
  return url;
}

/**
 * Whether node-postgres can read `url`: the same steps as its parser (pg-connection-string),
 * which otherwise throws a bare "Invalid URL" on connect.
 */
function nodePostgresReads(url: string): boolean {
  const encoded = / |%[^a-f0-9]|%[a-f0-9][^a-f0-9]/i.test(url) ? encodeURI(url).replace(/%25(\d\d)/g, '%$1') : url;
  for (const candidate of [encoded, encoded.replace('@/', '@___DUMMY___/')]) {
    try {
      new URL(candidate, 'postgres://base');
      return true;
    } catch {
      // try the next form, as node-postgres does
    }
  }
  return false;
}

export function resolveDatabase(flag?: string, options: { cwd?: string } = {}): DatabaseTarget {
  if (flag) return { connectionString: checkedConnectionString(flag, '--db'), description: redact(flag) };
  if (process.env.DATABASE_URL) {
    const text = process.env.DATABASE_URL;
    return { connectionString: checkedConnectionString(text, 'DATABASE_URL'), description: `${redact(text)} (from DATABASE_URL)` };
  }
  const host = process.env.PGHOST ?? 'localhost';
  const port = process.env.PGPORT ?? '5432';
  const database = process.env.PGDATABASE ?? process.env.PGUSER ?? process.env.USER ?? 'postgres';
  const variables = pgVariablesSet();
  if (variables.length > 0) {
    return { connectionString: undefined, description: `${host}:${port}/${database} (from ${variables.join(', ')})` };
  }
  const embedded = readEmbeddedConnection(options.cwd);
  if (embedded) {
    return {
      connectionString: embedded.url,
      description: `the embedded PostgreSQL of this folder (${redact(embedded.url)}, data in ${embedded.data_dir || '.backstop/pg'})`,
      hint: 'start it with npm start (backstop agent) in this folder, or pass --db URL for another server',
    };
  }
  return {
    connectionString: undefined,
    description: `${host}:${port}/${database} (no --db, DATABASE_URL or PG* variable is set: the default)`,
    hint: 'pass --db postgres://user@host:5432/dbname (or set DATABASE_URL); for the embedded demo, run this from the folder where npm start runs',
  };
}

/** The connection string with any password replaced by ***. */
export function redact(connectionString: string): string {
  return connectionString.replace(/(\/\/[^:/@]+:)[^@]*@/, '$1***@').replace(/(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)/i, '$1***');
}

export function clientConfig(target: DatabaseTarget, applicationName = 'backstop'): pg.ClientConfig {
  return { connectionString: target.connectionString, application_name: applicationName };
}

/** Connect one client, turning connection failures into a DatabaseError with a hint. */
export async function connect(target: DatabaseTarget, applicationName = 'backstop'): Promise<pg.Client> {
  const client = new pg.Client(clientConfig(target, applicationName));
  try {
    await client.connect();
  } catch (error) {
    await client.end().catch(() => {});
    throw new DatabaseError(`cannot connect to ${target.description}: ${describeError(error)}`, {
      cause: error,
      hint: target.hint ?? 'check --db (or DATABASE_URL / PGHOST), that the server is running, and that pg_hba.conf admits this role',
    });
  }
  return client;
}

/** Run `work` with a connected client and always close it. */
export async function withClient<T>(target: DatabaseTarget, work: (client: pg.Client) => Promise<T>, applicationName?: string): Promise<T> {
  const client = await connect(target, applicationName);
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => {});
  }
}

export function createPool(target: DatabaseTarget, max: number, applicationName = 'backstop'): pg.Pool {
  return new pg.Pool({ ...clientConfig(target, applicationName), max });
}

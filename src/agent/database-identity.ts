/**
 * Which database an agent guards, as the server itself tells it: the cluster's system identifier
 * (pg_control_system(), fixed at initdb, the same on a physical replica) plus the database's OID
 * and name. The agent's state file (OIDs of watched tables, its agent id, retries) belongs to one
 * such database: the default state path is derived from it, and a state file bound to another
 * database is refused (src/agent/state.ts).
 *
 * pg_control_system() is executable by PUBLIC in a stock PostgreSQL; a managed service may refuse
 * it (revoked, or not supported), and then the server's address and port as the agent reaches
 * them stand in for the cluster: weaker (two servers behind one proxy address look alike), but
 * still one file per database name and OID there.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import type { Queryable } from '../request/targets.js';
import { AgentState, LEGACY_STATE_PATH } from './state.js';

export interface DatabaseIdentity {
  /** pg_control_system().system_identifier, or null when this role may not read it. */
  systemIdentifier: string | null;
  /** Where the server was reached, when the system identifier is unknown (`127.0.0.1:5432`, `local:5432`). */
  serverAddress: string | null;
  databaseOid: number;
  databaseName: string;
  /** The key a state file is bound to: `<system identifier>:<oid>:<name>` (format kept from 0.1.0). */
  key: string;
  /** For people: `database "app" (oid 16384) of cluster 7312…`. */
  label: string;
}

interface IdentityRow {
  system_identifier: string | null;
  server_address: string | null;
  oid: number;
  datname: string;
}

const IDENTITY_SQL = (systemIdentifier: string) => `
  SELECT ${systemIdentifier} AS system_identifier,
         coalesce(host(pg_catalog.inet_server_addr()), 'local') || ':' || pg_catalog.current_setting('port') AS server_address,
         d.oid::int8 AS oid, d.datname
    FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()`;

export async function readDatabaseIdentity(db: Queryable): Promise<DatabaseIdentity> {
  let row: IdentityRow | undefined;
  try {
    ({ rows: [row] } = await db.query<IdentityRow>(IDENTITY_SQL('(SELECT system_identifier::text FROM pg_catalog.pg_control_system())')));
  } catch {
    ({ rows: [row] } = await db.query<IdentityRow>(IDENTITY_SQL('NULL::text')));
  }
  return identityFrom(row!);
}

export function identityFrom(row: IdentityRow): DatabaseIdentity {
  const oid = Number(row.oid);
  const cluster = row.system_identifier ?? `server ${row.server_address}`;
  return {
    systemIdentifier: row.system_identifier,
    serverAddress: row.system_identifier ? null : row.server_address,
    databaseOid: oid,
    databaseName: row.datname,
    key: `${cluster}:${oid}:${row.datname}`,
    label: `database "${row.datname}" (oid ${oid}) of ${row.system_identifier ? `cluster ${row.system_identifier}` : `the server at ${row.server_address}`}`,
  };
}

/** The state file an agent uses when --state is not given: one per database, under `.backstop/`. */
export function defaultStatePath(identity: DatabaseIdentity, home = '.backstop'): string {
  const name = identity.databaseName.replace(/[^A-Za-z0-9_-]+/g, '_').slice(0, 40) || 'db';
  const digest = createHash('sha256').update(identity.key).digest('hex').slice(0, 10);
  return path.join(home, `agent-${name}-${digest}.sqlite`);
}

/**
 * The state file for an agent of `identity`: --state when given (checked when opened), else the
 * 0.1.0 file `.backstop/agent.sqlite` when it belongs to this very database (its agent id and
 * history carry over), else this database's own file.
 */
export function statePathFor(identity: DatabaseIdentity, flag: string | undefined, cwd = process.cwd()): string {
  if (flag) return flag;
  const legacy = path.join(cwd, LEGACY_STATE_PATH);
  if (AgentState.boundIdentity(legacy) === identity.key) return legacy;
  return defaultStatePath(identity, path.join(cwd, '.backstop'));
}

/**
 * `backstop doctor`: a read-only health check of everything the guard depends on, in the order an
 * operator would look: can we connect, is Backstop installed and current, are the triggers
 * armed (ENABLE ALWAYS), can guarded statements file requests (dblink loopback), is an agent
 * alive, is storage reachable, are tables ready. Each finding says what to do.
 */
import type pg from 'pg';
import { agentLoginGaps, bypassGrants, connectedRoleGap, rowSecurityTables, someTables } from '../db/row-security.js';
import { describeError } from '../errors/index.js';
import { BACKSTOP_VERSION } from '../version.js';
import { listMigrations, schemaVersion } from '../install/install.js';
import { describeTruncateGuardGap, eventTriggerFindings, truncateGuardGaps } from '../install/repair.js';
import { formatBytes } from '../log/progress.js';
import type { Storage } from '../storage/storage.js';
import { planUploadCleanup } from '../storage/unfinished-uploads.js';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface CheckResult {
  check: string;
  status: CheckStatus;
  detail: string;
  hint?: string;
}

async function checkServer(client: pg.ClientBase): Promise<CheckResult> {
  const { rows } = await client.query<{ version: string; role: string; superuser: boolean }>(
    `SELECT current_setting('server_version') AS version, current_user AS role,
            (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser`,
  );
  const row = rows[0]!;
  return { check: 'server', status: 'ok', detail: `PostgreSQL ${row.version}, connected as ${row.role}${row.superuser ? ' (superuser)' : ''}` };
}

async function checkInstalled(client: pg.ClientBase): Promise<CheckResult & { installed: boolean }> {
  const version = await schemaVersion(client);
  if (version.applied.length === 0) {
    return { check: 'install', status: 'fail', installed: false, detail: 'Backstop is not installed in this database', hint: 'run backstop install --db … as a superuser' };
  }
  if (version.unknown.length > 0) {
    return {
      check: 'install',
      status: 'fail',
      installed: true,
      detail: `the schema has ${version.unknown.length} migration(s) this Backstop (${BACKSTOP_VERSION}) does not know: ${version.unknown.join(', ')}`,
      hint: 'a newer Backstop installed it: upgrade this CLI and every agent to that version (an older agent refuses to start against it)',
    };
  }
  if (version.pending.length > 0) {
    return { check: 'install', status: 'fail', installed: true, detail: `${version.pending.length} migration(s) not applied: ${version.pending.join(', ')}`, hint: 'run backstop install --db … to upgrade' };
  }
  return { check: 'install', status: 'ok', installed: true, detail: `installed, ${version.applied.length} migration(s) applied` };
}

// The hints of the two checks below are true because install compares the same things on every
// run and puts them back (src/install/repair.ts), even when no migration is pending.

async function checkEventTriggers(client: pg.ClientBase): Promise<CheckResult> {
  const { expected, repairs } = await eventTriggerFindings(client, await listMigrations());
  if (repairs.length > 0) {
    return {
      check: 'event triggers',
      status: 'fail',
      detail: repairs.map((repair) => repair.finding).join('; '),
      hint: 'destructive statements are NOT guarded; run backstop install --db … again as a superuser (it re-creates and re-arms them), and find out who changed them',
    };
  }
  return { check: 'event triggers', status: 'ok', detail: `${expected.length} guard event triggers, ENABLE ALWAYS` };
}

async function checkTruncateGuards(client: pg.ClientBase): Promise<CheckResult> {
  const gaps = await truncateGuardGaps(client);
  if (gaps.length > 0) {
    return {
      check: 'truncate guards',
      status: 'fail',
      detail: `${gaps.length} table(s) without an armed TRUNCATE guard: ${gaps.slice(0, 5).map(describeTruncateGuardGap).join('; ')}${gaps.length > 5 ? '; …' : ''}`,
      hint: 'TRUNCATE of these tables is not guarded; run backstop install --db … again as a superuser (it attaches the guard to every table that lacks it)',
    };
  }
  return { check: 'truncate guards', status: 'ok', detail: 'every table has an armed TRUNCATE guard' };
}

/**
 * The agent reads with row_security = off: a table whose policies apply to the agent's role
 * cannot be captured (and its DROP / ALTER is denied). Checks the connected role when it is an
 * agent role, and every login role in backstop_agent.
 */
async function checkRowSecurity(client: pg.ClientBase): Promise<CheckResult> {
  const tables = await rowSecurityTables(client);
  if (tables.length === 0) return { check: 'row-level security', status: 'ok', detail: 'no table uses row-level security' };
  const { rows } = await client.query<{ agent: boolean }>(`SELECT pg_has_role(current_user, 'backstop_agent', 'MEMBER') AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS agent`);
  const connected = rows[0]?.agent ? await connectedRoleGap(client) : null;
  const gaps = [...(connected ? [connected] : []), ...(await agentLoginGaps(client)).filter((gap) => gap.role !== connected?.role)];
  if (gaps.length > 0) {
    return {
      check: 'row-level security',
      status: 'fail',
      detail: gaps.map((gap) => `role ${gap.role} cannot capture ${someTables(gap.tables)} (row-level security)`).join('; '),
      hint: `the agent cannot capture these tables, so their DROP / ALTER is denied; as a superuser run: ${bypassGrants(gaps)} (BYPASSRLS is not inherited from backstop_agent)`,
    };
  }
  return { check: 'row-level security', status: 'ok', detail: `${tables.length} table(s) use row-level security; every agent login role can read all their rows` };
}

async function checkLoopback(client: pg.ClientBase): Promise<CheckResult> {
  const { rows } = await client.query<{ schema: string | null }>(
    `SELECT n.nspname AS schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'dblink'`,
  );
  if (rows.length === 0) {
    return {
      check: 'dblink',
      status: 'warn',
      detail: 'dblink is not installed: guarded statements cannot file requests by themselves',
      hint: 'install the server\'s contrib package and run backstop install --db … again (it creates the extension), or file requests first with SELECT backstop.request($$…$$)',
    };
  }
  try {
    await client.query('SAVEPOINT doctor_loopback');
    const result = await client.query<{ value: string }>(`SELECT backstop._loopback_value('SELECT 1') AS value`);
    await client.query('RELEASE SAVEPOINT doctor_loopback');
    if (result.rows[0]?.value !== '1') throw new Error(`unexpected answer ${result.rows[0]?.value}`);
    return { check: 'dblink', status: 'ok', detail: `dblink in schema ${rows[0]!.schema}; the loopback connection works` };
  } catch (error) {
    await client.query('ROLLBACK TO SAVEPOINT doctor_loopback').catch(() => {});
    const message = describeError(error);
    if ((error as { code?: unknown }).code === '42501') {
      return { check: 'dblink', status: 'warn', detail: `dblink in schema ${rows[0]!.schema}; loopback not tested (${message})`, hint: 'run doctor as a superuser to test the loopback connection' };
    }
    return {
      check: 'dblink',
      status: 'fail',
      detail: `the loopback connection fails: ${message}`,
      hint: 'set backstop.settings.loopback_conninfo to a connection string that reaches this database (pg_hba.conf must admit it)',
    };
  }
}

async function checkAgents(client: pg.ClientBase): Promise<CheckResult[]> {
  const { rows } = await client.query<{ agent_id: string; fresh: boolean; available: boolean; leaving: boolean; leader: boolean; storage_ok: boolean | null; storage_error: string | null; age: string }>(
    `SELECT agent_id, fresh, available, connected AND gone_at IS NOT NULL AS leaving, coalesce(leader, false) AS leader,
            storage_ok, storage_error, date_trunc('second', heartbeat_age)::text AS age
       FROM backstop.agents ORDER BY heartbeat_age`,
  );
  const fresh = rows.filter((row) => row.fresh);
  const results: CheckResult[] = [];
  if (fresh.length === 0) {
    results.push({
      check: 'agent',
      status: 'fail',
      detail: rows.length === 0 ? 'no agent has ever sent a heartbeat' : `no fresh heartbeat (newest ${rows[0]!.age} old)`,
      hint: 'start backstop agent beside the database; until then every guarded statement is refused',
    });
    return results;
  }
  // A fresh heartbeat is not enough: the agent's presence session must still be connected.
  const available = fresh.filter((row) => row.available);
  if (available.length === 0) {
    const leaving = fresh.find((row) => row.leaving);
    results.push({
      check: 'agent',
      status: 'fail',
      detail: leaving ? `agent ${leaving.agent_id} is shutting down and no other agent is running` : `agent ${fresh[0]!.agent_id} is no longer connected to the database (its process ended)`,
      hint: 'start backstop agent beside the database; until then every guarded statement is refused',
    });
    return results;
  }
  const leaders = available.filter((row) => row.leader);
  results.push({
    check: 'agent',
    status: leaders.length === 1 ? 'ok' : 'warn',
    detail: `${available.length} live agent(s), ${leaders.length === 1 ? `leader ${leaders[0]!.agent_id}` : `${leaders.length} leaders`}`,
    ...(leaders.length === 1 ? {} : { hint: 'exactly one agent should lead; check the agents’ logs' }),
  });
  const storageDown = available.filter((row) => row.storage_ok === false);
  if (storageDown.length > 0) {
    results.push({
      check: 'agent storage',
      status: 'fail',
      detail: `agent ${storageDown[0]!.agent_id} cannot reach storage: ${storageDown[0]!.storage_error ?? 'unknown error'}`,
      hint: 'guarded statements are denied until storage is reachable; check the storage URL and credentials',
    });
  }
  return results;
}

async function checkReadiness(client: pg.ClientBase): Promise<CheckResult> {
  const { rows } = await client.query<{ total: string; not_ready: string; example: string | null }>(
    `SELECT count(*) AS total, count(*) FILTER (WHERE NOT ready) AS not_ready,
            min(format('%I.%I: %s', schema_name, table_name, failing_check)) FILTER (WHERE NOT ready) AS example
       FROM backstop.readiness`,
  );
  const row = rows[0]!;
  const notReady = Number(row.not_ready);
  if (notReady > 0) {
    return {
      check: 'readiness',
      status: 'warn',
      detail: `${notReady} of ${row.total} table(s) not ready, e.g. ${row.example}`,
      hint: 'SELECT * FROM backstop.readiness WHERE NOT ready; shows every failing check',
    };
  }
  return { check: 'readiness', status: 'ok', detail: `all ${row.total} table(s) ready` };
}

async function checkAlerts(client: pg.ClientBase): Promise<CheckResult> {
  const { rows } = await client.query<{ open: string }>(`SELECT count(*) AS open FROM backstop.alerts WHERE NOT acknowledged`);
  const open = Number(rows[0]!.open);
  if (open > 0) {
    return { check: 'alerts', status: 'warn', detail: `${open} unacknowledged alert(s): something got around the guard`, hint: 'SELECT * FROM backstop.alerts WHERE NOT acknowledged;' };
  }
  return { check: 'alerts', status: 'ok', detail: 'no unacknowledged alerts' };
}

async function checkStorage(storage: Storage): Promise<CheckResult> {
  try {
    await storage.check();
    return { check: 'storage', status: 'ok', detail: `${storage.url} is reachable and writable` };
  } catch (error) {
    const hint = (error as { hint?: string }).hint;
    return { check: 'storage', status: 'fail', detail: `${storage.url}: ${describeError(error)}`, ...(hint ? { hint } : {}) };
  }
}

const LIFECYCLE_HINT = 'an S3 lifecycle rule with AbortIncompleteMultipartUpload (e.g. DaysAfterInitiation 7) on the bucket aborts what Backstop cannot';

/** Multipart uploads that killed captures left behind (billed until aborted); read-only. */
export async function checkUnfinishedUploads(storage: Storage): Promise<CheckResult | undefined> {
  if (!storage.unfinishedUploads) return undefined;
  try {
    const listing = await storage.unfinishedUploads({ sizes: true });
    const plan = planUploadCleanup(listing.uploads, { now: new Date() });
    const bytes = listing.uploads.reduce((sum, upload) => sum + (upload.bytes ?? 0), 0);
    const listed = listing.listingError
      ? ` (ListMultipartUploads is not available here, ${listing.listingError}: only the uploads Backstop recorded are seen; ${LIFECYCLE_HINT})`
      : '';
    if (listing.uploads.length === 0) return { check: 'unfinished uploads', status: 'ok', detail: `no unfinished multipart uploads${listed}` };
    const detail = `${listing.uploads.length} unfinished multipart upload(s)${bytes > 0 ? `, ${formatBytes(bytes)}` : ''}: ${plan.abort.length} left by captures that were killed, ${plan.leave.length} may still be running${listed}`;
    if (plan.abort.length === 0) return { check: 'unfinished uploads', status: 'ok', detail };
    return {
      check: 'unfinished uploads',
      status: 'warn',
      detail,
      hint: `the agent aborts them when it starts, and so does backstop prune; ${LIFECYCLE_HINT}`,
    };
  } catch (error) {
    return { check: 'unfinished uploads', status: 'warn', detail: `cannot look for unfinished multipart uploads: ${describeError(error)}`, hint: LIFECYCLE_HINT };
  }
}

/**
 * Run every check inside one READ ONLY transaction that is rolled back: doctor never changes
 * anything. Database checks stop early when Backstop is not installed.
 */
export async function runDoctor(client: pg.ClientBase, storage?: Storage): Promise<CheckResult[]> {
  await client.query('BEGIN READ ONLY');
  try {
    return await runChecks(client, storage);
  } finally {
    await client.query('ROLLBACK');
  }
}

async function runChecks(client: pg.ClientBase, storage?: Storage): Promise<CheckResult[]> {
  const results: CheckResult[] = [await checkServer(client)];
  const { installed, ...install } = await checkInstalled(client);
  results.push(install);
  if (installed) {
    results.push(await checkEventTriggers(client), await checkTruncateGuards(client), await checkLoopback(client), await checkRowSecurity(client));
    results.push(...(await checkAgents(client)), await checkReadiness(client), await checkAlerts(client));
  }
  if (storage) {
    const reachable = await checkStorage(storage);
    results.push(reachable);
    const uploads = reachable.status === 'ok' ? await checkUnfinishedUploads(storage) : undefined;
    if (uploads) results.push(uploads);
  }
  return results;
}

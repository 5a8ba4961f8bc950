/**
 * `backstop doctor`: a read-only health check of everything the guard depends on, in the order an
 * operator would look: can we connect, is Backstop installed and current, are the triggers
 * armed (ENABLE ALWAYS), can guarded statements file requests (dblink loopback), is an agent
 * alive, is storage reachable, are tables ready. Each finding says what to do.
 */
import type pg from 'pg';
import { describeError } from '../errors/index.js';
import { appliedMigrations, listMigrations } from '../install/install.js';
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

const GUARD_EVENT_TRIGGERS = ['backstop_guard_statement', 'backstop_guard_dropped', 'backstop_guard_rewrite', 'backstop_guard_new_tables'];

async function checkServer(client: pg.ClientBase): Promise<CheckResult> {
  const { rows } = await client.query<{ version: string; role: string; superuser: boolean }>(
    `SELECT current_setting('server_version') AS version, current_user AS role,
            (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser`,
  );
  const row = rows[0]!;
  return { check: 'server', status: 'ok', detail: `PostgreSQL ${row.version}, connected as ${row.role}${row.superuser ? ' (superuser)' : ''}` };
}

async function checkInstalled(client: pg.ClientBase): Promise<CheckResult> {
  const available = await listMigrations();
  const applied = await appliedMigrations(client);
  if (applied.size === 0) {
    return { check: 'install', status: 'fail', detail: 'Backstop is not installed in this database', hint: 'run backstop install --db … as a superuser' };
  }
  const pending = available.filter((name) => !applied.has(name));
  if (pending.length > 0) {
    return { check: 'install', status: 'fail', detail: `${pending.length} migration(s) not applied: ${pending.join(', ')}`, hint: 'run backstop install --db … to upgrade' };
  }
  return { check: 'install', status: 'ok', detail: `installed, ${applied.size} migration(s) applied` };
}

async function checkEventTriggers(client: pg.ClientBase): Promise<CheckResult> {
  const { rows } = await client.query<{ name: string; enabled: string }>(
    `SELECT evtname AS name, evtenabled AS enabled FROM pg_event_trigger WHERE evtname = ANY($1::text[])`,
    [GUARD_EVENT_TRIGGERS],
  );
  const found = new Map(rows.map((row) => [row.name, row.enabled]));
  const missing = GUARD_EVENT_TRIGGERS.filter((name) => !found.has(name));
  const notAlways = [...found].filter(([, enabled]) => enabled !== 'A').map(([name, enabled]) => `${name} (${enabled === 'D' ? 'disabled' : 'not ALWAYS'})`);
  if (missing.length > 0 || notAlways.length > 0) {
    return {
      check: 'event triggers',
      status: 'fail',
      detail: [missing.length ? `missing: ${missing.join(', ')}` : '', notAlways.length ? `not armed: ${notAlways.join(', ')}` : ''].filter(Boolean).join('; '),
      hint: 'destructive statements are NOT guarded; run backstop install again (it re-arms them), and find out who disabled them',
    };
  }
  return { check: 'event triggers', status: 'ok', detail: `${GUARD_EVENT_TRIGGERS.length} guard event triggers, ENABLE ALWAYS` };
}

async function checkTruncateGuards(client: pg.ClientBase): Promise<CheckResult> {
  const { rows } = await client.query<{ name: string }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS name
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
        AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'backstop', 'backstop_images')
        AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'
        AND NOT EXISTS (SELECT 1 FROM pg_trigger t
                         WHERE t.tgrelid = c.oid AND t.tgname = 'backstop_truncate_guard' AND t.tgenabled = 'A')
      ORDER BY 1`,
  );
  if (rows.length > 0) {
    const names = rows.slice(0, 5).map((row) => row.name).join(', ');
    return {
      check: 'truncate guards',
      status: 'fail',
      detail: `${rows.length} table(s) without an armed TRUNCATE guard: ${names}${rows.length > 5 ? ', …' : ''}`,
      hint: 'run backstop install again: it attaches the guard to every table',
    };
  }
  return { check: 'truncate guards', status: 'ok', detail: 'every table has an armed TRUNCATE guard' };
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
      hint: 'install the contrib package and rerun backstop install, or file requests first with SELECT backstop.request($$…$$)',
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
    if (/permission denied/i.test(message)) {
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
  const { rows } = await client.query<{ agent_id: string; fresh: boolean; leader: boolean; storage_ok: boolean | null; storage_error: string | null; age: string }>(
    `SELECT agent_id, fresh, coalesce(leader, false) AS leader, storage_ok, storage_error,
            date_trunc('second', heartbeat_age)::text AS age
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
  const leaders = fresh.filter((row) => row.leader);
  results.push({
    check: 'agent',
    status: leaders.length === 1 ? 'ok' : 'warn',
    detail: `${fresh.length} live agent(s), ${leaders.length === 1 ? `leader ${leaders[0]!.agent_id}` : `${leaders.length} leaders`}`,
    ...(leaders.length === 1 ? {} : { hint: 'exactly one agent should lead; check the agents’ logs' }),
  });
  const storageDown = fresh.filter((row) => row.storage_ok === false);
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
  const installed = await checkInstalled(client);
  results.push(installed);
  if (installed.status !== 'fail' || installed.detail.includes('not applied')) {
    results.push(await checkEventTriggers(client), await checkTruncateGuards(client), await checkLoopback(client));
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

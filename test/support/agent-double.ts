/**
 * A stand-in for the Backstop agent in tests: it speaks the SQL agent API (heartbeat, claim,
 * set targets, decide) over its own connection, as a login role that is a member of
 * backstop_agent, exactly as the real agent must. It captures nothing.
 *
 *   const roles = await createLoginRoles(db, ['agent'], { agent: ['backstop_agent'] });
 *   const agent = await AgentDouble.connect(db.urlAs(roles.agent));
 *   await agent.heartbeat();
 *   const pending = agent.approveNext({ targets: ['public.users'] });
 *   await client.query('DROP TABLE users'); // pauses until approved
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { parseStatement } from '../../src/request/statement.js';
import { resolveTargets, type CoverageItem } from '../../src/request/targets.js';
import { dropServerRoles, type TestDatabase } from './database.js';

export interface RequestRow {
  id: string;
  requester: string;
  command_tag: string;
  statement: string;
  search_path: string | null;
  status: string;
  reason: string | null;
  targets: string[];
}

export interface WaitOptions {
  /** Only requests whose statement matches (substring or RegExp). */
  statement?: string | RegExp;
  /** Status to wait for (default pending). */
  status?: string;
  timeoutMs?: number;
}

export type Decision = 'approved' | 'denied' | 'awaiting_approval';

export class AgentDouble {
  readonly client: pg.Client;
  readonly agentId: string;
  /** Answers image completions (the last step of an approved DROP / ALTER) unless switched off. */
  private readonly completer: pg.Client;
  private completing: Promise<void> | undefined;
  private stopped = false;
  /** What the double answers a completion with: done (default) or a failure reason. */
  completionOutcome: { error?: string } = {};
  autoComplete = true;

  private constructor(client: pg.Client, completer: pg.Client, agentId: string) {
    this.client = client;
    this.completer = completer;
    this.agentId = agentId;
    this.completing = this.answerCompletions();
  }

  static async connect(url: string, agentId = 'agent-double'): Promise<AgentDouble> {
    const client = new pg.Client({ connectionString: url, application_name: 'backstop-agent-double' });
    await client.connect();
    const completer = new pg.Client({ connectionString: url, application_name: 'backstop-agent-double completions' });
    await completer.connect();
    return new AgentDouble(client, completer, agentId);
  }

  /**
   * Like the agent, answer every requested image completion: claim it and finish it (the double
   * captures nothing, so the request keeps its snapshot ids).
   */
  private async answerCompletions(): Promise<void> {
    while (!this.stopped) {
      try {
        if (this.autoComplete) {
          const { rows } = await this.completer.query<{ id: string; request_id: string }>(
            `SELECT id::text, request_id::text FROM backstop.image_completions WHERE status = 'requested' ORDER BY id`,
          );
          for (const row of rows) await this.finishCompletion(row.id, row.request_id);
        }
      } catch {
        if (this.stopped) return;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Claim and finish one completion with `completionOutcome`. */
  async finishCompletion(id: string, requestId: string): Promise<string> {
    const { rows: [claimed] } = await this.completer.query<{ claimed: boolean }>('SELECT backstop.agent_claim_completion($1, $2) AS claimed', [id, this.agentId]);
    if (!claimed?.claimed) return 'taken';
    const { rows: [request] } = await this.completer.query<{ snapshot_ids: string[] }>('SELECT snapshot_ids FROM backstop.requests WHERE id = $1', [requestId]);
    const { rows: [finished] } = await this.completer.query<{ status: string }>(
      'SELECT backstop.agent_finish_completion($1, $2, $3, $4, $5) AS status',
      [id, this.agentId, request?.snapshot_ids ?? [], JSON.stringify([{ how: 'double' }]), this.completionOutcome.error ?? null],
    );
    return finished!.status;
  }

  /**
   * Register this connection as the double's presence (agent_hello) and write a heartbeat: the
   * guard then counts it as a running agent for as long as the connection stays open.
   */
  async heartbeat(info: Record<string, unknown> = {}): Promise<void> {
    await this.client.query('SELECT backstop.agent_hello($1)', [this.agentId]);
    await this.client.query('SELECT backstop.agent_heartbeat($1, $2)', [
      this.agentId,
      { hostname: 'test', pid: process.pid, version: 'test', leader: true, listening: true, storage_ok: true, ...info },
    ]);
  }

  /** Poll backstop.requests until a request matching the options shows up (oldest first). */
  async waitForRequest(options: WaitOptions = {}): Promise<RequestRow> {
    const status = options.status ?? 'pending';
    const deadline = Date.now() + (options.timeoutMs ?? 30_000);
    for (;;) {
      const { rows } = await this.client.query<RequestRow>(
        `SELECT id::text, requester, command_tag, statement, search_path, status, reason, targets
           FROM backstop.requests WHERE status = $1 ORDER BY id`,
        [status],
      );
      const match = rows.find((row) => matches(row.statement, options.statement));
      if (match) return match;
      if (Date.now() > deadline) {
        throw new Error(`no ${status} Backstop request${options.statement ? ` matching ${String(options.statement)}` : ''} appeared`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  async claim(id: string): Promise<boolean> {
    const { rows } = await this.client.query<{ claimed: boolean }>('SELECT backstop.agent_claim($1, $2) AS claimed', [id, this.agentId]);
    return rows[0]!.claimed;
  }

  /**
   * targets: table names as regclass text ('public.users', '"Odd Schema"."Odd Table"'). The
   * request's coverage becomes what the agent would resolve from its statement, limited to these
   * tables and their partitions / children (so a test can approve less than the statement reaches).
   */
  async setTargets(id: string, targets: string[]): Promise<void> {
    await this.client.query('SELECT backstop.agent_set_targets($1, $2::text[]::regclass[])', [id, targets]);
    const { rows: [request] } = await this.client.query<RequestRow>(
      'SELECT id::text, requester, command_tag, statement, search_path, status, reason, targets FROM backstop.requests WHERE id = $1', [id]);
    const resolved = await this.resolve(request!).catch(() => ({ coverage: [] as CoverageItem[] }));
    const { rows: [allowed] } = await this.client.query<{ oids: number[] }>(
      `WITH RECURSIVE tree(relid) AS (SELECT t::regclass::oid FROM unnest($1::text[]) AS t
                                      UNION SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.relid)
       SELECT coalesce(array_agg(relid::bigint), '{}') AS oids FROM tree`, [targets]);
    const oids = new Set(allowed!.oids.map(Number));
    await this.setCoverage(id, resolved.coverage.filter((item) => oids.has(item.relid)));
  }

  /** What the request allows, as the agent resolves it (coverage items). */
  async setCoverage(id: string, coverage: CoverageItem[]): Promise<void> {
    await this.client.query('SELECT backstop.agent_set_coverage($1, $2::jsonb)', [id, JSON.stringify(coverage)]);
  }

  /** Resolve the request's statement the way the agent does (the real parser and resolver). */
  async resolve(request: RequestRow): Promise<{ targets: number[]; coverage: CoverageItem[] }> {
    const parsed = await parseStatement(request.statement);
    const resolution = await resolveTargets(this.client, parsed.operations, { searchPath: request.search_path, requester: request.requester });
    return { targets: resolution.targets.map((target) => target.oid), coverage: resolution.coverage };
  }

  async decide(id: string, decision: Decision, reason: string | null = null, snapshotIds: string[] | null = null): Promise<string> {
    const { rows } = await this.client.query<{ status: string }>(
      'SELECT backstop.agent_decide($1, $2, $3, $4, $5) AS status',
      [id, this.agentId, decision, reason, snapshotIds],
    );
    return rows[0]!.status;
  }

  /**
   * Wait for the next pending request, claim it, set its targets and coverage (resolved from its
   * statement as the agent does, unless given) and approve it.
   */
  async approveNext(options: WaitOptions & { targets?: string[]; coverage?: CoverageItem[]; decision?: Decision } = {}): Promise<RequestRow> {
    const request = await this.waitForRequest(options);
    await this.claim(request.id);
    if (options.coverage) await this.setCoverage(request.id, options.coverage);
    else if (options.targets) await this.setTargets(request.id, options.targets);
    else {
      const resolved = await this.resolve(request).catch(() => ({ targets: [] as number[], coverage: [] as CoverageItem[] }));
      await this.client.query('SELECT backstop.agent_set_targets($1, $2::oid[]::regclass[])', [request.id, resolved.targets]);
      await this.setCoverage(request.id, resolved.coverage);
    }
    await this.decide(request.id, options.decision ?? 'approved', 'before-image captured (agent double)', ['snapshot-double']);
    return request;
  }

  /** Wait for the next pending request, claim it and deny it with reason. */
  async denyNext(reason: string, options: WaitOptions = {}): Promise<RequestRow> {
    const request = await this.waitForRequest(options);
    await this.claim(request.id);
    await this.decide(request.id, 'denied', reason);
    return request;
  }

  async close(): Promise<void> {
    this.stopped = true;
    await this.completing;
    await this.completer.end().catch(() => {});
    await this.client.end().catch(() => {});
  }
}

function matches(statement: string, pattern: string | RegExp | undefined): boolean {
  if (pattern === undefined) return true;
  return typeof pattern === 'string' ? statement.includes(pattern) : pattern.test(statement);
}

export interface LoginRoles {
  /** logical name → actual (cluster-unique) role name */
  [name: string]: string;
}

/**
 * Login roles for one test database, unique across the cluster (roles are cluster-wide and test
 * files run in parallel), each granted the given roles. Dropped by the returned cleanup after the
 * database is gone.
 */
export async function createLoginRoles(
  db: TestDatabase,
  names: string[],
  grants: Record<string, string[]> = {},
): Promise<{ roles: LoginRoles; dropRoles: () => Promise<void> }> {
  const admin = await db.client();
  const suffix = randomBytes(4).toString('hex');
  const roles: LoginRoles = {};
  for (const name of names) {
    const role = `${name}_${suffix}`;
    roles[name] = role;
    await admin.query(`CREATE ROLE ${pg.escapeIdentifier(role)} LOGIN`);
    for (const granted of grants[name] ?? []) {
      await admin.query(`GRANT ${pg.escapeIdentifier(granted)} TO ${pg.escapeIdentifier(role)}`);
    }
  }
  return {
    roles,
    dropRoles: () => dropServerRoles(Object.values(roles)),
  };
}

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
import type { TestDatabase } from './database.js';

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

  private constructor(client: pg.Client, agentId: string) {
    this.client = client;
    this.agentId = agentId;
  }

  static async connect(url: string, agentId = 'agent-double'): Promise<AgentDouble> {
    const client = new pg.Client({ connectionString: url, application_name: 'backstop-agent-double' });
    await client.connect();
    return new AgentDouble(client, agentId);
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

  /** targets: table names as regclass text ('public.users', '"Odd Schema"."Odd Table"'). */
  async setTargets(id: string, targets: string[]): Promise<void> {
    await this.client.query('SELECT backstop.agent_set_targets($1, $2::text[]::regclass[])', [id, targets]);
  }

  async decide(id: string, decision: Decision, reason: string | null = null, snapshotIds: string[] | null = null): Promise<string> {
    const { rows } = await this.client.query<{ status: string }>(
      'SELECT backstop.agent_decide($1, $2, $3, $4, $5) AS status',
      [id, this.agentId, decision, reason, snapshotIds],
    );
    return rows[0]!.status;
  }

  /** Wait for the next pending request, claim it, set its targets and approve it. */
  async approveNext(options: WaitOptions & { targets?: string[]; decision?: Decision } = {}): Promise<RequestRow> {
    const request = await this.waitForRequest(options);
    await this.claim(request.id);
    if (options.targets) await this.setTargets(request.id, options.targets);
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
    async dropRoles() {
      const url = new URL(db.url);
      url.pathname = '/postgres';
      const dropper = new pg.Client({ connectionString: url.toString() });
      await dropper.connect();
      try {
        for (const role of Object.values(roles)) {
          await dropper.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(role)}`).catch(() => {});
        }
      } finally {
        await dropper.end();
      }
    },
  };
}

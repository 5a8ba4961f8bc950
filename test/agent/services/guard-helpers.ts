/**
 * Driving the real guard from tests: a superuser getting around it (event triggers disabled, as
 * the README warns is always possible), and a request approved ahead the way the agent would
 * (claim → set targets → decide) so the guarded statement is consumed for real.
 */
import pg from 'pg';
import { parseStatement } from '../../../src/request/statement.js';
import { resolveTargets } from '../../../src/request/targets.js';

/** Run `work` with Backstop's event triggers disabled (superuser), then enable them ALWAYS again. */
export async function bypassGuard(client: pg.Client, work: () => Promise<void>): Promise<void> {
  const { rows } = await client.query<{ name: string }>(`SELECT evtname AS name FROM pg_event_trigger WHERE evtname LIKE 'backstop%'`);
  const quote = (name: string) => client.escapeIdentifier(name);
  for (const { name } of rows) await client.query(`ALTER EVENT TRIGGER ${quote(name)} DISABLE`);
  try {
    await work();
  } finally {
    for (const { name } of rows) await client.query(`ALTER EVENT TRIGGER ${quote(name)} ENABLE ALWAYS`);
  }
}

/** File `statement` ahead and approve it as an agent would; the caller then runs the statement. */
export async function approveAhead(client: pg.Client, statement: string, targets: string[]): Promise<number> {
  const agentId = 'test-agent';
  // The client's own connection stands in for the agent's presence session.
  await client.query(`SELECT backstop.agent_hello($1)`, [agentId]);
  await client.query(`SELECT backstop.agent_heartbeat($1, '{}'::jsonb)`, [agentId]);
  const { rows } = await client.query<{ id: string }>(`SELECT backstop.request($1) AS id`, [statement]);
  const id = Number(rows[0]!.id);
  const claimed = await client.query<{ ok: boolean }>(`SELECT backstop.agent_claim($1, $2) AS ok`, [id, agentId]);
  if (!claimed.rows[0]!.ok) throw new Error(`could not claim request ${id}`);
  await client.query(`SELECT backstop.agent_set_targets($1, $2::regclass[])`, [id, targets]);
  const { rows: [filed] } = await client.query<{ search_path: string }>('SELECT search_path FROM backstop.requests WHERE id = $1', [id]);
  const { rows: [role] } = await client.query<{ name: string }>('SELECT session_user AS name');
  const resolution = await resolveTargets(client, (await parseStatement(statement)).operations, { searchPath: filed!.search_path, requester: role!.name });
  await client.query(`SELECT backstop.agent_set_coverage($1, $2::jsonb)`, [id, JSON.stringify(resolution.coverage)]);
  const decided = await client.query<{ status: string }>(`SELECT backstop.agent_decide($1, $2, 'approved', 'test', '{}') AS status`, [id, agentId]);
  if (decided.rows[0]!.status !== 'approved') throw new Error(`request ${id} is ${decided.rows[0]!.status}, not approved`);
  void answerCompletion(client, id, agentId);
  return id;
}

/**
 * When the statement runs it locks its tables and asks for its before-image to be completed: answer
 * that once, as the agent would (nothing captured here, so the request keeps its snapshot ids).
 */
async function answerCompletion(client: pg.Client, requestId: number, agentId: string): Promise<void> {
  const { user, database, host, port, password } = (client as unknown as { connectionParameters: pg.ClientConfig }).connectionParameters;
  const answerer = new pg.Client({ user, database, host, port, password });
  await answerer.connect();
  try {
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const { rows: [open] } = await answerer.query<{ id: string }>(
        `SELECT id::text FROM backstop.image_completions WHERE request_id = $1 AND status = 'requested'`, [requestId]);
      if (open) {
        await answerer.query('SELECT backstop.agent_claim_completion($1, $2)', [open.id, agentId]);
        await answerer.query(`SELECT backstop.agent_finish_completion($1, $2, '{}', '[]', null)`, [open.id, agentId]);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  } finally {
    await answerer.end().catch(() => {});
  }
}

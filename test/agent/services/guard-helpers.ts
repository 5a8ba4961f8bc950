/**
 * Driving the real guard from tests: a superuser getting around it (event triggers disabled, as
 * the README warns is always possible), and a request approved ahead the way the agent would
 * (claim → set targets → decide) so the guarded statement is consumed for real.
 */
import type pg from 'pg';

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
  const decided = await client.query<{ status: string }>(`SELECT backstop.agent_decide($1, $2, 'approved', 'test', '{}') AS status`, [id, agentId]);
  if (decided.rows[0]!.status !== 'approved') throw new Error(`request ${id} is ${decided.rows[0]!.status}, not approved`);
  return id;
}

import pg from 'pg';
const url = 'postgres://postgres@127.0.0.1:39429/nt';
const a = new pg.Client({ connectionString: url }); await a.connect();
const b = new pg.Client({ connectionString: url }); await b.connect();
await b.query(`CREATE TABLE IF NOT EXISTS victim (id int)`);
await b.query(`INSERT INTO backstop.agent_heartbeats (agent_id, last_seen, info) VALUES ('fake', clock_timestamp(), '{}') ON CONFLICT (agent_id) DO UPDATE SET last_seen = clock_timestamp()`).catch((e) => console.log('hb', e.message));
for (let i = 0; i < 8; i++) {
  const { rows: [r] } = await b.query(`SELECT backstop.request('DROP TABLE victim') AS id`);
  const waiting = a.query(`SELECT backstop._await_decision($1::bigint, '10 s', false) AS s, extract(epoch FROM clock_timestamp()) * 1000 AS done_ms`, [r.id]);
  await new Promise((res) => setTimeout(res, 100 + Math.random() * 100));
  const { rows: [d] } = await b.query(`WITH u AS (UPDATE backstop.request_log SET status = 'approved', decided_at = clock_timestamp() WHERE id = $1 RETURNING decided_at) SELECT extract(epoch FROM decided_at) * 1000 AS ms, backstop._notify_decision($1, 'approved') FROM u`, [r.id]);
  const { rows: [w] } = await waiting;
  console.log(`status ${w.s}: noticed ${(w.done_ms - d.ms).toFixed(1)} ms after the decision`);
}
await a.end(); await b.end();

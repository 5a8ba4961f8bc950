import pg from 'pg';
const url = 'postgres://postgres@127.0.0.1:39429/nt';
const a = new pg.Client({ connectionString: url }); await a.connect();
const b = new pg.Client({ connectionString: url }); await b.connect();
a.on('notice', (n) => console.log('A:', n.message));
const loop = a.query(`DO $$
DECLARE woken boolean; t0 timestamptz := clock_timestamp(); i int := 0; n int;
BEGIN
  PERFORM backstop._loopback();
  PERFORM backstop._loopback_exec('LISTEN backstop_decisions');
  LOOP
    i := i + 1;
    SELECT count(*) INTO n FROM backstop.dblink_get_notify('backstop_loopback');
    IF n > 0 THEN RAISE NOTICE 'woken after % iterations, % ms', i, round(extract(epoch FROM clock_timestamp() - t0) * 1000); EXIT; END IF;
    
    EXIT WHEN clock_timestamp() - t0 > interval '3 s';
    PERFORM pg_sleep(0.015);
  END LOOP;
  RAISE NOTICE 'loop ended after % iterations', i;
END $$`);
await new Promise((res) => setTimeout(res, 300));
await b.query(`SELECT pg_notify('backstop_decisions', 'x'), clock_timestamp()`);
console.log('notified at ~300 ms');
await loop;
await a.end(); await b.end();

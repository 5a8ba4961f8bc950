import pg from 'pg';
const url = 'postgres://postgres@127.0.0.1:39429/nt';
const a = new pg.Client({ connectionString: url }); await a.connect();
a.on('notice', (n) => console.log('A:', n.message));
await a.query(`DO $$
DECLARE p1 int; p2 int; p3 int;
BEGIN
  PERFORM backstop._loopback();
  SELECT pid INTO p1 FROM backstop.dblink('backstop_loopback', 'select pg_backend_pid()') AS t(pid int);
  PERFORM backstop._loopback_exec('LISTEN backstop_decisions');
  SELECT pid INTO p2 FROM backstop.dblink('backstop_loopback', 'select pg_backend_pid()') AS t(pid int);
  PERFORM backstop._committed_status(1);
  SELECT pid INTO p3 FROM backstop.dblink('backstop_loopback', 'select pg_backend_pid()') AS t(pid int);
  RAISE NOTICE 'loopback pids: % % %', p1, p2, p3;
  RAISE NOTICE 'listening: %', (SELECT string_agg(c, ',') FROM backstop.dblink('backstop_loopback', 'select pg_listening_channels()') AS t(c text));
END $$`);
await a.end();

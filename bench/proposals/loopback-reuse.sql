-- Proposed guard fix, measured with `npm run bench -- --scenarios drop-approval
-- --after-install-sql bench/proposals/loopback-reuse.sql` (not shipped: the guard's owners decide).
--
-- backstop._loopback() probes its open connection with dblink_exec(…, 'SELECT 1'). dblink_exec
-- refuses statements that return rows ("statement returning results not allowed"), so the probe
-- always fails, the connection is dropped and a new one is opened on every call. Consequences:
-- the LISTEN backstop_decisions issued by _await_decision lands on a connection that the next
-- status read replaces, so the 15 ms NOTIFY wake-up never fires and every wait ends on the 250 ms
-- re-read; and every loopback call pays a fresh backend start. Probing with a statement that
-- returns no rows keeps the connection.
DO $patch$
DECLARE
  definition text := pg_catalog.pg_get_functiondef('backstop._loopback()'::pg_catalog.regprocedure);
  patched text := pg_catalog.replace(definition, 'USING connection_name, ''SELECT 1'';', 'USING connection_name, ''SET search_path = pg_catalog, backstop, pg_temp'';');
BEGIN
  IF patched = definition THEN
    RAISE EXCEPTION 'backstop._loopback() no longer probes with SELECT 1: this proposal is obsolete';
  END IF;
  EXECUTE patched;
END
$patch$;

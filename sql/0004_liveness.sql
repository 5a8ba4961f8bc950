-- Backstop 0004: liveness read from the server itself.
--
-- Until now "is an agent running?" was answered by heartbeat age alone (max_heartbeat_age,
-- 120 s): a killed agent left waiting statements waiting for their whole wait_timeout, a stopped
-- one let new statements be filed and left waiting, and a standby resumed a dead leader's
-- request only once that leader's heartbeat was 120 s old.
--
-- Now each agent keeps one session open for its whole life (the one it competes for leadership
-- on) and registers it with backstop.agent_hello(agent_id). When the agent's process dies on a
-- live host the kernel closes its sockets and that backend ends at once, so "is its registered
-- backend still running, as a member of backstop_agent?" answers within a second. Heartbeat age
-- stays as the second line (a dead host or network keeps a TCP connection open until keepalives
-- give up). A clean shutdown says backstop.agent_goodbye(agent_id) first.
--
-- What that buys:
--   * a waiting statement checks every second whether some live agent can still answer its
--     request (backstop._why_no_agent) and is refused with BS001 when none can;
--   * a new guarded statement is refused at once when no agent is available (backstop._agent_alive);
--   * the leader takes over a request another agent left capturing (backstop.agent_claim) as
--     soon as it holds the leader lock, and backstop.agent_decide refuses the decision of an
--     agent that no longer holds the claim, so the old claimant cannot decide behind it;
--   * backstop.readiness is not ready while the agent cannot reach its storage, and counts only
--     snapshots in the storage that agent writes to.

-------------------------------------------------------------------------------------------------
-- Presence
-------------------------------------------------------------------------------------------------

ALTER TABLE backstop.agent_heartbeats
  ADD COLUMN backend_pid integer,
  ADD COLUMN backend_started_at timestamptz,
  ADD COLUMN gone_at timestamptz;
COMMENT ON COLUMN backstop.agent_heartbeats.backend_pid IS 'the agent''s presence session (backstop.agent_hello): while this backend runs, the agent process is alive';
COMMENT ON COLUMN backstop.agent_heartbeats.backend_started_at IS 'backend_start of that session: a reused pid does not count';
COMMENT ON COLUMN backstop.agent_heartbeats.gone_at IS 'when the agent said goodbye (clean shutdown): it takes no new request, and finishes the ones it claimed';

-- Is this backend running, started at started_at (a reused pid does not count), as a member of
-- backstop_agent? SECURITY DEFINER because pg_stat_activity shows backend_start of other roles'
-- sessions only to their members and pg_read_all_stats: the views read by everyone need it. It
-- answers yes or no about one pid, nothing more.
CREATE FUNCTION backstop._agent_backend_running(pid integer, started_at timestamptz) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT _agent_backend_running.pid IS NOT NULL AND EXISTS (
           SELECT FROM pg_stat_get_activity(_agent_backend_running.pid) a
             JOIN pg_roles r ON r.oid = a.usesysid
            WHERE a.backend_start = _agent_backend_running.started_at
              AND pg_has_role(r.oid, 'backstop_agent', 'MEMBER'))
$fn$;
COMMENT ON FUNCTION backstop._agent_backend_running(integer, timestamptz) IS 'Backstop internal: is this backend a running agent session (used by backstop.agents)';

-- Replaces the view of 0001 (same columns, three more at the end):
--   connected: the agent's presence session is running right now, as a member of backstop_agent
--              (its pid and start time as registered, read from the server's process table);
--   gone_at:   when it said goodbye;
--   available: connected, fresh heartbeat, and not shutting down: it can answer a new request.
-- The pid was registered by the agent API from that very session (never passed in), and the
-- role is checked too, so neither application_name nor an advisory lock taken by someone else
-- can make a dead agent look alive.
CREATE OR REPLACE VIEW backstop.agents AS
SELECT h.agent_id, h.hostname, h.pid, h.version, h.leader, h.listening, h.storage_url,
       h.storage_ok, h.storage_error, h.started_at, h.last_seen,
       clock_timestamp() - h.last_seen AS heartbeat_age,
       clock_timestamp() - h.last_seen <= s.max_heartbeat_age AS fresh,
       h.info,
       presence.connected,
       h.gone_at,
       presence.connected AND h.gone_at IS NULL AND clock_timestamp() - h.last_seen <= s.max_heartbeat_age AS available
  FROM backstop.agent_heartbeats h
  CROSS JOIN backstop.settings s
  CROSS JOIN LATERAL (SELECT backstop._agent_backend_running(h.backend_pid, h.backend_started_at)) AS presence(connected);
COMMENT ON VIEW backstop.agents IS 'Backstop agents: heartbeat age, whether the agent process is still connected, and whether it can answer requests (available)';

-- This session is the agent's presence: as long as it runs, the agent process is alive. Called by
-- the agent on the session it keeps for its whole life (the leader-election one), again after
-- every reconnect. Records this backend's pid and start time (never taken from the caller) and
-- clears a goodbye: a restarted agent is back.
CREATE FUNCTION backstop.agent_hello(agent_id text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  started timestamptz := (SELECT a.backend_start FROM pg_stat_get_activity(pg_backend_pid()) a);
BEGIN
  INSERT INTO backstop.agent_heartbeats AS h (agent_id, backend_pid, backend_started_at, gone_at)
  VALUES (agent_hello.agent_id, pg_backend_pid(), started, NULL)
  ON CONFLICT ON CONSTRAINT agent_heartbeats_pkey DO UPDATE
     SET backend_pid = excluded.backend_pid, backend_started_at = excluded.backend_started_at, gone_at = NULL;
END
$fn$;
COMMENT ON FUNCTION backstop.agent_hello(text) IS 'Agent: this session is my presence; while it is connected I am alive';

-- The agent is shutting down cleanly: from now on it counts as unavailable for new requests (a
-- new guarded statement is refused at once unless another agent is available); requests it has
-- claimed are still its own to finish while its presence session stays connected.
CREATE FUNCTION backstop.agent_goodbye(agent_id text) RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  UPDATE backstop.agent_heartbeats h SET gone_at = clock_timestamp() WHERE h.agent_id = agent_goodbye.agent_id
$fn$;
COMMENT ON FUNCTION backstop.agent_goodbye(text) IS 'Agent: I am shutting down; take no new request to me';

-- Is some agent available to answer a new request right now (connected, fresh heartbeat, not
-- shutting down)? Reads the server's process table afresh (it is otherwise read once per
-- transaction).
CREATE FUNCTION backstop._some_agent_available() RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  PERFORM pg_stat_clear_snapshot();
  RETURN EXISTS (SELECT FROM backstop.agents a WHERE a.available);
END
$fn$;

-- Replaces 0001's _agent_alive (heartbeat age only). Fail-closed gate, read through the loopback
-- when there is one: is some agent available — its presence session connected, its heartbeat
-- newer than max_heartbeat_age, and not shutting down? False at once after an agent was killed
-- or said goodbye.
CREATE OR REPLACE FUNCTION backstop._agent_alive() RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  alive text;
BEGIN
  alive := backstop._committed_value('SELECT backstop._some_agent_available()::text');
  RETURN alive::boolean;
END
$fn$;

-- Why no agent can answer request_id, as this transaction sees it (one line), or null while one
-- can: the agent that claimed it is still connected with a fresh heartbeat (also while it shuts
-- down: it finishes what it claimed), or some agent is available (the leader claims a pending
-- request, and takes over one whose claimant is gone). Null too when the request is final or
-- does not exist: there is nothing left to answer.
CREATE FUNCTION backstop._no_agent_reason(request_id bigint) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  request record;
  disconnected text;
BEGIN
  PERFORM pg_stat_clear_snapshot();
  SELECT r.status, r.agent_id INTO request FROM backstop.request_log r WHERE r.id = _no_agent_reason.request_id;
  IF NOT FOUND OR backstop._is_final(request.status) THEN
    RETURN NULL;
  END IF;
  IF request.status <> 'pending'
     AND EXISTS (SELECT FROM backstop.agents a WHERE a.agent_id = request.agent_id AND a.connected AND a.fresh) THEN
    RETURN NULL;
  END IF;
  IF EXISTS (SELECT FROM backstop.agents a WHERE a.available) THEN
    RETURN NULL;
  END IF;
  IF EXISTS (SELECT FROM backstop.agents a WHERE a.connected AND a.fresh AND a.gone_at IS NOT NULL) THEN
    RETURN 'the Backstop agent is shutting down and no other agent is running';
  END IF;
  SELECT a.agent_id INTO disconnected FROM backstop.agents a WHERE a.fresh AND NOT a.connected ORDER BY a.last_seen DESC LIMIT 1;
  IF disconnected IS NOT NULL THEN
    RETURN format('the Backstop agent %s is no longer connected to the database (its process ended) and no other agent is running', disconnected);
  END IF;
  RETURN format('no Backstop agent is running (no heartbeat in the last %s)',
                backstop._describe_interval((backstop._settings()).max_heartbeat_age));
END
$fn$;

-- Why no live agent can answer request_id (one line), or null while one can: what
-- _no_agent_reason says about committed state, read through the loopback (one round trip; a
-- REPEATABLE READ snapshot cannot show an agent that has gone). Cheap enough to call every
-- second from a waiting loop.
CREATE FUNCTION backstop._why_no_agent(request_id bigint) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  RETURN backstop._committed_value(format('SELECT backstop._no_agent_reason(%s)', request_id));
END
$fn$;

-------------------------------------------------------------------------------------------------
-- Claims: the leader lock proves the old claim dead
-------------------------------------------------------------------------------------------------

-- The leader's advisory lock key: the first 8 bytes of sha256('backstop agent leader') as a
-- signed bigint, the same number src/agent/leader.ts takes the lock with.
CREATE FUNCTION backstop._leader_lock_key() RETURNS bigint
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT ('x' || left(encode(sha256(convert_to('backstop agent leader', 'UTF8')), 'hex'), 16))::bit(64)::bigint
$fn$;

-- Does this agent lead: does its connected presence session hold the leader lock in this
-- database? (A bigint advisory lock shows in pg_locks as classid = high 32 bits, objid = low 32
-- bits, objsubid = 1.)
CREATE FUNCTION backstop._holds_leader_lock(agent_id text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT EXISTS (
    SELECT FROM backstop.agents a
      JOIN backstop.agent_heartbeats h ON h.agent_id = a.agent_id
      JOIN pg_locks l ON l.pid = h.backend_pid
     WHERE a.agent_id = _holds_leader_lock.agent_id AND a.connected
       AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
       AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
       AND l.classid::bigint = (backstop._leader_lock_key() >> 32) & 4294967295
       AND l.objid::bigint = backstop._leader_lock_key() & 4294967295)
$fn$;

-- Replaces 0001's agent_claim. pending → capturing, exactly once across agents, as before. And
-- the leader takes over a request left capturing (by an agent that died or lost leadership, or
-- by itself in an earlier life): only an agent whose presence session holds the leader lock may,
-- and from then on agent_decide refuses the old claimant's decision. False when the request is
-- not there to take (decided, expired, consumed), or the caller may not take it.
CREATE OR REPLACE FUNCTION backstop.agent_claim(request_id bigint, agent_id text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  UPDATE backstop.request_log r
     SET status = 'capturing', agent_id = agent_claim.agent_id
   WHERE r.id = agent_claim.request_id AND r.expires_at > clock_timestamp()
     AND NOT EXISTS (SELECT FROM backstop.request_consumptions c WHERE c.request_id = r.id)
     AND (r.status = 'pending'
          OR (r.status = 'capturing' AND backstop._holds_leader_lock(agent_claim.agent_id)));
  RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION backstop.agent_claim(bigint, text) IS 'Agent: claim a pending request (exactly once), or, as the leader, take over one left capturing';

-- Replaces 0001's agent_decide: the same decision rules, and a request claimed by another agent
-- (taken over by the leader) is that agent's to decide: a decision from anyone else is refused
-- (BS006), so an agent that lost the claim cannot decide behind the one that has it.
CREATE OR REPLACE FUNCTION backstop.agent_decide(request_id bigint, agent_id text, decision text, reason text,
                                                 snapshot_ids text[]) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  request backstop.request_log;
  new_status text;
BEGIN
  IF decision NOT IN ('approved', 'denied', 'awaiting_approval') THEN
    RAISE EXCEPTION 'unknown decision %: use approved, denied or awaiting_approval', quote_literal(decision)
      USING ERRCODE = 'BS006';
  END IF;
  SELECT * INTO request FROM backstop.request_log r WHERE r.id = agent_decide.request_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'there is no Backstop request %', agent_decide.request_id USING ERRCODE = 'BS006';
  END IF;
  IF EXISTS (SELECT FROM backstop.request_consumptions c WHERE c.request_id = request.id) THEN
    RETURN 'consumed';
  END IF;
  IF backstop._is_final(request.status) THEN
    RETURN request.status;
  END IF;
  IF request.agent_id IS DISTINCT FROM agent_decide.agent_id AND request.agent_id IS NOT NULL THEN
    RAISE EXCEPTION 'request % is claimed by agent %, so agent % may not decide it', request.id, request.agent_id, agent_decide.agent_id
      USING ERRCODE = 'BS006',
            HINT = 'the leader took the request over; it decides (see SELECT * FROM backstop.agents)';
  END IF;
  new_status := CASE
    WHEN decision = 'denied' THEN 'denied'
    WHEN request.approved_by IS NOT NULL THEN 'approved'
    WHEN decision = 'approved' AND (backstop._settings()).approval_mode = 'auto' THEN 'approved'
    ELSE 'awaiting_approval'
  END;
  UPDATE backstop.request_log r
     SET status = new_status,
         reason = coalesce(agent_decide.reason, r.reason),
         agent_id = coalesce(r.agent_id, agent_decide.agent_id),
         decided_by = agent_decide.agent_id,
         decided_at = clock_timestamp(),
         snapshot_ids = coalesce(agent_decide.snapshot_ids, r.snapshot_ids)
   WHERE r.id = request.id;
  PERFORM backstop._notify_decision(request.id, new_status);
  RETURN new_status;
END
$fn$;
COMMENT ON FUNCTION backstop.agent_decide(bigint, text, text, text, text[]) IS 'Agent: decide a request it holds the claim on (approved | denied | awaiting_approval)';

-------------------------------------------------------------------------------------------------
-- Waiting for a decision
-------------------------------------------------------------------------------------------------

-- Replaces 0001's _await_decision. Wait for request_id to reach a final status, up to timeout,
-- as before (dblink: LISTEN backstop_decisions on the loopback, poll its notifications every
-- 15 ms, re-read the status on a wake-up and at least every 250 ms; without dblink re-read
-- locally every 250 ms; pg_sleep is interruptible, so statement_timeout and pg_cancel_backend
-- end the wait; expire_on_timeout marks a request still undecided at the timeout expired).
-- New: every second it asks backstop._why_no_agent whether a live agent can still answer. When
-- two checks in a row (a second apart: a presence session reconnecting is not a death) say none
-- can, the wait ends with BS001 and the reason; the request is marked expired with it when
-- expire_on_timeout (a guarded statement), and left filed otherwise (backstop.wait: an agent
-- that starts later still answers it). A decision that lands at that moment wins.
-- Returns the status at the end (null: no such request).
CREATE OR REPLACE FUNCTION backstop._await_decision(request_id bigint, timeout interval, expire_on_timeout boolean)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  dblink_schema text := backstop._dblink_schema();
  connection_name text;
  deadline timestamptz := clock_timestamp() + timeout;
  last_read timestamptz;
  last_liveness_check timestamptz := clock_timestamp();
  no_agent text;
  no_agent_before boolean := false;
  unanswerable text;  -- set when the wait ends because no agent can answer
  woken boolean;
  status text;
BEGIN
  IF dblink_schema IS NOT NULL THEN
    connection_name := backstop._loopback();
    PERFORM backstop._loopback_exec('LISTEN backstop_decisions');
  END IF;
  LOOP
    woken := false;
    IF connection_name IS NOT NULL THEN
      EXECUTE format('SELECT count(*) > 0 FROM %I.dblink_get_notify($1)', dblink_schema)
        INTO woken USING connection_name;
    END IF;
    IF woken OR last_read IS NULL OR clock_timestamp() - last_read >= interval '250 ms' THEN
      status := backstop._committed_status(request_id);
      last_read := clock_timestamp();
      EXIT WHEN status IS NULL OR backstop._is_final(status);
    END IF;
    IF clock_timestamp() - last_liveness_check >= interval '1 s' THEN
      no_agent := backstop._why_no_agent(request_id);
      last_liveness_check := clock_timestamp();
      IF no_agent IS NOT NULL AND no_agent_before THEN
        unanswerable := no_agent;
        EXIT;
      END IF;
      no_agent_before := no_agent IS NOT NULL;
    END IF;
    IF clock_timestamp() >= deadline THEN
      IF expire_on_timeout THEN
        PERFORM backstop._expire(request_id, format('no decision within %s (settings.wait_timeout)', backstop._describe_interval(timeout)));
        status := backstop._committed_status(request_id);
      END IF;
      EXIT;
    END IF;
    PERFORM pg_sleep(CASE WHEN connection_name IS NULL THEN 0.25 ELSE 0.015 END);
  END LOOP;
  IF unanswerable IS NOT NULL THEN
    IF expire_on_timeout THEN
      PERFORM backstop._expire(request_id, unanswerable);
    END IF;
    status := backstop._committed_status(request_id);
  END IF;
  IF connection_name IS NOT NULL THEN
    PERFORM backstop._loopback_exec('UNLISTEN backstop_decisions');
  END IF;
  -- A decision that landed meanwhile (approved, denied) is the answer; otherwise refuse.
  IF unanswerable IS NOT NULL AND (status IS NULL OR status = 'expired' OR NOT backstop._is_final(status)) THEN
    RAISE EXCEPTION 'Backstop request % cannot be answered: %', request_id, unanswerable
      USING ERRCODE = 'BS001',
            HINT = CASE WHEN expire_on_timeout
                        THEN 'start the agent (backstop agent --db ...) and check SELECT * FROM backstop.agents; then run the statement again'
                        ELSE format('the request stays filed: start the agent (backstop agent --db ...), then SELECT backstop.wait(%s, ''5 min'');', request_id)
                   END;
  END IF;
  RETURN status;
EXCEPTION WHEN query_canceled THEN
  -- statement_timeout or pg_cancel_backend: the waiting statement gives up; tell the agent
  -- (best effort: the cancel is what the caller must see).
  BEGIN
    IF expire_on_timeout THEN
      PERFORM backstop._expire(request_id, 'the waiting statement was cancelled (statement_timeout or pg_cancel_backend)');
    END IF;
    IF connection_name IS NOT NULL THEN
      PERFORM backstop._loopback_exec('UNLISTEN backstop_decisions');
    END IF;
  EXCEPTION WHEN OTHERS THEN
    NULL;
  END;
  RAISE;
END
$fn$;

-------------------------------------------------------------------------------------------------
-- Readiness: storage reachable, snapshots in that storage
-------------------------------------------------------------------------------------------------

-- Replaces 0001's view (same columns). A table is ready only when an agent is available to
-- answer (connected, fresh heartbeat, not shutting down: "the serving agent", the leader first),
-- that agent reaches its storage (storage_ok is not false), and the table's latest snapshot in
-- that agent's storage (snapshot_catalog.location under its storage_url) is verified and current.
-- Snapshots in another storage are not counted: the agent could not restore or check them.
CREATE OR REPLACE VIEW backstop.readiness AS
WITH tables AS (
  SELECT c.oid AS relid, n.nspname::text AS schema_name, c.relname::text AS table_name
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p')
     AND c.relpersistence <> 't'
     AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'backstop', 'backstop_images')
     AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'
), heartbeat AS (
  SELECT min(clock_timestamp() - last_seen) AS age FROM backstop.agent_heartbeats
), agents AS (
  SELECT a.agent_id, a.leader, a.last_seen, a.connected, a.fresh, a.gone_at, a.available,
         a.storage_ok, a.storage_error,
         CASE WHEN a.storage_url IS NOT NULL THEN rtrim(a.storage_url, '/') || '/' END AS storage_prefix
    FROM backstop.agents a
), serving AS (
  SELECT a.agent_id, a.storage_ok, a.storage_error, a.storage_prefix
    FROM agents a WHERE a.available
   ORDER BY a.leader DESC NULLS LAST, a.last_seen DESC
   LIMIT 1
), presence AS (
  SELECT coalesce(bool_or(a.connected AND a.gone_at IS NOT NULL), false) AS leaving
    FROM agents a WHERE a.fresh
), latest AS (
  SELECT DISTINCT ON (c.schema_name, c.table_name) c.schema_name, c.table_name, c.snapshot_id, c.created_at, c.verified,
         greatest(c.created_at, c.confirmed_at) AS current_as_of
    FROM backstop.snapshot_catalog c
    LEFT JOIN serving v ON true
   WHERE v.storage_prefix IS NULL OR starts_with(c.location, v.storage_prefix)
   ORDER BY c.schema_name, c.table_name, c.created_at DESC
)
SELECT t.schema_name, t.table_name, t.relid,
       l.snapshot_id AS last_snapshot_id,
       l.created_at AS last_snapshot_at,
       clock_timestamp() - l.created_at AS snapshot_age,
       coalesce(l.verified, false) AS checksum_verified,
       h.age AS heartbeat_age,
       check_result.failing_check IS NULL AS ready,
       check_result.failing_check,
       l.current_as_of
  FROM tables t
  CROSS JOIN heartbeat h
  CROSS JOIN presence p
  CROSS JOIN backstop.settings s
  LEFT JOIN serving v ON true
  LEFT JOIN latest l ON l.schema_name = t.schema_name AND l.table_name = t.table_name
  CROSS JOIN LATERAL (
    SELECT CASE
             WHEN h.age IS NULL THEN 'no agent has ever sent a heartbeat'
             WHEN h.age > s.max_heartbeat_age THEN format('agent heartbeat is %s old (max %s)', date_trunc('second', h.age), s.max_heartbeat_age)
             WHEN v.agent_id IS NULL AND p.leaving THEN 'the agent is shutting down and no other agent is running'
             WHEN v.agent_id IS NULL THEN 'no agent is connected to the database (the agent process has ended)'
             WHEN v.storage_ok = false
               THEN format('agent %s cannot reach its storage: %s', v.agent_id, coalesce(v.storage_error, 'unknown error'))
             WHEN l.snapshot_id IS NULL AND v.storage_prefix IS NOT NULL
                  AND EXISTS (SELECT FROM backstop.snapshot_catalog c WHERE c.schema_name = t.schema_name AND c.table_name = t.table_name)
               THEN format('no snapshot yet in the agent''s storage %s (only in another storage)', rtrim(v.storage_prefix, '/'))
             WHEN l.snapshot_id IS NULL THEN 'no snapshot yet'
             WHEN clock_timestamp() - l.current_as_of > s.max_snapshot_age
               THEN format('latest snapshot is %s old and the table was not confirmed unchanged since (max %s)',
                           date_trunc('second', clock_timestamp() - l.created_at), s.max_snapshot_age)
             WHEN NOT l.verified THEN 'latest snapshot checksum not verified'
           END AS failing_check
  ) check_result;
COMMENT ON VIEW backstop.readiness IS 'Per table: latest snapshot in the serving agent''s storage, its age, agent heartbeat and storage, ready yes/no and the failing check; current_as_of: when the snapshot was last known to match the table';

-- Replaces 0001's agent_confirm_unchanged(oid[], timestamptz), which confirmed a table's latest
-- snapshot wherever it was stored. A poll found these tables unchanged since the agent's last
-- capture: their latest snapshot in the storage that agent writes to (storage_url: location
-- under it) still matches them as of observed_at, so readiness does not age it out. Snapshots in
-- any other storage are left as they are. Returns how many snapshots were confirmed.
DROP FUNCTION backstop.agent_confirm_unchanged(oid[], timestamptz);
CREATE FUNCTION backstop.agent_confirm_unchanged(relids oid[], observed_at timestamptz, storage_url text) RETURNS integer
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  WITH tables AS (
    SELECT n.nspname::text AS schema_name, c.relname::text AS table_name
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = ANY (agent_confirm_unchanged.relids)
  ), latest AS (
    SELECT DISTINCT ON (s.schema_name, s.table_name) s.snapshot_id
      FROM backstop.snapshot_catalog s JOIN tables t USING (schema_name, table_name)
     WHERE s.created_at <= agent_confirm_unchanged.observed_at
       AND starts_with(s.location, rtrim(agent_confirm_unchanged.storage_url, '/') || '/')
     ORDER BY s.schema_name, s.table_name, s.created_at DESC
  ), confirmed AS (
    UPDATE backstop.snapshot_catalog s
       SET confirmed_at = greatest(s.confirmed_at, agent_confirm_unchanged.observed_at)
      FROM latest l WHERE s.snapshot_id = l.snapshot_id
    RETURNING 1
  )
  SELECT count(*)::integer FROM confirmed
$fn$;
COMMENT ON FUNCTION backstop.agent_confirm_unchanged(oid[], timestamptz, text) IS 'Agent: these tables are unchanged since their latest snapshot in my storage (keeps readiness fresh without re-capturing)';

-------------------------------------------------------------------------------------------------
-- Privileges
-------------------------------------------------------------------------------------------------

REVOKE ALL ON FUNCTION backstop.agent_hello(text), backstop.agent_goodbye(text),
                       backstop.agent_confirm_unchanged(oid[], timestamptz, text),
                       backstop._some_agent_available(), backstop._no_agent_reason(bigint),
                       backstop._why_no_agent(bigint), backstop._leader_lock_key(),
                       backstop._holds_leader_lock(text)
  FROM PUBLIC;
-- The views everyone reads call it.
GRANT EXECUTE ON FUNCTION backstop._agent_backend_running(integer, timestamptz) TO PUBLIC;
GRANT EXECUTE ON FUNCTION backstop.agent_hello(text), backstop.agent_goodbye(text),
                          backstop.agent_confirm_unchanged(oid[], timestamptz, text)
   TO backstop_agent;

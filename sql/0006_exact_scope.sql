-- Backstop 0006: an approval covers exactly its statement, and its before-image is exact.
--
-- Until now (0002) an approval was a set of table OIDs that the whole transaction could drop,
-- rewrite or truncate, TRUNCATE approvals were found by statement text, and a before-image was
-- whatever the agent read while the statement waited: writes committed during the wait were lost.
--
-- Coverage. The agent resolves a request into items (kind, table, column):
--   drop table | drop column | alter column type | truncate
-- resolved with the requester's search_path when the request is filed (request_log.coverage).
-- Using an approval copies its items into a consumption row scoped to the running statement
-- (its transaction and statement_timestamp()), and the authoritative checks (sql_drop,
-- table_rewrite, BEFORE TRUNCATE) accept a dropped / rewritten / truncated object only when an
-- item of the right kind for it was consumed by this very statement. A second destructive
-- statement in the same transaction files and waits for its own request.
--
-- Exact before-images. The agent captures the bulk image while nobody is blocked (no lock is
-- held yet) and records, in its manifest, the snapshot it read and a census of the row versions.
-- Once the request is otherwise approved, the waiting session locks the tables IN EXCLUSIVE MODE
-- (writers wait, readers — the agent — do not) and files an image completion; the agent proves
-- that nothing changed since the bulk image (or captures again) under that lock, and only then
-- does the statement go on. If the completion cannot finish, the statement is refused.
--
-- Also here: lossless ALTER COLUMN TYPE and dropping a column added by the same transaction
-- pass without approval; ALTER TYPE ... DROP ATTRIBUTE of a composite type stored in a table is
-- refused; tables created by CREATE SCHEMA ... CREATE TABLE (and CREATE EXTENSION) get the
-- TRUNCATE guard.
--
-- Replaced here: backstop._no_agent_reason (0004), backstop._alter_loses_data(text) and backstop._pause_targets (0002),
-- backstop._guard_statement (0003), backstop._guard_truncate, backstop.guard_dropped_objects,
-- backstop.guard_rewrite, backstop._withdraw_consumed_approvals (0002), backstop.guard_new_tables
-- (0003), the view backstop.requests (0001). Dropped: backstop._obtain_approval(6 arguments),
-- backstop._consume, backstop._covered_oids, backstop._consumed_for_statement,
-- backstop._find_approved_request(text) (0002).

-------------------------------------------------------------------------------------------------
-- The loopback reaches this database, and is given back by every entry point
-------------------------------------------------------------------------------------------------

-- The session's loopback connection name, connected and checked to reach this very database (the
-- far end must hold the same attach secret: a loopback_conninfo naming another database would
-- otherwise show that database's committed state as this one's). Reused across calls; reconnected
-- when the other end went away. Null when dblink is not installed. Replaces backstop._loopback (0001).
CREATE OR REPLACE FUNCTION backstop._loopback() RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  dblink_schema text := backstop._dblink_schema();
  connection_name constant text := 'backstop_loopback';
  open_connections text[];
  far_secret text;
BEGIN
  IF dblink_schema IS NULL THEN
    RETURN NULL;
  END IF;
  EXECUTE format('SELECT %I.dblink_get_connections()', dblink_schema) INTO open_connections;
  IF connection_name = ANY (coalesce(open_connections, '{}')) THEN
    BEGIN
      -- Probe with a statement that returns no rows: dblink_exec refuses ones that do, and a
      -- failing probe would replace the connection on every call (losing its LISTEN).
      EXECUTE format('SELECT %I.dblink_exec($1, $2)', dblink_schema) USING connection_name, 'SET search_path = pg_catalog, backstop, pg_temp';
      RETURN connection_name;
    EXCEPTION WHEN OTHERS THEN
      EXECUTE format('SELECT %I.dblink_disconnect($1)', dblink_schema) USING connection_name;
    END;
  END IF;
  BEGIN
    EXECUTE format('SELECT %I.dblink_connect($1, $2)', dblink_schema) USING connection_name, backstop._loopback_conninfo();
  EXCEPTION WHEN OTHERS THEN
    RAISE EXCEPTION 'Backstop could not open its loopback connection to this database: %', SQLERRM
      USING ERRCODE = 'BS004',
            HINT = format('allow local connections as %s (pg_hba.conf; max_connections), or set backstop.settings.loopback_conninfo; '
                          'meanwhile file requests ahead with SELECT backstop.request($$...$$)', quote_ident(current_user));
  END;
  BEGIN
    EXECUTE format('SELECT t.secret FROM %I.dblink($1, $2) AS t(secret text)', dblink_schema)
      INTO far_secret USING connection_name, 'SELECT secret FROM backstop.attach_secret';
  EXCEPTION WHEN OTHERS THEN
    far_secret := NULL;
  END;
  IF far_secret IS DISTINCT FROM (SELECT s.secret FROM backstop.attach_secret s) THEN
    EXECUTE format('SELECT %I.dblink_disconnect($1)', dblink_schema) USING connection_name;
    RAISE EXCEPTION 'Backstop''s loopback connection does not reach this database (%)', current_database()
      USING ERRCODE = 'BS004',
            HINT = 'backstop.settings.loopback_conninfo must name this database and a role that owns Backstop (or a superuser); fix it, or set it to NULL';
  END IF;
  EXECUTE format('SELECT %I.dblink_exec($1, $2)', dblink_schema)
    USING connection_name, 'SET search_path = pg_catalog, backstop, pg_temp';
  RETURN connection_name;
END
$fn$;

-------------------------------------------------------------------------------------------------
-- Coverage
-------------------------------------------------------------------------------------------------

ALTER TABLE backstop.request_log
  ADD COLUMN coverage jsonb NOT NULL DEFAULT '[]',
  ADD COLUMN image_completed_at timestamptz,
  ADD COLUMN image_completion jsonb;
COMMENT ON COLUMN backstop.request_log.coverage IS
  'what an approval allows: [{"kind": "drop table|drop column|alter column type|truncate", "relid": oid, "attnum": n}], resolved by the agent';

ALTER TABLE backstop.request_consumptions
  ADD COLUMN statement_started_at timestamptz,
  ADD COLUMN coverage jsonb NOT NULL DEFAULT '[]';
COMMENT ON COLUMN backstop.request_consumptions.statement_started_at IS
  'statement_timestamp() of the statement that used the approval: coverage holds for that statement only';

-- Is one coverage item well formed? A column item always names its column: an item without one
-- would cover every column of the table.
CREATE FUNCTION backstop._is_coverage_item(item jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  -- coalesce: a missing field makes jsonb_typeof null, and null must not pass as "well formed".
  SELECT coalesce(jsonb_typeof(item) = 'object'
                  AND jsonb_typeof(item->'relid') = 'number'
                  AND CASE WHEN item->>'kind' IN ('drop column', 'alter column type')
                           THEN jsonb_typeof(item->'attnum') = 'number'   -- a column item names its column
                           WHEN item->>'kind' IN ('drop table', 'truncate')
                           THEN coalesce(jsonb_typeof(item->'attnum'), 'null') = 'null'
                           ELSE false END, false)
$fn$;

-- The agent sets what a request covers, before the request is decided. Partitions and children
-- appear only where the statement itself reaches them; columns by attnum per table.
CREATE FUNCTION backstop.agent_set_coverage(request_id bigint, coverage jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  request backstop.request_log;
BEGIN
  IF jsonb_typeof(coverage) <> 'array'
     OR EXISTS (SELECT FROM jsonb_array_elements(coverage) AS e(item) WHERE NOT backstop._is_coverage_item(e.item)) THEN
    RAISE EXCEPTION 'coverage must be an array of {"kind", "relid", "attnum"} items' USING ERRCODE = 'BS006';
  END IF;
  SELECT * INTO request FROM backstop.request_log r WHERE r.id = agent_set_coverage.request_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'there is no Backstop request %', agent_set_coverage.request_id USING ERRCODE = 'BS006';
  END IF;
  IF backstop._is_final(request.status) THEN
    RAISE EXCEPTION 'request % is already %: what it covers can no longer change', request.id, request.status
      USING ERRCODE = 'BS006';
  END IF;
  UPDATE backstop.request_log r SET coverage = agent_set_coverage.coverage WHERE r.id = request.id;
END
$fn$;
COMMENT ON FUNCTION backstop.agent_set_coverage(bigint, jsonb) IS 'Agent: what an approval of this request allows (kind, table, column items)';

-- The coverage items this transaction consumed, item by item: those of the running statement
-- (scoped by statement_timestamp()), or of any statement of the transaction. Read locally: the
-- consumption rows were inserted by this very transaction.
CREATE FUNCTION backstop._consumed_items(in_this_statement boolean)
RETURNS TABLE (request_id bigint, kind text, relid oid, attnum integer)
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT c.request_id, item.kind, item.relid, item.attnum
    FROM backstop.request_consumptions c, jsonb_to_recordset(c.coverage) AS item(kind text, relid oid, attnum integer)
   WHERE c.txid = txid_current_if_assigned()
     AND (NOT in_this_statement OR c.statement_started_at = statement_timestamp())
$fn$;

-- Did a request consumed by the running statement (or, with in_this_statement false, by this
-- transaction) cover this (kind, table[, column])? Kinds never stand in for one another (a drop
-- table item does not cover dropping a column of a table that stays).
CREATE FUNCTION backstop._is_covered(kind text, relid oid, attnum integer DEFAULT NULL, in_this_statement boolean DEFAULT true)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT EXISTS (
    SELECT FROM backstop._consumed_items(in_this_statement) AS item
     WHERE item.relid = _is_covered.relid
       AND item.kind = _is_covered.kind
       AND (_is_covered.attnum IS NULL OR item.attnum = _is_covered.attnum))
$fn$;

-- Has the running statement consumed a request covering every one of these tables (any kind but
-- truncate)? (One client string with several DROPs fires the pause several times; it asks once.)
CREATE FUNCTION backstop._statement_covers(relids oid[]) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT coalesce(array_agg(item.relid), '{}') @> relids
    FROM backstop._consumed_items(true) AS item
   WHERE item.kind <> 'truncate'
$fn$;

-- The request consumed by the running statement that covers this (kind, table), if any.
CREATE FUNCTION backstop._covering_request(kind text, relid oid) RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT item.request_id
    FROM backstop._consumed_items(true) AS item
   WHERE item.kind = _covering_request.kind AND item.relid = _covering_request.relid
   ORDER BY item.request_id LIMIT 1
$fn$;

-- An approved, unexpired request of this role for this statement, as committed now, that covers
-- every one of these tables (resolved when it was filed, so a changed search_path finds none),
-- and that this transaction has not used yet.
CREATE FUNCTION backstop._find_approved_request(normalized_statement text, relids oid[]) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  used_here constant bigint[] := ARRAY(SELECT c.request_id FROM backstop.request_consumptions c
                                        WHERE c.txid = txid_current_if_assigned());
  find_sql text := format(
    'SELECT r.id::text FROM backstop.request_log r
      WHERE r.requester = %L AND r.normalized_statement = %L AND r.status = ''approved''
        AND r.expires_at > clock_timestamp()
        AND NOT EXISTS (SELECT FROM backstop.request_consumptions c WHERE c.request_id = r.id)
        AND r.id <> ALL (%L::bigint[])
        AND ARRAY(SELECT (e->>''relid'')::oid FROM jsonb_array_elements(r.coverage) AS e) @> %L::oid[]
      ORDER BY r.id LIMIT 1',
    session_user, normalized_statement, used_here, coalesce(relids, '{}'));
  id text;
BEGIN
  id := backstop._committed_value(find_sql);
  RETURN id::bigint;
END
$fn$;

-- Use an approved request for the running statement: the consumption row (with the request's
-- coverage, read as committed through the loopback) exists only if the transaction commits, and
-- covers only this statement.
CREATE FUNCTION backstop._consume(request_id bigint, command_tag text, normalized_statement text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  coverage jsonb := coalesce(backstop._committed_value(
                      format('SELECT coverage::text FROM backstop.request_log WHERE id = %s', request_id))::jsonb, '[]');
BEGIN
  INSERT INTO backstop.request_consumptions (request_id, txid, pid, command_tag, normalized_statement, covered_oids,
                                             statement_started_at, coverage)
  VALUES (request_id, txid_current(), pg_backend_pid(), command_tag, normalized_statement,
          ARRAY(SELECT DISTINCT (e->>'relid')::oid FROM jsonb_array_elements(coverage) AS e),
          statement_timestamp(), coverage);
  PERFORM backstop._notify_decision(request_id, 'consumed');  -- delivered only on commit
EXCEPTION WHEN unique_violation THEN
  RAISE EXCEPTION 'Backstop request % has already been used by another transaction', request_id
    USING ERRCODE = 'BS003', HINT = 'run the statement again to file a new request';
END
$fn$;

-------------------------------------------------------------------------------------------------
-- Exact before-images: the completion under an EXCLUSIVE lock
-------------------------------------------------------------------------------------------------

-- One row per attempt to complete a request's before-images: filed (committed through the
-- loopback) by the waiting session once it holds its tables IN EXCLUSIVE MODE, answered by the
-- agent. requested -> completing -> done | failed.
CREATE TABLE backstop.image_completions (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  request_id   bigint NOT NULL,
  pid          integer NOT NULL,
  requested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  status       text NOT NULL DEFAULT 'requested' CHECK (status IN ('requested', 'completing', 'done', 'failed')),
  agent_id     text,
  started_at   timestamptz,
  finished_at  timestamptz,
  snapshot_ids text[],
  detail       jsonb,
  error        text
);
CREATE INDEX image_completions_open_idx ON backstop.image_completions (id) WHERE status IN ('requested', 'completing');
COMMENT ON TABLE backstop.image_completions IS
  'Backstop: before-images completed under the waiting statement''s EXCLUSIVE lock (writes committed during the wait included)';
REVOKE ALL ON backstop.image_completions FROM PUBLIC;
GRANT SELECT ON backstop.image_completions TO PUBLIC;

-- The tables whose before-images the agent reads (every covered table but truncated ones: those
-- are copied inside the truncating session).
CREATE FUNCTION backstop._tables_read_by_agent(coverage jsonb) RETURNS oid[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT coalesce(array_agg(DISTINCT c.oid ORDER BY c.oid), '{}')
    FROM jsonb_to_recordset(coverage) AS item(kind text, relid oid)
    JOIN pg_class c ON c.oid = item.relid
   WHERE item.kind <> 'truncate'
$fn$;

-- Why no agent is available for new work (one line), or null while one is: connected, fresh
-- and not shutting down. The common tail of the two questions below (from 0004's
-- _no_agent_reason, which is replaced to use it).
CREATE FUNCTION backstop._no_available_agent_reason() RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  disconnected text;
BEGIN
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

-- Why no agent can answer request_id, or null while one can (see 0004). Replaces
-- backstop._no_agent_reason (0004) with the same answers, its tail shared with completions.
CREATE OR REPLACE FUNCTION backstop._no_agent_reason(request_id bigint) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  request record;
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
  RETURN backstop._no_available_agent_reason();
END
$fn$;

-- Why no agent can finish completion `completion_id` (one line), or null while one can: the agent
-- completing it is still connected with a fresh heartbeat, or some agent is available (the
-- leader takes a requested completion, and takes over one whose agent is gone). Null when the
-- completion is already finished.
CREATE FUNCTION backstop._no_completer_reason(completion_id bigint) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  completion record;
BEGIN
  PERFORM pg_stat_clear_snapshot();
  SELECT c.status, c.agent_id INTO completion FROM backstop.image_completions c WHERE c.id = _no_completer_reason.completion_id;
  IF NOT FOUND OR completion.status IN ('done', 'failed') THEN
    RETURN NULL;
  END IF;
  IF completion.status = 'completing'
     AND EXISTS (SELECT FROM backstop.agents a WHERE a.agent_id = completion.agent_id AND a.connected AND a.fresh) THEN
    RETURN NULL;
  END IF;
  RETURN backstop._no_available_agent_reason();
END
$fn$;

-- Wait for the agent to finish completion `completion_id`; returns its final status ('done' or
-- 'failed'), or raises when no agent can answer any more (BS001) or the wait is cancelled.
-- Polls through the loopback (LISTEN backstop_decisions there wakes it early).
CREATE FUNCTION backstop._await_completion(completion_id bigint, request_id bigint, timeout interval) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  dblink_schema constant text := backstop._dblink_schema();
  connection_name constant text := backstop._loopback();
  deadline constant timestamptz := clock_timestamp() + timeout;
  status_sql constant text := format('SELECT status FROM backstop.image_completions WHERE id = %s', completion_id);
  last_read timestamptz;
  last_liveness timestamptz := clock_timestamp();
  woken boolean;
  status text;
  why text;
  why_before text;
BEGIN
  PERFORM backstop._loopback_exec('LISTEN backstop_decisions');
  LOOP
    EXECUTE format('SELECT count(*) > 0 FROM %I.dblink_get_notify($1)', dblink_schema) INTO woken USING connection_name;
    IF woken OR last_read IS NULL OR clock_timestamp() - last_read >= interval '100 ms' THEN
      status := backstop._loopback_value(status_sql);
      last_read := clock_timestamp();
      EXIT WHEN status IN ('done', 'failed');
    END IF;
    -- Liveness from the server itself (0004): no connected agent twice in a row (a presence
    -- session that reconnects is not a death) means nobody will complete it.
    IF clock_timestamp() - last_liveness >= interval '1 s' THEN
      last_liveness := clock_timestamp();
      why_before := why;
      why := backstop._committed_value(format('SELECT backstop._no_completer_reason(%s)', completion_id));
      IF why IS NOT NULL AND why_before IS NOT NULL THEN
        PERFORM backstop._fail_completion(completion_id, why);
        PERFORM backstop._loopback_exec('UNLISTEN backstop_decisions');
        RAISE EXCEPTION 'Backstop refused the statement: its before-image could not be completed: %', why
          USING ERRCODE = 'BS001',
                HINT = 'start the agent (backstop agent --db ...) and check SELECT * FROM backstop.agents; then run the statement again';
      END IF;
    END IF;
    IF clock_timestamp() >= deadline THEN
      PERFORM backstop._fail_completion(completion_id, format('not completed within %s (settings.wait_timeout)', backstop._describe_interval(timeout)));
      status := 'failed';
      EXIT;
    END IF;
    PERFORM pg_sleep(0.01);
  END LOOP;
  PERFORM backstop._loopback_exec('UNLISTEN backstop_decisions');
  RETURN status;
EXCEPTION WHEN query_canceled THEN
  BEGIN
    PERFORM backstop._fail_completion(completion_id, 'the waiting statement was cancelled (statement_timeout or pg_cancel_backend)');
    PERFORM backstop._loopback_exec('UNLISTEN backstop_decisions');
  EXCEPTION WHEN OTHERS THEN
    NULL;
  END;
  RAISE;
END
$fn$;

-- Give up on a completion the waiting session no longer waits for (committed at once).
CREATE FUNCTION backstop._fail_completion(completion_id bigint, reason text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  PERFORM backstop._loopback_value(format(
    'WITH failed AS (
       UPDATE backstop.image_completions SET status = ''failed'', error = %L, finished_at = clock_timestamp()
        WHERE id = %s AND status IN (''requested'', ''completing'') RETURNING id)
     SELECT count(*)::text FROM failed', reason, completion_id));
END
$fn$;

-- The agent reads these tables for a before-image; a transaction that already holds one ACCESS
-- EXCLUSIVE would wait for the agent while the agent waits for it. Refuse at once, saying what
-- cannot be done (`consequence`) and what to do instead.
CREATE FUNCTION backstop._refuse_if_held_exclusively(tag text, relids oid[], consequence text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  locked text;
BEGIN
  SELECT string_agg(l.relation::regclass::text, ', ') INTO locked
    FROM pg_locks l
   WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
     AND l.mode = 'AccessExclusiveLock' AND l.relation = ANY (relids);
  IF locked IS NOT NULL THEN
    RAISE EXCEPTION 'Backstop refused %: this transaction already locks % exclusively, so %', tag, locked, consequence
      USING ERRCODE = 'BS004',
            HINT = 'run this statement in a transaction of its own (or before other DDL on the same tables in this transaction)';
  END IF;
END
$fn$;

-- Complete the before-images of an approved request before its statement goes on: stop writers
-- on every table the agent read (LOCK ... IN EXCLUSIVE MODE: the agent can still read), file a
-- completion, and wait until the agent has stored images that hold every write committed before
-- the lock. Refuses the statement when that cannot be done. Nothing to do for TRUNCATE-only
-- requests (their images are taken inside the truncating session).
CREATE FUNCTION backstop._complete_images(request_id bigint, tag text, query text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  coverage constant jsonb := coalesce(backstop._committed_value(
    format('SELECT coverage::text FROM backstop.request_log WHERE id = %s', request_id))::jsonb, '[]');
  tables constant oid[] := backstop._tables_read_by_agent(coverage);
  wait_timeout constant interval := (backstop._settings()).wait_timeout;
  previous_lock_timeout constant text := current_setting('lock_timeout');
  relid oid;
  completion_id bigint;
  status text;
  error text;
BEGIN
  IF cardinality(tables) = 0 THEN
    RETURN;
  END IF;
  IF backstop._dblink_schema() IS NULL THEN
    RAISE EXCEPTION 'Backstop refused %: completing its before-image needs dblink (the agent must see the request while this statement waits)', tag
      USING ERRCODE = 'BS004', HINT = 'as a superuser run CREATE EXTENSION dblink SCHEMA backstop; (PostgreSQL contrib), then run the statement again';
  END IF;
  PERFORM backstop._refuse_if_held_exclusively(tag, backstop._with_descendants(tables), 'its before-image cannot be completed');
  -- Stop writers, not readers, until the statement ends. Writes committed before the lock is
  -- granted are what the completed image must hold.
  PERFORM set_config('lock_timeout', (extract(epoch FROM wait_timeout) * 1000)::bigint::text, true);
  BEGIN
    FOREACH relid IN ARRAY tables LOOP
      EXECUTE format('LOCK TABLE %s IN EXCLUSIVE MODE', relid::regclass);
    END LOOP;
  EXCEPTION WHEN lock_not_available THEN
    RAISE EXCEPTION 'Backstop refused %: another transaction kept writing to % for longer than % (settings.wait_timeout)',
        tag, relid::regclass, backstop._describe_interval(wait_timeout)
      USING ERRCODE = 'BS003', HINT = 'find it in pg_stat_activity, let it finish, then run the statement again';
  END;
  PERFORM set_config('lock_timeout', previous_lock_timeout, true);

  completion_id := backstop._committed_value(format(
    'WITH filed AS (INSERT INTO backstop.image_completions (request_id, pid) VALUES (%s, %s) RETURNING id)
     SELECT id::text FROM filed, LATERAL pg_notify(''backstop_requests'', ''completion:'' || id)',
    request_id, pg_backend_pid()))::bigint;
  status := backstop._await_completion(completion_id, request_id, wait_timeout);
  IF status IS DISTINCT FROM 'done' THEN
    error := backstop._loopback_value(format('SELECT error FROM backstop.image_completions WHERE id = %s', completion_id));
    RAISE EXCEPTION 'Backstop refused %: the before-image of request % could not be completed: %', tag, request_id, coalesce(error, 'no reason given')
      USING ERRCODE = 'BS003',
            HINT = format('nothing was changed; see SELECT * FROM backstop.image_completions WHERE request_id = %s; and SELECT * FROM backstop.agents; then run the statement again', request_id);
  END IF;
END
$fn$;

-- Get an approved request for the running statement (filed ahead, or filed now and waited for),
-- complete its before-images, and consume it for this statement; returns its id.
-- relids: the guarded tables the statement was seen to touch (kind: what it does to them).
CREATE FUNCTION backstop._obtain_approval(tag text, query text, caller_search_path text, relids oid[], agent_reads_tables boolean)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  normalized text := backstop.normalize_statement(query);
  wait_timeout interval := (backstop._settings()).wait_timeout;
  request_id bigint;
  status text;
  reason text;
BEGIN
  -- Fail-closed: no live agent, no destructive statement, whatever was approved.
  IF NOT backstop._agent_alive() THEN
    PERFORM backstop._refuse_agent_down(tag);
  END IF;

  -- Filed ahead (or approved earlier and rolled back): use it.
  request_id := backstop._find_approved_request(normalized, relids);

  IF request_id IS NULL THEN
    IF backstop._dblink_schema() IS NULL THEN
      RAISE EXCEPTION 'Backstop refused %: it needs an approved request, and without dblink it cannot file one by itself', tag
        USING ERRCODE = 'BS004',
              HINT = format('first run SELECT backstop.request(%s); then, once SELECT status FROM backstop.requests shows it approved, run the statement again',
                            backstop._dollar_quote(query));
    END IF;
    IF agent_reads_tables THEN
      PERFORM backstop._refuse_if_held_exclusively(tag, relids, 'no before-image can be taken while it waits');
    END IF;

    request_id := backstop._file_request(tag, query, caller_search_path, false, clock_timestamp() + wait_timeout);
    RAISE NOTICE 'Backstop: % is waiting for approval of request % (up to %)', tag, request_id, backstop._describe_interval(wait_timeout)
      USING HINT = CASE
                     WHEN agent_reads_tables AND (backstop._settings()).approval_mode = 'auto'
                       THEN format('the agent grants it once a before-image is stored; follow it with SELECT * FROM backstop.requests WHERE id = %s;', request_id)
                     WHEN agent_reads_tables
                       THEN format('SELECT * FROM backstop.requests WHERE id = %s; once the before-image is stored an approver runs SELECT backstop.approve(%s);', request_id, request_id)
                     WHEN (backstop._settings()).approval_mode = 'auto'
                       THEN format('the agent grants it once its checks pass; this session then copies the rows (the before-image, exported by the agent after COMMIT); follow it with SELECT * FROM backstop.requests WHERE id = %s;', request_id)
                     ELSE format('SELECT * FROM backstop.requests WHERE id = %s; an approver runs SELECT backstop.approve(%s); once approved, this session copies the rows (the before-image, exported by the agent after COMMIT)', request_id, request_id)
                   END;
    status := backstop._await_decision(request_id, wait_timeout, true);
    IF status IS DISTINCT FROM 'approved' THEN
      reason := backstop._loopback_value(format('SELECT reason FROM backstop.request_log WHERE id = %s', request_id));
      IF status = 'denied' THEN
        RAISE EXCEPTION 'Backstop request % was denied: %', request_id, coalesce(reason, 'no reason given')
          USING ERRCODE = 'BS002',
                HINT = format('see SELECT * FROM backstop.requests WHERE id = %s; fix the cause, then run the statement again', request_id);
      END IF;
      RAISE EXCEPTION 'Backstop request % was not approved (%): %', request_id, coalesce(status, 'missing'), coalesce(reason, 'no reason given')
        USING ERRCODE = 'BS003',
              HINT = format('check SELECT * FROM backstop.agents and SELECT * FROM backstop.requests WHERE id = %s, then run the statement again', request_id);
    END IF;
  END IF;

  PERFORM backstop._complete_images(request_id, tag, query);
  PERFORM backstop._consume(request_id, tag, normalized);
  PERFORM backstop._loopback_release();
  RETURN request_id;
EXCEPTION WHEN OTHERS OR query_canceled THEN
  PERFORM backstop._loopback_release();
  RAISE;
END
$fn$;

-------------------------------------------------------------------------------------------------
-- Agent API for completions
-------------------------------------------------------------------------------------------------

-- requested -> completing by this agent; also takes over a completion whose agent is no longer
-- connected (its presence session ended: see backstop.agents.connected, 0004) or that this
-- agent left.
CREATE FUNCTION backstop.agent_claim_completion(completion_id bigint, agent_id text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  UPDATE backstop.image_completions c
     SET status = 'completing', agent_id = agent_claim_completion.agent_id, started_at = clock_timestamp()
   WHERE c.id = agent_claim_completion.completion_id
     AND (c.status = 'requested'
          OR (c.status = 'completing' AND (c.agent_id = agent_claim_completion.agent_id
                                           OR NOT EXISTS (SELECT FROM backstop.agents a WHERE a.agent_id = c.agent_id AND a.connected))));
  RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION backstop.agent_claim_completion(bigint, text) IS 'Agent: take an image completion (exactly one agent completes it)';

-- The agent is done: 'done' with the snapshot ids that now cover the request (a re-capture
-- replaces the bulk image's id) and how each was completed, or 'failed' with the error. Only the
-- agent that holds the completion may finish it. NOTIFY backstop_decisions wakes the session.
CREATE FUNCTION backstop.agent_finish_completion(completion_id bigint, agent_id text, snapshot_ids text[],
                                                 detail jsonb, error text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  completion backstop.image_completions;
  new_status constant text := CASE WHEN agent_finish_completion.error IS NULL THEN 'done' ELSE 'failed' END;
BEGIN
  SELECT * INTO completion FROM backstop.image_completions c WHERE c.id = agent_finish_completion.completion_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'there is no image completion %', agent_finish_completion.completion_id USING ERRCODE = 'BS006';
  END IF;
  IF completion.status <> 'completing' OR completion.agent_id IS DISTINCT FROM agent_finish_completion.agent_id THEN
    RETURN completion.status;  -- given up by the session, or taken over by another agent
  END IF;
  UPDATE backstop.image_completions c
     SET status = new_status, finished_at = clock_timestamp(), snapshot_ids = agent_finish_completion.snapshot_ids,
         detail = agent_finish_completion.detail, error = agent_finish_completion.error
   WHERE c.id = completion.id;
  IF new_status = 'done' THEN
    UPDATE backstop.request_log r
       SET snapshot_ids = coalesce(agent_finish_completion.snapshot_ids, r.snapshot_ids),
           image_completed_at = clock_timestamp(), image_completion = agent_finish_completion.detail
     WHERE r.id = completion.request_id;
  END IF;
  PERFORM pg_notify('backstop_decisions', json_build_object('id', completion.request_id, 'completion', completion.id, 'status', new_status)::text);
  RETURN new_status;
END
$fn$;
COMMENT ON FUNCTION backstop.agent_finish_completion(bigint, text, text[], jsonb, text) IS 'Agent: an image completion is done (or failed)';

-------------------------------------------------------------------------------------------------
-- What a statement loses: lossless type changes and columns of this transaction pass
-------------------------------------------------------------------------------------------------

-- The top-level comma-separated parts of a (stripped) ALTER TABLE subcommand list: commas inside
-- parentheses (numeric(10,2)) or quoted identifiers do not split.
CREATE FUNCTION backstop._split_subcommands(list text) RETURNS SETOF text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  c text[] := string_to_array(list, NULL);
  depth integer := 0;
  quoted boolean := false;
  start integer := 1;
  part text;
BEGIN
  FOR i IN 1 .. coalesce(array_length(c, 1), 0) + 1 LOOP
    IF i > coalesce(array_length(c, 1), 0) OR (c[i] = ',' AND depth = 0 AND NOT quoted) THEN
      part := btrim(array_to_string(c[start:i - 1], ''));
      IF part <> '' THEN
        RETURN NEXT part;
      END IF;
      start := i + 1;
    ELSIF c[i] = '"' THEN
      quoted := NOT quoted;
    ELSIF NOT quoted AND c[i] = '(' THEN
      depth := depth + 1;
    ELSIF NOT quoted AND c[i] = ')' THEN
      depth := depth - 1;
    END IF;
  END LOOP;
END
$fn$;

-- An identifier as written (quoted or not) as PostgreSQL stores it.
CREATE FUNCTION backstop._identifier_value(written text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT CASE WHEN written ~ '^".*"$' THEN replace(substr(written, 2, length(written) - 2), '""', '"')
              ELSE lower(written) END
$fn$;

-- The attnum of a live column of a table, by name, or null.
CREATE FUNCTION backstop._attnum(relid oid, column_name text) RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT a.attnum::integer FROM pg_attribute a
   WHERE a.attrelid = _attnum.relid AND a.attname = column_name AND a.attnum > 0 AND NOT a.attisdropped
$fn$;

-- Was this column added by the running transaction (so dropping it loses no committed data)?
-- True when the table is new here, or when the committed catalog (read through the loopback, a
-- separate session) has the table but no live column with this attnum. Without dblink: no (pause).
CREATE FUNCTION backstop._column_added_in_this_transaction(relid oid, attnum integer) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  added boolean;
BEGIN
  IF backstop._created_in_this_transaction(relid) THEN
    RETURN true;
  END IF;
  IF backstop._dblink_schema() IS NULL THEN
    RETURN false;
  END IF;
  added := backstop._loopback_value(format(
    'SELECT (EXISTS (SELECT FROM pg_catalog.pg_class WHERE oid = %1$s)
             AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid = %1$s AND attnum = %2$s AND NOT attisdropped))::text',
    relid, attnum))::boolean;
  -- Whoever opens the loopback gives it back: no superuser connection is left in the session.
  PERFORM backstop._loopback_release();
  RETURN added;
END
$fn$;

-- Does ALTER COLUMN ... TYPE <type_text> (no USING) keep every stored value exactly? True only
-- where PostgreSQL keeps the stored bytes as they are (no rewrite): the same type with the same
-- or a wider modifier (varchar, varbit, numeric with the same scale, time/timestamp precision),
-- or a binary-coercible cast to a type without a modifier (varchar(n) -> text). Anything it is
-- unsure of counts as lossy (the statement pauses); a rewrite it did not foresee is refused by
-- guard_rewrite, so a wrong "lossless" can only refuse, never lose data.
CREATE FUNCTION backstop._type_change_is_lossless(relid oid, attnum integer, type_text text, caller_search_path text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  old_type oid;
  old_typmod integer;
  parts text[];
  base_name text;
  modifiers text[];
  new_type oid;
  new_typmod integer := -1;
  typmod_input regproc;
BEGIN
  SELECT a.atttypid, a.atttypmod INTO old_type, old_typmod
    FROM pg_attribute a WHERE a.attrelid = relid AND a.attnum = _type_change_is_lossless.attnum;
  IF old_type IS NULL OR type_text ~ '\]\s*$' THEN
    RETURN false;
  END IF;
  parts := regexp_match(btrim(type_text), '^(.*?)\s*\(([^()]*)\)\s*(.*)$');
  IF parts IS NULL THEN
    base_name := btrim(type_text);
  ELSE
    base_name := btrim(parts[1] || ' ' || parts[3]);
    modifiers := string_to_array(regexp_replace(parts[2], '\s+', '', 'g'), ',');
  END IF;
  BEGIN
    PERFORM pg_catalog.set_config('search_path', caller_search_path, true);
    new_type := pg_catalog.to_regtype(base_name);
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, backstop, pg_temp', true);
    IF new_type IS NOT NULL AND modifiers IS NOT NULL THEN
      SELECT t.typmodin INTO typmod_input FROM pg_type t WHERE t.oid = new_type;
      IF typmod_input IS NULL OR typmod_input = 0 THEN
        RETURN false;
      END IF;
      EXECUTE format('SELECT %s($1::cstring[])', typmod_input) INTO new_typmod USING modifiers;
    END IF;
  EXCEPTION WHEN OTHERS THEN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, backstop, pg_temp', true);
    RETURN false;
  END;
  IF new_type IS NULL OR (SELECT t.typtype FROM pg_type t WHERE t.oid = new_type) = 'd' THEN
    RETURN false;
  END IF;
  IF new_type = old_type THEN
    RETURN new_typmod = old_typmod
        OR (new_type IN ('varchar'::regtype, 'varbit'::regtype, 'time'::regtype, 'timetz'::regtype,
                         'timestamp'::regtype, 'timestamptz'::regtype)
            AND (new_typmod = -1 OR (old_typmod <> -1 AND new_typmod >= old_typmod)))
        OR (new_type = 'numeric'::regtype
            AND (new_typmod = -1
                 OR (old_typmod <> -1
                     AND ((new_typmod - 4) & 65535) = ((old_typmod - 4) & 65535)                      -- same scale
                     AND ((new_typmod - 4) >> 16) & 65535 >= ((old_typmod - 4) >> 16) & 65535)));   -- no less precision
  END IF;
  RETURN new_typmod = -1
     AND EXISTS (SELECT FROM pg_cast k WHERE k.castsource = old_type AND k.casttarget = new_type AND k.castmethod = 'b');
END
$fn$;

-- Does this ALTER TABLE subcommand list lose committed data of table relid? Dropping a column
-- that exists and was not added by this transaction, or a type change that is not lossless (a
-- USING clause always counts as lossy). DROP CONSTRAINT, ALTER COLUMN ... DROP DEFAULT / NOT
-- NULL / IDENTITY / EXPRESSION lose none. Replaces backstop._alter_loses_data(text) (0002).
CREATE FUNCTION backstop._alter_loses_data(relid oid, subcommands text, caller_search_path text) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  ident constant text := '("(?:[^"]|"")*"|[^\s",;()]+)';
  subcommand text;
  parts text[];
  attnum integer;
BEGIN
  FOR subcommand IN SELECT backstop._split_subcommands(subcommands) LOOP
    parts := regexp_match(subcommand, '^drop\s+(?:column\s+)?(?:if\s+exists\s+)?' || ident, 'i');
    IF parts IS NOT NULL AND subcommand !~* '^drop\s+constraint\M' THEN
      attnum := backstop._attnum(relid, backstop._identifier_value(parts[1]));
      IF attnum IS NOT NULL AND NOT backstop._column_added_in_this_transaction(relid, attnum) THEN
        RETURN true;
      END IF;
      CONTINUE;
    END IF;
    parts := regexp_match(subcommand, '^alter\s+(?:column\s+)?' || ident || '\s+(?:set\s+data\s+)?type\s+(.*)$', 'i');
    IF parts IS NOT NULL THEN
      attnum := backstop._attnum(relid, backstop._identifier_value(parts[1]));
      CONTINUE WHEN attnum IS NULL OR backstop._column_added_in_this_transaction(relid, attnum);
      IF parts[2] ~* '\musing\M'
         OR NOT backstop._type_change_is_lossless(relid, attnum, regexp_replace(parts[2], '\s+collate\s+.*$', '', 'i'), caller_search_path) THEN
        RETURN true;
      END IF;
    END IF;
  END LOOP;
  RETURN false;
END
$fn$;

-- The guarded tables a statement of this command tag would destroy data in, as far as its text
-- tells: empty means "no pause". Temporary and missing tables, tables this transaction created
-- itself, lossless type changes and columns this transaction added are left out.
-- Replaces backstop._pause_targets (0002): ALTER TABLE is now read subcommand by subcommand.
CREATE OR REPLACE FUNCTION backstop._pause_targets(tag text, query text, caller_search_path text) RETURNS oid[]
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  ident constant text := '(?:"(?:[^"]|"")*"|[^\s".,;()*]+)';
  statement text;
  names text;
  name text;
  parts text[];
  relid regclass;
  schema_oid oid;
  result oid[] := '{}';
BEGIN
  -- Cheap exit for the common ALTER TABLE: without the words DROP or TYPE nothing is lost.
  IF tag = 'ALTER TABLE' AND query !~* '\m(drop|type)\M' THEN
    RETURN result;
  END IF;
  FOR statement IN SELECT backstop._split_statements(backstop._strip_sql(query)) LOOP
    IF tag = 'DROP TABLE' AND statement ~* '^drop\s+table\M' THEN
      names := regexp_replace(regexp_replace(statement, '^drop\s+table\s+(if\s+exists\s+)?', '', 'i'),
                              '\s+(cascade|restrict)\s*$', '', 'i');
      FOR name IN SELECT backstop._split_names(names) LOOP
        relid := backstop._resolve_table(name, caller_search_path);
        IF backstop._needs_approval(relid) THEN
          result := result || relid::oid;
        END IF;
      END LOOP;
    ELSIF tag = 'DROP SCHEMA' AND statement ~* '^drop\s+schema\M' AND statement ~* '\mcascade\s*$' THEN
      -- Without CASCADE, PostgreSQL itself refuses to drop a schema that holds tables.
      names := regexp_replace(regexp_replace(statement, '^drop\s+schema\s+(if\s+exists\s+)?', '', 'i'),
                              '\s+cascade\s*$', '', 'i');
      FOR name IN SELECT backstop._split_names(names) LOOP
        BEGIN
          schema_oid := pg_catalog.to_regnamespace(name);
        EXCEPTION WHEN OTHERS THEN
          schema_oid := NULL;
        END;
        result := result || coalesce(ARRAY(SELECT c.oid FROM pg_class c
                                             WHERE c.relnamespace = schema_oid
                                               AND backstop._needs_approval(c.oid)), '{}');
      END LOOP;
    ELSIF tag = 'ALTER TABLE' AND statement ~* '^alter\s+table\M' THEN
      parts := regexp_match(statement,
        '^alter\s+table\s+(?:if\s+exists\s+)?(?:only\s+)?(' || ident || '(?:\s*\.\s*' || ident || ')*)\s*\*?(.*)$', 'i');
      IF parts IS NOT NULL THEN
        relid := backstop._resolve_table(parts[1], caller_search_path);
        IF backstop._needs_approval(relid) AND backstop._alter_loses_data(relid, parts[2], caller_search_path) THEN
          result := result || relid::oid;
        END IF;
      END IF;
    END IF;
  END LOOP;
  RETURN result;
END
$fn$;

-------------------------------------------------------------------------------------------------
-- The pause and the authoritative checks, scoped to the statement
-------------------------------------------------------------------------------------------------

-- ddl_command_start: pause a DROP TABLE / DROP SCHEMA / ALTER TABLE that loses data until it is
-- approved and its before-image complete. Replaces backstop._guard_statement (0003).
CREATE OR REPLACE FUNCTION backstop._guard_statement(tag text, caller_search_path text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  query text := coalesce(current_query(), '');  -- null in background workers
  relids oid[];
BEGIN
  -- Backstop attaching its own TRUNCATE trigger (ALTER TABLE ... ENABLE ALWAYS TRIGGER).
  IF backstop._attaching() THEN
    RETURN;
  END IF;
  relids := backstop._pause_targets(tag, query, caller_search_path);
  -- Nothing lost, or an earlier statement of this client string already got the approval.
  IF cardinality(relids) > 0 AND NOT backstop._statement_covers(relids) THEN
    PERFORM backstop._obtain_approval(tag, query, caller_search_path, relids, true);
  END IF;
END
$fn$;

-- The statement is about to be refused although it consumed approvals: withdraw them (through
-- the loopback, so it sticks after the rollback), otherwise re-running the same statement would
-- pick the same insufficient approval up again until it expires. Only this statement's.
-- Replaces backstop._withdraw_consumed_approvals (0002).
CREATE OR REPLACE FUNCTION backstop._withdraw_consumed_approvals(reason text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  consumed bigint;
BEGIN
  IF backstop._dblink_schema() IS NULL THEN
    RETURN;
  END IF;
  FOR consumed IN SELECT c.request_id FROM backstop.request_consumptions c
                   WHERE c.txid = txid_current_if_assigned() AND c.statement_started_at = statement_timestamp() LOOP
    PERFORM backstop._loopback_value(format(
      'WITH withdrawn AS (
         UPDATE backstop.request_log SET status = ''expired'', reason = %L, decided_at = clock_timestamp()
          WHERE id = %s AND status = ''approved'' RETURNING id)
       SELECT count(*)::text FROM withdrawn, LATERAL backstop._notify_decision(id, ''expired'')',
      reason, consumed));
  END LOOP;
  PERFORM backstop._loopback_release();
END
$fn$;

-- The guarded tables whose columns store a value of this composite type (pg_class oid of the
-- type's relation), directly or inside an array, domain, range, multirange or the row type of
-- another relation (a composite type, a table, a view): the columns
-- whose stored values ALTER TYPE ... DROP ATTRIBUTE would change. Tables this transaction
-- created are left out.
CREATE FUNCTION backstop._columns_storing_composite(type_relid oid) RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  WITH RECURSIVE types(typid) AS (
    SELECT t.oid FROM pg_type t WHERE t.typrelid = type_relid
    UNION
    SELECT u.oid FROM types
      JOIN pg_type u ON u.typelem = types.typid AND u.typcategory = 'A'
                     OR u.typbasetype = types.typid
                     OR u.oid IN (SELECT r.rngtypid FROM pg_range r WHERE r.rngsubtype = types.typid)
                     OR u.oid IN (SELECT r.rngmultitypid FROM pg_range r WHERE r.rngtypid = types.typid)
                     OR u.typrelid IN (SELECT a.attrelid FROM pg_attribute a
                                        WHERE a.atttypid = types.typid AND a.attnum > 0 AND NOT a.attisdropped)
  )
  SELECT array_agg(format('%s.%I', a.attrelid::regclass, a.attname) ORDER BY a.attrelid, a.attnum)
    FROM pg_attribute a JOIN types ON a.atttypid = types.typid
   WHERE a.attnum > 0 AND NOT a.attisdropped AND backstop._needs_approval(a.attrelid)
$fn$;

-- sql_drop, authoritative: every dropped permanent table, table column and stored composite
-- attribute must be covered by a request consumed by this very statement, with the right kind
-- (an approved DROP COLUMN never covers a DROP TABLE or TRUNCATE). Tables and columns created
-- by this transaction pass. Non-superusers may not drop Backstop's TRUNCATE triggers.
-- Replaces backstop.guard_dropped_objects (0002).
CREATE OR REPLACE FUNCTION backstop.guard_dropped_objects() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  dropped record;
  stored_in text[];
  anything_consumed boolean;
BEGIN
  FOR dropped IN
    SELECT d.objid, d.objsubid, d.object_type, d.object_identity, d.original
      FROM pg_event_trigger_dropped_objects() d
     WHERE (d.object_type IN ('table', 'table column')
            AND NOT d.is_temporary
            AND d.schema_name NOT IN ('pg_toast', 'backstop', 'backstop_images'))
        OR d.object_type = 'composite type column'
        OR (d.object_type = 'trigger' AND d.original AND d.object_identity LIKE 'backstop\_truncate\_guard on %')
  LOOP
    IF dropped.object_type = 'trigger' THEN
      IF NOT backstop._is_superuser() THEN
        RAISE EXCEPTION 'Backstop refused %: % is Backstop''s TRUNCATE guard', tg_tag, dropped.object_identity
          USING ERRCODE = 'BS007', HINT = 'only a superuser can remove it (backstop uninstall removes Backstop entirely)';
      END IF;
      CONTINUE;
    END IF;
    IF dropped.object_type = 'composite type column' THEN
      stored_in := backstop._columns_storing_composite(dropped.objid);
      IF stored_in IS NOT NULL THEN
        RAISE EXCEPTION 'Backstop refused %: dropping % would remove that field from every value stored in %',
            tg_tag, dropped.object_identity, array_to_string(stored_in, ', ')
          USING ERRCODE = 'BS005',
                HINT = 'first change those columns to a type without it (ALTER TABLE ... ALTER COLUMN ... TYPE ... USING ..., which pauses for approval and keeps a before-image), then drop the attribute';
      END IF;
      CONTINUE;
    END IF;
    IF backstop._created_in_this_transaction(dropped.objid) THEN
      CONTINUE;
    END IF;
    IF dropped.object_type = 'table' AND backstop._is_covered('drop table', dropped.objid) THEN
      CONTINUE;
    END IF;
    IF dropped.object_type = 'table column'
       AND (backstop._is_covered('drop column', dropped.objid, dropped.objsubid)
            OR backstop._column_added_in_this_transaction(dropped.objid, dropped.objsubid)) THEN
      CONTINUE;
    END IF;
    anything_consumed := EXISTS (SELECT FROM backstop.request_consumptions c
                                  WHERE c.txid = txid_current_if_assigned() AND c.statement_started_at = statement_timestamp());
    PERFORM backstop._withdraw_consumed_approvals(format('the statement also dropped %s %s, which the approval does not cover', dropped.object_type, dropped.object_identity));
    RAISE EXCEPTION 'Backstop refused %: % % would be dropped without an approved request covering it',
        tg_tag, dropped.object_type, dropped.object_identity
      USING ERRCODE = 'BS005',
            HINT = CASE WHEN NOT anything_consumed
                        THEN 'run the statement as a single top-level statement so Backstop can pause it for approval, or file it first with SELECT backstop.request($$...$$)'
                        ELSE 'the approved request does not cover it (a CASCADE reaching further?): name every table in the statement and run it again' END;
  END LOOP;
END
$fn$;

-- The columns of relid whose type or modifier differs from the committed catalog (read through
-- the loopback): what this statement, or an earlier one of this transaction, retyped. Columns
-- the transaction added are not among them. Null without dblink (nothing can be compared).
CREATE FUNCTION backstop._retyped_columns(relid oid) RETURNS integer[]
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  committed jsonb;
BEGIN
  IF backstop._dblink_schema() IS NULL THEN
    RETURN NULL;
  END IF;
  committed := backstop._loopback_value(format(
    'SELECT coalesce(jsonb_agg(jsonb_build_array(attnum, atttypid, atttypmod)), ''[]'')::text
       FROM pg_catalog.pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped', relid))::jsonb;
  PERFORM backstop._loopback_release();
  RETURN ARRAY(SELECT a.attnum::integer
                 FROM pg_attribute a JOIN jsonb_array_elements(committed) AS c(col) ON (c.col->>0)::integer = a.attnum
                WHERE a.attrelid = _retyped_columns.relid AND NOT a.attisdropped
                  AND ((c.col->>1)::oid <> a.atttypid OR (c.col->>2)::integer <> a.atttypmod)
                ORDER BY a.attnum);
END
$fn$;

-- table_rewrite, authoritative: a column type change that rewrites a table must be covered by an
-- ALTER COLUMN TYPE approval consumed by this very statement, and every column whose type now
-- differs from the committed one by an item for that column (an approved change of one column
-- never covers another's, e.g. by a function in the same string). Rewrites for SET LOGGED /
-- UNLOGGED, volatile defaults or access methods keep the data and pass.
-- Replaces backstop.guard_rewrite (0002).
CREATE OR REPLACE FUNCTION backstop.guard_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  relid oid := pg_event_trigger_table_rewrite_oid();
  column_rewrite constant integer := 4;  -- AT_REWRITE_COLUMN_REWRITE
  uncovered text;
BEGIN
  IF pg_event_trigger_table_rewrite_reason() & column_rewrite = 0 OR NOT backstop._needs_approval(relid) THEN
    RETURN;
  END IF;
  IF backstop._is_covered('alter column type', relid) THEN
    SELECT string_agg(quote_ident(a.attname), ', ') INTO uncovered
      FROM unnest(coalesce(backstop._retyped_columns(relid), '{}')) AS r(attnum)
      JOIN pg_attribute a ON a.attrelid = relid AND a.attnum = r.attnum
     WHERE NOT backstop._is_covered('alter column type', relid, r.attnum, false);
  END IF;
  IF NOT backstop._is_covered('alter column type', relid) OR uncovered IS NOT NULL THEN
    PERFORM backstop._withdraw_consumed_approvals(format('the statement also rewrote %s, which the approval does not cover', relid::regclass));
    RAISE EXCEPTION 'Backstop refused %: changing % rewrites %, and no approved request covers it',
        tg_tag, coalesce('the type of column(s) ' || uncovered, 'a column type'), relid::regclass
      USING ERRCODE = 'BS005',
            HINT = 'run the ALTER TABLE as a single top-level statement naming every column it changes so Backstop can pause it for approval, or file it first with SELECT backstop.request($$...$$)';
  END IF;
END
$fn$;

-- BEFORE TRUNCATE, authoritative: the table must be covered by a TRUNCATE approval consumed by
-- this very statement (the agent resolved which tables the approved statement empties, CASCADE
-- and partitions included); otherwise file one and wait (the agent does not read the locked
-- table). Then copy its rows inside this transaction. Replaces backstop._guard_truncate (0002).
CREATE OR REPLACE FUNCTION backstop._guard_truncate(relid oid, caller_search_path text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  -- No client text in background workers (e.g. a logical replication apply worker).
  query text := coalesce(current_query(), format('TRUNCATE %s -- issued by a background process', relid::regclass));
  covering bigint;
BEGIN
  IF NOT backstop._needs_approval(relid) THEN
    RETURN;
  END IF;
  -- The copy is read with this transaction's snapshot. Under REPEATABLE READ / SERIALIZABLE that
  -- snapshot predates the TRUNCATE's lock: rows other sessions committed since would be emptied
  -- without being in the image.
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'Backstop refused TRUNCATE of %: in a % transaction its before-image would miss rows committed after the transaction began',
        relid::regclass, upper(current_setting('transaction_isolation'))
      USING ERRCODE = 'BS004',
            HINT = 'run the TRUNCATE in a READ COMMITTED transaction (the default), then it pauses for approval as usual';
  END IF;
  covering := backstop._covering_request('truncate', relid);
  IF covering IS NULL THEN
    PERFORM backstop._obtain_approval('TRUNCATE TABLE', query, caller_search_path, ARRAY[relid], false);
    covering := backstop._covering_request('truncate', relid);
  END IF;
  IF covering IS NULL THEN
    RAISE EXCEPTION 'Backstop refused TRUNCATE: the approved request does not cover truncating %', relid::regclass
      USING ERRCODE = 'BS005',
            HINT = 'name every table to empty in the TRUNCATE statement itself (CASCADE included), and run it as a top-level statement';
  END IF;
  PERFORM backstop._take_truncate_image(covering, relid);
END
$fn$;

-------------------------------------------------------------------------------------------------
-- New tables get the TRUNCATE guard, however they are created
-------------------------------------------------------------------------------------------------

-- ddl_command_end: new tables get the TRUNCATE guard (also those of CREATE SCHEMA ... CREATE
-- TABLE and of extension scripts) and are remembered as created by this transaction; ALTER
-- TABLE / CREATE TRIGGER / ALTER TRIGGER must leave it as installed.
-- Replaces backstop.guard_new_tables (0003).
CREATE OR REPLACE FUNCTION backstop.guard_new_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  relid oid;
  created_any boolean := false;
  replaced text;
BEGIN
  -- The CREATE TRIGGER and ALTER TABLE that _attach_truncate_guard runs put the guard in place:
  -- nothing to check about them.
  IF tg_tag IN ('CREATE TRIGGER', 'ALTER TABLE') AND backstop._attaching() THEN
    RETURN;
  END IF;
  IF tg_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'CREATE SCHEMA', 'CREATE EXTENSION') THEN
    FOR relid IN
      SELECT DISTINCT d.objid FROM pg_event_trigger_ddl_commands() d
       WHERE d.classid = 'pg_class'::regclass AND d.object_type = 'table'
    LOOP
      PERFORM backstop._attach_truncate_guard(relid);
      IF backstop._is_guarded_table(relid) THEN
        INSERT INTO backstop.created_tables (txid, relid) VALUES (txid_current(), relid) ON CONFLICT DO NOTHING;
        created_any := true;
      END IF;
    END LOOP;
  ELSIF tg_tag = 'ALTER TABLE' THEN
    PERFORM backstop._keep_truncate_guards(tg_tag, ARRAY(
      SELECT DISTINCT d.objid FROM pg_event_trigger_ddl_commands() d
       WHERE d.classid = 'pg_class'::regclass AND d.object_type IN ('table', 'table column')));
  ELSIF tg_tag = 'ALTER TRIGGER' THEN
    PERFORM backstop._keep_truncate_guards(tg_tag, ARRAY(
      SELECT t.tgrelid FROM pg_event_trigger_ddl_commands() d JOIN pg_trigger t ON t.oid = d.objid
       WHERE d.classid = 'pg_trigger'::regclass));
  ELSIF tg_tag = 'CREATE TRIGGER' THEN
    -- (A freshly attached guard is not ENABLE ALWAYS yet here; only a replacement is refused.)
    SELECT string_agg(t.tgrelid::regclass::text, ', ') INTO replaced
      FROM pg_event_trigger_ddl_commands() d JOIN pg_trigger t ON t.oid = d.objid
     WHERE d.classid = 'pg_trigger'::regclass AND t.tgname = 'backstop_truncate_guard'
       AND t.tgfoid <> 'backstop.guard_truncate()'::regprocedure;
    IF replaced IS NOT NULL AND NOT backstop._is_superuser() THEN
      RAISE EXCEPTION 'Backstop refused CREATE TRIGGER: it would replace the TRUNCATE guard on %', replaced
        USING ERRCODE = 'BS007', HINT = 'only a superuser can replace Backstop''s triggers; choose another trigger name';
    END IF;
  END IF;
  -- Clear rows of finished transactions (never blocking, and only where it cannot raise a
  -- serialization error).
  IF created_any AND current_setting('transaction_isolation') = 'read committed' THEN
    DELETE FROM backstop.created_tables t
     WHERE t.ctid = ANY (ARRAY(SELECT g.ctid FROM backstop.created_tables g WHERE g.txid <> txid_current()
                                LIMIT 100 FOR UPDATE SKIP LOCKED));
  END IF;
END
$fn$;

DROP EVENT TRIGGER backstop_guard_new_tables;
CREATE EVENT TRIGGER backstop_guard_new_tables ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'CREATE SCHEMA', 'CREATE EXTENSION',
               'ALTER TABLE', 'CREATE TRIGGER', 'ALTER TRIGGER')
  EXECUTE FUNCTION backstop.guard_new_tables();
ALTER EVENT TRIGGER backstop_guard_new_tables ENABLE ALWAYS;

-- Tables that slipped past the guard before this version (CREATE SCHEMA ... CREATE TABLE) get it.
DO $attach$
DECLARE
  relid oid;
BEGIN
  FOR relid IN SELECT c.oid FROM pg_class c WHERE c.relkind IN ('r', 'p') ORDER BY c.oid LOOP
    PERFORM backstop._attach_truncate_guard(relid);
  END LOOP;
END
$attach$;

-------------------------------------------------------------------------------------------------
-- The view a DBA reads, and what is gone
-------------------------------------------------------------------------------------------------

-- Adds what a request covers and how its before-images were completed. Replaces backstop.requests (0001).
CREATE OR REPLACE VIEW backstop.requests AS
SELECT r.id, r.created_at, r.requester, r.requester_pid, r.command_tag, r.statement, r.search_path,
       r.targets, r.target_oids,
       CASE WHEN c.request_id IS NOT NULL THEN 'consumed' ELSE r.status END AS status,
       r.reason, r.agent_id, r.approved_by, r.approved_at, r.approval_note, r.decided_by,
       r.decided_at, r.expires_at, r.snapshot_ids, c.consumed_at, r.filed_ahead,
       r.coverage, r.image_completed_at, r.image_completion
  FROM backstop.request_log r
  LEFT JOIN backstop.request_consumptions c ON c.request_id = r.id;

DROP FUNCTION backstop._obtain_approval(text, text, text, oid[], oid[], boolean);
DROP FUNCTION backstop._consume(bigint, text, text, oid[]);
DROP FUNCTION backstop._covered_oids();
DROP FUNCTION backstop._consumed_for_statement(text);
DROP FUNCTION backstop._find_approved_request(text);
DROP FUNCTION backstop._alter_loses_data(text);

-- New functions are executable by PUBLIC by default: none of these is for everyone.
REVOKE ALL ON FUNCTION backstop._is_coverage_item(jsonb), backstop._consumed_items(boolean), backstop._refuse_if_held_exclusively(text, oid[], text), backstop._no_completer_reason(bigint), backstop._no_available_agent_reason(), backstop.agent_set_coverage(bigint, jsonb),
                       backstop._is_covered(text, oid, integer, boolean), backstop._statement_covers(oid[]),
                       backstop._covering_request(text, oid), backstop._find_approved_request(text, oid[]),
                       backstop._consume(bigint, text, text), backstop._tables_read_by_agent(jsonb),
                       backstop._await_completion(bigint, bigint, interval), backstop._fail_completion(bigint, text),
                       backstop._complete_images(bigint, text, text),
                       backstop._obtain_approval(text, text, text, oid[], boolean),
                       backstop.agent_claim_completion(bigint, text),
                       backstop.agent_finish_completion(bigint, text, text[], jsonb, text),
                       backstop._split_subcommands(text), backstop._identifier_value(text), backstop._attnum(oid, text),
                       backstop._column_added_in_this_transaction(oid, integer),
                       backstop._type_change_is_lossless(oid, integer, text, text),
                       backstop._alter_loses_data(oid, text, text), backstop._columns_storing_composite(oid), backstop._retyped_columns(oid)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION backstop.agent_set_coverage(bigint, jsonb),
                          backstop.agent_claim_completion(bigint, text),
                          backstop.agent_finish_completion(bigint, text, text[], jsonb, text)
   TO backstop_agent;

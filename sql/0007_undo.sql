-- Backstop 0007: undo and restore from psql.
--
--   SELECT backstop.undo(42);                               -- reverse what request 42 destroyed
--   SELECT backstop.restore('<snapshot id>', 'x');          -- restore any verified snapshot
--   SELECT * FROM backstop.restores;                        -- every undo and restore
--
-- Stage as the agent, adopt as the caller. The agent (a plain role that may read storage) builds
-- everything in a private schema backstop_restore_<id>_<random>: the tables loaded from verified
-- snapshots, their indexes, constraints, grants, comments, triggers, policies, the views the
-- CASCADE took, and, for a DROP SCHEMA, the types. It commits that in one transaction and says
-- 'staged'. The caller's own statement then moves the staged objects into place and gives them
-- their owners (backstop._adopt_staged), and does the rest (put a column back, copy rows into a
-- truncated table, re-add foreign keys of other tables) with the caller's own privileges.
--
-- Why that is safe (docs/guard.md, "Who may undo"):
--   * only superusers and members of backstop_approver may ask;
--   * the caller's session runs no SQL text the agent wrote: identifiers come through %I, values
--     through %L, types from the staged table's catalog (format_type), foreign key actions only
--     when they match the grammar;
--   * the one privileged step (moving a staged object and giving it its owner) runs only in the
--     transaction that asked, and checks first that the caller could do the same by hand (CREATE
--     on the schema, able to become the owner), that tables go only where the request's were,
--     that what is staged is only tables, views, sequences and types, refers to nothing the
--     agent's roles own, calls only the functions the dropped objects called (recorded by the
--     guard when the statement ran) or inert built-ins, and that staged views read nothing the
--     agent could not: the agent cannot plant code that would later run as somebody else;
--   * nothing is overwritten: a name taken meanwhile gets the object beside it under another
--     name, and rows written since the statement are never replaced.
-- Anything that fails rolls the caller's statement back (nothing half-restored) and is recorded
-- as failed through the loopback; the agent drops the staging schema of failed and abandoned
-- restores.
--
-- Replaced here: backstop._is_guarded_table (0002) and backstop.guard_dropped_objects (0006):
-- staging schemas are Backstop's own; backstop._consumed_items (0006): an undo may rewrite the
-- column it changes back; backstop._consume (0006): it records the functions the covered tables'
-- definitions call. Added: request_consumptions.called_functions.

-------------------------------------------------------------------------------------------------
-- The restore log
-------------------------------------------------------------------------------------------------

-- One row per undo or restore asked for from psql. Filed through the loopback (committed at
-- once, so a failure stays on record after the caller's statement rolls back).
-- pending -> staging (an agent builds it) -> staged -> done | failed.
CREATE TABLE backstop.restore_log (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind           text NOT NULL CHECK (kind IN ('undo', 'restore')),
  request_id     bigint,
  snapshot_id    text,
  into_schema    text,
  into_table     text,
  requested_by   text NOT NULL,
  requester_pid  integer NOT NULL,
  -- The asking transaction (its start): adopting and finishing happen in it, and only in it.
  requester_xact timestamptz NOT NULL,
  -- The transaction that adopted what was staged (set by _adopt_staged; _finish_restore needs it).
  adopted_txid   bigint,
  requested_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
  status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'staging', 'staged', 'done', 'failed')),
  agent_id       text,
  agent_role     text,
  staging_schema text,
  -- The staging schema as created by agent_claim_restore: only that very schema is ever dropped.
  staging_oid    oid,
  -- What the agent staged (see backstop.agent_staged): replayed only through the checks below.
  staged         jsonb,
  rows_total     bigint,
  rows_loaded    bigint,
  verified_by    text,
  summary        text,
  error          text,
  hint           text,
  started_at     timestamptz,
  staged_at      timestamptz,
  finished_at    timestamptz,
  -- When the agent dropped the staging schema (failed or abandoned restores).
  discarded_at   timestamptz,
  CHECK ((kind = 'undo') = (request_id IS NOT NULL)),
  CHECK ((kind = 'restore') = (snapshot_id IS NOT NULL))
);
CREATE INDEX restore_log_open_idx ON backstop.restore_log (id) WHERE status IN ('pending', 'staging', 'staged');
CREATE INDEX restore_log_staging_idx ON backstop.restore_log (staging_schema) WHERE staging_schema IS NOT NULL;
CREATE INDEX restore_log_request_idx ON backstop.restore_log (request_id) WHERE request_id IS NOT NULL;
-- One undo of a request at a time, and none after it is done: two sessions asking at once would
-- otherwise both pass the check in _file_restore and restore the same rows twice.
CREATE UNIQUE INDEX restore_log_one_undo_idx ON backstop.restore_log (request_id) WHERE status <> 'failed';
COMMENT ON TABLE backstop.restore_log IS 'Backstop undos and restores asked for from psql (base table); read backstop.restores';

CREATE VIEW backstop.restores AS
SELECT l.id, l.kind, l.request_id, l.snapshot_id,
       CASE WHEN l.into_table IS NOT NULL THEN format('%I.%I', l.into_schema, l.into_table) END AS into_table,
       l.requested_by, l.requested_at, l.status, l.rows_total AS rows, l.rows_loaded, l.verified_by,
       l.summary, l.error, l.hint, l.agent_id, l.staged_at, l.finished_at,
       coalesce(l.finished_at, clock_timestamp()) - l.requested_at AS duration
  FROM backstop.restore_log l;
COMMENT ON VIEW backstop.restores IS 'Backstop undos and restores: who asked, what, when, status, rows, verification, error';

-- Is this schema, now, where a restore is being staged (or was, and is not yet discarded)? Only
-- the agent creates objects there. Known by the restore log, never by the name alone: a schema
-- someone else calls backstop_restore_9 is guarded like any other, and a schema an undo of DROP
-- SCHEMA staged under its own name is an ordinary schema again once the undo is done.
CREATE FUNCTION backstop._is_staging_schema(schema_name text) RETURNS boolean
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, backstop, pg_temp
AS $$
  SELECT EXISTS (SELECT FROM backstop.restore_log l
                  WHERE l.staging_schema = schema_name AND l.status <> 'done' AND l.discarded_at IS NULL)
$$;

-- Tables staged for a restore are Backstop's own copies of snapshots: no approval to drop them,
-- no TRUNCATE guard until they are moved into place. Replaces backstop._is_guarded_table (0002).
CREATE OR REPLACE FUNCTION backstop._is_guarded_table(relid oid) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT coalesce((
    SELECT c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'backstop', 'backstop_images')
           AND NOT backstop._is_staging_schema(n.nspname)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = relid), false)
$fn$;

-- sql_drop: tables in staging schemas are Backstop's copies of snapshots, dropped with their
-- schema when an undo is done or given up; nothing else changes. Replaces
-- backstop.guard_dropped_objects (0006).
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
            AND d.schema_name NOT IN ('pg_toast', 'backstop', 'backstop_images')
            AND NOT backstop._is_staging_schema(d.schema_name))
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

-- Is `restore` the one this very session and transaction asked for, and is still running? Only
-- there may its staging be adopted and finished. (Once that transaction ends without finishing,
-- the agent discards the staging: see agent_discard_stagings.)
CREATE FUNCTION backstop._is_callers_restore(restore backstop.restore_log) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT restore.requested_by = session_user AND restore.requester_pid = pg_backend_pid()
     AND restore.requester_xact = transaction_timestamp()
$fn$;

-------------------------------------------------------------------------------------------------
-- The functions a table's definitions call, recorded when it is dropped
-------------------------------------------------------------------------------------------------
-- A staged object may call only functions the dropped objects themselves called (recorded by the
-- guard, in the dropping transaction, from the catalog), or built-in ones that cannot act
-- (immutable, or a few that only read the clock or a sequence). An agent's role cannot smuggle
-- in a default, check, index expression, trigger, policy or view that runs SQL (query_to_xml,
-- dblink_exec, ...) as whoever later touches the table.

-- The functions named in a stored expression tree (pg_node_tree): function calls, operators,
-- aggregates and window functions.
CREATE FUNCTION backstop._functions_in(tree text) RETURNS oid[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT coalesce(array_agg(DISTINCT m[2]::oid) FILTER (WHERE m[2] <> '0'), '{}')
    FROM regexp_matches(coalesce(tree, ''), ':(funcid|opfuncid|aggfnoid|winfnoid) (\d+)', 'g') AS m
$fn$;

-- The functions the definitions of these relations call: column defaults and generated columns,
-- constraints, the domains of their columns, index expressions and predicates, triggers,
-- policies, rules (a view's query).
CREATE FUNCTION backstop._functions_called_by(relids oid[]) RETURNS oid[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT coalesce(array_agg(DISTINCT f), '{}') FROM (
    SELECT unnest(backstop._functions_in(d.adbin::text)) FROM pg_attrdef d WHERE d.adrelid = ANY (relids)
    UNION ALL SELECT unnest(backstop._functions_in(k.conbin::text)) FROM pg_constraint k WHERE k.conrelid = ANY (relids)
    UNION ALL SELECT unnest(backstop._functions_in(k.conbin::text)) FROM pg_constraint k
               WHERE k.contypid IN (SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid = ANY (relids) AND a.attnum > 0)
    UNION ALL SELECT unnest(backstop._functions_in(i.indexprs::text) || backstop._functions_in(i.indpred::text))
                FROM pg_index i WHERE i.indrelid = ANY (relids)
    UNION ALL SELECT t.tgfoid FROM pg_trigger t WHERE t.tgrelid = ANY (relids)
    UNION ALL SELECT unnest(backstop._functions_in(t.tgqual::text)) FROM pg_trigger t WHERE t.tgrelid = ANY (relids)
    UNION ALL SELECT unnest(backstop._functions_in(p.polqual::text) || backstop._functions_in(p.polwithcheck::text))
                FROM pg_policy p WHERE p.polrelid = ANY (relids)
    UNION ALL SELECT unnest(backstop._functions_in(r.ev_action::text) || backstop._functions_in(r.ev_qual::text))
                FROM pg_rewrite r WHERE r.ev_class = ANY (relids)
  ) AS called(f)
$fn$;

-- A table, its partitions and children, and the views and materialized views built on them
-- (through other views too): what a DROP ... CASCADE takes with it.
CREATE FUNCTION backstop._relations_with_dependents(relids oid[]) RETURNS oid[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  WITH RECURSIVE rels(oid) AS (
    SELECT unnest(relids)
    UNION
    SELECT next.oid FROM rels, LATERAL (
      SELECT i.inhrelid AS oid FROM pg_inherits i WHERE i.inhparent = rels.oid
      UNION ALL
      SELECT r.ev_class FROM pg_depend d JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
       WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = rels.oid AND r.ev_class <> rels.oid) AS next)
  SELECT coalesce(array_agg(oid), '{}') FROM rels
$fn$;

-- Built-in functions any staged definition may call: immutable ones (no side effects, read
-- nothing) and those defaults commonly use that only read the clock or a sequence.
CREATE FUNCTION backstop._is_inert_builtin(fn oid) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT coalesce((SELECT p.oid < 16384 AND p.pronamespace = 'pg_catalog'::regnamespace AND NOT p.prosecdef
                          AND (p.provolatile = 'i'
                               OR p.proname IN ('nextval', 'currval', 'now', 'clock_timestamp', 'statement_timestamp',
                                                'transaction_timestamp', 'timeofday', 'gen_random_uuid', 'random'))
                     FROM pg_proc p WHERE p.oid = fn), false)
$fn$;

ALTER TABLE backstop.request_consumptions ADD COLUMN called_functions oid[];
COMMENT ON COLUMN backstop.request_consumptions.called_functions IS
  'the functions the definitions of the covered tables (and what a CASCADE takes with them) called when the statement ran: what an undo may put back';

-- Records, with the consumption, the functions the covered tables' definitions call (see above).
-- Replaces backstop._consume (0006).
CREATE OR REPLACE FUNCTION backstop._consume(request_id bigint, command_tag text, normalized_statement text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  coverage jsonb := coalesce(backstop._committed_value(
                      format('SELECT coverage::text FROM backstop.request_log WHERE id = %s', request_id))::jsonb, '[]');
  covered oid[] := ARRAY(SELECT DISTINCT (e->>'relid')::oid FROM jsonb_array_elements(coverage) AS e);
BEGIN
  INSERT INTO backstop.request_consumptions (request_id, txid, pid, command_tag, normalized_statement, covered_oids,
                                             statement_started_at, coverage, called_functions)
  VALUES (request_id, txid_current(), pg_backend_pid(), command_tag, normalized_statement, covered,
          statement_timestamp(), coverage,
          backstop._functions_called_by(backstop._relations_with_dependents(covered)));
  PERFORM backstop._notify_decision(request_id, 'consumed');  -- delivered only on commit
EXCEPTION WHEN unique_violation THEN
  RAISE EXCEPTION 'Backstop request % has already been used by another transaction', request_id
    USING ERRCODE = 'BS003', HINT = 'run the statement again to file a new request';
END
$fn$;

-------------------------------------------------------------------------------------------------
-- Asking: who may, and what can be undone
-------------------------------------------------------------------------------------------------

-- Refuse (BS006) unless session_user may undo and restore: superusers and backstop_approver.
CREATE FUNCTION backstop._refuse_unless_restorer(what text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  IF NOT (backstop._is_superuser() OR backstop._is_approver()) THEN
    RAISE EXCEPTION 'role % may not %', session_user, what
      USING ERRCODE = 'BS006',
            HINT = 'ask a member of backstop_approver, or have a superuser run GRANT backstop_approver TO ' || quote_ident(session_user);
  END IF;
END
$fn$;

-- Has the transaction that asked for this restore ended without finishing it (rolled back,
-- cancelled, disconnected)? Then nobody will adopt what was staged.
CREATE FUNCTION backstop._is_abandoned(restore backstop.restore_log) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT restore.status IN ('pending', 'staging', 'staged')
     AND NOT EXISTS (SELECT FROM pg_stat_activity a WHERE a.pid = restore.requester_pid AND a.xact_start = restore.requester_xact)
$fn$;

-- Why request_id cannot be undone (one line), or null when it can: it must have run (consumed),
-- destroyed something of a kind undo knows, have before-images, and not be undone already.
CREATE FUNCTION backstop._undo_refusal(request_id bigint) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  request backstop.request_log;
  earlier backstop.restore_log;
BEGIN
  PERFORM pg_stat_clear_snapshot();  -- whose transactions still run, as of now (_is_abandoned)
  SELECT * INTO request FROM backstop.request_log r WHERE r.id = _undo_refusal.request_id;
  IF NOT FOUND THEN
    RETURN format('there is no Backstop request %s', request_id);
  END IF;
  IF NOT EXISTS (SELECT FROM backstop.request_consumptions c WHERE c.request_id = request.id) THEN
    RETURN format('request %s has not run (it is %s): there is nothing to undo', request_id, request.status);
  END IF;
  IF request.command_tag NOT IN ('DROP TABLE', 'DROP SCHEMA', 'ALTER TABLE', 'TRUNCATE TABLE') THEN
    RETURN format('request %s ran %s, which undo does not reverse', request_id, request.command_tag);
  END IF;
  IF cardinality(request.snapshot_ids) = 0
     AND NOT EXISTS (SELECT FROM backstop.snapshot_catalog s WHERE s.request_id = request.id AND s.source = 'before-image' AND s.verified) THEN
    RETURN format('request %s has no before-image', request_id);
  END IF;
  SELECT * INTO earlier FROM backstop.restore_log l
   WHERE l.request_id = _undo_refusal.request_id AND l.status IN ('pending', 'staging', 'staged', 'done')
     AND (l.status = 'done' OR NOT backstop._is_abandoned(l))
   ORDER BY l.id DESC LIMIT 1;
  IF FOUND THEN
    RETURN format('request %s is already %s by undo %s', request_id,
                  CASE earlier.status WHEN 'done' THEN 'undone' ELSE 'being undone' END, earlier.id);
  END IF;
  RETURN NULL;
END
$fn$;

-- Why session_user may not have a copy of snapshot_id's rows (one line), or null when it may: a
-- superuser; someone who could export the table as it is now (backstop._snapshot_refusal: read
-- every row); or, the table being gone, someone who could become its captured owner.
CREATE FUNCTION backstop._snapshot_read_refusal(snapshot_id text) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  snapshot backstop.snapshot_catalog;
  relid oid;
  owner_name text;
BEGIN
  IF backstop._is_superuser() THEN
    RETURN NULL;
  END IF;
  SELECT * INTO snapshot FROM backstop.snapshot_catalog s WHERE s.snapshot_id = _snapshot_read_refusal.snapshot_id;
  SELECT c.oid INTO relid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = snapshot.schema_name AND c.relname = snapshot.table_name;
  IF relid IS NOT NULL THEN
    RETURN (SELECT r.reason FROM backstop._snapshot_refusal(session_user, relid) AS r);
  END IF;
  owner_name := snapshot.manifest->'definition'->'attachments'->>'owner';
  IF owner_name IS NOT NULL AND backstop._may_become(owner_name) THEN
    RETURN NULL;
  END IF;
  RETURN format('%I.%I no longer exists, and its owner %s is not a role you may become', snapshot.schema_name, snapshot.table_name, coalesce(owner_name, '(not recorded)'));
END
$fn$;

-- File an undo or restore (committed through the loopback), wake the agent, and record the
-- asking transaction (pid and start) with it. Checks who asks and what: refusals are BS006.
CREATE FUNCTION backstop._file_restore(kind text, request_id bigint, snapshot_id text, into_schema text, into_table text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  what constant text := CASE kind WHEN 'undo' THEN 'undo Backstop requests' ELSE 'restore Backstop snapshots' END;
  refusal text;
  why_no_agent text;
  id bigint;
BEGIN
  PERFORM backstop._refuse_unless_restorer(what);
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'Backstop cannot % inside a % transaction', CASE kind WHEN 'undo' THEN 'undo' ELSE 'restore' END,
                    upper(current_setting('transaction_isolation'))
      USING ERRCODE = 'BS006', HINT = 'run it on its own, or in a READ COMMITTED transaction: it must see what the agent stages';
  END IF;
  IF backstop._dblink_schema() IS NULL THEN
    RAISE EXCEPTION 'Backstop cannot % without dblink', CASE kind WHEN 'undo' THEN 'undo' ELSE 'restore' END
      USING ERRCODE = 'BS004', HINT = 'CREATE EXTENSION dblink (then backstop install again), or use the CLI: backstop restore --snapshot-id ...';
  END IF;
  IF kind = 'undo' THEN
    refusal := backstop._undo_refusal(request_id);
    IF refusal IS NOT NULL THEN
      RAISE EXCEPTION 'Backstop cannot undo request %: %', request_id, refusal
        USING ERRCODE = 'BS006', HINT = 'SELECT id, status, command_tag, snapshot_ids FROM backstop.requests ORDER BY id DESC; and SELECT * FROM backstop.restores;';
    END IF;
  ELSE
    IF NOT EXISTS (SELECT FROM backstop.snapshot_catalog s WHERE s.snapshot_id = _file_restore.snapshot_id AND s.verified) THEN
      RAISE EXCEPTION 'there is no verified Backstop snapshot %', snapshot_id
        USING ERRCODE = 'BS006', HINT = 'SELECT snapshot_id, schema_name, table_name, created_at FROM backstop.snapshots WHERE verified ORDER BY created_at DESC;';
    END IF;
    refusal := backstop._snapshot_read_refusal(snapshot_id);
    IF refusal IS NOT NULL THEN
      RAISE EXCEPTION 'role % may not restore snapshot %: %', session_user, snapshot_id, refusal
        USING ERRCODE = 'BS006', HINT = 'a restore hands you a copy of its rows: only who could read them may ask (or a superuser)';
    END IF;
  END IF;
  why_no_agent := backstop._no_available_agent_reason();
  IF why_no_agent IS NOT NULL THEN
    RAISE EXCEPTION 'Backstop cannot %: %', CASE kind WHEN 'undo' THEN 'undo' ELSE 'restore' END, why_no_agent
      USING ERRCODE = 'BS001', HINT = 'start the agent (backstop agent --db ...) and check SELECT * FROM backstop.agents; then run it again';
  END IF;
  -- Undos of this request left behind by transactions that ended are given up first (their
  -- staging is discarded by the agent), so they stand in nobody's way.
  IF kind = 'undo' THEN
    PERFORM backstop._committed_value(format(
      'WITH gone AS (UPDATE backstop.restore_log l SET status = ''failed'', finished_at = clock_timestamp(),
                                              error = ''the session that asked for it ended before it was done''
                      WHERE l.request_id = %s AND backstop._is_abandoned(l) RETURNING 1)
       SELECT count(*)::text FROM gone', request_id));
  END IF;
  BEGIN
    id := backstop._committed_value(format(
    'WITH filed AS (
       INSERT INTO backstop.restore_log (kind, request_id, snapshot_id, into_schema, into_table, requested_by, requester_pid, requester_xact)
       VALUES (%L, %L, %L, %L, %L, %L, %s, %L) RETURNING id)
     SELECT id::text FROM filed, pg_notify(''backstop_restores'', (SELECT id::text FROM filed)) AS n',
    kind, request_id, snapshot_id, into_schema, into_table, session_user, pg_backend_pid(), transaction_timestamp()))::bigint;
  EXCEPTION WHEN OTHERS THEN
    PERFORM backstop._loopback_release();
    -- The loopback reports the far end's unique violation as its own error: check again.
    refusal := CASE WHEN kind = 'undo' THEN backstop._undo_refusal(request_id) END;
    IF refusal IS NULL THEN
      RAISE;
    END IF;
    RAISE EXCEPTION 'Backstop cannot undo request %: %', request_id, refusal
      USING ERRCODE = 'BS006', HINT = 'SELECT * FROM backstop.restores WHERE request_id = ' || request_id || ';';
  END;
  -- Given back at once: _await_restore opens its own (nothing of the caller's runs in between,
  -- but the caller may call this function alone).
  PERFORM backstop._loopback_release();
  RETURN id;
END
$fn$;

-------------------------------------------------------------------------------------------------
-- Waiting for the agent
-------------------------------------------------------------------------------------------------

-- Why no agent will stage restore_id (one line), or null while one can: pending and some agent
-- is available, or being staged by an agent that is still connected.
CREATE FUNCTION backstop._no_stager_reason(restore_id bigint) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  restore backstop.restore_log;
BEGIN
  SELECT * INTO restore FROM backstop.restore_log l WHERE l.id = restore_id;
  IF restore.status = 'staging' AND EXISTS (SELECT FROM backstop.agents a WHERE a.agent_id = restore.agent_id AND a.connected) THEN
    RETURN NULL;
  END IF;
  IF restore.status NOT IN ('pending', 'staging') THEN
    RETURN NULL;
  END IF;
  RETURN backstop._no_available_agent_reason();
END
$fn$;

-- Record a failure (committed at once, whatever happens to the caller's statement), wake the
-- agent to discard what it staged, and give the loopback back.
CREATE FUNCTION backstop._fail_restore(restore_id bigint, error text, hint text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  IF NOT EXISTS (SELECT FROM backstop.restore_log l WHERE l.id = restore_id AND l.requested_by = session_user) THEN
    RETURN;
  END IF;
  PERFORM backstop._loopback_value(format(
    'WITH failed AS (
       UPDATE backstop.restore_log SET status = ''failed'', error = %L, hint = %L, finished_at = clock_timestamp()
        WHERE id = %s AND status IN (''pending'', ''staging'', ''staged'') RETURNING id)
     SELECT count(*)::text FROM failed, pg_notify(''backstop_restores'', %L) AS n',
    error, hint, restore_id, restore_id::text));
  PERFORM backstop._loopback_release();
END
$fn$;

-- Wait until the agent has staged restore_id; NOTICE progress (rows loaded, verified) on the
-- way. Raises when the agent failed (its error and hint), when no agent can stage it any more
-- (BS001), or when the wait is cancelled (statement_timeout, pg_cancel_backend); each of those
-- is recorded as failed first.
CREATE FUNCTION backstop._await_restore(restore_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  dblink_schema constant text := backstop._dblink_schema();
  connection_name constant text := backstop._loopback();
  state_sql constant text := format(
    'SELECT json_build_object(''status'', status, ''rows_loaded'', rows_loaded, ''rows_total'', rows_total,
                              ''verified_by'', verified_by, ''error'', error, ''hint'', hint)::text
       FROM backstop.restore_log WHERE id = %s', restore_id);
  label constant text := (SELECT format('Backstop %s %s', l.kind, l.id) FROM backstop.restore_log l WHERE l.id = restore_id);
  pending_deadline constant timestamptz := clock_timestamp() + (backstop._settings()).wait_timeout;
  state jsonb;
  last_read timestamptz;
  last_liveness timestamptz := clock_timestamp();
  last_notice timestamptz := clock_timestamp();
  reported_rows bigint := -1;
  woken boolean;
  why text;
  why_before text;
BEGIN
  IF NOT EXISTS (SELECT FROM backstop.restore_log l WHERE l.id = restore_id AND l.requested_by = session_user) THEN
    RAISE EXCEPTION 'restore % is not yours to wait for', restore_id USING ERRCODE = 'BS006';
  END IF;
  PERFORM backstop._loopback_exec('LISTEN backstop_restores');
  LOOP
    EXECUTE format('SELECT count(*) > 0 FROM %I.dblink_get_notify($1)', dblink_schema) INTO woken USING connection_name;
    IF woken OR last_read IS NULL OR clock_timestamp() - last_read >= interval '200 ms' THEN
      state := backstop._loopback_value(state_sql)::jsonb;
      last_read := clock_timestamp();
      EXIT WHEN state->>'status' IN ('staged', 'failed', 'done');
      IF (state->>'rows_loaded')::bigint IS DISTINCT FROM reported_rows AND state->>'rows_loaded' IS NOT NULL
         AND clock_timestamp() - last_notice >= interval '1 s' THEN
        reported_rows := (state->>'rows_loaded')::bigint;
        last_notice := clock_timestamp();
        RAISE NOTICE '%: % of % rows loaded', label, reported_rows, coalesce(state->>'rows_total', '?');
      END IF;
    END IF;
    IF clock_timestamp() - last_liveness >= interval '1 s' THEN
      last_liveness := clock_timestamp();
      why_before := why;
      why := backstop._committed_value(format('SELECT backstop._no_stager_reason(%s)', restore_id));
      IF why IS NULL AND state->>'status' = 'pending' AND clock_timestamp() >= pending_deadline THEN
        why := format('no agent took it within %s (settings.wait_timeout); is the agent older than this database''s Backstop?',
                      backstop._describe_interval((backstop._settings()).wait_timeout));
        why_before := why;
      END IF;
      IF why IS NOT NULL AND why_before IS NOT NULL THEN
        PERFORM backstop._loopback_exec('UNLISTEN backstop_restores');
        PERFORM backstop._fail_restore(restore_id, why, NULL);
        RAISE EXCEPTION '% failed: %', label, why
          USING ERRCODE = 'BS001', HINT = 'start the agent (backstop agent --db ...) and check SELECT * FROM backstop.agents; then run it again';
      END IF;
    END IF;
    PERFORM pg_sleep(0.02);
  END LOOP;
  PERFORM backstop._loopback_exec('UNLISTEN backstop_restores');
  IF state->>'status' <> 'staged' THEN
    PERFORM backstop._loopback_release();
    RAISE EXCEPTION '% failed: %', label, coalesce(state->>'error', 'it is ' || (state->>'status'))
      USING ERRCODE = 'BS010', HINT = coalesce(state->>'hint', 'SELECT * FROM backstop.restores WHERE id = ' || restore_id);
  END IF;
  RAISE NOTICE '%: % rows loaded and verified (%)', label, coalesce(state->>'rows_total', '0'), coalesce(state->>'verified_by', 'content hash');
  -- No connection as Backstop's owner stays open while the caller's own steps run (a trigger of
  -- the caller's firing during them must find nothing to borrow).
  PERFORM backstop._loopback_release();
EXCEPTION WHEN query_canceled THEN
  BEGIN
    PERFORM backstop._loopback_exec('UNLISTEN backstop_restores');
    PERFORM backstop._fail_restore(restore_id, 'the waiting statement was cancelled (statement_timeout or pg_cancel_backend)', NULL);
  EXCEPTION WHEN OTHERS THEN
    NULL;
  END;
  RAISE;
END
$fn$;

-------------------------------------------------------------------------------------------------
-- Adopting what the agent staged: the one privileged step, and what it checks first
-------------------------------------------------------------------------------------------------

-- May session_user act as `role_name` by hand (SET ROLE to it, so ALTER ... OWNER TO it)?
-- PostgreSQL 16 split membership into INHERIT / SET options; OWNER TO needs SET.
CREATE FUNCTION backstop._may_become(role_name text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT backstop._is_superuser()
      OR (EXISTS (SELECT FROM pg_roles r WHERE r.rolname = role_name)
          AND pg_has_role(session_user, role_name, CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'SET' ELSE 'MEMBER' END))
$fn$;

-- Why the staging schema may not be adopted (one line), or null when it may: it holds only
-- tables, views, materialized views, sequences, indexes and types, all owned by the agent role
-- that staged them, no rules but views' own, and nothing in it refers to an object (function,
-- type, operator, collation, table …) that a member of backstop_agent owns outside it.
CREATE FUNCTION backstop._staging_refusal(staging oid, agent_role text, allowed_functions oid[]) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  found text;
BEGIN
  SELECT format('%s %s', CASE c.relkind WHEN 'f' THEN 'foreign table' WHEN 'c' THEN 'composite type' ELSE 'relation' END, c.relname) INTO found
    FROM pg_class c WHERE c.relnamespace = staging AND c.relkind NOT IN ('r', 'p', 'v', 'm', 'S', 'i', 'I', 't', 'c')
   LIMIT 1;
  IF found IS NULL THEN
    SELECT 'function ' || p.proname INTO found FROM pg_proc p WHERE p.pronamespace = staging LIMIT 1;
  END IF;
  IF found IS NULL THEN
    SELECT 'operator ' || o.oprname INTO found FROM pg_operator o WHERE o.oprnamespace = staging LIMIT 1;
  END IF;
  IF found IS NULL THEN
    SELECT 'collation ' || co.collname INTO found FROM pg_collation co WHERE co.collnamespace = staging LIMIT 1;
  END IF;
  IF found IS NULL THEN
    SELECT 'operator class ' || oc.opcname INTO found FROM pg_opclass oc WHERE oc.opcnamespace = staging LIMIT 1;
  END IF;
  IF found IS NOT NULL THEN
    RETURN format('the staging schema holds a %s, which a restore never stages', found);
  END IF;
  SELECT format('%s is owned by %s, not by the agent role %s', c.relname, pg_get_userbyid(c.relowner), agent_role) INTO found
    FROM pg_class c WHERE c.relnamespace = staging AND pg_get_userbyid(c.relowner) <> agent_role LIMIT 1;
  IF found IS NULL THEN
    SELECT format('type %s is owned by %s, not by the agent role %s', t.typname, pg_get_userbyid(t.typowner), agent_role) INTO found
      FROM pg_type t WHERE t.typnamespace = staging AND pg_get_userbyid(t.typowner) <> agent_role LIMIT 1;
  END IF;
  IF found IS NULL THEN
    SELECT format('table %s has rule %s', c.relname, r.rulename) INTO found
      FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
     WHERE c.relnamespace = staging AND r.rulename <> '_RETURN' LIMIT 1;
  END IF;
  IF found IS NULL THEN
    -- A view runs with its owner's rights: one owned by someone else may not read, for the agent,
    -- what the agent could not read itself.
    -- (Read from the rule's tree: system catalogs are pinned, no pg_depend row names them.)
    SELECT format('view %s reads %s, which the agent role %s may not read itself', c.relname, rc.oid::regclass, agent_role) INTO found
      FROM pg_class c
      JOIN pg_rewrite w ON w.ev_class = c.oid
      CROSS JOIN LATERAL regexp_matches(w.ev_action::text, ':relid (\d+)', 'g') AS m
      JOIN pg_class rc ON rc.oid = m[1]::oid
     WHERE c.relnamespace = staging AND c.relkind IN ('v', 'm') AND rc.relnamespace <> staging
       AND (NOT has_table_privilege(agent_role, rc.oid, 'SELECT')
            OR (rc.relrowsecurity AND pg_get_userbyid(rc.relowner) <> agent_role
                AND NOT (SELECT r.rolbypassrls OR r.rolsuper FROM pg_roles r WHERE r.rolname = agent_role)))
     LIMIT 1;
  END IF;
  IF found IS NOT NULL THEN
    RETURN format('staged %s', found);
  END IF;
  -- What staged definitions call: only what the dropped objects called, or inert built-ins.
  SELECT format('something staged calls %s, which %s did not', f::regprocedure,
                CASE WHEN cardinality(allowed_functions) = 0 THEN 'nothing recorded for it' ELSE 'the objects it restores' END) INTO found
    FROM unnest(backstop._functions_called_by(ARRAY(SELECT c.oid FROM pg_class c WHERE c.relnamespace = staging))
                || ARRAY(SELECT unnest(backstop._functions_in(k.conbin::text)) FROM pg_constraint k WHERE k.connamespace = staging)) AS f
   WHERE f <> ALL (allowed_functions) AND NOT backstop._is_inert_builtin(f)
   LIMIT 1;
  IF found IS NOT NULL THEN
    RETURN found;
  END IF;
  -- Everything staged, with what hangs off it (defaults, constraints, triggers, policies, view
  -- rules, indexes), and what each depends on.
  WITH staged_objects(classid, objid) AS (
         SELECT 'pg_class'::regclass, c.oid FROM pg_class c WHERE c.relnamespace = staging
         UNION ALL SELECT 'pg_type'::regclass, t.oid FROM pg_type t WHERE t.typnamespace = staging
         UNION ALL SELECT 'pg_attrdef'::regclass, d.oid FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid WHERE c.relnamespace = staging
         UNION ALL SELECT 'pg_constraint'::regclass, k.oid FROM pg_constraint k WHERE k.connamespace = staging
         UNION ALL SELECT 'pg_trigger'::regclass, g.oid FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid WHERE c.relnamespace = staging
         UNION ALL SELECT 'pg_policy'::regclass, p.oid FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE c.relnamespace = staging
         UNION ALL SELECT 'pg_rewrite'::regclass, r.oid FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class WHERE c.relnamespace = staging),
       referenced AS (
         SELECT DISTINCT d.refclassid, d.refobjid
           FROM pg_depend d JOIN staged_objects s ON s.classid = d.classid AND s.objid = d.objid),
       owned AS (
         SELECT r.refclassid, r.refobjid,
                CASE r.refclassid
                  WHEN 'pg_proc'::regclass THEN (SELECT p.proowner FROM pg_proc p WHERE p.oid = r.refobjid)
                  WHEN 'pg_type'::regclass THEN (SELECT t.typowner FROM pg_type t WHERE t.oid = r.refobjid AND t.typnamespace <> staging)
                  WHEN 'pg_class'::regclass THEN (SELECT c.relowner FROM pg_class c WHERE c.oid = r.refobjid AND c.relnamespace <> staging)
                  WHEN 'pg_operator'::regclass THEN (SELECT o.oprowner FROM pg_operator o WHERE o.oid = r.refobjid)
                  WHEN 'pg_collation'::regclass THEN (SELECT co.collowner FROM pg_collation co WHERE co.oid = r.refobjid)
                  WHEN 'pg_opclass'::regclass THEN (SELECT oc.opcowner FROM pg_opclass oc WHERE oc.oid = r.refobjid)
                  WHEN 'pg_opfamily'::regclass THEN (SELECT f.opfowner FROM pg_opfamily f WHERE f.oid = r.refobjid)
                  WHEN 'pg_namespace'::regclass THEN (SELECT n.nspowner FROM pg_namespace n WHERE n.oid = r.refobjid AND n.oid <> staging)
                END AS owner
           FROM referenced r)
  SELECT format('something staged refers to %s, which %s (an agent role) owns',
                pg_describe_object(o.refclassid, o.refobjid, 0), pg_get_userbyid(o.owner)) INTO found
    FROM owned o
   -- (A superuser is a member of every role; what it owns is not the agent's doing.)
   WHERE o.owner IS NOT NULL AND pg_has_role(o.owner, 'backstop_agent', 'MEMBER')
     AND NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.oid = o.owner)
   LIMIT 1;
  RETURN found;
END
$fn$;

-- A free relation/type name in `schema_name` for `wanted`: itself when free, else
-- <wanted>_undo<restore_id>[_n], cut to 63 bytes.
CREATE FUNCTION backstop._free_name(schema_name text, wanted text, restore_id bigint) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  candidate text := wanted;
  attempt integer := 0;
  suffix text;
BEGIN
  LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                           WHERE n.nspname = schema_name AND c.relname = candidate)
          AND NOT EXISTS (SELECT FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                           WHERE n.nspname = schema_name AND t.typname = candidate);
    attempt := attempt + 1;
    suffix := '_undo' || restore_id || CASE WHEN attempt > 1 THEN '_' || attempt ELSE '' END;
    -- Cut by characters until the name fits PostgreSQL's 63 bytes.
    candidate := wanted;
    WHILE octet_length(candidate || suffix) > 63 LOOP
      candidate := left(candidate, -1);
    END LOOP;
    candidate := candidate || suffix;
  END LOOP;
  RETURN candidate;
END
$fn$;

-- Could session_user create objects in this schema by hand?
CREATE FUNCTION backstop._may_create_in(schema_name text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT backstop._is_superuser()
      OR (EXISTS (SELECT FROM pg_namespace n WHERE n.nspname = schema_name)
          AND has_schema_privilege(session_user, schema_name, 'CREATE'))
$fn$;

-- Who will own what an undo puts back (`what`, for messages): the captured owner when session_user
-- may become it by hand; session_user when that role is gone (or when `optional`, when it may
-- not), with a note saying so; otherwise refused (BS006).
CREATE FUNCTION backstop._owner_for(captured text, what text, optional boolean, OUT owner text, OUT note text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  note := '';
  IF captured IS NULL OR NOT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = captured) THEN
    owner := session_user;
    note := format(' (its owner %s no longer exists: owned by %s)', coalesce(captured, '?'), session_user);
  ELSIF backstop._may_become(captured) THEN
    owner := captured;
  ELSIF optional THEN
    owner := session_user;
    note := format(' (owned by %s: it may not become %s)', session_user, captured);
  ELSE
    RAISE EXCEPTION 'role % may not create % owned by %', session_user, what, captured
      USING ERRCODE = 'BS006', HINT = format('GRANT %I TO %I, or ask a superuser to undo it', captured, session_user);
  END IF;
END
$fn$;

-- The schema a DROP SCHEMA took (item: name, owner, comment, acl: the captured entries
-- [{grantee (null: PUBLIC), privilege, grantable}] or null for the default privileges). The
-- agent staged the schema's objects in a schema of that very name (so that the types and
-- defaults naming it resolve); it becomes the schema again here, or is created when it is
-- missing. By hand that needs CREATE on the database and the right to become its owner.
CREATE FUNCTION backstop._adopt_schema(item jsonb, restore backstop.restore_log) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  schema_name constant text := item->>'name';
  owner_name text := item->>'owner';
  staged_here constant boolean := schema_name = restore.staging_schema;
  entry jsonb;
  note text := '';
BEGIN
  IF schema_name IS NULL OR (NOT staged_here AND EXISTS (SELECT FROM pg_namespace n WHERE n.nspname = schema_name)) THEN
    RETURN '';
  END IF;
  IF NOT (backstop._is_superuser() OR has_database_privilege(session_user, current_database(), 'CREATE')) THEN
    RAISE EXCEPTION 'role % may not create schema % in this database', session_user, quote_ident(schema_name)
      USING ERRCODE = 'BS006', HINT = 'GRANT CREATE ON DATABASE ... TO ' || quote_ident(session_user) || ', or ask a superuser to undo it';
  END IF;
  SELECT o.owner, o.note INTO owner_name, note
    FROM backstop._owner_for(owner_name, format('schema %I', schema_name), false) AS o;
  IF staged_here THEN
    -- What staging allowed (the agent creates, the requester reads) goes with the staging.
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', schema_name, owner_name);
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %I', schema_name, restore.agent_role);
    IF restore.requested_by <> owner_name AND EXISTS (SELECT FROM pg_roles r WHERE r.rolname = restore.requested_by) THEN
      EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %I', schema_name, restore.requested_by);
    END IF;
    EXECUTE format('COMMENT ON SCHEMA %I IS %L', schema_name, item->>'comment');
  ELSE
    EXECUTE format('CREATE SCHEMA %I AUTHORIZATION %I', schema_name, owner_name);
    IF item->>'comment' IS NOT NULL THEN
      EXECUTE format('COMMENT ON SCHEMA %I IS %L', schema_name, item->>'comment');
    END IF;
  END IF;
  IF jsonb_typeof(item->'acl') = 'array' THEN
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', schema_name);
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %I', schema_name, owner_name);
    FOR entry IN SELECT * FROM jsonb_array_elements(item->'acl') LOOP
      IF upper(entry->>'privilege') NOT IN ('USAGE', 'CREATE') THEN
        CONTINUE;
      END IF;
      IF entry->>'grantee' IS NOT NULL AND NOT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = entry->>'grantee') THEN
        note := note || format('; %s on it not granted to %s: no such role', entry->>'privilege', entry->>'grantee');
        CONTINUE;
      END IF;
      EXECUTE format('GRANT %s ON SCHEMA %I TO %s%s', upper(entry->>'privilege'), schema_name,
                     coalesce(quote_ident(entry->>'grantee'), 'PUBLIC'),
                     CASE WHEN (entry->>'grantable')::boolean THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
  END IF;
  RETURN format('schema %I restored%s', schema_name, note);
END
$fn$;

-- Indexes and owned sequences move with their table: rename, in the staging schema, those whose
-- names are taken in the schema the table goes to.
CREATE FUNCTION backstop._make_room_for(relid oid, staging text, schema_name text, restore_id bigint) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  part record;
BEGIN
  FOR part IN
    SELECT c.relname, c.relkind FROM pg_class c
     WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = staging)
       AND (c.oid IN (SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = relid)
            OR c.oid IN (SELECT d.objid FROM pg_depend d WHERE d.refobjid = relid AND d.classid = 'pg_class'::regclass
                                                          AND d.deptype IN ('a', 'i') AND d.objid <> relid))
       AND c.relkind IN ('i', 'I', 'S')
       AND EXISTS (SELECT FROM pg_class o JOIN pg_namespace n ON n.oid = o.relnamespace WHERE n.nspname = schema_name AND o.relname = c.relname)
  LOOP
    EXECUTE format('ALTER %s %I.%I RENAME TO %I', CASE WHEN part.relkind = 'S' THEN 'SEQUENCE' ELSE 'INDEX' END,
                   staging, part.relname, backstop._free_name(schema_name, part.relname, restore_id));
  END LOOP;
END
$fn$;

-- Move one staged object into place and give it its owner, after checking that session_user
-- could do the same by hand. item: kind (table | view | materialized view | sequence | type),
-- staged (its name in the staging schema; default: name), name, schema and owner (where it
-- belongs); owner_optional: when the caller may not become the owner, the caller owns it (a
-- restore into a new name) instead of refusing. A name taken meanwhile puts it beside
-- under another name, and so do its indexes and sequences. Returns a summary line.
CREATE FUNCTION backstop._adopt_object(item jsonb, staging text, restore_id bigint, OUT line text, OUT placed text)
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  kind constant text := item->>'kind';
  staged_name text := coalesce(item->>'staged', item->>'name');
  wanted_name constant text := item->>'name';
  schema_name constant text := item->>'schema';
  keyword constant text := CASE item->>'kind' WHEN 'table' THEN 'TABLE' WHEN 'view' THEN 'VIEW'
                                              WHEN 'materialized view' THEN 'MATERIALIZED VIEW'
                                              WHEN 'sequence' THEN 'SEQUENCE' WHEN 'type' THEN 'TYPE' END;
  owner_name text := item->>'owner';
  final_name text;
  relid oid;
  part record;
  note text := '';
BEGIN
  IF keyword IS NULL OR wanted_name IS NULL OR schema_name IS NULL THEN
    RAISE EXCEPTION 'the agent staged an object Backstop cannot place: %', item USING ERRCODE = 'BS010';
  END IF;
  IF kind = 'type' THEN
    IF NOT EXISTS (SELECT FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                    WHERE n.nspname = staging AND t.typname = staged_name AND t.typtype IN ('e', 'c', 'd')) THEN
      RAISE EXCEPTION 'the staged type % is missing', staged_name USING ERRCODE = 'BS010';
    END IF;
  ELSE
    SELECT c.oid INTO relid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = staging AND c.relname = staged_name
       AND c.relkind = ANY (CASE kind WHEN 'table' THEN '{r,p}'::"char"[] WHEN 'view' THEN '{v}' WHEN 'materialized view' THEN '{m}' ELSE '{S}' END);
    IF relid IS NULL THEN
      RAISE EXCEPTION 'the staged % % is missing', kind, staged_name USING ERRCODE = 'BS010';
    END IF;
  END IF;
  IF schema_name IN ('pg_catalog', 'information_schema', 'pg_toast', 'backstop', 'backstop_images')
     OR (schema_name <> staging AND backstop._is_staging_schema(schema_name)) THEN
    RAISE EXCEPTION 'the agent staged % % for schema %, where a restore never puts anything', kind, staged_name, quote_ident(schema_name)
      USING ERRCODE = 'BS010';
  END IF;
  IF NOT backstop._may_create_in(schema_name) THEN
    RAISE EXCEPTION 'role % may not create objects in schema %', session_user, quote_ident(schema_name)
      USING ERRCODE = 'BS006',
            HINT = format('GRANT CREATE ON SCHEMA %I TO %I, or ask a superuser to undo it', schema_name, session_user);
  END IF;
  SELECT o.owner, o.note INTO owner_name, note
    FROM backstop._owner_for(owner_name, format('%s %I.%I', kind, schema_name, wanted_name), coalesce((item->>'owner_optional')::boolean, false)) AS o;
  IF NOT backstop._is_superuser() AND NOT has_schema_privilege(owner_name, schema_name, 'CREATE') THEN
    RAISE EXCEPTION 'role % may not own objects in schema % (it lacks CREATE there)', owner_name, quote_ident(schema_name)
      USING ERRCODE = 'BS006', HINT = 'ask a superuser to undo it';
  END IF;
  final_name := CASE WHEN schema_name = staging THEN staged_name ELSE backstop._free_name(schema_name, wanted_name, restore_id) END;
  IF final_name <> wanted_name THEN
    note := note || format(' beside the existing %I.%I', schema_name, wanted_name);
  END IF;
  IF final_name <> staged_name THEN
    EXECUTE format('ALTER %s %I.%I RENAME TO %I', keyword, staging, staged_name, final_name);
  END IF;
  IF schema_name <> staging THEN
    IF relid IS NOT NULL THEN
      PERFORM backstop._make_room_for(relid, staging, schema_name, restore_id);
    END IF;
    EXECUTE format('ALTER %s %I.%I SET SCHEMA %I', keyword, staging, final_name, schema_name);
  END IF;
  EXECUTE format('ALTER %s %I.%I OWNER TO %I', keyword, schema_name, final_name, owner_name);
  IF kind = 'table' AND schema_name <> staging THEN
    -- A partitioned table's partitions, at every level, go with it, under their own names.
    FOR part IN
      WITH RECURSIVE parts(oid) AS (
        SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = relid
        UNION ALL
        SELECT i.inhrelid FROM pg_inherits i JOIN parts p ON i.inhparent = p.oid)
      SELECT c.oid, c.relname FROM parts JOIN pg_class c ON c.oid = parts.oid JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = staging
    LOOP
      IF EXISTS (SELECT FROM pg_class o JOIN pg_namespace n ON n.oid = o.relnamespace WHERE n.nspname = schema_name AND o.relname = part.relname) THEN
        note := note || format('; partition %I beside an existing relation of that name', part.relname);
        EXECUTE format('ALTER TABLE %I.%I RENAME TO %I', staging, part.relname, backstop._free_name(schema_name, part.relname, restore_id));
      END IF;
      PERFORM backstop._make_room_for(part.oid, staging, schema_name, restore_id);
      EXECUTE format('ALTER TABLE %s SET SCHEMA %I', part.oid::regclass, schema_name);
      EXECUTE format('ALTER TABLE %s OWNER TO %I', part.oid::regclass, owner_name);
      PERFORM backstop._attach_truncate_guard(part.oid);
    END LOOP;
    PERFORM backstop._attach_truncate_guard(relid);
  END IF;
  placed := format('%I.%I', schema_name, final_name);
  line := format('%s %s restored%s', kind, placed, note);
END
$fn$;



CREATE FUNCTION backstop._restorable_tables(restore backstop.restore_log) RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT CASE
    WHEN restore.kind = 'restore' AND restore.into_table IS NOT NULL THEN ARRAY[format('%I.%I', restore.into_schema, restore.into_table)]
    WHEN restore.kind = 'restore' THEN ARRAY(SELECT format('%I.%I', s.schema_name, s.table_name) FROM backstop.snapshot_catalog s
                                              WHERE s.snapshot_id = restore.snapshot_id)
    -- The request's targets: names the server resolved from the tables themselves.
    ELSE coalesce((SELECT r.targets FROM backstop.request_log r WHERE r.id = restore.request_id), '{}')
  END
$fn$;

-- Why the agent may not put this staged object (or schema) where it says (one line), or null:
-- nothing goes into the system's or Backstop's schemas; a table goes back only where a table of
-- the request (or the restore's target) was; a schema is re-created only when the request
-- dropped it. (Views go where the caller could create them by hand: _adopt_object checks that.)
CREATE FUNCTION backstop._placement_refusal(restore backstop.restore_log, item jsonb) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  schema_name constant text := coalesce(item->>'schema', item->>'name');
  wanted text;
BEGIN
  IF schema_name IS NULL OR schema_name IN ('information_schema', 'backstop', 'backstop_images') OR schema_name LIKE 'pg\_%' THEN
    RETURN format('%s would go into schema %s', coalesce(item->>'kind', 'a schema'), coalesce(quote_ident(schema_name), '(none)'));
  END IF;
  IF item->>'kind' IS NULL THEN  -- a schema
    IF restore.kind = 'undo'
       AND (SELECT r.command_tag FROM backstop.request_log r WHERE r.id = restore.request_id) = 'DROP SCHEMA'
       AND EXISTS (SELECT FROM unnest(backstop._restorable_tables(restore)) AS t WHERE (parse_ident(t))[1] = schema_name) THEN
      RETURN NULL;
    END IF;
    RETURN format('schema %I is not one the request dropped', schema_name);
  END IF;
  IF item->>'kind' <> 'table' THEN
    RETURN NULL;
  END IF;
  wanted := format('%I.%I', item->>'schema', item->>'name');
  IF wanted = ANY (backstop._restorable_tables(restore)) THEN
    RETURN NULL;
  END IF;
  RETURN format('table %s is not one the %s may put back', wanted, restore.kind);
END
$fn$;

-- The functions what a restore stages may call (beside inert built-ins): for an undo, those the
-- request's tables called when the statement ran (recorded by _consume); for a restore of a
-- snapshot, those of its table as it is now, or of the request its before-image was taken for.
CREATE FUNCTION backstop._functions_restore_may_call(restore backstop.restore_log) RETURNS oid[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT coalesce(array_agg(DISTINCT f), '{}') FROM (
    SELECT unnest(c.called_functions) FROM backstop.request_consumptions c
     WHERE c.request_id = coalesce(restore.request_id,
                                   (SELECT s.request_id FROM backstop.snapshot_catalog s WHERE s.snapshot_id = restore.snapshot_id))
    UNION ALL
    SELECT unnest(backstop._functions_called_by(backstop._relations_with_dependents(ARRAY(
             SELECT c.oid FROM backstop.snapshot_catalog s
               JOIN pg_namespace n ON n.nspname = s.schema_name JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.table_name
              WHERE s.snapshot_id = restore.snapshot_id))))
  ) AS allowed(f)
$fn$;

-- The privileged step of an undo or restore: check what the agent staged, then move every
-- staged object into place with its owner, in the caller's transaction (so nothing is in place
-- unless the whole undo commits). Only the session that asked, while it still waits, and only
-- for what was staged for it. Returns one summary line per object.
CREATE FUNCTION backstop._adopt_staged(restore_id bigint) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  restore backstop.restore_log;
  staging oid;
  refusal text;
  item jsonb;
  lines text[] := '{}';
  line text;
BEGIN
  PERFORM backstop._refuse_unless_restorer('adopt what Backstop staged');
  SELECT * INTO restore FROM backstop.restore_log l WHERE l.id = restore_id FOR UPDATE;
  IF NOT FOUND OR restore.status <> 'staged' OR NOT backstop._is_callers_restore(restore) THEN
    RAISE EXCEPTION 'restore % is not staged for this session', restore_id
      USING ERRCODE = 'BS006', HINT = 'run SELECT backstop.undo(...) or backstop.restore(...): it stages and adopts in one statement';
  END IF;
  SELECT n.oid INTO staging FROM pg_namespace n WHERE n.nspname = restore.staging_schema AND backstop._is_staging_schema(n.nspname);
  IF staging IS NULL THEN
    RAISE EXCEPTION 'the staging schema of restore % is gone', restore_id USING ERRCODE = 'BS010';
  END IF;
  refusal := backstop._staging_refusal(staging, restore.agent_role, backstop._functions_restore_may_call(restore));
  IF refusal IS NOT NULL THEN
    RAISE EXCEPTION 'Backstop refused to adopt what the agent staged for restore %: %', restore_id, refusal
      USING ERRCODE = 'BS010', HINT = 'nothing was changed; check the agent (its role must stage only copies of snapshots)';
  END IF;
  FOR item IN SELECT * FROM jsonb_array_elements(coalesce(restore.staged->'schemas', '[]')) LOOP
    refusal := backstop._placement_refusal(restore, item);
    IF refusal IS NOT NULL THEN
      RAISE EXCEPTION 'Backstop refused to adopt what the agent staged for restore %: %', restore_id, refusal
        USING ERRCODE = 'BS010', HINT = 'nothing was changed; check the agent (it must stage only what the request or snapshot names)';
    END IF;
    line := backstop._adopt_schema(item, restore);
    IF line <> '' THEN lines := lines || line; END IF;
  END LOOP;
  FOR item IN SELECT * FROM jsonb_array_elements(coalesce(restore.staged->'objects', '[]')) LOOP
    refusal := backstop._placement_refusal(restore, item);
    IF refusal IS NOT NULL THEN
      RAISE EXCEPTION 'Backstop refused to adopt what the agent staged for restore %: %', restore_id, refusal
        USING ERRCODE = 'BS010', HINT = 'nothing was changed; check the agent (it must stage only what the request or snapshot names)';
    END IF;
    lines := lines || (SELECT a.line FROM backstop._adopt_object(item, restore.staging_schema, restore_id) AS a);
  END LOOP;
  UPDATE backstop.restore_log l SET adopted_txid = txid_current() WHERE l.id = restore_id;
  RETURN lines;
END
$fn$;

-- A staged image (for DROP COLUMN, ALTER COLUMN TYPE, TRUNCATE) put beside its table when it
-- cannot go back in: moved into the table's schema as <table>_before_<request>, owned by the
-- table's owner, with the same checks as any adoption.
CREATE FUNCTION backstop._adopt_image_beside(restore_id bigint, image text, relid oid) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  restore backstop.restore_log;
  schema_name text;
  table_name text;
  owner_name text;
  beside text;
BEGIN
  SELECT * INTO restore FROM backstop.restore_log l WHERE l.id = restore_id;
  IF NOT FOUND OR restore.status <> 'staged' OR NOT backstop._is_callers_restore(restore)
     OR NOT EXISTS (SELECT FROM jsonb_array_elements(coalesce(restore.staged->'images', '[]')) i
                     WHERE i->>'image' = image AND (i->>'relid')::oid = relid) THEN
    RAISE EXCEPTION 'restore % staged no image % of table %', restore_id, image, relid USING ERRCODE = 'BS006';
  END IF;
  SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner) INTO schema_name, table_name, owner_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = relid;
  beside := table_name || '_before_' || coalesce(restore.request_id::text, restore.id::text);
  WHILE octet_length(beside) > 63 LOOP
    table_name := left(table_name, -1);
    beside := table_name || '_before_' || coalesce(restore.request_id::text, restore.id::text);
  END LOOP;
  EXECUTE format('ALTER TABLE %I.%I RENAME TO %I', restore.staging_schema, image, beside);
  RETURN (SELECT a.placed FROM backstop._adopt_object(jsonb_build_object('kind', 'table', 'name', beside, 'schema', schema_name, 'owner', owner_name),
                                                     restore.staging_schema, restore_id) AS a);
END
$fn$;

-- The undo is done: record it in the caller's transaction (so 'done' commits with what it
-- restored, and only then), drop the staging schema with the images left in it, and give the
-- loopback back.
CREATE FUNCTION backstop._finish_restore(restore_id bigint, summary text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  restore backstop.restore_log;
  relid oid;
  adopted_schema boolean;
BEGIN
  SELECT * INTO restore FROM backstop.restore_log l WHERE l.id = restore_id FOR UPDATE;
  IF NOT FOUND OR restore.status <> 'staged' OR NOT backstop._is_callers_restore(restore)
     OR restore.adopted_txid IS DISTINCT FROM txid_current() THEN
    RAISE EXCEPTION 'restore % is not staged and adopted in this transaction', restore_id USING ERRCODE = 'BS006';
  END IF;
  adopted_schema := EXISTS (SELECT FROM jsonb_array_elements(coalesce(restore.staged->'schemas', '[]')) AS s
                             WHERE s->>'name' = restore.staging_schema);
  -- The staging schema holds only the images now (dropped while it is still a staging schema,
  -- which the guard lets go); an undo of DROP SCHEMA adopted it instead.
  IF NOT adopted_schema AND EXISTS (SELECT FROM pg_namespace n WHERE n.oid = restore.staging_oid AND n.nspname = restore.staging_schema) THEN
    EXECUTE format('DROP SCHEMA %I CASCADE', restore.staging_schema);
  END IF;
  UPDATE backstop.restore_log l SET status = 'done', summary = _finish_restore.summary, finished_at = clock_timestamp()
   WHERE l.id = restore_id;
  -- Done: the adopted schema's tables are ordinary tables now, with the TRUNCATE guard.
  IF adopted_schema THEN
    FOR relid IN SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = restore.staging_schema AND c.relkind IN ('r', 'p') LOOP
      PERFORM backstop._attach_truncate_guard(relid);
    END LOOP;
  END IF;
  PERFORM backstop._loopback_release();
END
$fn$;

-- An undo may change back the type of the column its request changed: this statement may
-- rewrite it (see _consumed_items below). Only for the staged undo of this session.
CREATE TABLE backstop.undo_permits (
  txid                 bigint NOT NULL,
  statement_started_at timestamptz NOT NULL,
  restore_id           bigint NOT NULL,
  coverage             jsonb NOT NULL
);
COMMENT ON TABLE backstop.undo_permits IS 'Backstop internal: what a running undo may rewrite (rows live only in its own transaction)';

-- How many rows of relid were written since the request's statement rewrote it (ALTER COLUMN
-- TYPE), or -1 when its rows no longer match the image one for one. The rewrite wrote every row
-- with its transaction id and one command id; a row written since carries another transaction id
-- or, written later in the same transaction, a later command id. Call it holding a lock that
-- keeps writers out.
CREATE FUNCTION backstop._rows_written_since_rewrite(restore backstop.restore_log, relid oid, image text) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  written_since bigint;
  table_rows bigint;
  image_rows bigint;
BEGIN
  EXECUTE format('WITH x AS (SELECT ((%s::bigint) %% 4294967296)::text AS xid),
                       c0 AS (SELECT min(t.cmin::text::bigint) AS cid FROM %s AS t, x WHERE t.xmin::text = x.xid)
                  SELECT count(*) FILTER (WHERE t.xmin::text <> x.xid OR t.cmin::text::bigint <> c0.cid), count(*)
                    FROM %s AS t, x, c0',
                 coalesce((SELECT c.txid FROM backstop.request_consumptions c WHERE c.request_id = restore.request_id), -1),
                 relid::regclass, relid::regclass)
    INTO written_since, table_rows;
  EXECUTE format('SELECT count(*) FROM %I.%I', restore.staging_schema, image) INTO image_rows;
  RETURN CASE WHEN written_since = 0 AND table_rows <> image_rows THEN -1 ELSE written_since END;
END
$fn$;

-- An undo may change back the type of the column its request changed, to the type the image
-- has and to no other, when no row was written since (what the rewrite replaces is then exactly
-- what the image holds). Locks the table against writers, and permits the running statement's
-- rewrite (see _consumed_items) only then; returns the rows written since (0: permitted; -1: rows
-- deleted or added since). Only for the staged, adopted undo of this very transaction.
CREATE FUNCTION backstop._permit_undo_rewrite(restore_id bigint, relid oid, attnum integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  restore backstop.restore_log;
  image jsonb;
  image_type record;
  written_since bigint;
BEGIN
  SELECT * INTO restore FROM backstop.restore_log l WHERE l.id = restore_id;
  SELECT i INTO image FROM jsonb_array_elements(coalesce(restore.staged->'images', '[]')) i
   WHERE i->>'kind' = 'alter column type' AND (i->>'relid')::oid = relid AND (i->'attnums') @> to_jsonb(attnum);
  IF restore.id IS NULL OR restore.status <> 'staged' OR NOT backstop._is_callers_restore(restore)
     OR restore.adopted_txid IS DISTINCT FROM txid_current() OR image IS NULL THEN
    RAISE EXCEPTION 'restore % does not change back column % of table %', restore_id, attnum, relid USING ERRCODE = 'BS006';
  END IF;
  SELECT a.atttypid, a.atttypmod INTO image_type FROM pg_attribute a
   WHERE a.attrelid = to_regclass(format('%I.%I', restore.staging_schema, image->>'image')) AND a.attname = image->>'column' AND NOT a.attisdropped;
  EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', relid::regclass);
  written_since := backstop._rows_written_since_rewrite(restore, relid, image->>'image');
  IF written_since = 0 THEN
    INSERT INTO backstop.undo_permits (txid, statement_started_at, restore_id, coverage)
    VALUES (txid_current(), statement_timestamp(), restore_id,
            jsonb_build_array(jsonb_build_object('kind', 'alter column type', 'relid', relid, 'attnum', attnum,
                                                 'atttypid', image_type.atttypid, 'atttypmod', image_type.atttypmod)));
  END IF;
  RETURN written_since;
END
$fn$;

-- Adds the running undo's permits to the items a statement consumed. Replaces
-- backstop._consumed_items (0006).
CREATE OR REPLACE FUNCTION backstop._consumed_items(in_this_statement boolean)
RETURNS TABLE (request_id bigint, kind text, relid oid, attnum integer)
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT c.request_id, item.kind, item.relid, item.attnum
    FROM backstop.request_consumptions c, jsonb_to_recordset(c.coverage) AS item(kind text, relid oid, attnum integer)
   WHERE c.txid = txid_current_if_assigned()
     AND (NOT in_this_statement OR c.statement_started_at = statement_timestamp())
  UNION ALL
  SELECT NULL::bigint, item.kind, item.relid, item.attnum
    FROM backstop.undo_permits p,
         jsonb_to_recordset(p.coverage) AS item(kind text, relid oid, attnum integer, atttypid oid, atttypmod integer)
   WHERE p.txid = txid_current_if_assigned()
     AND (NOT in_this_statement OR p.statement_started_at = statement_timestamp())
     -- Only a change back to the image's type: not any rewrite of that column.
     AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = item.relid AND a.attnum = item.attnum
                                              AND a.atttypid = item.atttypid AND a.atttypmod = item.atttypmod)
$fn$;

-------------------------------------------------------------------------------------------------
-- What the caller's own privileges do: put images back, re-add other tables' foreign keys
-------------------------------------------------------------------------------------------------

-- Foreign keys of other tables that the CASCADE dropped, added back with the caller's
-- privileges. Each item is structured (table, name, columns, references, referenced_columns,
-- actions); the actions must read as PostgreSQL's own rendering of them. A referencing table that
-- is gone, a name taken, or rows that no longer match are reported, not fatal.
CREATE FUNCTION backstop._restore_foreign_keys(items jsonb) RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  item jsonb;
  lines text[] := '{}';
  referencing regclass;
  actions text;
  columns_sql text;
  referenced_sql text;
BEGIN
  FOR item IN SELECT * FROM jsonb_array_elements(coalesce(items, '[]')) LOOP
    referencing := to_regclass(format('%I.%I', item->'table'->>'schema', item->'table'->>'name'));
    actions := coalesce(item->>'actions', '');
    IF referencing IS NULL THEN
      lines := lines || format('foreign key %I of %I.%I not restored: that table no longer exists', item->>'name', item->'table'->>'schema', item->'table'->>'name');
      CONTINUE;
    END IF;
    IF actions !~ '^(\s+(MATCH (FULL|SIMPLE|PARTIAL)|ON (DELETE|UPDATE) (NO ACTION|RESTRICT|CASCADE|SET NULL|SET DEFAULT)( \([^();]*\))?|NOT DEFERRABLE|DEFERRABLE|INITIALLY (DEFERRED|IMMEDIATE)|NOT VALID))*$' THEN
      lines := lines || format('foreign key %I of %s not restored: its actions (%s) are not a foreign key''s', item->>'name', referencing, actions);
      CONTINUE;
    END IF;
    IF EXISTS (SELECT FROM pg_constraint k WHERE k.conrelid = referencing AND k.conname = item->>'name') THEN
      lines := lines || format('foreign key %I of %s not restored: the table has a constraint of that name', item->>'name', referencing);
      CONTINUE;
    END IF;
    SELECT string_agg(quote_ident(c), ', ') INTO columns_sql FROM jsonb_array_elements_text(item->'columns') AS c;
    SELECT string_agg(quote_ident(c), ', ') INTO referenced_sql FROM jsonb_array_elements_text(item->'referenced_columns') AS c;
    BEGIN
      EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (%s) REFERENCES %I.%I (%s)%s',
                     referencing, item->>'name', columns_sql, item->'references'->>'schema', item->'references'->>'name', referenced_sql, actions);
      IF item->>'comment' IS NOT NULL THEN
        EXECUTE format('COMMENT ON CONSTRAINT %I ON %s IS %L', item->>'name', referencing, item->>'comment');
      END IF;
      lines := lines || format('foreign key %I of %s restored', item->>'name', referencing);
    EXCEPTION WHEN OTHERS THEN
      lines := lines || format('foreign key %I of %s not restored: %s', item->>'name', referencing, SQLERRM);
    END;
  END LOOP;
  RETURN lines;
END
$fn$;

-- The key an image's rows are matched by: the columns the agent named (primary key or replica
-- identity when the statement ran), checked against the table now: they must still form a
-- primary key or a unique replica identity index of it. Null when there is none.
CREATE FUNCTION backstop._matching_key(relid oid, key_columns jsonb) RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  wanted text[] := ARRAY(SELECT jsonb_array_elements_text(coalesce(key_columns, '[]')));
  found text[];
BEGIN
  IF cardinality(wanted) = 0 THEN
    RETURN NULL;
  END IF;
  SELECT ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = relid AND a.attnum = k.attnum ORDER BY k.ord) INTO found
    FROM pg_index i
   WHERE i.indrelid = relid AND (i.indisprimary OR (i.indisreplident AND i.indisunique)) AND i.indpred IS NULL AND i.indexprs IS NULL
     AND ARRAY(SELECT a.attname::text FROM unnest(i.indkey) AS k(attnum) JOIN pg_attribute a ON a.attrelid = relid AND a.attnum = k.attnum) @> wanted
     AND ARRAY(SELECT a.attname::text FROM unnest(i.indkey) AS k(attnum) JOIN pg_attribute a ON a.attrelid = relid AND a.attnum = k.attnum) <@ wanted
   ORDER BY i.indisprimary DESC LIMIT 1;
  RETURN found;
END
$fn$;

-- Why a staged image may not be read back (one line), or null: it must be a plain table of the
-- staging schema, owned by the agent role that staged it, with no triggers, rules or row-level
-- security — reading it runs nothing. And the caller must be able to read the table it is an
-- image of: it holds that table's rows.
CREATE FUNCTION backstop._image_refusal(restore backstop.restore_log, image text, relid oid) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT CASE
    WHEN c.oid IS NULL THEN format('the staged image %s is missing', image)
    WHEN c.relkind <> 'r' OR c.relhastriggers OR c.relhasrules OR c.relrowsecurity
      THEN format('the staged image %s is not a plain table', image)
    WHEN pg_get_userbyid(c.relowner) <> restore.agent_role THEN format('the staged image %s is not the agent''s', image)
    WHEN NOT has_table_privilege(session_user, relid, 'SELECT') THEN format('role %s may not read %s', session_user, relid::regclass)
  END
  FROM (SELECT 1) AS one
  LEFT JOIN pg_namespace n ON n.nspname = restore.staging_schema
  LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = image
$fn$;

-- Put one staged image back, with the caller's privileges. Kinds:
--   drop column:       add the column back (type, collation from the staged image), fill it by
--                      key, then NOT NULL (when every row has a value) and its default;
--   alter column type: when no row was written since the statement, change the type back and
--                      set every value from the image by key;
--   truncate:          copy the rows back when the table is still empty.
-- Anything else (no key, rows written since, a table not empty) puts the image beside the table
-- and says how to copy back. Returns summary lines.
CREATE FUNCTION backstop._restore_image(restore_id bigint, item jsonb) RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  kind constant text := item->>'kind';
  relid constant oid := (item->>'relid')::oid;
  staging constant text := (SELECT l.staging_schema FROM backstop.restore_log l WHERE l.id = restore_id);
  image constant text := item->>'image';
  image_ref text;
  target text;
  key text[];
  key_join text;
  column_name text;
  column_type text;
  column_collation text;
  column_default text;
  column_not_null boolean;
  attnum integer;
  written_since bigint;
  image_rows bigint;
  missing bigint;
  columns_sql text;
  beside text;
  refusal text;
  sequence_name text;
  sequence_column text;
  lines text[] := '{}';
BEGIN
  image_ref := format('%I.%I', staging, image);
  target := relid::regclass::text;
  refusal := backstop._image_refusal((SELECT l FROM backstop.restore_log l WHERE l.id = restore_id), image, relid);
  IF refusal IS NOT NULL THEN
    RAISE EXCEPTION 'Backstop cannot put the image back: %', refusal
      USING ERRCODE = 'BS006', HINT = 'ask a role that may read the table (or a superuser) to undo it';
  END IF;
  IF to_regclass(target) IS NULL OR NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = relid) THEN
    RAISE EXCEPTION 'the table of request % (oid %) no longer exists', (SELECT l.request_id FROM backstop.restore_log l WHERE l.id = restore_id), relid
      USING ERRCODE = 'BS006', HINT = 'restore its before-image under another name: SELECT backstop.restore(''<snapshot id>'', ''name'');';
  END IF;
  IF kind = 'truncate' THEN
    EXECUTE format('SELECT count(*) FROM (SELECT FROM %s LIMIT 1) AS t', target) INTO written_since;
    IF written_since = 0 THEN
      SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO columns_sql
        FROM pg_attribute a WHERE a.attrelid = relid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
      EXECUTE format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s', target, columns_sql, columns_sql, image_ref);
      GET DIAGNOSTICS image_rows = ROW_COUNT;
      -- A TRUNCATE ... RESTART IDENTITY set the table's sequences back: set them past the rows
      -- put back, so new rows do not collide with them (never backwards).
      FOR sequence_name, sequence_column IN
        SELECT d.objid::regclass::text, a.attname FROM pg_depend d
          JOIN pg_class sc ON sc.oid = d.objid AND sc.relkind = 'S'
          JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = relid AND d.deptype IN ('a', 'i')
      LOOP
        EXECUTE format('SELECT setval(%L, m.v) FROM (SELECT max(%I)::bigint AS v FROM %s) AS m, pg_sequence q
                         WHERE q.seqrelid = %L::regclass AND q.seqincrement > 0 AND m.v IS NOT NULL
                           AND m.v > coalesce(pg_sequence_last_value(q.seqrelid), q.seqmin - 1)',
                       sequence_name, sequence_column, target, sequence_name);
      END LOOP;
      RETURN ARRAY[format('%s rows put back into %s', image_rows, target)];
    END IF;
    beside := backstop._adopt_image_beside(restore_id, image, relid);
    RETURN ARRAY[format('%s is not empty (rows were written since the TRUNCATE): the image is %s; copy back what you need, e.g. INSERT INTO %s SELECT * FROM %s;',
                        target, beside, target, beside)];
  END IF;

  key := backstop._matching_key(relid, item->'key');
  column_name := item->>'column';
  IF key IS NULL THEN
    beside := backstop._adopt_image_beside(restore_id, image, relid);
    RAISE WARNING 'Backstop did not put column % back into %: the table has no primary key or replica identity to match rows by', quote_ident(column_name), target
      USING HINT = format('the before-image is %s; match its rows to the table yourself', beside);
    RETURN ARRAY[format('column %I not put back into %s (no key to match rows by): %s', column_name, target, beside)];
  END IF;
  SELECT string_agg(format('t.%1$I IS NOT DISTINCT FROM i.%1$I', k), ' AND ') INTO key_join FROM unnest(key) AS k;
  SELECT format_type(a.atttypid, a.atttypmod),
         CASE WHEN a.attcollation <> 0 AND a.attcollation <> ty.typcollation THEN format(' COLLATE %I.%I', cn.nspname, co.collname) ELSE '' END,
         pg_get_expr(d.adbin, d.adrelid), a.attnotnull
    INTO column_type, column_collation, column_default, column_not_null
    FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
    LEFT JOIN pg_collation co ON co.oid = a.attcollation LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
    -- (A default that uses a sequence staged with the image would go when the staging schema does.)
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                          AND NOT EXISTS (SELECT FROM pg_depend dep JOIN pg_class s ON s.oid = dep.refobjid
                                           WHERE dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid
                                             AND dep.refclassid = 'pg_class'::regclass AND dep.refobjid <> a.attrelid
                                             AND s.relnamespace = (SELECT ic.relnamespace FROM pg_class ic WHERE ic.oid = a.attrelid))
   WHERE a.attrelid = to_regclass(image_ref) AND a.attname = column_name AND NOT a.attisdropped;
  IF column_type IS NULL THEN
    RAISE EXCEPTION 'the staged image lacks column %', quote_ident(column_name) USING ERRCODE = 'BS010';
  END IF;

  -- Writers wait from here on: what is checked below stays true until the undo commits.
  EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', target);

  IF kind = 'drop column' THEN
    IF EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = relid AND a.attname = column_name AND NOT a.attisdropped) THEN
      beside := backstop._adopt_image_beside(restore_id, image, relid);
      RETURN ARRAY[format('%s has a column %I again (added since): the image is %s', target, column_name, beside)];
    END IF;
    -- No default yet: a default is only an expression to set, never evaluated here.
    EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s%s', target, column_name, column_type, column_collation);
    EXECUTE format('UPDATE %s AS t SET %I = i.%I FROM %s AS i WHERE %s', target, column_name, column_name, image_ref, key_join);
    GET DIAGNOSTICS image_rows = ROW_COUNT;
    lines := lines || format('column %I put back into %s: %s rows matched by %s', column_name, target, image_rows, array_to_string(key, ', '));
    IF column_not_null THEN
      EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NULL', target, column_name) INTO missing;
      IF missing = 0 THEN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL', target, column_name);
      ELSE
        lines := lines || format('%s rows written since have no value: column %I left nullable (it was NOT NULL)', missing, column_name);
      END IF;
    END IF;
    IF column_default IS NOT NULL THEN
      EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s', target, column_name, column_default);
    END IF;
    RETURN lines;
  END IF;

  IF kind = 'alter column type' THEN
    SELECT a.attnum INTO attnum FROM pg_attribute a WHERE a.attrelid = relid AND a.attname = column_name AND NOT a.attisdropped;
    written_since := backstop._permit_undo_rewrite(restore_id, relid, attnum);
    IF written_since <> 0 THEN
      beside := backstop._adopt_image_beside(restore_id, image, relid);
      RAISE WARNING 'Backstop did not change column % of % back: rows were written since the ALTER', quote_ident(column_name), target
        USING HINT = format('the before-image is %s; copy back the values you need by key', beside);
      RETURN ARRAY[format('column %I of %s not changed back (%s): the image is %s', column_name, target,
                          CASE WHEN written_since < 0 THEN 'rows deleted or added since' ELSE written_since || ' rows written since' END, beside)];
    END IF;
    -- The default converted by the ALTER may not convert back: it is set again from the image.
    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', target, column_name);
    BEGIN
      EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s%s USING %I::%s', target, column_name, column_type, column_collation, column_name, column_type);
    EXCEPTION WHEN OTHERS THEN
      -- No cast back: every value is set from the image below anyway.
      EXECUTE format('ALTER TABLE %s ALTER COLUMN %I DROP NOT NULL', target, column_name);
      EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s%s USING NULL', target, column_name, column_type, column_collation);
    END;
    EXECUTE format('UPDATE %s AS t SET %I = i.%I FROM %s AS i WHERE %s', target, column_name, column_name, image_ref, key_join);
    GET DIAGNOSTICS image_rows = ROW_COUNT;
    IF column_not_null THEN
      EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL', target, column_name);
    END IF;
    IF column_default IS NOT NULL THEN
      EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s', target, column_name, column_default);
    END IF;
    RETURN ARRAY[format('column %I of %s changed back to %s: %s rows set from the image by %s', column_name, target, column_type, image_rows, array_to_string(key, ', '))];
  END IF;
  RAISE EXCEPTION 'the agent staged an image of unknown kind %', kind USING ERRCODE = 'BS010';
END
$fn$;

-------------------------------------------------------------------------------------------------
-- What people call
-------------------------------------------------------------------------------------------------

-- Stage (agent), adopt and finish (this session) a filed restore; returns the summary. Any
-- failure rolls back everything this statement did and is recorded (committed) as failed.
CREATE FUNCTION backstop._run_restore(restore_id bigint) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  lines text[];
  staged jsonb;
  item jsonb;
  label text;
  summary text;
  message text;
  hint text;
  state text;
BEGIN
  PERFORM backstop._await_restore(restore_id);
  SELECT l.staged, format('Backstop %s %s', l.kind, l.id) INTO staged, label FROM backstop.restore_log l WHERE l.id = restore_id;
  BEGIN
    lines := backstop._adopt_staged(restore_id);
    FOR item IN SELECT * FROM jsonb_array_elements(coalesce(staged->'images', '[]')) LOOP
      lines := lines || backstop._restore_image(restore_id, item);
    END LOOP;
    lines := lines || backstop._restore_foreign_keys(staged->'foreign_keys');
    lines := lines || ARRAY(SELECT jsonb_array_elements_text(coalesce(staged->'notes', '[]')));
    summary := format('%s done: %s', label, coalesce(array_to_string(lines, '; '), 'nothing to do'));
    PERFORM backstop._finish_restore(restore_id, summary);
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
    PERFORM backstop._fail_restore(restore_id, message, nullif(hint, ''));
    RAISE EXCEPTION '% failed: %', label, message
      USING ERRCODE = CASE WHEN state LIKE 'BS%' THEN state ELSE 'BS010' END,
            HINT = coalesce(nullif(hint, '') || '; ', '') || 'nothing was restored or changed';
  END;
  RETURN summary;
END
$fn$;

-- SELECT backstop.undo(42); — reverse what request 42 destroyed, in place, and wait until it is
-- done. Superusers and members of backstop_approver. Returns a one-line summary.
CREATE FUNCTION backstop.undo(request_id bigint) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  restore_id bigint;
BEGIN
  -- Filed first: it refuses, with a clear reason, anyone who may not undo.
  restore_id := backstop._file_restore('undo', request_id, NULL, NULL, NULL);
  RETURN backstop._run_restore(restore_id);
END
$fn$;
COMMENT ON FUNCTION backstop.undo(bigint) IS 'Reverse what an approved request destroyed (superusers and backstop_approver); see backstop.restores';

-- SELECT backstop.restore('<snapshot id>', 'name'); — restore a verified snapshot (under its own
-- name, or `into`: an unqualified name lands in the snapshot's schema), from psql. INTO is a
-- reserved word, so by name the parameter is written "into" => 'name'.
CREATE FUNCTION backstop.restore(snapshot_id text, "into" text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  parts text[];
  restore_id bigint;
  snapshot_schema text := (SELECT s.schema_name FROM backstop.snapshot_catalog s WHERE s.snapshot_id = restore.snapshot_id);
BEGIN
  IF "into" IS NOT NULL THEN
    BEGIN
      parts := parse_ident("into");
    EXCEPTION WHEN OTHERS THEN
      RAISE EXCEPTION '% is not a table name: %', quote_literal("into"), SQLERRM
        USING ERRCODE = 'BS006', HINT = 'write it as in SQL: ''people_restored'' or ''"My Schema"."People"''';
    END;
    IF cardinality(parts) NOT IN (1, 2) THEN
      RAISE EXCEPTION '% is not a table name', quote_literal("into")
        USING ERRCODE = 'BS006', HINT = 'schema.table or table';
    END IF;
    IF cardinality(parts) = 1 THEN
      parts := ARRAY[snapshot_schema, parts[1]];
    END IF;
  END IF;
  restore_id := backstop._file_restore('restore', NULL, snapshot_id, parts[1], parts[2]);
  RETURN backstop._run_restore(restore_id);
END
$fn$;
COMMENT ON FUNCTION backstop.restore(text, text) IS 'Restore a verified snapshot from psql (superusers and backstop_approver); see backstop.restores';

-------------------------------------------------------------------------------------------------
-- Agent API for restores
-------------------------------------------------------------------------------------------------

-- pending -> staging by this agent (or taken over from an agent that is gone). Creates the
-- staging schema, where only this agent's role may create objects and the requester may read.
-- Returns what to stage: the restore row, and for an undo the request and its consumption.
CREATE FUNCTION backstop.agent_claim_restore(restore_id bigint, agent_id text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  restore backstop.restore_log;
  request backstop.request_log;
  previous text;
  -- Not guessable: nobody can create it first and have Backstop take it for its own.
  staging text := format('backstop_restore_%s_%s', restore_id, substr(md5(random()::text || clock_timestamp()::text), 1, 8));
  dropped_schemas text[];
BEGIN
  IF NOT backstop._is_agent() THEN
    RAISE EXCEPTION 'only the Backstop agent stages restores' USING ERRCODE = 'BS006';
  END IF;
  SELECT * INTO restore FROM backstop.restore_log l
   WHERE l.id = restore_id
     AND (l.status = 'pending'
          OR (l.status = 'staging' AND (l.agent_id = agent_claim_restore.agent_id
                                        OR NOT EXISTS (SELECT FROM backstop.agents a WHERE a.agent_id = l.agent_id AND a.connected))))
     FOR UPDATE;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  -- A takeover starts afresh (an agent's staging commits all at once or not at all): the schema
  -- the previous claim created goes, known by its oid, never by its name alone.
  SELECT n.nspname INTO previous FROM pg_namespace n WHERE n.oid = restore.staging_oid;
  IF previous IS NOT NULL THEN
    EXECUTE format('DROP SCHEMA %I CASCADE', previous);
  END IF;
  -- An undo of DROP SCHEMA stages in a schema of that name (free: it was dropped), so that the
  -- types and defaults that name it resolve; the caller's statement adopts the schema itself.
  SELECT r.* INTO request FROM backstop.request_log r WHERE r.id = restore.request_id;
  IF request.command_tag = 'DROP SCHEMA' THEN
    dropped_schemas := ARRAY(SELECT DISTINCT (parse_ident(t))[1] FROM unnest(request.targets) AS t);
    IF cardinality(dropped_schemas) = 1
       AND NOT EXISTS (SELECT FROM pg_namespace n WHERE n.nspname = dropped_schemas[1])
       AND dropped_schemas[1] NOT LIKE 'pg\_%' THEN
      staging := dropped_schemas[1];
    END IF;
  END IF;
  UPDATE backstop.restore_log l
     SET status = 'staging', agent_id = agent_claim_restore.agent_id, agent_role = session_user,
         staging_schema = staging, staging_oid = NULL, started_at = clock_timestamp()
   WHERE l.id = restore_id;
  EXECUTE format('CREATE SCHEMA %I', staging);
  UPDATE backstop.restore_log l SET staging_oid = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = staging)
   WHERE l.id = restore_id
  RETURNING * INTO restore;
  EXECUTE format('COMMENT ON SCHEMA %I IS %L', staging, format('Backstop: %s %s being staged; adopted or dropped when it ends', restore.kind, restore.id));
  EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO %I', staging, session_user);
  IF EXISTS (SELECT FROM pg_roles r WHERE r.rolname = restore.requested_by) THEN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', staging, restore.requested_by);
  END IF;
  RETURN jsonb_build_object(
    'restore', to_jsonb(restore),
    'request', to_jsonb(request),
    'consumption', (SELECT to_jsonb(c) FROM backstop.request_consumptions c WHERE c.request_id = restore.request_id));
END
$fn$;
COMMENT ON FUNCTION backstop.agent_claim_restore(bigint, text) IS 'Agent: take an undo or restore to stage (exactly one agent stages it)';

-- Progress while loading (committed apart from the staging transaction); wakes the waiting session.
CREATE FUNCTION backstop.agent_restore_progress(restore_id bigint, agent_id text, rows_loaded bigint, rows_total bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  -- No NOTIFY: the waiting session reads the row several times a second anyway.
  UPDATE backstop.restore_log l SET rows_loaded = agent_restore_progress.rows_loaded, rows_total = agent_restore_progress.rows_total
   WHERE l.id = restore_id AND l.status = 'staging' AND l.agent_id = agent_restore_progress.agent_id;
END
$fn$;
COMMENT ON FUNCTION backstop.agent_restore_progress(bigint, text, bigint, bigint) IS 'Agent: rows loaded so far for a restore being staged';

-- Staged: called in the very transaction that built the staging schema, so 'staged' and what it
-- describes commit together. staged: {schemas, objects, images, foreign_keys, notes}.
CREATE FUNCTION backstop.agent_staged(restore_id bigint, agent_id text, staged jsonb, rows_total bigint, verified_by text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  UPDATE backstop.restore_log l
     SET status = 'staged', staged = agent_staged.staged, rows_total = agent_staged.rows_total, rows_loaded = agent_staged.rows_total,
         verified_by = agent_staged.verified_by, staged_at = clock_timestamp()
   WHERE l.id = restore_id AND l.status = 'staging' AND l.agent_id = agent_staged.agent_id;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM pg_notify('backstop_restores', restore_id::text);
  RETURN true;
END
$fn$;
COMMENT ON FUNCTION backstop.agent_staged(bigint, text, jsonb, bigint, text) IS 'Agent: a restore is staged (in the staging transaction)';

-- The agent could not stage it: failed, with the reason and what to do.
CREATE FUNCTION backstop.agent_fail_restore(restore_id bigint, agent_id text, error text, hint text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  UPDATE backstop.restore_log l
     SET status = 'failed', error = agent_fail_restore.error, hint = agent_fail_restore.hint, finished_at = clock_timestamp()
   WHERE l.id = restore_id AND l.status IN ('pending', 'staging') AND (l.agent_id IS NULL OR l.agent_id = agent_fail_restore.agent_id);
  PERFORM pg_notify('backstop_restores', restore_id::text);
END
$fn$;
COMMENT ON FUNCTION backstop.agent_fail_restore(bigint, text, text, text) IS 'Agent: a restore could not be staged';

-- Drop the staging schemas nobody will adopt: of failed restores, and of staged ones whose
-- session is no longer waiting (its transaction ended: rolled back, cancelled or gone; those
-- are marked failed). Returns how many were discarded.
CREATE FUNCTION backstop.agent_discard_stagings() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  restore backstop.restore_log;
  discarded integer := 0;
BEGIN
  IF NOT backstop._is_agent() THEN
    RAISE EXCEPTION 'only the Backstop agent discards stagings' USING ERRCODE = 'BS006';
  END IF;
  PERFORM pg_stat_clear_snapshot();  -- whose transactions still run, as of now (_is_abandoned)
  FOR restore IN
    SELECT * FROM backstop.restore_log l
     WHERE l.staging_schema IS NOT NULL
       AND EXISTS (SELECT FROM pg_namespace n WHERE n.nspname = l.staging_schema)
       AND l.status IN ('failed', 'staged') AND l.discarded_at IS NULL
     ORDER BY l.id
  LOOP
    IF restore.status = 'staged' THEN
      IF NOT backstop._is_abandoned(restore) THEN
        CONTINUE;  -- its session still waits or adopts, in the transaction that asked
      END IF;
      UPDATE backstop.restore_log l
         SET status = 'failed', error = 'the session that asked for it ended before it was adopted (rolled back or disconnected)',
             finished_at = clock_timestamp()
       WHERE l.id = restore.id AND l.status = 'staged';
    END IF;
    IF backstop._is_staging_schema(restore.staging_schema)
       AND EXISTS (SELECT FROM pg_namespace n WHERE n.oid = restore.staging_oid AND n.nspname = restore.staging_schema) THEN
      BEGIN
        EXECUTE format('DROP SCHEMA %I CASCADE', restore.staging_schema);
        UPDATE backstop.restore_log l SET discarded_at = clock_timestamp() WHERE l.id = restore.id;
        discarded := discarded + 1;
      EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'Backstop could not drop the staging schema % of restore %: %', restore.staging_schema, restore.id, SQLERRM;
      END;
    END IF;
  END LOOP;
  RETURN discarded;
END
$fn$;
COMMENT ON FUNCTION backstop.agent_discard_stagings() IS 'Agent: drop staging schemas of failed and abandoned restores';

-------------------------------------------------------------------------------------------------
-- Privileges
-------------------------------------------------------------------------------------------------

REVOKE ALL ON backstop.restore_log, backstop.undo_permits FROM PUBLIC;
GRANT SELECT ON backstop.restores, backstop.restore_log TO PUBLIC;
REVOKE ALL ON FUNCTION backstop._is_staging_schema(text), backstop._is_abandoned(backstop.restore_log), backstop._is_callers_restore(backstop.restore_log),
                       backstop._refuse_unless_restorer(text), backstop._undo_refusal(bigint),
                       backstop._file_restore(text, bigint, text, text, text), backstop._no_stager_reason(bigint),
                       backstop._fail_restore(bigint, text, text), backstop._await_restore(bigint),
                       backstop._may_become(text), backstop._staging_refusal(oid, text, oid[]),
                       backstop._functions_in(text), backstop._functions_called_by(oid[]), backstop._relations_with_dependents(oid[]),
                       backstop._is_inert_builtin(oid), backstop._functions_restore_may_call(backstop.restore_log), backstop._free_name(text, text, bigint),
                       backstop._may_create_in(text), backstop._make_room_for(oid, text, text, bigint), backstop._owner_for(text, text, boolean, OUT text, OUT text), backstop._adopt_schema(jsonb, backstop.restore_log), backstop._adopt_object(jsonb, text, bigint, OUT text, OUT text),
                       backstop._adopt_staged(bigint), backstop._adopt_image_beside(bigint, text, oid),
                       backstop._finish_restore(bigint, text), backstop._permit_undo_rewrite(bigint, oid, integer), backstop._rows_written_since_rewrite(backstop.restore_log, oid, text),
                       backstop._restore_foreign_keys(jsonb), backstop._matching_key(oid, jsonb),
                       backstop._snapshot_read_refusal(text), backstop._restorable_tables(backstop.restore_log),
                       backstop._placement_refusal(backstop.restore_log, jsonb), backstop._image_refusal(backstop.restore_log, text, oid),
                       backstop._restore_image(bigint, jsonb), backstop._run_restore(bigint),
                       backstop.agent_claim_restore(bigint, text), backstop.agent_restore_progress(bigint, text, bigint, bigint),
                       backstop.agent_staged(bigint, text, jsonb, bigint, text), backstop.agent_fail_restore(bigint, text, text, text),
                       backstop.agent_discard_stagings()
  FROM PUBLIC;
-- undo and restore are for everyone to call: the first thing they do is refuse anyone but
-- superusers and backstop_approver (_file_restore, SECURITY DEFINER, says so clearly). The steps
-- after it check the same themselves; the ones that run with the caller's own privileges
-- (_run_restore, _restore_image, _restore_foreign_keys, _matching_key) give nobody more than
-- they have.
GRANT EXECUTE ON FUNCTION backstop.undo(bigint), backstop.restore(text, text),
                          backstop._file_restore(text, bigint, text, text, text)
   TO PUBLIC;
GRANT EXECUTE ON FUNCTION backstop._run_restore(bigint), backstop._await_restore(bigint), backstop._adopt_staged(bigint),
                          backstop._adopt_image_beside(bigint, text, oid), backstop._finish_restore(bigint, text),
                          backstop._fail_restore(bigint, text, text), backstop._permit_undo_rewrite(bigint, oid, integer),
                          backstop._restore_foreign_keys(jsonb), backstop._matching_key(oid, jsonb), backstop._restore_image(bigint, jsonb),
                          backstop._image_refusal(backstop.restore_log, text, oid)
   TO backstop_approver;
GRANT EXECUTE ON FUNCTION backstop.agent_claim_restore(bigint, text), backstop.agent_restore_progress(bigint, text, bigint, bigint),
                          backstop.agent_staged(bigint, text, jsonb, bigint, text), backstop.agent_fail_restore(bigint, text, text, text),
                          backstop.agent_discard_stagings()
   TO backstop_agent;

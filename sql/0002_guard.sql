-- Backstop 0002: the guard.
--
-- Where a destructive statement is stopped:
--   * ddl_command_start (backstop_guard_statement) PAUSES DROP TABLE, DROP SCHEMA ... CASCADE
--     (of schemas holding tables), ALTER TABLE ... DROP COLUMN and ALTER TABLE ... ALTER COLUMN
--     ... TYPE. Nothing is locked yet there, so the agent can still read the tables for a
--     before-image. It files a request through the loopback, waits for the decision, and on
--     approval records a consumption in this transaction. This part reads the statement text,
--     so it is a heuristic: it may miss (a DROP inside a function), never let data go, because
--   * sql_drop (backstop_guard_dropped), table_rewrite (backstop_guard_rewrite) and the
--     per-table BEFORE TRUNCATE trigger are AUTHORITATIVE: every dropped table or column, every
--     table rewritten by a column type change and every truncated table must be covered by a
--     request consumed in this transaction, or the statement is refused and rolled back.
--   * ddl_command_end (backstop_guard_new_tables) attaches the TRUNCATE trigger to new tables and
--     refuses, for non-superusers, switching it off.
-- All triggers are ENABLE ALWAYS, so session_replication_role = replica does not switch them off.

-------------------------------------------------------------------------------------------------
-- Reading statement text
-------------------------------------------------------------------------------------------------

-- The statement with string literals (quoted, E'', dollar-quoted) and comments blanked out, so
-- that words inside them are not mistaken for commands. Quoted identifiers are kept.
CREATE FUNCTION backstop._strip_sql(sql text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  c text[] := string_to_array(sql, NULL);
  n integer := coalesce(array_length(c, 1), 0);
  i integer := 1;
  j integer;
  depth integer;
  tag text;
  closing integer;
  escapes boolean;
BEGIN
  WHILE i <= n LOOP
    IF c[i] = '''' THEN
      -- 'literal' ('' inside); E'literal' also escapes with backslashes
      escapes := i > 1 AND c[i - 1] IN ('E', 'e') AND (i = 2 OR c[i - 2] !~ '[[:alnum:]_]');
      j := i + 1;
      WHILE j <= n LOOP
        IF escapes AND c[j] = '\' THEN
          j := j + 2;
        ELSIF c[j] = '''' AND j < n AND c[j + 1] = '''' THEN
          j := j + 2;
        ELSIF c[j] = '''' THEN
          EXIT;
        ELSE
          j := j + 1;
        END IF;
      END LOOP;
      FOR k IN i .. least(j, n) LOOP c[k] := ' '; END LOOP;
      i := j + 1;
    ELSIF c[i] = '"' THEN
      -- "identifier" ("" inside): kept as it is
      j := i + 1;
      WHILE j <= n LOOP
        IF c[j] = '"' AND j < n AND c[j + 1] = '"' THEN
          j := j + 2;
        ELSIF c[j] = '"' THEN
          EXIT;
        ELSE
          j := j + 1;
        END IF;
      END LOOP;
      i := j + 1;
    ELSIF c[i] = '-' AND i < n AND c[i + 1] = '-' THEN
      -- -- comment to the end of the line
      WHILE i <= n AND c[i] <> E'\n' LOOP c[i] := ' '; i := i + 1; END LOOP;
    ELSIF c[i] = '/' AND i < n AND c[i + 1] = '*' THEN
      -- /* comment */, nested
      depth := 0;
      WHILE i <= n LOOP
        IF c[i] = '/' AND i < n AND c[i + 1] = '*' THEN
          depth := depth + 1; c[i] := ' '; c[i + 1] := ' '; i := i + 2;
        ELSIF c[i] = '*' AND i < n AND c[i + 1] = '/' THEN
          depth := depth - 1; c[i] := ' '; c[i + 1] := ' '; i := i + 2;
          EXIT WHEN depth = 0;
        ELSE
          c[i] := ' '; i := i + 1;
        END IF;
      END LOOP;
    ELSIF c[i] = '$' AND (i = 1 OR c[i - 1] !~ '[[:alnum:]_$]') THEN
      -- $tag$ dollar-quoted string $tag$ ($1 parameters are not)
      j := i + 1;
      WHILE j <= n AND c[j] ~ '[[:alpha:]_]' OR (j > i + 1 AND j <= n AND c[j] ~ '[0-9]') LOOP j := j + 1; END LOOP;
      IF j <= n AND c[j] = '$' THEN
        tag := array_to_string(c[i:j], '');
        closing := position(tag IN array_to_string(c[j + 1:n], ''));
        closing := CASE WHEN closing = 0 THEN n ELSE j + closing - 1 + length(tag) END;
        FOR k IN i .. closing LOOP c[k] := ' '; END LOOP;
        i := closing + 1;
      ELSE
        i := i + 1;
      END IF;
    ELSE
      i := i + 1;
    END IF;
  END LOOP;
  RETURN array_to_string(c, '');
END
$fn$;

-- The statements of a (stripped) client string, split at semicolons outside quoted identifiers.
CREATE FUNCTION backstop._split_statements(stripped text) RETURNS SETOF text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT btrim(m[1]) FROM regexp_matches(stripped, '((?:[^;"]|"(?:[^"]|"")*")+)', 'g') AS m
   WHERE btrim(m[1]) <> ''
$fn$;

-- The items of a comma-separated name list, split outside quoted identifiers.
CREATE FUNCTION backstop._split_names(list text) RETURNS SETOF text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT btrim(m[1]) FROM regexp_matches(list, '((?:[^,"]|"(?:[^"]|"")*")+)', 'g') AS m
   WHERE btrim(m[1]) <> ''
$fn$;

-- A table name as the caller would resolve it (the caller's search_path, temp tables first).
-- Null when it does not exist or is not a valid name.
CREATE FUNCTION backstop._resolve_table(name text, caller_search_path text) RETURNS regclass
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  relid regclass;
BEGIN
  -- Only fully qualified calls while the caller's search_path is in force.
  PERFORM pg_catalog.set_config('search_path', caller_search_path, true);
  relid := pg_catalog.to_regclass(name);
  PERFORM pg_catalog.set_config('search_path', 'pg_catalog, backstop, pg_temp', true);
  RETURN relid;
EXCEPTION WHEN OTHERS THEN
  RETURN NULL;
END
$fn$;

-- Is this a table whose data Backstop guards: an ordinary or partitioned, non-temporary table
-- outside the system and Backstop schemas?
CREATE FUNCTION backstop._is_guarded_table(relid oid) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT coalesce((
    SELECT c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'backstop', 'backstop_images')
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = relid), false)
$fn$;

-- Tables created by a transaction that is still running. Dropping, rewriting or truncating
-- them loses no committed data, so they need no approval (migrations create and drop work
-- tables). Rows are inserted by the creating transaction (see guard_new_tables); rows of
-- finished transactions never match again and are cleared as new tables are created.
CREATE TABLE backstop.created_tables (
  txid  bigint NOT NULL,
  relid oid NOT NULL,
  PRIMARY KEY (txid, relid)
);
COMMENT ON TABLE backstop.created_tables IS 'Backstop internal: tables created by transactions in progress';

-- Did the running transaction create this table?
CREATE FUNCTION backstop._created_in_this_transaction(relid oid) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT EXISTS (SELECT FROM backstop.created_tables t
                  WHERE t.txid = txid_current_if_assigned() AND t.relid = _created_in_this_transaction.relid)
$fn$;

-- Does destroying data in this table need an approval? Guarded, and not created by this
-- transaction.
CREATE FUNCTION backstop._needs_approval(relid oid) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT backstop._is_guarded_table(relid) AND NOT backstop._created_in_this_transaction(relid)
$fn$;

-- Does this ALTER TABLE subcommand list drop a column or change a column's type?
-- DROP CONSTRAINT / DEFAULT / NOT NULL / IDENTITY / EXPRESSION lose no data.
CREATE FUNCTION backstop._alter_loses_data(subcommands text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT EXISTS (SELECT FROM regexp_matches(subcommands, '\mdrop\s+("(?:[^"]|"")*"|[^\s",;()]+)', 'gi') AS m
                  WHERE lower(m[1]) NOT IN ('constraint', 'default', 'not', 'identity', 'expression'))
      OR subcommands ~* '\malter\s+(column\s+)?("(?:[^"]|"")*"|[^\s",;()]+)\s+(set\s+data\s+)?type\M'
$fn$;

-- The guarded tables a statement of this command tag would destroy data in, as far as its text
-- tells: empty means "no pause". Temporary and missing tables, and tables this transaction
-- created itself, are left out.
CREATE FUNCTION backstop._pause_targets(tag text, query text, caller_search_path text) RETURNS oid[]
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
      IF parts IS NOT NULL AND backstop._alter_loses_data(parts[2]) THEN
        relid := backstop._resolve_table(parts[1], caller_search_path);
        IF backstop._needs_approval(relid) THEN
          result := result || relid::oid;
        END IF;
      END IF;
    END IF;
  END LOOP;
  RETURN result;
END
$fn$;

-------------------------------------------------------------------------------------------------
-- Approval inside the guarded transaction
-------------------------------------------------------------------------------------------------

-- The tables this transaction may destroy: the union of what its consumed requests cover.
-- Read locally: the consumption rows were inserted by this very transaction.
CREATE FUNCTION backstop._covered_oids() RETURNS oid[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT coalesce(array_agg(DISTINCT covered), '{}')
    FROM backstop.request_consumptions c, unnest(c.covered_oids) AS covered
   WHERE c.txid = txid_current_if_assigned()
$fn$;

-- The request this transaction consumed for this exact client string, if any (a statement
-- string that fires the guard several times — several DROPs, TRUNCATE ... CASCADE — asks once).
CREATE FUNCTION backstop._consumed_for_statement(normalized_statement text) RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT c.request_id FROM backstop.request_consumptions c
   WHERE c.txid = txid_current_if_assigned() AND c.normalized_statement = _consumed_for_statement.normalized_statement
   ORDER BY c.request_id LIMIT 1
$fn$;

-- An approved, unexpired, unconsumed request of this role for this statement, as committed now.
CREATE FUNCTION backstop._find_approved_request(normalized_statement text) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  find_sql text := format(
    'SELECT r.id::text FROM backstop.request_log r
      WHERE r.requester = %L AND r.normalized_statement = %L AND r.status = ''approved''
        AND r.expires_at > clock_timestamp()
        AND NOT EXISTS (SELECT FROM backstop.request_consumptions c WHERE c.request_id = r.id)
      ORDER BY r.id LIMIT 1',
    session_user, normalized_statement);
  id text;
BEGIN
  id := backstop._committed_value(find_sql);
  RETURN id::bigint;
END
$fn$;

-- Use an approved request in this transaction: the consumption row exists only if the
-- transaction commits (a rollback leaves the request approved and unconsumed). The request row
-- is read as committed (through the loopback): under REPEATABLE READ it may be invisible here.
CREATE FUNCTION backstop._consume(request_id bigint, command_tag text, normalized_statement text, also_covers oid[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  covered_sql text := format('SELECT covered_oids::text FROM backstop.request_log WHERE id = %s', request_id);
  covered text;
BEGIN
  covered := backstop._committed_value(covered_sql);
  INSERT INTO backstop.request_consumptions (request_id, txid, pid, command_tag, normalized_statement, covered_oids)
  VALUES (request_id, txid_current(), pg_backend_pid(), command_tag, normalized_statement,
          coalesce(covered::oid[], '{}') || coalesce(also_covers, '{}'));
  PERFORM backstop._notify_decision(request_id, 'consumed');  -- delivered only on commit
EXCEPTION WHEN unique_violation THEN
  RAISE EXCEPTION 'Backstop request % has already been used by another transaction', request_id
    USING ERRCODE = 'BS003', HINT = 'run the statement again to file a new request';
END
$fn$;

-- A dollar-quoted literal of text, for hints the user can paste.
CREATE FUNCTION backstop._dollar_quote(value text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  tag text := '$$';
  n integer := 0;
BEGIN
  WHILE position(tag IN value) > 0 LOOP
    n := n + 1;
    tag := '$q' || n || '$';
  END LOOP;
  RETURN tag || value || tag;
END
$fn$;

-- Get an approved request for the running statement and consume it; returns its id.
-- relids: the guarded tables the statement touches (for the lock check); also_covers: tables
-- the consumption covers in addition to the request's targets (TRUNCATE: the firing table).
CREATE FUNCTION backstop._obtain_approval(tag text, query text, caller_search_path text,
                                          relids oid[], also_covers oid[], agent_reads_tables boolean)
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
  locked text;
BEGIN
  -- Fail-closed: no live agent, no destructive statement, whatever was approved.
  IF NOT backstop._agent_alive() THEN
    PERFORM backstop._refuse_agent_down(tag);
  END IF;

  -- Filed ahead (or approved earlier and rolled back): use it.
  request_id := backstop._find_approved_request(normalized);
  IF request_id IS NOT NULL THEN
    PERFORM backstop._consume(request_id, tag, normalized, also_covers);
    PERFORM backstop._loopback_release();
    RETURN request_id;
  END IF;

  IF backstop._dblink_schema() IS NULL THEN
    RAISE EXCEPTION 'Backstop refused %: it needs an approved request, and without dblink it cannot file one by itself', tag
      USING ERRCODE = 'BS004',
            HINT = format('first run SELECT backstop.request(%s); then, once SELECT status FROM backstop.requests shows it approved, run the statement again',
                          backstop._dollar_quote(query));
  END IF;

  -- The agent reads the tables for the before-image; if this transaction already holds them
  -- exclusively it would wait for us while we wait for it.
  IF agent_reads_tables THEN
    SELECT string_agg(l.relation::regclass::text, ', ') INTO locked
      FROM pg_locks l
     WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
       AND l.mode = 'AccessExclusiveLock' AND l.relation = ANY (relids);
    IF locked IS NOT NULL THEN
      RAISE EXCEPTION 'Backstop refused %: this transaction already locks % exclusively, so no before-image can be taken while it waits', tag, locked
        USING ERRCODE = 'BS004',
              HINT = format('from another session run SELECT backstop.request(%s); then, once it is approved, run this transaction again',
                            backstop._dollar_quote(query));
    END IF;
  END IF;

  request_id := backstop._file_request(tag, query, caller_search_path, false, clock_timestamp() + wait_timeout);
  RAISE NOTICE 'Backstop: % is waiting for approval of request % (up to %)', tag, request_id, backstop._describe_interval(wait_timeout)
    USING HINT = CASE (backstop._settings()).approval_mode
                   WHEN 'auto' THEN format('the agent grants it once a before-image is stored; follow it with SELECT * FROM backstop.requests WHERE id = %s;', request_id)
                   ELSE format('SELECT * FROM backstop.requests WHERE id = %s; once the before-image is stored an approver runs SELECT backstop.approve(%s);', request_id, request_id)
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
  PERFORM backstop._consume(request_id, tag, normalized, also_covers);
  PERFORM backstop._loopback_release();
  RETURN request_id;
EXCEPTION WHEN OTHERS OR query_canceled THEN
  PERFORM backstop._loopback_release();
  RAISE;
END
$fn$;

-------------------------------------------------------------------------------------------------
-- ddl_command_start: pause DROP TABLE / DROP SCHEMA / ALTER TABLE that lose data
-------------------------------------------------------------------------------------------------

-- Pause a DROP TABLE / DROP SCHEMA / ALTER TABLE that loses data until it is approved.
CREATE FUNCTION backstop._guard_statement(tag text, caller_search_path text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  query text := coalesce(current_query(), '');  -- null in background workers
  relids oid[];
BEGIN
  -- Backstop attaching its own TRUNCATE trigger (ALTER TABLE ... ENABLE ALWAYS TRIGGER).
  IF current_setting('backstop.attaching', true) = 'on' THEN
    RETURN;
  END IF;
  -- This client string already got its approval in this transaction (several DROPs in one
  -- string fire the trigger several times): nothing to read again.
  IF txid_current_if_assigned() IS NOT NULL
     AND backstop._consumed_for_statement(backstop.normalize_statement(query)) IS NOT NULL THEN
    RETURN;
  END IF;
  relids := backstop._pause_targets(tag, query, caller_search_path);
  IF cardinality(relids) = 0 OR backstop._covered_oids() @> relids THEN
    RETURN;
  END IF;
  PERFORM backstop._obtain_approval(tag, query, caller_search_path, relids, '{}', true);
END
$fn$;

-- The event trigger function. No SET search_path on purpose: it must hand the caller's
-- search_path on (unqualified names in the statement are resolved with it). Its body is one
-- fully qualified call with no operators, so that search_path cannot redirect anything.
CREATE FUNCTION backstop.guard_statement() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
AS $fn$
BEGIN
  PERFORM backstop._guard_statement(tg_tag, pg_catalog.current_setting('search_path'));
END
$fn$;
COMMENT ON FUNCTION backstop.guard_statement() IS 'Backstop: pauses DROP TABLE / DROP SCHEMA / ALTER TABLE that lose data until approved';

-------------------------------------------------------------------------------------------------
-- sql_drop and table_rewrite: the authoritative checks
-------------------------------------------------------------------------------------------------

-- Is session_user a superuser? (Superusers may switch Backstop's triggers off.)
CREATE FUNCTION backstop._is_superuser() RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $$ SELECT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = session_user), false) $$;

-- The statement is about to be refused although it consumed approvals: withdraw them (through
-- the loopback, so it sticks after the rollback), otherwise re-running the same statement would
-- pick the same insufficient approval up again until it expires.
CREATE FUNCTION backstop._withdraw_consumed_approvals(reason text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  consumed bigint;
BEGIN
  IF backstop._dblink_schema() IS NULL THEN
    RETURN;
  END IF;
  FOR consumed IN SELECT c.request_id FROM backstop.request_consumptions c WHERE c.txid = txid_current_if_assigned() LOOP
    PERFORM backstop._loopback_value(format(
      'WITH withdrawn AS (
         UPDATE backstop.request_log SET status = ''expired'', reason = %L, decided_at = clock_timestamp()
          WHERE id = %s AND status = ''approved'' RETURNING id)
       SELECT count(*)::text FROM withdrawn, LATERAL backstop._notify_decision(id, ''expired'')',
      reason, consumed));
  END LOOP;
END
$fn$;

-- Every dropped permanent table and table column must be covered by a request consumed in this
-- transaction (a CASCADE reaching further is refused, naming the table). Non-superusers may not
-- drop Backstop's TRUNCATE triggers.
CREATE FUNCTION backstop.guard_dropped_objects() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  dropped record;
  covered oid[];
BEGIN
  FOR dropped IN
    SELECT d.objid, d.object_type, d.object_identity, d.original
      FROM pg_event_trigger_dropped_objects() d
     WHERE (d.object_type IN ('table', 'table column')
            AND NOT d.is_temporary
            AND d.schema_name NOT IN ('pg_toast', 'backstop', 'backstop_images'))
        OR (d.object_type = 'trigger' AND d.original AND d.object_identity LIKE 'backstop\_truncate\_guard on %')
  LOOP
    IF dropped.object_type = 'trigger' THEN
      IF NOT backstop._is_superuser() THEN
        RAISE EXCEPTION 'Backstop refused %: % is Backstop''s TRUNCATE guard', tg_tag, dropped.object_identity
          USING ERRCODE = 'BS007', HINT = 'only a superuser can remove it (backstop uninstall removes Backstop entirely)';
      END IF;
      CONTINUE;
    END IF;
    IF backstop._created_in_this_transaction(dropped.objid) THEN
      CONTINUE;
    END IF;
    covered := coalesce(covered, backstop._covered_oids());
    IF NOT dropped.objid = ANY (covered) THEN
      PERFORM backstop._withdraw_consumed_approvals(format('the statement also dropped %s %s, which the approval does not cover', dropped.object_type, dropped.object_identity));
      RAISE EXCEPTION 'Backstop refused %: % % would be dropped without an approved request covering it',
          tg_tag, dropped.object_type, dropped.object_identity
        USING ERRCODE = 'BS005',
              HINT = CASE WHEN cardinality(covered) = 0
                          THEN 'run the statement as a single top-level statement so Backstop can pause it for approval, or file it first with SELECT backstop.request($$...$$)'
                          ELSE 'the approved request does not cover this table (a CASCADE reaching further?): name every table in the statement and run it again' END;
    END IF;
  END LOOP;
END
$fn$;
COMMENT ON FUNCTION backstop.guard_dropped_objects() IS 'Backstop: refuses dropping tables or columns not covered by an approved request';

-- A column type change rewrites the table: it must be covered. (Rewrites for SET LOGGED /
-- UNLOGGED, volatile defaults or access methods keep the data and pass.)
CREATE FUNCTION backstop.guard_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  relid oid := pg_event_trigger_table_rewrite_oid();
  column_rewrite constant integer := 4;  -- AT_REWRITE_COLUMN_REWRITE
BEGIN
  IF pg_event_trigger_table_rewrite_reason() & column_rewrite = 0 OR NOT backstop._needs_approval(relid) THEN
    RETURN;
  END IF;
  IF NOT relid = ANY (backstop._covered_oids()) THEN
    PERFORM backstop._withdraw_consumed_approvals(format('the statement also rewrote %s, which the approval does not cover', relid::regclass));
    RAISE EXCEPTION 'Backstop refused %: changing a column type rewrites %, and no approved request covers it', tg_tag, relid::regclass
      USING ERRCODE = 'BS005',
            HINT = 'run the ALTER TABLE as a single top-level statement so Backstop can pause it for approval, or file it first with SELECT backstop.request($$...$$)';
  END IF;
END
$fn$;
COMMENT ON FUNCTION backstop.guard_rewrite() IS 'Backstop: refuses column type changes not covered by an approved request';

-------------------------------------------------------------------------------------------------
-- TRUNCATE: a statement-level BEFORE TRUNCATE trigger on every guarded table
-------------------------------------------------------------------------------------------------

-- Copy the table's rows into backstop_images inside the truncating session (the table is
-- locked: nobody else can read it) and record the image; the agent exports it after commit.
CREATE FUNCTION backstop._take_truncate_image(request_id bigint, relid oid) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  image constant text := format('r%s_%s', request_id, relid);
  schema_name text;
  table_name text;
  kind "char";
  row_count bigint;
BEGIN
  SELECT n.nspname, c.relname, c.relkind INTO schema_name, table_name, kind
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = relid;
  IF kind = 'p' OR EXISTS (SELECT FROM backstop.truncate_images i
                            WHERE i.request_id = _take_truncate_image.request_id AND i.relid = _take_truncate_image.relid) THEN
    RETURN;  -- a partitioned table holds no rows itself; its partitions get their own images
  END IF;
  EXECUTE format('CREATE TABLE backstop_images.%I AS SELECT * FROM ONLY %I.%I', image, schema_name, table_name);
  GET DIAGNOSTICS row_count = ROW_COUNT;
  EXECUTE format('GRANT SELECT ON backstop_images.%I TO backstop_agent', image);
  INSERT INTO backstop.truncate_images (request_id, relid, schema_name, table_name, image_table, row_count)
  VALUES (request_id, relid, schema_name, table_name, image, row_count);
END
$fn$;

-- Every truncated table must be covered: by a request consumed in this transaction, or by the
-- approved request for this very client string (TRUNCATE a CASCADE, partitions). Otherwise
-- file one and wait; the agent does not need to read the (locked) table. Then take the image.
CREATE FUNCTION backstop._guard_truncate(relid oid, caller_search_path text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  -- No client text in background workers (e.g. a logical replication apply worker).
  query text := coalesce(current_query(), format('TRUNCATE %s -- issued by a background process', relid::regclass));
  normalized text := backstop.normalize_statement(query);
  covering bigint;
BEGIN
  IF NOT backstop._needs_approval(relid) THEN
    RETURN;
  END IF;
  SELECT c.request_id INTO covering FROM backstop.request_consumptions c
   WHERE c.txid = txid_current_if_assigned() AND relid = ANY (c.covered_oids)
   ORDER BY c.request_id LIMIT 1;
  IF covering IS NULL THEN
    covering := backstop._consumed_for_statement(normalized);
    IF covering IS NOT NULL THEN
      UPDATE backstop.request_consumptions c SET covered_oids = c.covered_oids || relid
       WHERE c.request_id = covering;
    END IF;
  END IF;
  IF covering IS NULL THEN
    covering := backstop._obtain_approval('TRUNCATE TABLE', query, caller_search_path, ARRAY[relid], ARRAY[relid], false);
  END IF;
  PERFORM backstop._take_truncate_image(covering, relid);
END
$fn$;

-- The trigger function (no SET search_path on purpose; see backstop.guard_statement).
CREATE FUNCTION backstop.guard_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
AS $fn$
BEGIN
  PERFORM backstop._guard_truncate(tg_relid, pg_catalog.current_setting('search_path'));
  RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION backstop.guard_truncate() IS 'Backstop: TRUNCATE waits for approval and keeps a before-image';

-- Attach the TRUNCATE guard to a table (idempotent), ENABLE ALWAYS.
CREATE FUNCTION backstop._attach_truncate_guard(relid oid) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  qualified text;
  state "char";
BEGIN
  IF NOT backstop._is_guarded_table(relid) THEN
    RETURN;
  END IF;
  SELECT format('%I.%I', n.nspname, c.relname) INTO qualified
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = relid;
  SELECT t.tgenabled INTO state FROM pg_trigger t WHERE t.tgrelid = relid AND t.tgname = 'backstop_truncate_guard';
  IF state = 'A' THEN
    RETURN;
  END IF;
  PERFORM set_config('backstop.attaching', 'on', true);
  IF state IS NULL THEN
    EXECUTE format('CREATE TRIGGER backstop_truncate_guard BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION backstop.guard_truncate()', qualified);
  END IF;
  EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER backstop_truncate_guard', qualified);
  PERFORM set_config('backstop.attaching', 'off', true);
END
$fn$;

-- Is Backstop's TRUNCATE guard on this table as install left it: named
-- backstop_truncate_guard, running backstop.guard_truncate(), ENABLE ALWAYS?
CREATE FUNCTION backstop._truncate_guard_intact(relid oid) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT EXISTS (SELECT FROM pg_trigger t
                  WHERE t.tgrelid = _truncate_guard_intact.relid AND t.tgname = 'backstop_truncate_guard'
                    AND t.tgfoid = 'backstop.guard_truncate()'::regprocedure AND t.tgenabled = 'A')
$fn$;

-- Has the table no trace of the guard at all (neither the name nor the function)?
CREATE FUNCTION backstop._truncate_guard_missing(relid oid) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT NOT EXISTS (SELECT FROM pg_trigger t
                      WHERE t.tgrelid = _truncate_guard_missing.relid
                        AND (t.tgname = 'backstop_truncate_guard' OR t.tgfoid = 'backstop.guard_truncate()'::regprocedure))
$fn$;

-- Refuse (for non-superusers) a command that left the TRUNCATE guard of a table renamed,
-- replaced, disabled or not ENABLE ALWAYS; give a guarded table that has none the guard.
CREATE FUNCTION backstop._keep_truncate_guards(tag text, relids oid[]) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  relid oid;
  broken text[] := '{}';
BEGIN
  FOR relid IN SELECT DISTINCT r FROM unnest(backstop._with_descendants(relids)) AS r LOOP
    CONTINUE WHEN NOT backstop._is_guarded_table(relid);
    IF backstop._truncate_guard_missing(relid) THEN
      PERFORM backstop._attach_truncate_guard(relid);
    ELSIF NOT backstop._truncate_guard_intact(relid) THEN
      broken := broken || relid::regclass::text;
    END IF;
  END LOOP;
  IF cardinality(broken) > 0 AND NOT backstop._is_superuser() THEN
    RAISE EXCEPTION 'Backstop refused %: the TRUNCATE guard on % must stay as installed (backstop_truncate_guard, ENABLE ALWAYS)',
        tag, array_to_string(broken, ', ')
      USING ERRCODE = 'BS007', HINT = 'only a superuser can rename, replace or switch off Backstop''s triggers';
  END IF;
END
$fn$;

-- ddl_command_end: new tables get the TRUNCATE guard (and are remembered as created by this
-- transaction); ALTER TABLE / CREATE TRIGGER / ALTER TRIGGER must leave it as installed.
CREATE FUNCTION backstop.guard_new_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  relid oid;
  created_any boolean := false;
  replaced text;
BEGIN
  IF tg_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') THEN
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
COMMENT ON FUNCTION backstop.guard_new_tables() IS 'Backstop: attaches the TRUNCATE guard to new tables and keeps it as installed';

-------------------------------------------------------------------------------------------------
-- Privileges, existing tables, and the event triggers themselves
-------------------------------------------------------------------------------------------------

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA backstop FROM PUBLIC;
GRANT EXECUTE ON FUNCTION backstop.request(text), backstop.approve(bigint, text), backstop.deny(bigint, text),
                          backstop.wait(bigint, interval), backstop.snapshot(regclass, text),
                          backstop.normalize_statement(text)
   TO PUBLIC;

-- Every existing guarded table gets the TRUNCATE guard.
DO $attach$
DECLARE
  relid oid;
BEGIN
  FOR relid IN SELECT c.oid FROM pg_class c WHERE c.relkind IN ('r', 'p') ORDER BY c.oid LOOP
    PERFORM backstop._attach_truncate_guard(relid);
  END LOOP;
END
$attach$;

CREATE EVENT TRIGGER backstop_guard_statement ON ddl_command_start
  WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'ALTER TABLE')
  EXECUTE FUNCTION backstop.guard_statement();
ALTER EVENT TRIGGER backstop_guard_statement ENABLE ALWAYS;

CREATE EVENT TRIGGER backstop_guard_dropped ON sql_drop
  EXECUTE FUNCTION backstop.guard_dropped_objects();
ALTER EVENT TRIGGER backstop_guard_dropped ENABLE ALWAYS;

CREATE EVENT TRIGGER backstop_guard_rewrite ON table_rewrite
  EXECUTE FUNCTION backstop.guard_rewrite();
ALTER EVENT TRIGGER backstop_guard_rewrite ENABLE ALWAYS;

CREATE EVENT TRIGGER backstop_guard_new_tables ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE', 'CREATE TRIGGER', 'ALTER TRIGGER')
  EXECUTE FUNCTION backstop.guard_new_tables();
ALTER EVENT TRIGGER backstop_guard_new_tables ENABLE ALWAYS;

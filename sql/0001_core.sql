-- Backstop 0001: the control schema.
--
-- What is here: the settings row, the request log and its consumptions, the snapshot catalog,
-- agent heartbeats, alerts, the views a DBA reads, the roles, the loopback connection helpers,
-- the functions everyone may call (request / approve / deny / wait / snapshot) and the agent API.
-- The guard itself (event triggers and TRUNCATE triggers) is in 0002_guard.sql.
--
-- Security model, in short:
--   * every table is owned by the installing superuser; plain roles can read, never write;
--   * every function that writes is SECURITY DEFINER with a fixed search_path, and EXECUTE on it
--     is granted explicitly (to PUBLIC, to backstop_agent, or to nobody for internals);
--   * who asks and who approves is session_user (the role that logged in), so SET ROLE inside a
--     session does not change who you are to Backstop.

CREATE SCHEMA IF NOT EXISTS backstop;
COMMENT ON SCHEMA backstop IS 'Backstop: approvals for destructive statements (see backstop.requests)';

-- Before-images of truncated tables, copied inside the truncating session (the table is already
-- locked there, so the agent cannot read it) and exported by the agent after commit.
CREATE SCHEMA IF NOT EXISTS backstop_images;
COMMENT ON SCHEMA backstop_images IS 'Backstop: in-session before-images of truncated tables, exported and dropped by the agent';

REVOKE ALL ON SCHEMA backstop FROM PUBLIC;
GRANT USAGE ON SCHEMA backstop TO PUBLIC;
REVOKE ALL ON SCHEMA backstop_images FROM PUBLIC;

-- Roles are cluster-wide: create them only where missing (uninstall leaves them).
DO $roles$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'backstop_agent') THEN
    CREATE ROLE backstop_agent NOLOGIN;
    COMMENT ON ROLE backstop_agent IS 'Backstop agent: claims requests, captures before-images, grants or denies';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'backstop_approver') THEN
    CREATE ROLE backstop_approver NOLOGIN;
    COMMENT ON ROLE backstop_approver IS 'Backstop approvers: may approve or deny requests with backstop.approve / backstop.deny';
  END IF;
  -- The agent reads every table to snapshot it (pg_read_all_data exists from PostgreSQL 14).
  IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pg_read_all_data')
     AND NOT pg_catalog.pg_has_role('backstop_agent', 'pg_read_all_data', 'MEMBER') THEN
    GRANT pg_read_all_data TO backstop_agent;
  END IF;
END
$roles$;

GRANT USAGE ON SCHEMA backstop_images TO backstop_agent;

-- dblink lets a guarded statement file its request in a separate, committed transaction (a
-- loopback connection to this database). Optional: without it requests are filed ahead with
-- backstop.request(). An existing dblink in another schema is used where it is.
DO $dblink$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'dblink')
     AND EXISTS (SELECT FROM pg_catalog.pg_available_extensions WHERE name = 'dblink') THEN
    CREATE EXTENSION dblink SCHEMA backstop;
  END IF;
END
$dblink$;

-------------------------------------------------------------------------------------------------
-- Tables
-------------------------------------------------------------------------------------------------

-- Exactly one row. Change with UPDATE backstop.settings SET ... (superuser / installing role).
CREATE TABLE backstop.settings (
  singleton           boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  max_snapshot_age    interval NOT NULL DEFAULT '300 s',
  max_heartbeat_age   interval NOT NULL DEFAULT '120 s',
  wait_timeout        interval NOT NULL DEFAULT '5 min',
  approval_mode       text NOT NULL DEFAULT 'auto' CHECK (approval_mode IN ('auto', 'operator')),
  allow_self_approval boolean NOT NULL DEFAULT false,
  request_ttl         interval NOT NULL DEFAULT '1 hour',
  loopback_conninfo   text
);
INSERT INTO backstop.settings DEFAULT VALUES;
COMMENT ON TABLE backstop.settings IS 'Backstop settings (one row): UPDATE backstop.settings SET wait_timeout = ''10 min'';';
COMMENT ON COLUMN backstop.settings.max_snapshot_age IS 'a table is ready when its latest verified snapshot is at most this old';
COMMENT ON COLUMN backstop.settings.max_heartbeat_age IS 'guarded statements are refused at once when no agent heartbeat is newer than this';
COMMENT ON COLUMN backstop.settings.wait_timeout IS 'how long a guarded statement waits for a decision before it gives up';
COMMENT ON COLUMN backstop.settings.approval_mode IS 'auto: the agent grants when the gate passes; operator: a backstop_approver must approve too';
COMMENT ON COLUMN backstop.settings.allow_self_approval IS 'whether a requester may approve their own request';
COMMENT ON COLUMN backstop.settings.request_ttl IS 'how long a request filed ahead with backstop.request() stays usable';
COMMENT ON COLUMN backstop.settings.loopback_conninfo IS 'dblink connection string back to this database; null = built from the socket directory and port';

-- One row per request. Written only through functions.
CREATE TABLE backstop.request_log (
  id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  created_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
  requester            text NOT NULL,
  requester_pid        integer,
  command_tag          text NOT NULL,
  statement            text NOT NULL,
  normalized_statement text NOT NULL,
  search_path          text,
  filed_ahead          boolean NOT NULL DEFAULT false,
  targets              text[] NOT NULL DEFAULT '{}',
  target_oids          oid[] NOT NULL DEFAULT '{}',
  -- target_oids plus their partitions / inheritance children: what an approval covers.
  covered_oids         oid[] NOT NULL DEFAULT '{}',
  status               text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'capturing', 'awaiting_approval', 'approved', 'denied', 'expired')),
  reason               text,
  agent_id             text,
  approved_by          text,
  approved_at          timestamptz,
  approval_note        text,
  decided_by           text,
  decided_at           timestamptz,
  expires_at           timestamptz NOT NULL,
  snapshot_ids         text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX request_log_open_idx ON backstop.request_log (requester, normalized_statement) WHERE status = 'approved';
COMMENT ON TABLE backstop.request_log IS 'Backstop requests (base table); read backstop.requests';

-- A row is inserted by the guarded statement's own transaction, so it exists only if that
-- transaction commits. No foreign key: under REPEATABLE READ the request row (committed through
-- the loopback after the snapshot) is invisible to the FK check.
CREATE TABLE backstop.request_consumptions (
  request_id           bigint PRIMARY KEY,
  txid                 bigint NOT NULL,
  pid                  integer NOT NULL,
  consumed_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
  command_tag          text NOT NULL,
  normalized_statement text NOT NULL,
  -- The tables this transaction may drop, rewrite or truncate because of this request.
  covered_oids         oid[] NOT NULL DEFAULT '{}'
);
CREATE INDEX request_consumptions_txid_idx ON backstop.request_consumptions (txid);
COMMENT ON TABLE backstop.request_consumptions IS 'Backstop: approved requests used by a committed transaction';

CREATE TABLE backstop.agent_heartbeats (
  agent_id      text PRIMARY KEY,
  started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
  last_seen     timestamptz NOT NULL DEFAULT clock_timestamp(),
  hostname      text,
  pid           integer,
  version       text,
  leader        boolean,
  listening     boolean,
  storage_url   text,
  storage_ok    boolean,
  storage_error text,
  info          jsonb NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE backstop.agent_heartbeats IS 'Backstop agent heartbeats (base table); read backstop.agents';

CREATE TABLE backstop.snapshot_catalog (
  snapshot_id text PRIMARY KEY,
  schema_name text NOT NULL,
  table_name  text NOT NULL,
  created_at  timestamptz NOT NULL,
  row_count   bigint,
  size_bytes  bigint,
  checksum    text,
  verified    boolean NOT NULL DEFAULT false,
  source      text,
  request_id  bigint,
  label       text,
  location    text,
  manifest    jsonb NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  -- Background snapshots are taken only when a table changes. When a poll finds the table's
  -- change counters and columns as they were at this snapshot, the agent records the time here:
  -- the snapshot still matches the table as of then.
  confirmed_at timestamptz
);
CREATE INDEX snapshot_catalog_table_idx ON backstop.snapshot_catalog (schema_name, table_name, created_at DESC);
COMMENT ON TABLE backstop.snapshot_catalog IS 'Backstop snapshots recorded by the agent (base table); read backstop.snapshots';

CREATE TABLE backstop.alerts (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
  kind         text NOT NULL,
  schema_name  text,
  table_name   text,
  detail       text,
  acknowledged boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE backstop.alerts IS 'Things that got around the guard (e.g. a table vanished without a consumed request)';

CREATE TABLE backstop.snapshot_requests (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
  requested_by text NOT NULL,
  relid        oid NOT NULL,
  schema_name  text NOT NULL,
  table_name   text NOT NULL,
  label        text,
  status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
  snapshot_id  text,
  error        text,
  finished_at  timestamptz
);
COMMENT ON TABLE backstop.snapshot_requests IS 'On-demand snapshots asked for with backstop.snapshot(regclass, label)';

-- Created by the truncating transaction together with the image table, so both exist only if
-- the TRUNCATE commits. The agent exports the image, then calls agent_drop_truncate_image.
CREATE TABLE backstop.truncate_images (
  request_id  bigint NOT NULL,
  relid       oid NOT NULL,
  schema_name text NOT NULL,
  table_name  text NOT NULL,
  image_table text NOT NULL,
  row_count   bigint NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (request_id, relid)
);
COMMENT ON TABLE backstop.truncate_images IS 'Before-images of truncated tables, kept in schema backstop_images until the agent exports them';

-------------------------------------------------------------------------------------------------
-- Views a DBA reads
-------------------------------------------------------------------------------------------------

CREATE VIEW backstop.requests AS
SELECT r.id, r.created_at, r.requester, r.requester_pid, r.command_tag, r.statement, r.search_path,
       r.targets, r.target_oids,
       CASE WHEN c.request_id IS NOT NULL THEN 'consumed' ELSE r.status END AS status,
       r.reason, r.agent_id, r.approved_by, r.approved_at, r.approval_note, r.decided_by,
       r.decided_at, r.expires_at, r.snapshot_ids, c.consumed_at, r.filed_ahead
  FROM backstop.request_log r
  LEFT JOIN backstop.request_consumptions c ON c.request_id = r.id;
COMMENT ON VIEW backstop.requests IS 'Backstop requests: SELECT * FROM backstop.requests ORDER BY id DESC;';

CREATE VIEW backstop.agents AS
SELECT h.agent_id, h.hostname, h.pid, h.version, h.leader, h.listening, h.storage_url,
       h.storage_ok, h.storage_error, h.started_at, h.last_seen,
       clock_timestamp() - h.last_seen AS heartbeat_age,
       clock_timestamp() - h.last_seen <= s.max_heartbeat_age AS fresh,
       h.info
  FROM backstop.agent_heartbeats h CROSS JOIN backstop.settings s;
COMMENT ON VIEW backstop.agents IS 'Backstop agents and the age of their last heartbeat';

CREATE VIEW backstop.snapshots AS
SELECT snapshot_id, schema_name, table_name, created_at, row_count, size_bytes, checksum, verified,
       source, request_id, label, location
  FROM backstop.snapshot_catalog;
COMMENT ON VIEW backstop.snapshots IS 'Backstop snapshots (the catalog the agent keeps)';

-- Per user table: is there a recent, verified snapshot and a live agent?
CREATE VIEW backstop.readiness AS
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
), latest AS (
  SELECT DISTINCT ON (schema_name, table_name) schema_name, table_name, snapshot_id, created_at, verified,
         greatest(created_at, confirmed_at) AS current_as_of
    FROM backstop.snapshot_catalog
   ORDER BY schema_name, table_name, created_at DESC
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
  CROSS JOIN backstop.settings s
  LEFT JOIN latest l ON l.schema_name = t.schema_name AND l.table_name = t.table_name
  CROSS JOIN LATERAL (
    SELECT CASE
             WHEN h.age IS NULL THEN 'no agent has ever sent a heartbeat'
             WHEN h.age > s.max_heartbeat_age THEN format('agent heartbeat is %s old (max %s)', date_trunc('second', h.age), s.max_heartbeat_age)
             WHEN l.snapshot_id IS NULL THEN 'no snapshot yet'
             WHEN clock_timestamp() - l.current_as_of > s.max_snapshot_age
               THEN format('latest snapshot is %s old and the table was not confirmed unchanged since (max %s)',
                           date_trunc('second', clock_timestamp() - l.created_at), s.max_snapshot_age)
             WHEN NOT l.verified THEN 'latest snapshot checksum not verified'
           END AS failing_check
  ) check_result;
COMMENT ON VIEW backstop.readiness IS 'Per table: latest snapshot, its age, agent heartbeat, ready yes/no and the failing check; current_as_of: when the snapshot was last known to match the table';

-------------------------------------------------------------------------------------------------
-- Small helpers (internal unless granted at the end of this file)
-------------------------------------------------------------------------------------------------

-- The form two statements are compared in: trimmed, whitespace collapsed, no trailing semicolons.
CREATE FUNCTION backstop.normalize_statement(statement text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT regexp_replace(regexp_replace(btrim(statement), '\s+', ' ', 'g'), '[\s;]+$', '')
$fn$;
COMMENT ON FUNCTION backstop.normalize_statement(text) IS 'How Backstop compares statements: trimmed, whitespace collapsed, trailing semicolons dropped';

-- The settings row.
CREATE FUNCTION backstop._settings() RETURNS backstop.settings
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $$ SELECT * FROM backstop.settings LIMIT 1 $$;

-- Final statuses never change again.
CREATE FUNCTION backstop._is_final(status text) RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $$ SELECT status IN ('approved', 'denied', 'expired', 'consumed') $$;

-- Is session_user an approver? (Superusers are members of every role.)
CREATE FUNCTION backstop._is_approver() RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $$ SELECT pg_has_role(session_user, 'backstop_approver', 'MEMBER') $$;

-- Is session_user the agent's role (a member of backstop_agent)?
CREATE FUNCTION backstop._is_agent() RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $$ SELECT pg_has_role(session_user, 'backstop_agent', 'MEMBER') $$;

-- The schema dblink is installed in, or null when it is not installed.
CREATE FUNCTION backstop._dblink_schema() RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
   WHERE e.extname = 'dblink'
$fn$;

-- A libpq connection-string value, quoted.
CREATE FUNCTION backstop._conninfo_value(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, backstop, pg_temp
AS $$ SELECT '''' || replace(replace(value, '\', '\\'), '''', '\''') || '''' $$;

-- How the loopback connects back to this database: settings.loopback_conninfo, else the first
-- unix socket directory (or 127.0.0.1) and this server's port, as the function owner (the
-- installing superuser: the caller of this SECURITY DEFINER chain).
CREATE FUNCTION backstop._loopback_conninfo() RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  configured text := (backstop._settings()).loopback_conninfo;
  socket_dir text := nullif(btrim(split_part(current_setting('unix_socket_directories'), ',', 1)), '');
BEGIN
  IF configured IS NOT NULL THEN
    RETURN configured;
  END IF;
  RETURN format('dbname=%s host=%s port=%s user=%s application_name=backstop_loopback',
                backstop._conninfo_value(current_database()),
                backstop._conninfo_value(coalesce(socket_dir, '127.0.0.1')),
                backstop._conninfo_value(current_setting('port')),
                backstop._conninfo_value(current_user));
END
$fn$;

-- The session's loopback connection name, connected (reused across calls; reconnected when the
-- other end went away). Null when dblink is not installed.
CREATE FUNCTION backstop._loopback() RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  dblink_schema text := backstop._dblink_schema();
  connection_name constant text := 'backstop_loopback';
  open_connections text[];
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
  EXECUTE format('SELECT %I.dblink_exec($1, $2)', dblink_schema)
    USING connection_name, 'SET search_path = pg_catalog, backstop, pg_temp';
  RETURN connection_name;
END
$fn$;

-- Give the loopback back. It stays open for reuse when dblink lives in schema backstop (whose
-- functions plain roles cannot execute); when dblink lives elsewhere, anyone may be able to
-- call it, and an open superuser connection must not be left lying around.
CREATE FUNCTION backstop._loopback_release() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  dblink_schema text := backstop._dblink_schema();
  open_connections text[];
BEGIN
  IF dblink_schema IS NULL OR dblink_schema = 'backstop' THEN
    RETURN;
  END IF;
  EXECUTE format('SELECT %I.dblink_get_connections()', dblink_schema) INTO open_connections;
  IF 'backstop_loopback' = ANY (coalesce(open_connections, '{}')) THEN
    EXECUTE format('SELECT %I.dblink_disconnect($1)', dblink_schema) USING 'backstop_loopback';
  END IF;
END
$fn$;

-- Run one statement through the loopback (its own committed transaction); returns nothing.
CREATE FUNCTION backstop._loopback_exec(sql text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  EXECUTE format('SELECT %I.dblink_exec($1, $2)', backstop._dblink_schema()) USING backstop._loopback(), sql;
END
$fn$;

-- Read one text value through the loopback: what is committed now, whatever this
-- transaction's snapshot (REPEATABLE READ) can see.
CREATE FUNCTION backstop._loopback_value(sql text) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  result text;
BEGIN
  EXECUTE format('SELECT t.value FROM %I.dblink($1, $2) AS t(value text)', backstop._dblink_schema())
    INTO result USING backstop._loopback(), sql;
  RETURN result;
END
$fn$;

-- Run one statement returning one text value so that it commits at once and reads what is
-- committed: through the loopback when dblink is there (independent of the caller's transaction
-- and its snapshot), else in the caller's transaction (the fallback without dblink).
CREATE FUNCTION backstop._committed_value(sql text) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  result text;
BEGIN
  IF backstop._dblink_schema() IS NOT NULL THEN
    RETURN backstop._loopback_value(sql);
  END IF;
  EXECUTE sql INTO result;
  RETURN result;
END
$fn$;

-- Fail-closed gate: is some agent's heartbeat newer than max_heartbeat_age? Read through the
-- loopback when there is one, so a long REPEATABLE READ snapshot cannot show an old heartbeat.
CREATE FUNCTION backstop._agent_alive() RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  check_sql constant text :=
    'SELECT EXISTS (SELECT FROM backstop.agent_heartbeats h, backstop.settings s
                     WHERE h.last_seen > clock_timestamp() - s.max_heartbeat_age)::text';
  alive text;
BEGIN
  alive := backstop._committed_value(check_sql);
  RETURN alive::boolean;
END
$fn$;

-- An interval as people say it in messages: '20 s', '5 min', '1 h 30 min'.
CREATE FUNCTION backstop._describe_interval(value interval) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT CASE
           WHEN seconds < 120 OR seconds % 60 <> 0 THEN seconds || ' s'
           WHEN seconds < 7200 OR seconds % 3600 <> 0 THEN seconds / 60 || ' min'
           ELSE seconds / 3600 || ' h'
         END
    FROM (SELECT round(extract(epoch FROM value))::bigint AS seconds) AS s
$fn$;

-- The refusal every guarded statement gets when no agent is running.
CREATE FUNCTION backstop._refuse_agent_down(what text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  RAISE EXCEPTION 'Backstop refused %: the Backstop agent is not running (no heartbeat in the last %)',
      what, backstop._describe_interval((backstop._settings()).max_heartbeat_age)
    USING ERRCODE = 'BS001',
          HINT = 'start the agent (backstop agent --db ...) and check SELECT * FROM backstop.agents; then run the statement again';
END
$fn$;

-- The command tag a statement filed ahead would carry ('DROP TABLE', 'TRUNCATE TABLE', ...).
CREATE FUNCTION backstop._command_tag_of(statement text) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT CASE
           WHEN statement ~* '^\s*truncate\M' THEN 'TRUNCATE TABLE'
           WHEN statement ~* '^\s*(drop|alter)\s+(table|schema)\M'
             THEN upper(regexp_replace((regexp_match(statement, '^\s*(\w+\s+\w+)'))[1], '\s+', ' ', 'g'))
           ELSE upper(coalesce((regexp_match(statement, '^\s*(\w+)'))[1], 'UNKNOWN'))
         END
$fn$;

-- Send a decision wake-up. Only a wake-up: the tables are the truth.
CREATE FUNCTION backstop._notify_decision(request_id bigint, status text) RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, backstop, pg_temp
AS $$ SELECT pg_notify('backstop_decisions', json_build_object('id', request_id, 'status', status)::text) $$;

-- File a request. Through the loopback (committed at once, NOTIFY delivered even if the caller
-- rolls back) when dblink is there, else in the caller's transaction. Returns the id.
CREATE FUNCTION backstop._file_request(command_tag text, statement text, search_path text,
                                       filed_ahead boolean, expires_at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  insert_sql text := format(
    'WITH filed AS (
       INSERT INTO backstop.request_log (requester, requester_pid, command_tag, statement,
                                         normalized_statement, search_path, filed_ahead, expires_at)
       VALUES (%L, %s, %L, %L, %L, %L, %L, %L) RETURNING id)
     SELECT id::text FROM filed, LATERAL pg_notify(''backstop_requests'', id::text)',
    session_user, pg_backend_pid(), command_tag, statement, backstop.normalize_statement(statement),
    search_path, filed_ahead, expires_at);
  id text;
BEGIN
  id := backstop._committed_value(insert_sql);
  RETURN id::bigint;
END
$fn$;

-------------------------------------------------------------------------------------------------
-- Functions for everyone
-------------------------------------------------------------------------------------------------

-- File a request ahead of time: SELECT backstop.request($$DROP TABLE users$$);
-- Once approved, running exactly that statement (same role, same text up to whitespace and a
-- trailing semicolon) within settings.request_ttl proceeds without waiting.
--
-- No SET search_path on this wrapper, on purpose: it must read the caller's search_path (the
-- agent resolves unqualified names with it). Its body is one fully qualified call with no
-- operators, so the caller's search_path cannot redirect anything.
CREATE FUNCTION backstop.request(statement text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
AS $fn$
BEGIN
  RETURN backstop._request(statement, pg_catalog.current_setting('search_path'));
END
$fn$;

-- backstop.request() behind its wrapper: file the request (committed at once when dblink is there).
CREATE FUNCTION backstop._request(statement text, caller_search_path text) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  id bigint;
BEGIN
  IF statement IS NULL OR btrim(statement) = '' THEN
    RAISE EXCEPTION 'backstop.request needs the statement you want to run'
      USING ERRCODE = 'BS006', HINT = 'SELECT backstop.request($$DROP TABLE my_table$$);';
  END IF;
  id := backstop._file_request(backstop._command_tag_of(statement), statement, caller_search_path,
                               true, clock_timestamp() + (backstop._settings()).request_ttl);
  IF NOT backstop._agent_alive() THEN
    RAISE NOTICE 'Backstop request % filed, but no Backstop agent is running: it will not be decided until one starts', id
      USING HINT = 'start the agent (backstop agent --db ...) and check SELECT * FROM backstop.agents';
  ELSE
    RAISE NOTICE 'Backstop request % filed; wait for its decision with SELECT backstop.wait(%, ''5 min'');', id, id;
  END IF;
  PERFORM backstop._loopback_release();
  RETURN id;
END
$fn$;
COMMENT ON FUNCTION backstop.request(text) IS 'File a request ahead of time; run the statement once it is approved';

-- Wait until a request reaches a final status (approved, denied, expired, consumed) or the
-- timeout passes; returns the status it has then. Does not change the request.
CREATE FUNCTION backstop.wait(id bigint, timeout interval) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  request_id constant bigint := id;
  status text;
BEGIN
  status := backstop._await_decision(request_id, timeout, false);
  PERFORM backstop._loopback_release();
  IF status IS NULL THEN
    RAISE EXCEPTION 'there is no Backstop request %', request_id
      USING ERRCODE = 'BS006', HINT = 'SELECT id, status, statement FROM backstop.requests ORDER BY id DESC;';
  END IF;
  RETURN status;
END
$fn$;
COMMENT ON FUNCTION backstop.wait(bigint, interval) IS 'Wait for a request to be decided; returns its status';

-- Approve a request. Callers must be members of backstop_approver and (unless
-- settings.allow_self_approval) not the requester. A request the agent has already passed
-- (awaiting_approval) becomes approved now; one still being captured keeps the approval and is
-- granted by the agent once its before-image is in storage.
CREATE FUNCTION backstop.approve(id bigint, note text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  request_id constant bigint := id;
  request backstop.request_log;
  current_status text;
BEGIN
  IF NOT backstop._is_approver() THEN
    RAISE EXCEPTION 'role % may not approve Backstop requests', session_user
      USING ERRCODE = 'BS006', HINT = 'ask a member of backstop_approver, or have a superuser run GRANT backstop_approver TO ' || quote_ident(session_user);
  END IF;
  SELECT * INTO request FROM backstop.request_log r WHERE r.id = request_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'there is no Backstop request %', request_id
      USING ERRCODE = 'BS006', HINT = 'SELECT id, status, statement FROM backstop.requests ORDER BY id DESC;';
  END IF;
  IF request.requester = session_user AND NOT (backstop._settings()).allow_self_approval THEN
    RAISE EXCEPTION 'role % filed request % and may not approve it', session_user, request_id
      USING ERRCODE = 'BS006', HINT = 'ask another member of backstop_approver (self-approval is off: backstop.settings.allow_self_approval)';
  END IF;
  current_status := CASE WHEN EXISTS (SELECT FROM backstop.request_consumptions c WHERE c.request_id = request.id)
                         THEN 'consumed' ELSE request.status END;
  IF backstop._is_final(current_status) THEN
    RAISE EXCEPTION 'request % is already %', request_id, current_status
      USING ERRCODE = 'BS006', HINT = CASE current_status WHEN 'approved' THEN 'nothing to do: run the statement'
                                                          WHEN 'consumed' THEN 'nothing to do: the statement has run'
                                                          ELSE 'file a new request and run the statement again' END;
  END IF;
  IF request.expires_at <= clock_timestamp() THEN
    RAISE EXCEPTION 'request % expired at %', request_id, request.expires_at
      USING ERRCODE = 'BS006', HINT = 'run the statement again (or file a new request with backstop.request)';
  END IF;
  IF request.status = 'awaiting_approval' THEN
    -- Fail-closed: no approval without a live agent behind it.
    IF NOT backstop._agent_alive() THEN
      PERFORM backstop._refuse_agent_down(format('to approve request %s', request_id));
    END IF;
    UPDATE backstop.request_log r
       SET status = 'approved', approved_by = session_user, approved_at = clock_timestamp(), approval_note = note
     WHERE r.id = request_id;
    PERFORM backstop._notify_decision(request_id, 'approved');
    RETURN 'approved';
  END IF;
  -- pending / capturing: the agent grants once the before-image is in storage.
  UPDATE backstop.request_log r
     SET approved_by = session_user, approved_at = clock_timestamp(), approval_note = note
   WHERE r.id = request_id;
  RAISE NOTICE 'approval of request % recorded; it is % and the agent grants it once the before-image is captured', request_id, request.status;
  RETURN request.status;
END
$fn$;
COMMENT ON FUNCTION backstop.approve(bigint, text) IS 'Approve a request (members of backstop_approver; not your own unless allowed)';

-- Deny a request with a reason (approvers and the agent). The waiting statement fails with it.
CREATE FUNCTION backstop.deny(id bigint, reason text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  request_id constant bigint := id;
  request backstop.request_log;
BEGIN
  IF NOT (backstop._is_approver() OR backstop._is_agent()) THEN
    RAISE EXCEPTION 'role % may not deny Backstop requests', session_user
      USING ERRCODE = 'BS006', HINT = 'ask a member of backstop_approver';
  END IF;
  IF reason IS NULL OR btrim(reason) = '' THEN
    RAISE EXCEPTION 'a denial needs a reason'
      USING ERRCODE = 'BS006', HINT = format('SELECT backstop.deny(%s, ''why'');', request_id);
  END IF;
  SELECT * INTO request FROM backstop.request_log r WHERE r.id = request_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'there is no Backstop request %', request_id
      USING ERRCODE = 'BS006', HINT = 'SELECT id, status, statement FROM backstop.requests ORDER BY id DESC;';
  END IF;
  IF EXISTS (SELECT FROM backstop.request_consumptions c WHERE c.request_id = request.id) THEN
    RAISE EXCEPTION 'request % is already consumed: the statement has run', request_id
      USING ERRCODE = 'BS006', HINT = 'restore from its before-image with backstop restore if needed';
  END IF;
  IF backstop._is_final(request.status) THEN
    RAISE EXCEPTION 'request % is already %', request_id, request.status
      USING ERRCODE = 'BS006', HINT = 'nothing to deny';
  END IF;
  UPDATE backstop.request_log r
     SET status = 'denied', reason = deny.reason, decided_by = session_user, decided_at = clock_timestamp()
   WHERE r.id = request_id;
  PERFORM backstop._notify_decision(request_id, 'denied');
  RETURN 'denied';
END
$fn$;
COMMENT ON FUNCTION backstop.deny(bigint, text) IS 'Deny a request with a reason (approvers and the agent)';

-- Ask the agent for an on-demand named snapshot of a table you can read.
CREATE FUNCTION backstop.snapshot(tbl regclass, label text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  id bigint;
  schema_name text;
  table_name text;
BEGIN
  IF NOT (has_table_privilege(session_user, tbl, 'SELECT') OR backstop._is_approver()) THEN
    RAISE EXCEPTION 'role % cannot read %, so it cannot ask for its snapshot', session_user, tbl
      USING ERRCODE = 'BS006', HINT = 'ask the table owner or a member of backstop_approver';
  END IF;
  SELECT n.nspname, c.relname INTO schema_name, table_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
  INSERT INTO backstop.snapshot_requests (requested_by, relid, schema_name, table_name, label)
  VALUES (session_user, tbl, schema_name, table_name, label)
  RETURNING snapshot_requests.id INTO id;
  PERFORM pg_notify('backstop_snapshots', id::text);
  RETURN id;
END
$fn$;
COMMENT ON FUNCTION backstop.snapshot(regclass, text) IS 'Ask the agent for an on-demand snapshot; see backstop.snapshot_requests';

-------------------------------------------------------------------------------------------------
-- Waiting for a decision
-------------------------------------------------------------------------------------------------

-- The request's current status as committed (consumed included), or null when it does not exist.
CREATE FUNCTION backstop._committed_status(request_id bigint) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  status_sql text := format(
    'SELECT CASE WHEN EXISTS (SELECT FROM backstop.request_consumptions c WHERE c.request_id = r.id)
                 THEN ''consumed'' ELSE r.status END
       FROM backstop.request_log r WHERE r.id = %s', request_id);
BEGIN
  RETURN backstop._committed_value(status_sql);
END
$fn$;

-- Wait for request_id to reach a final status, up to timeout. With dblink: LISTEN
-- backstop_decisions on the loopback, poll its notifications every 15 ms, and re-read the status
-- through it on a wake-up and at least every 250 ms. Without dblink: re-read locally every
-- 250 ms (works in READ COMMITTED only). pg_sleep is interruptible, so statement_timeout and
-- pg_cancel_backend end the wait. When expire_on_timeout, a request still undecided at the
-- timeout is marked expired. Returns the status at the end (null: no such request).
CREATE FUNCTION backstop._await_decision(request_id bigint, timeout interval, expire_on_timeout boolean)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  dblink_schema text := backstop._dblink_schema();
  connection_name text;
  deadline timestamptz := clock_timestamp() + timeout;
  last_read timestamptz;
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
    IF clock_timestamp() >= deadline THEN
      IF expire_on_timeout THEN
        PERFORM backstop._expire(request_id, format('no decision within %s (settings.wait_timeout)', backstop._describe_interval(timeout)));
        status := backstop._committed_status(request_id);
      END IF;
      EXIT;
    END IF;
    PERFORM pg_sleep(CASE WHEN connection_name IS NULL THEN 0.25 ELSE 0.015 END);
  END LOOP;
  IF connection_name IS NOT NULL THEN
    PERFORM backstop._loopback_exec('UNLISTEN backstop_decisions');
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

-- Mark a request expired unless it is already final (committed at once through the loopback).
CREATE FUNCTION backstop._expire(request_id bigint, reason text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  expire_sql text := format(
    'WITH expired AS (
       UPDATE backstop.request_log SET status = ''expired'', reason = %L, decided_by = %L, decided_at = clock_timestamp()
        WHERE id = %s AND status NOT IN (''approved'', ''denied'', ''expired'') RETURNING id)
     SELECT count(*)::text FROM expired, LATERAL backstop._notify_decision(id, ''expired'')',
    reason, session_user, request_id);
BEGIN
  PERFORM backstop._committed_value(expire_sql);
END
$fn$;

-------------------------------------------------------------------------------------------------
-- Agent API (EXECUTE granted to backstop_agent only)
-------------------------------------------------------------------------------------------------

-- Record that an agent is alive; info carries hostname, pid, version, leader, listening,
-- storage_url, storage_ok, storage_error.
CREATE FUNCTION backstop.agent_heartbeat(agent_id text, info jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  INSERT INTO backstop.agent_heartbeats AS h (agent_id, last_seen, hostname, pid, version, leader, listening,
                                              storage_url, storage_ok, storage_error, info)
  VALUES (agent_heartbeat.agent_id, clock_timestamp(), info->>'hostname', (info->>'pid')::integer,
          info->>'version', (info->>'leader')::boolean, (info->>'listening')::boolean,
          info->>'storage_url', (info->>'storage_ok')::boolean, info->>'storage_error', coalesce(info, '{}'))
  ON CONFLICT ON CONSTRAINT agent_heartbeats_pkey DO UPDATE
     SET last_seen = excluded.last_seen, hostname = excluded.hostname, pid = excluded.pid,
         version = excluded.version, leader = excluded.leader, listening = excluded.listening,
         storage_url = excluded.storage_url, storage_ok = excluded.storage_ok,
         storage_error = excluded.storage_error, info = excluded.info,
         started_at = CASE WHEN h.pid IS DISTINCT FROM excluded.pid OR h.hostname IS DISTINCT FROM excluded.hostname
                           THEN excluded.last_seen ELSE h.started_at END;
END
$fn$;

-- pending → capturing, exactly once across agents. False when someone else has it, it is no
-- longer pending, or it has expired.
CREATE FUNCTION backstop.agent_claim(request_id bigint, agent_id text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  UPDATE backstop.request_log r
     SET status = 'capturing', agent_id = agent_claim.agent_id
   WHERE r.id = agent_claim.request_id AND r.status = 'pending' AND r.expires_at > clock_timestamp()
     AND NOT EXISTS (SELECT FROM backstop.request_consumptions c WHERE c.request_id = r.id);
  RETURN FOUND;
END
$fn$;

-- The tables a request covers (before it is decided). Their partitions and inheritance
-- children are covered too: dropping a partitioned table drops its partitions.
CREATE FUNCTION backstop.agent_set_targets(request_id bigint, targets regclass[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  request backstop.request_log;
BEGIN
  SELECT * INTO request FROM backstop.request_log r WHERE r.id = agent_set_targets.request_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'there is no Backstop request %', agent_set_targets.request_id USING ERRCODE = 'BS006';
  END IF;
  IF backstop._is_final(request.status) THEN
    RAISE EXCEPTION 'request % is already %: its targets can no longer change', request.id, request.status
      USING ERRCODE = 'BS006';
  END IF;
  UPDATE backstop.request_log r
     SET target_oids = coalesce(given.oids, '{}'),
         targets = coalesce(given.names, '{}'),
         covered_oids = coalesce(backstop._with_descendants(given.oids), '{}')
    FROM (SELECT array_agg(t.relid::oid ORDER BY t.ord) AS oids,
                 array_agg(format('%I.%I', n.nspname, c.relname) ORDER BY t.ord) AS names
            FROM unnest(agent_set_targets.targets) WITH ORDINALITY AS t(relid, ord)
            JOIN pg_class c ON c.oid = t.relid
            JOIN pg_namespace n ON n.oid = c.relnamespace) AS given
   WHERE r.id = request.id;
END
$fn$;

-- oids plus every partition / inheritance child below them.
CREATE FUNCTION backstop._with_descendants(relids oid[]) RETURNS oid[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  WITH RECURSIVE tree(relid) AS (
    SELECT unnest(relids)
    UNION
    SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid
  )
  SELECT array_agg(relid) FROM tree
$fn$;

-- The agent's decision: approved | denied | awaiting_approval. In operator mode, or when the
-- agent asks for a human, 'approved' becomes awaiting_approval until an approver has approved.
-- A request that is already final (e.g. the waiting statement gave up) stays as it is.
-- Returns the resulting status and sends NOTIFY backstop_decisions.
CREATE FUNCTION backstop.agent_decide(request_id bigint, agent_id text, decision text, reason text,
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

-- The agent gives up on a request (e.g. its before-image could not be captured in time).
CREATE FUNCTION backstop.agent_expire(request_id bigint, reason text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  UPDATE backstop.request_log r
     SET status = 'expired', reason = agent_expire.reason, decided_by = coalesce(r.agent_id, session_user),
         decided_at = clock_timestamp()
   WHERE r.id = agent_expire.request_id AND NOT backstop._is_final(r.status)
     AND NOT EXISTS (SELECT FROM backstop.request_consumptions c WHERE c.request_id = r.id);
  IF FOUND THEN
    PERFORM backstop._notify_decision(agent_expire.request_id, 'expired');
  END IF;
END
$fn$;

-- Record (or re-record) a snapshot from its manifest. Fields read: snapshot_id, schema, table,
-- created_at, row_count, size_bytes, sha256 (or checksum), verified, source, request_id, label,
-- location.
CREATE FUNCTION backstop.agent_record_snapshot(manifest jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  IF manifest->>'snapshot_id' IS NULL OR coalesce(manifest->>'schema', manifest->>'schema_name') IS NULL
     OR coalesce(manifest->>'table', manifest->>'table_name') IS NULL THEN
    RAISE EXCEPTION 'a snapshot manifest needs snapshot_id, schema and table' USING ERRCODE = 'BS006';
  END IF;
  INSERT INTO backstop.snapshot_catalog AS s (snapshot_id, schema_name, table_name, created_at, row_count,
                                              size_bytes, checksum, verified, source, request_id, label,
                                              location, manifest)
  VALUES (manifest->>'snapshot_id',
          coalesce(manifest->>'schema', manifest->>'schema_name'),
          coalesce(manifest->>'table', manifest->>'table_name'),
          coalesce((manifest->>'created_at')::timestamptz, clock_timestamp()),
          (manifest->>'row_count')::bigint,
          coalesce(manifest->>'size_bytes', manifest->>'data_bytes')::bigint,
          coalesce(manifest->>'sha256', manifest->>'checksum'),
          coalesce((manifest->>'verified')::boolean, false),
          manifest->>'source',
          (manifest->>'request_id')::bigint,
          manifest->>'label',
          coalesce(manifest->>'location', manifest->>'data_file'),
          manifest)
  ON CONFLICT ON CONSTRAINT snapshot_catalog_pkey DO UPDATE
     SET schema_name = excluded.schema_name, table_name = excluded.table_name, created_at = excluded.created_at,
         row_count = excluded.row_count, size_bytes = excluded.size_bytes, checksum = excluded.checksum,
         verified = excluded.verified, source = excluded.source, request_id = excluded.request_id,
         label = excluded.label, location = excluded.location, manifest = excluded.manifest,
         recorded_at = clock_timestamp();
END
$fn$;

-- A snapshot was pruned from storage: take it out of the catalog.
-- A poll found these tables unchanged since their last capture (same change counters, same
-- columns): their latest snapshot still matches them as of observed_at, so readiness does not
-- age it out. Returns how many snapshots were confirmed.
CREATE FUNCTION backstop.agent_confirm_unchanged(relids oid[], observed_at timestamptz) RETURNS integer
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
     ORDER BY s.schema_name, s.table_name, s.created_at DESC
  ), confirmed AS (
    UPDATE backstop.snapshot_catalog s
       SET confirmed_at = greatest(s.confirmed_at, agent_confirm_unchanged.observed_at)
      FROM latest l WHERE s.snapshot_id = l.snapshot_id
    RETURNING 1
  )
  SELECT count(*)::integer FROM confirmed
$fn$;
COMMENT ON FUNCTION backstop.agent_confirm_unchanged(oid[], timestamptz) IS 'Agent: these tables are unchanged since their latest snapshot (keeps readiness fresh without re-capturing)';

CREATE FUNCTION backstop.agent_forget_snapshot(snapshot_id text) RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $$ DELETE FROM backstop.snapshot_catalog s WHERE s.snapshot_id = agent_forget_snapshot.snapshot_id $$;

-- Something got around the guard (e.g. a table vanished without a consumed request).
CREATE FUNCTION backstop.agent_record_alert(kind text, schema_name text, table_name text, detail text) RETURNS bigint
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  INSERT INTO backstop.alerts (kind, schema_name, table_name, detail)
  VALUES (agent_record_alert.kind, agent_record_alert.schema_name, agent_record_alert.table_name, agent_record_alert.detail)
  RETURNING id
$fn$;

-- After exporting a truncate before-image: drop the image table and its row.
CREATE FUNCTION backstop.agent_drop_truncate_image(request_id bigint, relid oid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  image text;
BEGIN
  DELETE FROM backstop.truncate_images i
   WHERE i.request_id = agent_drop_truncate_image.request_id AND i.relid = agent_drop_truncate_image.relid
  RETURNING i.image_table INTO image;
  IF image IS NOT NULL THEN
    EXECUTE format('DROP TABLE IF EXISTS backstop_images.%I', image);
  END IF;
END
$fn$;

-- An on-demand snapshot asked for with backstop.snapshot() is done (or failed with error).
CREATE FUNCTION backstop.agent_finish_snapshot_request(id bigint, snapshot_id text, error text) RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  UPDATE backstop.snapshot_requests r
     SET status = CASE WHEN agent_finish_snapshot_request.error IS NULL THEN 'done' ELSE 'failed' END,
         snapshot_id = agent_finish_snapshot_request.snapshot_id,
         error = agent_finish_snapshot_request.error,
         finished_at = clock_timestamp()
   WHERE r.id = agent_finish_snapshot_request.id
$fn$;

-------------------------------------------------------------------------------------------------
-- Privileges: read for everyone, write only through the functions above.
-------------------------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA backstop FROM PUBLIC;
-- settings.loopback_conninfo may hold a password: every column but that one.
GRANT SELECT (singleton, max_snapshot_age, max_heartbeat_age, wait_timeout, approval_mode,
              allow_self_approval, request_ttl) ON backstop.settings TO PUBLIC;
GRANT SELECT ON backstop.requests, backstop.agents, backstop.snapshots, backstop.readiness,
                backstop.alerts, backstop.snapshot_requests,
                backstop.truncate_images, backstop.request_log, backstop.request_consumptions,
                backstop.agent_heartbeats, backstop.snapshot_catalog
   TO PUBLIC;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA backstop FROM PUBLIC;
GRANT EXECUTE ON FUNCTION backstop.request(text), backstop.approve(bigint, text), backstop.deny(bigint, text),
                          backstop.wait(bigint, interval), backstop.snapshot(regclass, text),
                          backstop.normalize_statement(text)
   TO PUBLIC;
GRANT EXECUTE ON FUNCTION backstop.agent_heartbeat(text, jsonb), backstop.agent_claim(bigint, text),
                          backstop.agent_set_targets(bigint, regclass[]),
                          backstop.agent_decide(bigint, text, text, text, text[]),
                          backstop.agent_expire(bigint, text), backstop.agent_record_snapshot(jsonb),
                          backstop.agent_forget_snapshot(text),
                          backstop.agent_confirm_unchanged(oid[], timestamptz),
                          backstop.agent_record_alert(text, text, text, text),
                          backstop.agent_drop_truncate_image(bigint, oid),
                          backstop.agent_finish_snapshot_request(bigint, text, text)
   TO backstop_agent;

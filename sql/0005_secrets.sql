-- Backstop 0005: secrets stay with their owner, and nothing is exported that its asker cannot read.
--
-- 1. The loopback connection string. backstop.settings.loopback_conninfo may hold a password
--    (Amazon RDS: the master user's). 0001 kept the column from PUBLIC with column grants, but
--    pg_read_all_data (held by backstop_agent) reads every column of every table regardless. The
--    value now lives in backstop.loopback_secret, a one-row table with row-level security and no
--    policy (like backstop.attach_secret, 0003): only its owner and superusers read it.
--    `UPDATE backstop.settings SET loopback_conninfo = '...'` still works: a trigger moves the
--    value there and leaves the marker '(set)' in the settings row.
-- 2. backstop.snapshot(regclass, label) let approvers ask for any table (an approver's
--    SELECT backstop.snapshot('backstop.settings') exported the loopback password to storage).
--    Now the caller must be able to read every row of the table, and Backstop's own tables and
--    the system catalogs are never exported. The agent asks the same question again when it
--    serves a request (backstop._snapshot_refusal).
-- 3. TRUNCATE before-images: the copy taken inside the truncating session holds every row or the
--    TRUNCATE is refused (row_security = off), and a copy of a table with row-level security
--    keeps it switched on, so pg_read_all_data alone does not read the rows through the copy.
--
-- What row-level security cannot do: a role that holds pg_read_all_data AND the BYPASSRLS
-- attribute reads every row of every table, these secrets included (and PostgreSQL's own
-- pg_authid and pg_user_mapping, through pg_read_all_data alone). An agent login role given
-- BYPASSRLS so that it can capture tables with row-level security is such a role; see
-- docs/guard.md, "Who may read what".

-------------------------------------------------------------------------------------------------
-- 1. The loopback connection string
-------------------------------------------------------------------------------------------------

-- At most one row. Row-level security with no policy hides it from every role that is not its
-- owner or a superuser (or holds BYPASSRLS), pg_read_all_data included.
CREATE TABLE backstop.loopback_secret (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  conninfo  text NOT NULL
);
COMMENT ON TABLE backstop.loopback_secret IS 'Backstop internal: the loopback connection string set through backstop.settings.loopback_conninfo; readable by its owner only';
ALTER TABLE backstop.loopback_secret ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON backstop.loopback_secret FROM PUBLIC;

-- A value set before this migration moves over; the settings row keeps only the marker.
INSERT INTO backstop.loopback_secret (conninfo)
SELECT s.loopback_conninfo FROM backstop.settings s WHERE s.loopback_conninfo IS NOT NULL;
UPDATE backstop.settings SET loopback_conninfo = '(set)' WHERE loopback_conninfo IS NOT NULL;
COMMENT ON COLUMN backstop.settings.loopback_conninfo IS
  'dblink connection string back to this database; null = built from the socket directory and port. Writing a value stores it in backstop.loopback_secret (owner only) and leaves ''(set)'' here';

-- BEFORE INSERT OR UPDATE on backstop.settings. Guarantees that a connection string written into
-- settings.loopback_conninfo never stays in the settings row: it is stored in
-- backstop.loopback_secret and the row keeps '(set)'; null clears the secret. Not SECURITY
-- DEFINER: only roles that may write settings fire it (the owner and superusers), and a role
-- granted UPDATE on settings later still needs the secret table to set a secret.
CREATE FUNCTION backstop._keep_loopback_secret() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
BEGIN
  IF tg_op = 'UPDATE' AND new.loopback_conninfo IS NOT DISTINCT FROM old.loopback_conninfo THEN
    RETURN new;
  END IF;
  IF new.loopback_conninfo IS NULL THEN
    DELETE FROM backstop.loopback_secret;
  ELSIF new.loopback_conninfo = '(set)' THEN
    IF NOT EXISTS (SELECT FROM backstop.loopback_secret) THEN
      RAISE EXCEPTION '''(set)'' only marks a stored loopback connection string, and none is stored'
        USING ERRCODE = 'BS006',
              HINT = 'UPDATE backstop.settings SET loopback_conninfo = ''host=… dbname=… user=… password=…''; (or NULL to build it automatically)';
    END IF;
  ELSE
    INSERT INTO backstop.loopback_secret AS s (conninfo) VALUES (new.loopback_conninfo)
    ON CONFLICT ON CONSTRAINT loopback_secret_pkey DO UPDATE SET conninfo = excluded.conninfo;
    new.loopback_conninfo := '(set)';
  END IF;
  RETURN new;
END
$fn$;
REVOKE ALL ON FUNCTION backstop._keep_loopback_secret() FROM PUBLIC;

CREATE TRIGGER backstop_loopback_secret BEFORE INSERT OR UPDATE ON backstop.settings
  FOR EACH ROW EXECUTE FUNCTION backstop._keep_loopback_secret();
-- ENABLE ALWAYS like every Backstop trigger: under session_replication_role = replica the value
-- must not land in the settings row either.
ALTER TABLE backstop.settings ENABLE ALWAYS TRIGGER backstop_loopback_secret;

-- Replaces 0001's backstop._loopback_conninfo(): the configured connection string now comes from
-- backstop.loopback_secret. How the loopback connects back to this database: that string, else
-- the first unix socket directory (or 127.0.0.1) and this server's port, as the function owner
-- (the installing superuser: the caller of this SECURITY DEFINER chain).
CREATE OR REPLACE FUNCTION backstop._loopback_conninfo() RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  configured text := (SELECT s.conninfo FROM backstop.loopback_secret s);
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
REVOKE ALL ON FUNCTION backstop._loopback_conninfo() FROM PUBLIC;

-------------------------------------------------------------------------------------------------
-- 2. On-demand snapshots: only what the asker can read, in full
-------------------------------------------------------------------------------------------------

-- Why the agent must not export relid at the request of role requester, with what to do instead;
-- both null when it may. The asker must be able to read every row of an ordinary or partitioned
-- table or a materialized view: USAGE on its schema and SELECT on it, and, when it has
-- row-level security, see past it (superuser, BYPASSRLS, or its owner without FORCE ROW LEVEL
-- SECURITY) — a snapshot holds all rows. Never Backstop's own tables, system catalogs, views
-- (their rows depend on who reads them), foreign tables (the agent's user mapping is not the
-- asker's) or temporary tables. Answers from the catalogs as they are now, so the agent asks
-- again when it serves a request filed earlier.
CREATE FUNCTION backstop._snapshot_refusal(requester text, relid oid, OUT reason text, OUT hint text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  rel record;
  asker record;
BEGIN
  SELECT c.oid, c.relkind, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity, c.relowner,
         n.oid AS schema_oid, n.nspname AS schema_name, format('%I.%I', n.nspname, c.relname) AS name
    INTO rel
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = _snapshot_refusal.relid;
  IF NOT FOUND THEN
    reason := format('there is no table with OID %s', relid);
    hint := 'it was dropped; ask again for a table that exists';
  ELSIF rel.schema_name IN ('backstop', 'backstop_images') THEN
    reason := format('%s is one of Backstop''s own tables, which are never exported', rel.name);
    hint := 'read it with SELECT (backstop.requests, backstop.snapshots, ...); snapshots are for your own tables';
  ELSIF rel.oid < 16384 OR rel.schema_name IN ('pg_catalog', 'information_schema') OR rel.schema_name LIKE 'pg\_%' THEN
    reason := format('%s is a system catalog, which is never exported', rel.name);
    hint := 'snapshots are for your own tables';
  ELSIF rel.relkind NOT IN ('r', 'p', 'm') THEN
    reason := format('%s is not a table (views and foreign tables show different rows to different roles)', rel.name);
    hint := 'ask for a snapshot of the tables it reads';
  ELSIF rel.relpersistence = 't' THEN
    reason := format('%s is a temporary table: only its own session can read it', rel.name);
    hint := 'copy it into a permanent table first';
  ELSE
    SELECT r.oid, r.rolsuper, r.rolbypassrls INTO asker FROM pg_roles r WHERE r.rolname = requester;
    IF NOT FOUND THEN
      reason := format('role %s no longer exists', quote_ident(requester));
      hint := 'ask again as an existing role';
    ELSIF NOT (has_schema_privilege(asker.oid, rel.schema_oid, 'USAGE') AND has_table_privilege(asker.oid, rel.oid, 'SELECT')) THEN
      reason := format('role %s cannot read %s, so it cannot ask for its snapshot', quote_ident(requester), rel.name);
      hint := 'ask the table owner, or a role that can SELECT from the table, to ask for it';
    ELSIF rel.relrowsecurity
          AND NOT (asker.rolsuper OR asker.rolbypassrls
                   OR (pg_has_role(asker.oid, rel.relowner, 'USAGE') AND NOT rel.relforcerowsecurity)) THEN
      reason := format('%s has row-level security: role %s reads only the rows its policies allow, and a snapshot holds every row',
                       rel.name, quote_ident(requester));
      hint := 'ask the table owner (without FORCE ROW LEVEL SECURITY) or a role with BYPASSRLS to ask for it';
    END IF;
  END IF;
END
$fn$;
REVOKE ALL ON FUNCTION backstop._snapshot_refusal(text, oid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION backstop._snapshot_refusal(text, oid) TO backstop_agent;
COMMENT ON FUNCTION backstop._snapshot_refusal(text, oid) IS
  'Agent: why a role may not have a table exported by backstop.snapshot() (reason and hint), or nulls when it may; asked again before serving a request';

-- Replaces 0001's backstop.snapshot(): no approver exception, and the asker (session_user) must
-- be able to read every row (backstop._snapshot_refusal). Files an on-demand snapshot request
-- and wakes the agent; returns the request id (see backstop.snapshot_requests).
CREATE OR REPLACE FUNCTION backstop.snapshot(tbl regclass, label text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
DECLARE
  id bigint;
  refusal record;
  schema_name text;
  table_name text;
BEGIN
  SELECT r.reason, r.hint INTO refusal FROM backstop._snapshot_refusal(session_user, tbl) r;
  IF refusal.reason IS NOT NULL THEN
    RAISE EXCEPTION '%', refusal.reason USING ERRCODE = 'BS006', HINT = refusal.hint;
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
REVOKE ALL ON FUNCTION backstop.snapshot(regclass, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION backstop.snapshot(regclass, text) TO PUBLIC;
COMMENT ON FUNCTION backstop.snapshot(regclass, text) IS
  'Ask the agent for an on-demand snapshot of a table you can read in full (not Backstop''s own); see backstop.snapshot_requests';

-------------------------------------------------------------------------------------------------
-- 3. TRUNCATE before-images hold every row, and keep row-level security
-------------------------------------------------------------------------------------------------

-- Replaces 0002's backstop._take_truncate_image(request_id, relid). Copies the table's rows into
-- backstop_images inside the truncating session (the table is locked: nobody else can read it)
-- and records the image; the agent exports it after commit. Guarantees:
--   * the copy holds every row: it is read with row_security = off, as Backstop's owner (a
--     superuser bypasses row-level security); an owner that policies would filter is refused
--     with what to grant, instead of a copy missing rows;
--   * a copy of a table with row-level security has it enabled too (no policy), so roles that
--     could not see the table's rows (pg_read_all_data without BYPASSRLS) do not read the copy.
--     The statement enabling it carries the attach marker (see 0003): it is Backstop's own DDL.
CREATE OR REPLACE FUNCTION backstop._take_truncate_image(request_id bigint, relid oid) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, backstop, pg_temp
SET row_security = off
AS $fn$
DECLARE
  image constant text := format('r%s_%s', request_id, relid);
  schema_name text;
  table_name text;
  kind "char";
  protected boolean;
  row_count bigint;
BEGIN
  SELECT n.nspname, c.relname, c.relkind, c.relrowsecurity INTO schema_name, table_name, kind, protected
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = relid;
  IF kind = 'p' OR EXISTS (SELECT FROM backstop.truncate_images i
                            WHERE i.request_id = _take_truncate_image.request_id AND i.relid = _take_truncate_image.relid) THEN
    RETURN;  -- a partitioned table holds no rows itself; its partitions get their own images
  END IF;
  IF row_security_active(relid) THEN
    RAISE EXCEPTION 'Backstop refused TRUNCATE of %.%: row-level security hides some of its rows from %, the role that copies the before-image',
        quote_ident(schema_name), quote_ident(table_name), quote_ident(current_user)
      USING ERRCODE = '42501',
            HINT = format('as a superuser run: ALTER ROLE %I BYPASSRLS; (the role that installed Backstop)', current_user);
  END IF;
  EXECUTE format('CREATE TABLE backstop_images.%I AS SELECT * FROM ONLY %I.%I', image, schema_name, table_name);
  GET DIAGNOSTICS row_count = ROW_COUNT;
  IF protected THEN
    PERFORM set_config('backstop.attaching', coalesce((SELECT s.secret FROM backstop.attach_secret s), ''), true);
    EXECUTE format('ALTER TABLE backstop_images.%I ENABLE ROW LEVEL SECURITY', image);
    PERFORM set_config('backstop.attaching', '', true);
  END IF;
  EXECUTE format('GRANT SELECT ON backstop_images.%I TO backstop_agent', image);
  INSERT INTO backstop.truncate_images (request_id, relid, schema_name, table_name, image_table, row_count)
  VALUES (request_id, relid, schema_name, table_name, image, row_count);
END
$fn$;
REVOKE ALL ON FUNCTION backstop._take_truncate_image(bigint, oid) FROM PUBLIC;

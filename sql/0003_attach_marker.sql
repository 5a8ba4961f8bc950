-- Backstop 0003: an unforgeable marker for the DDL Backstop runs itself.
--
-- Attaching the TRUNCATE guard to a new table runs two nested statements (CREATE TRIGGER, then
-- ALTER TABLE ... ENABLE ALWAYS TRIGGER), and each fired the event triggers again, which
-- re-checked the guard being created: about 0.4 ms of every CREATE TABLE (BENCHMARKS.md,
-- finding 4). 0002 marked them with the setting backstop.attaching = 'on', which any role can
-- SET, so only the ddl_command_start pause (a heuristic; the authoritative checks still ran)
-- could trust it. Now the marker's value is a random secret that only Backstop's own code can
-- read, so the ddl_command_end checks can skip those statements too.

-- One row: the secret. Row-level security with no policy hides it from every role that is not
-- its owner or a superuser, including pg_read_all_data (held by backstop_agent), which does not
-- bypass RLS.
CREATE TABLE backstop.attach_secret (secret text NOT NULL);
COMMENT ON TABLE backstop.attach_secret IS 'Backstop internal: marks the DDL Backstop runs itself; readable by its owner only';
INSERT INTO backstop.attach_secret (secret)
VALUES (replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
ALTER TABLE backstop.attach_secret ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON backstop.attach_secret FROM PUBLIC;

-- Is the statement being run one of Backstop's own (inside _attach_truncate_guard)? True only
-- when backstop.attaching holds the secret; run by anyone but Backstop's code (whose event
-- trigger functions are SECURITY DEFINER), the secret is invisible and the answer is false.
CREATE FUNCTION backstop._attaching() RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, backstop, pg_temp
AS $fn$
  SELECT coalesce(current_setting('backstop.attaching', true) = (SELECT s.secret FROM backstop.attach_secret s), false)
$fn$;
REVOKE ALL ON FUNCTION backstop._attaching() FROM PUBLIC;

-- Attach the TRUNCATE guard to a table (idempotent), ENABLE ALWAYS; its two statements carry the marker.
CREATE OR REPLACE FUNCTION backstop._attach_truncate_guard(relid oid) RETURNS void
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
  -- The nested CREATE TRIGGER / ALTER TABLE below are Backstop's own: mark them so that the
  -- event triggers do not re-check them (see backstop._attaching).
  PERFORM set_config('backstop.attaching', coalesce((SELECT s.secret FROM backstop.attach_secret s), ''), true);
  IF state IS NULL THEN
    EXECUTE format('CREATE TRIGGER backstop_truncate_guard BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION backstop.guard_truncate()', qualified);
  END IF;
  EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER backstop_truncate_guard', qualified);
  PERFORM set_config('backstop.attaching', '', true);
END
$fn$;

-- ddl_command_start (see 0002): the marker now has to hold the secret.
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

-- ddl_command_end (see 0002): Backstop's own nested statements are not re-checked.
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

-- Remove Backstop: the event triggers, the TRUNCATE guard on every table, and the schemas
-- backstop and backstop_images (with dblink when Backstop installed it there). User tables and
-- their data stay. Before-images of truncated tables not yet exported by the agent are dropped
-- with backstop_images. The roles backstop_agent and backstop_approver are cluster-wide and may
-- be used by other databases: they are left in place.

DROP EVENT TRIGGER IF EXISTS backstop_guard_statement;
DROP EVENT TRIGGER IF EXISTS backstop_guard_dropped;
DROP EVENT TRIGGER IF EXISTS backstop_guard_rewrite;
DROP EVENT TRIGGER IF EXISTS backstop_guard_new_tables;

DO $uninstall$
DECLARE
  guarded record;
BEGIN
  FOR guarded IN
    SELECT n.nspname, c.relname
      FROM pg_catalog.pg_trigger t
      JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE t.tgname = 'backstop_truncate_guard'
  LOOP
    EXECUTE pg_catalog.format('DROP TRIGGER backstop_truncate_guard ON %I.%I', guarded.nspname, guarded.relname);
  END LOOP;
END
$uninstall$;

-- Staging schemas of undos and restores in progress (see 0007_undo.sql), known by the restore log.
DO $staging$
DECLARE
  staging text;
BEGIN
  IF pg_catalog.to_regclass('backstop.restore_log') IS NULL THEN
    RETURN;
  END IF;
  FOR staging IN
    EXECUTE 'SELECT n.nspname FROM backstop.restore_log l JOIN pg_catalog.pg_namespace n ON n.oid = l.staging_oid
              WHERE l.status <> ''done'' AND l.discarded_at IS NULL'
  LOOP
    EXECUTE pg_catalog.format('DROP SCHEMA %I CASCADE', staging);
  END LOOP;
END
$staging$;

DROP SCHEMA IF EXISTS backstop_images CASCADE;
DROP SCHEMA IF EXISTS backstop CASCADE;

DO $roles$
BEGIN
  RAISE NOTICE 'Backstop removed; the roles backstop_agent and backstop_approver are left in place (they are cluster-wide): DROP ROLE them when no database uses Backstop';
END
$roles$;

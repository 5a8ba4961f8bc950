-- Proposed guard change, measured with `npm run bench -- --scenarios ddl-overhead
-- --after-install-sql bench/proposals/skip-nested-attach.sql` (not shipped: the guard's owners decide).
--
-- CREATE TABLE's ddl_command_end trigger attaches the TRUNCATE guard with two nested DDL
-- statements (CREATE TRIGGER, ALTER TABLE … ENABLE ALWAYS TRIGGER), and each of them fires
-- backstop.guard_new_tables() again, which re-checks the guard _attach_truncate_guard is in the
-- middle of creating. While backstop.attaching is on, the nested commands are Backstop's own:
-- return at once.
--
-- NOT SAFE TO SHIP AS WRITTEN: backstop.attaching is a custom setting any role can SET, so a
-- table owner could turn it on and then disable the TRUNCATE guard unchallenged. This file only
-- measures what skipping the nested re-checks would save; a shippable version needs a marker
-- that only Backstop's SECURITY DEFINER code can set.
DO $patch$
DECLARE
  definition text := pg_catalog.pg_get_functiondef('backstop.guard_new_tables()'::pg_catalog.regprocedure);
  marker constant text := E'BEGIN\n  IF tg_tag IN (''CREATE TABLE''';
  patched text := pg_catalog.replace(definition, marker,
    E'BEGIN\n  IF pg_catalog.current_setting(''backstop.attaching'', true) = ''on'' THEN\n    RETURN;\n  END IF;\n  IF tg_tag IN (''CREATE TABLE''');
BEGIN
  IF patched = definition THEN
    RAISE EXCEPTION 'backstop.guard_new_tables() changed: this proposal is obsolete';
  END IF;
  EXECUTE patched;
END
$patch$;

/**
 * Which roles row-level security would stop from capturing which tables. The agent reads with
 * row_security = off, so a table whose policies apply to its role cannot be captured at all (the
 * read fails instead of missing rows). A role sees past row-level security when it is a
 * superuser, has the BYPASSRLS attribute, or owns the table (through role membership) and the
 * table is not FORCE ROW LEVEL SECURITY. BYPASSRLS is never inherited: a login role in
 * backstop_agent needs it itself. install, doctor and the agent's start say what to grant.
 */
import type pg from 'pg';

/** A client or a pool: every query here is a single statement. */
type Queryable = pg.ClientBase | pg.Pool;

/** User tables (outside system and Backstop schemas) with row-level security enabled. */
const RLS_TABLES_SQL = `
  SELECT c.oid, c.relowner, c.relforcerowsecurity, pg_catalog.format('%I.%I', n.nspname, c.relname) AS name
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relrowsecurity AND c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
     AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'backstop', 'backstop_images')
     AND n.nspname NOT LIKE 'pg\\_%'`;

export interface RowSecurityGap {
  /** The role, quoted as an identifier where needed (ready for ALTER ROLE). */
  role: string;
  /** Tables whose policies apply to it, qualified and quoted, in name order. */
  tables: string[];
}

/** Qualified names of the user tables with row-level security enabled. */
export async function rowSecurityTables(client: Queryable): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>(`SELECT t.name FROM (${RLS_TABLES_SQL}) AS t ORDER BY t.name`);
  return rows.map((row) => row.name);
}

async function gaps(client: Queryable, rolesSql: string, values: unknown[]): Promise<RowSecurityGap[]> {
  const { rows } = await client.query<RowSecurityGap>(
    `WITH rls AS (${RLS_TABLES_SQL}),
          roles AS (${rolesSql})
     SELECT pg_catalog.quote_ident(r.rolname) AS role, pg_catalog.array_agg(t.name ORDER BY t.name) AS tables
       FROM roles r
       JOIN rls t ON NOT (r.rolsuper OR r.rolbypassrls
                          OR (pg_catalog.pg_has_role(r.oid, t.relowner, 'USAGE') AND NOT t.relforcerowsecurity))
      GROUP BY r.rolname
      ORDER BY r.rolname`,
    values,
  );
  return rows;
}

/** The tables row-level security would stop the connected role from capturing (empty: none). */
export async function connectedRoleGap(client: Queryable): Promise<RowSecurityGap | null> {
  const [gap] = await gaps(client, `SELECT r.oid, r.rolname, r.rolsuper, r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`, []);
  return gap ?? null;
}

/**
 * Login roles in backstop_agent (the agent's login roles; superusers are not counted as members)
 * that row-level security would stop from capturing some tables. Empty when the role
 * backstop_agent does not exist.
 */
export async function agentLoginGaps(client: Queryable): Promise<RowSecurityGap[]> {
  return gaps(
    client,
    `SELECT r.oid, r.rolname, r.rolsuper, r.rolbypassrls
       FROM pg_catalog.pg_roles r, pg_catalog.pg_roles a
      WHERE a.rolname = 'backstop_agent' AND r.rolcanlogin AND NOT r.rolsuper AND r.oid <> a.oid
        AND pg_catalog.pg_has_role(r.oid, a.oid, 'MEMBER')`,
    [],
  );
}

/** The `ALTER ROLE … BYPASSRLS;` statements that close the gaps, space-separated. */
export function bypassGrants(gapsFound: RowSecurityGap[]): string {
  return gapsFound.map((gap) => `ALTER ROLE ${gap.role} BYPASSRLS;`).join(' ');
}

/** "public.a, public.b and 3 more" for messages. */
export function someTables(tables: string[], shown = 3): string {
  return tables.length <= shown ? tables.join(', ') : `${tables.slice(0, shown).join(', ')} and ${tables.length - shown} more`;
}

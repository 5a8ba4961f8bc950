/**
 * What the installing role must be able to do. Event triggers can only be created by a superuser
 * (on Amazon RDS / Aurora: the master user, a member of rds_superuser), so we check before
 * touching anything rather than failing half-way.
 */
import type pg from 'pg';
import { PrivilegeError } from '../errors/index.js';

export interface InstallerRole {
  name: string;
  superuser: boolean;
  /** Member of a managed-service administrator role that may create event triggers. */
  managedAdmin: string | null;
}

const MANAGED_ADMIN_ROLES = ['rds_superuser', 'azure_pg_admin', 'cloudsqlsuperuser'];

export async function describeInstallerRole(client: pg.Client): Promise<InstallerRole> {
  const { rows } = await client.query<{ name: string; superuser: boolean; managed_admin: string | null }>(
    `SELECT r.rolname AS name, r.rolsuper AS superuser,
            (SELECT a.rolname FROM pg_roles a
              WHERE a.rolname = ANY($1::text[]) AND pg_has_role(r.oid, a.oid, 'MEMBER')
              LIMIT 1) AS managed_admin
       FROM pg_roles r WHERE r.rolname = current_user`,
    [MANAGED_ADMIN_ROLES],
  );
  const row = rows[0]!;
  return { name: row.name, superuser: row.superuser, managedAdmin: row.managed_admin };
}

export async function assertCanInstall(client: pg.Client): Promise<InstallerRole> {
  const role = await describeInstallerRole(client);
  if (!role.superuser && !role.managedAdmin) {
    throw new PrivilegeError(`role "${role.name}" cannot create event triggers, which the Backstop guard is made of`, {
      hint: 'run backstop install as a superuser (on Amazon RDS or Aurora: the master user); nothing was changed',
    });
  }
  return role;
}

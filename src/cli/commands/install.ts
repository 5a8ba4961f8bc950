/** `backstop install` and `backstop uninstall`. */
import type { Command } from 'commander';
import { connect, resolveDatabase } from '../../db/connection.js';
import { bypassGrants, someTables } from '../../db/row-security.js';
import { install, installScript, uninstall, type InstallResult } from '../../install/install.js';
import { createLogger, type Logger } from '../../log/logger.js';
import { withDatabaseOption } from '../program.js';

/**
 * Install does not know which role the agent will log in as. With tables under row-level
 * security it says what that role needs, and names the agent login roles that lack it.
 */
function reportRowSecurity(logger: Logger, result: InstallResult): void {
  const { tables, agentLoginGaps } = result.rowSecurity;
  if (tables.length === 0) return;
  if (agentLoginGaps.length > 0) {
    logger.warn(`row-level security would stop the agent's login role(s) ${agentLoginGaps.map((gap) => gap.role).join(', ')} from capturing ${someTables(tables)}`, {
      hint: `as a superuser run: ${bypassGrants(agentLoginGaps)} (BYPASSRLS is a role attribute: membership in backstop_agent does not carry it)`,
    });
    return;
  }
  logger.info(`${tables.length} table(s) use row-level security (${someTables(tables)}): the agent's login role needs BYPASSRLS to capture them`, {
    hint: 'as a superuser run: ALTER ROLE <agent login role> BYPASSRLS; (membership in backstop_agent does not carry it; without it those tables are not captured and their DROP/ALTER is denied)',
  });
}

export function registerInstallCommands(program: Command): void {
  withDatabaseOption(program.command('install'))
    .description('install or upgrade the Backstop schema, guard triggers and roles (idempotent)')
    .option('--dry-run', 'print the SQL that would run instead of running it')
    .action(async (options: { db?: string; dryRun?: boolean }) => {
      const target = resolveDatabase(options.db);
      const client = await connect(target);
      try {
        if (options.dryRun) {
          process.stdout.write(await installScript(client));
          return;
        }
        const logger = createLogger();
        const result = await install(client, { logger });
        if (result.applied.length === 0) logger.info(`Backstop is already installed and up to date in ${target.description}`);
        else logger.info(`installed Backstop into ${target.description}`, { migrations: result.applied });
        if (result.repaired.length > 0) {
          logger.warn('put back parts of the guard that were missing or switched off', { repaired: result.repaired, hint: 'find out who removed them; backstop doctor checks them' });
        }
        reportRowSecurity(logger, result);
        if (!result.dblink) {
          logger.warn('dblink is not available: guarded statements cannot file requests by themselves', {
            hint: 'install the postgresql contrib package (CREATE EXTENSION dblink) and rerun install, or file requests first with SELECT backstop.request($$...$$)',
          });
        }
      } finally {
        await client.end();
      }
    });

  withDatabaseOption(program.command('uninstall'))
    .description('remove every Backstop object from the database; user tables and data stay')
    .action(async (options: { db?: string }) => {
      const target = resolveDatabase(options.db);
      const client = await connect(target);
      try {
        await uninstall(client);
        createLogger().info(`removed Backstop from ${target.description}; user tables and data are untouched`, {
          roles: 'backstop_agent and backstop_approver are cluster-wide and were left in place: DROP ROLE them when no database uses Backstop',
        });
      } finally {
        await client.end();
      }
    });
}

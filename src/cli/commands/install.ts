/** `backstop install` and `backstop uninstall`. */
import type { Command } from 'commander';
import { connect, resolveDatabase } from '../../db/connection.js';
import { install, installScript, uninstall } from '../../install/install.js';
import { createLogger } from '../../log/logger.js';
import { withDatabaseOption } from '../program.js';

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

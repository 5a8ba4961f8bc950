/** `backstop undo <request>`: reverse what an approved request destroyed (see src/restore/undo.ts). */
import type { Command } from 'commander';
import { resolveDatabase, withClient } from '../../db/connection.js';
import { ConfigError } from '../../errors/index.js';
import { undoRequest } from '../../restore/undo.js';
import { withDatabaseOption } from '../program.js';

export function registerUndoCommand(program: Command): void {
  withDatabaseOption(program.command('undo'))
    .description('reverse what an approved request destroyed (DROP, destructive ALTER, TRUNCATE), as SELECT backstop.undo(id) does in psql')
    .argument('<request>', 'the request id (SELECT id, command_tag, statement FROM backstop.requests)')
    .option('--json', 'print the outcome as JSON')
    .action(async (request: string, options: { db?: string; json?: boolean }) => {
      if (!/^[1-9][0-9]*$/.test(request)) {
        throw new ConfigError(`"${request}" is not a request id`, { hint: 'pass the number from SELECT id, statement FROM backstop.requests ORDER BY id DESC;' });
      }
      const outcome = await withClient(resolveDatabase(options.db), (client) =>
        undoRequest(client, Number(request), (message) => process.stderr.write(`NOTICE:  ${message}\n`)), 'backstop undo');
      if (options.json) process.stdout.write(`${JSON.stringify(outcome, null, 2)}\n`);
      else process.stdout.write(`${outcome.summary}\n`);
    });
}

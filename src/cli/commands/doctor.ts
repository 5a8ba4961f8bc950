/** `backstop doctor`: read-only health check of the guard, the agent and storage. */
import type { Command } from 'commander';
import { withClient, resolveDatabase } from '../../db/connection.js';
import { runDoctor, type CheckResult } from '../../doctor/checks.js';
import { openStorage } from '../../storage/open.js';
import { withDatabaseOption, withStorageOption } from '../program.js';

function printHuman(results: CheckResult[]): void {
  const marks = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL' } as const;
  const width = Math.max(...results.map((result) => result.check.length));
  for (const result of results) {
    process.stdout.write(`${marks[result.status]}  ${result.check.padEnd(width)}  ${result.detail}\n`);
    if (result.hint && result.status !== 'ok') process.stdout.write(`${' '.repeat(width + 8)}hint: ${result.hint}\n`);
  }
}

export function registerDoctorCommand(program: Command): void {
  withStorageOption(withDatabaseOption(program.command('doctor')))
    .description('check the installation, triggers, dblink loopback, agents, readiness and storage (read-only)')
    .option('--json', 'print the findings as JSON')
    .action(async (options: { db?: string; storage?: string; json?: boolean }) => {
      const storage = options.storage ? openStorage(options.storage) : undefined;
      const results = await withClient(resolveDatabase(options.db), (client) => runDoctor(client, storage));
      if (options.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
      else printHuman(results);
      if (results.some((result) => result.status === 'fail')) process.exitCode = 1;
    });
}

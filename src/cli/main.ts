/** Entry point of the `backstop` command. Each command lives in commands/. */
import { createProgram, reportFailure } from './program.js';
import { registerInstallCommands } from './commands/install.js';
import { registerAgentCommand } from './commands/agent.js';
import { registerRestoreCommands } from './commands/restore.js';
import { registerSnapshotCommands } from './commands/snapshot.js';
import { registerDoctorCommand } from './commands/doctor.js';

const program = createProgram();
registerInstallCommands(program);
registerAgentCommand(program);
registerRestoreCommands(program);
registerSnapshotCommands(program);
registerDoctorCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  process.exitCode = reportFailure(error);
}

/**
 * The commander program and how failures reach the user: one line saying what went wrong, one
 * line with a hint, and a non-zero exit code. Stack traces only with BACKSTOP_LOG_LEVEL=debug.
 */
import { Command, CommanderError } from 'commander';
import { BackstopError, describeError } from '../errors/index.js';
import { BACKSTOP_VERSION } from '../version.js';

export function reportFailure(error: unknown, stream: NodeJS.WritableStream = process.stderr): number {
  // Commander has printed its own message (and the usage). Help and --version exit 0; anything
  // else it refuses (a missing required option, an unknown flag, a missing argument) is a bad
  // invocation, which exits 2 like every other bad flag (commander would say 1).
  if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : 2;
  if (error instanceof BackstopError) {
    stream.write(`error: ${error.message}\n`);
    if (error.hint) stream.write(`hint: ${error.hint}\n`);
    if (process.env.BACKSTOP_LOG_LEVEL === 'debug' && error.cause) stream.write(`cause: ${describeError(error.cause)}\n`);
    return error.exitCode;
  }
  stream.write(`error: ${describeError(error)}\n`);
  stream.write('hint: this is unexpected; rerun with BACKSTOP_LOG_LEVEL=debug and report it with the output\n');
  if (process.env.BACKSTOP_LOG_LEVEL === 'debug' && error instanceof Error && error.stack) stream.write(`${error.stack}\n`);
  return 1;
}

export function createProgram(): Command {
  return new Command('backstop')
    .description('Guard PostgreSQL against unapproved DROP, destructive ALTER and TRUNCATE; snapshot and restore tables.')
    .version(BACKSTOP_VERSION)
    .showHelpAfterError()
    .exitOverride();
}

/** Options every command that talks to PostgreSQL accepts. */
export function withDatabaseOption(command: Command): Command {
  return command.option('--db <url>', 'PostgreSQL connection string (default: DATABASE_URL, then PG* variables)');
}

/** Options every command that reads or writes snapshots accepts. */
export function withStorageOption(command: Command): Command {
  return command.option('--storage <url>', 'snapshot storage: s3://bucket[/prefix][@endpoint], file:///path or a folder (default: ./backstop-data)');
}

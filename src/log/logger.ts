/**
 * Structured logging. On a terminal, lines are short and human; otherwise each line is one JSON
 * object (time, level, msg, fields) so journald, Docker and log shippers can parse it.
 * Logs go to stderr: stdout is reserved for command output (JSON listings, SQL from --dry-run).
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const LEVEL_ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Force JSON lines (true) or human lines (false); default: JSON unless stderr is a TTY. */
  json?: boolean;
  stream?: NodeJS.WritableStream;
  fields?: LogFields;
}

function levelFromEnv(): LogLevel {
  const value = process.env.BACKSTOP_LOG_LEVEL;
  return value === 'debug' || value === 'info' || value === 'warn' || value === 'error' ? value : 'info';
}

function formatHuman(level: LogLevel, msg: string, fields: LogFields): string {
  const extras = Object.entries(fields)
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(' ');
  const prefix = level === 'info' ? '' : `${level}: `;
  return `${prefix}${msg}${extras ? `  ${extras}` : ''}\n`;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const stream = options.stream ?? process.stderr;
  const threshold = LEVEL_ORDER[options.level ?? levelFromEnv()];
  const json = options.json ?? !(stream as NodeJS.WriteStream).isTTY;
  const base = options.fields ?? {};

  const write = (level: LogLevel, msg: string, fields: LogFields = {}): void => {
    if (LEVEL_ORDER[level] < threshold) return;
    const merged = { ...base, ...fields };
    stream.write(
      json ? `${JSON.stringify({ time: new Date().toISOString(), level, msg, ...merged })}\n` : formatHuman(level, msg, merged),
    );
  };

  return {
    debug: (msg, fields) => write('debug', msg, fields),
    info: (msg, fields) => write('info', msg, fields),
    warn: (msg, fields) => write('warn', msg, fields),
    error: (msg, fields) => write('error', msg, fields),
    child: (fields) => createLogger({ ...options, stream, json, fields: { ...base, ...fields } }),
  };
}

/** A logger that drops everything; for library callers that did not pass one. */
export const silentLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => silentLogger,
};

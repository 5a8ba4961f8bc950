/**
 * Typed errors. Every error Backstop raises on purpose is a BackstopError: it carries a stable
 * `code`, a one-line message that says what went wrong, a `hint` that says what to do next, and
 * the underlying `cause`. The CLI prints message and hint and exits with `exitCode`.
 */
export interface BackstopErrorOptions {
  hint?: string;
  cause?: unknown;
  exitCode?: number;
  /**
   * What the message is about, already named at its start (`snapshot of public.big`): a caller
   * composing its own sentence uses the message as it is instead of naming the object again.
   */
  subject?: string;
}

export class BackstopError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  readonly exitCode: number;
  readonly subject: string | undefined;

  constructor(code: string, message: string, options: BackstopErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = options.hint;
    this.exitCode = options.exitCode ?? 1;
    this.subject = options.subject;
  }
}

/** Bad flags, URLs or settings: the user must change the invocation. Exit code 2. */
export class ConfigError extends BackstopError {
  constructor(message: string, options: BackstopErrorOptions = {}) {
    super('config', message, { exitCode: 2, ...options });
  }
}

/** The database could not be reached or refused an operation. */
export class DatabaseError extends BackstopError {
  constructor(message: string, options: BackstopErrorOptions = {}) {
    super('database', message, options);
  }
}

/** The Backstop schema in the database and this build do not match (older or newer migrations). */
export class SchemaVersionError extends BackstopError {
  constructor(message: string, options: BackstopErrorOptions = {}) {
    super('schema_version', message, options);
  }
}

/** The connected role lacks a privilege Backstop needs. */
export class PrivilegeError extends BackstopError {
  constructor(message: string, options: BackstopErrorOptions = {}) {
    super('privilege', message, options);
  }
}

/**
 * Row-level security would hide rows of a table from the role reading it, so a snapshot of it
 * would be incomplete. Captures read with row_security = off, which makes PostgreSQL raise instead
 * of filtering; this names the table, the role and what to grant. BYPASSRLS is a role attribute:
 * the login role itself needs it (membership in backstop_agent does not carry it).
 */
export class RowSecurityError extends BackstopError {
  readonly table: string;
  /** The reading role, quoted as an identifier where needed (as quote_ident prints it). */
  readonly role: string;

  constructor(table: string, role: string, options: Omit<BackstopErrorOptions, 'hint'> = {}) {
    const grant = `ALTER ROLE ${role} BYPASSRLS`;
    super('row_security', `row-level security hides rows of ${table} from role ${role}, and a snapshot must hold every row: as a superuser run ${grant}`, {
      ...options,
      hint: `as a superuser run: ${grant}; (a role attribute: granting backstop_agent or pg_read_all_data does not carry it)`,
    });
    this.table = table;
    this.role = role;
  }
}

/** Object storage (S3 or the local folder) failed or is unreachable. */
export class StorageError extends BackstopError {
  constructor(message: string, options: BackstopErrorOptions = {}) {
    super('storage', message, options);
  }
}

/** A snapshot could not be captured, or a stored snapshot is not what its manifest says. */
export class SnapshotError extends BackstopError {
  constructor(message: string, options: BackstopErrorOptions = {}) {
    super('snapshot', message, options);
  }
}

/** The local disk (TMPDIR, scratch space for capture and restore) is full or over quota. */
export class LocalDiskFullError extends BackstopError {
  constructor(message: string, options: BackstopErrorOptions = {}) {
    super('local_disk_full', message, options);
  }
}

/** Whether `error` is the operating system saying a local disk is full (ENOSPC) or over quota (EDQUOT). */
export function isDiskFull(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/** A checksum, row count or content hash did not match. */
export class VerificationError extends BackstopError {
  constructor(message: string, options: BackstopErrorOptions = {}) {
    super('verification', message, options);
  }
}

/** Something the user named (snapshot, table, request) does not exist. */
export class NotFoundError extends BackstopError {
  constructor(message: string, options: BackstopErrorOptions = {}) {
    super('not_found', message, options);
  }
}

/**
 * A restored table's trigger runs a function this database does not have (it lives outside the
 * table: a snapshot holds the trigger, not the function).
 */
export class MissingTriggerFunctionError extends NotFoundError {
  /** The function, `schema.name()` as regprocedure prints it. */
  readonly functionName: string;
  readonly trigger: string;

  constructor(functionName: string, trigger: string, table: string, options: Omit<BackstopErrorOptions, 'hint'> = {}) {
    super(`trigger "${trigger}" of ${table} runs ${functionName}, which does not exist in this database`, {
      ...options,
      hint: `create the function ${functionName} (from the schema's migrations or a pg_dump of the source database) and run the restore again; nothing was restored`,
    });
    this.functionName = functionName;
    this.trigger = trigger;
  }
}

/** The operation would overwrite or conflict with something that exists. */
export class ConflictError extends BackstopError {
  constructor(message: string, options: BackstopErrorOptions = {}) {
    super('conflict', message, options);
  }
}

/** Message of any thrown value, for logs and wrapped errors. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

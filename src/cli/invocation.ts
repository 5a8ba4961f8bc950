/**
 * How to run this same CLI again, for commands printed to the user (the agent's start-up
 * banner). A clone has no `backstop` on PATH: `npm start` runs `node bin/backstop.js`, so that is
 * what is printed there; `backstop` only when the `backstop` found on PATH is this very program.
 */
import { accessSync, constants, realpathSync } from 'node:fs';
import path from 'node:path';

function realpath(file: string): string | undefined {
  try {
    return realpathSync(file);
  } catch {
    return undefined;
  }
}

/** The first executable `name` on PATH, resolved through symlinks. */
function onPath(name: string, searchPath = process.env.PATH ?? ''): string | undefined {
  for (const dir of searchPath.split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return realpath(candidate);
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * The command that runs this CLI from `cwd`: `backstop` when that is on PATH and is this script,
 * else `node <script>` with the script relative to `cwd` when it lies inside it.
 */
export function cliCommand(script: string = process.argv[1] ?? 'bin/backstop.js', cwd: string = process.cwd(), searchPath?: string): string {
  const self = realpath(script) ?? path.resolve(script);
  if (onPath('backstop', searchPath) === self) return 'backstop';
  const relative = path.relative(cwd, path.resolve(script));
  const shown = relative.startsWith('..') || path.isAbsolute(relative) ? path.resolve(script) : relative;
  return `node ${/\s/.test(shown) ? JSON.stringify(shown) : shown}`;
}

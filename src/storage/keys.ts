/** Storage keys are relative, `/`-separated, without empty, "." or ".." parts. */
import { StorageError } from '../errors/index.js';

export function checkKey(key: string): string[] {
  const parts = key.split('/');
  if (key === '' || parts.some((part) => part === '' || part === '.' || part === '..')) {
    throw new StorageError(`"${key}" is not a valid storage key`, { hint: 'this is a bug in Backstop; report it' });
  }
  return parts;
}

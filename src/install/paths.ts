/** Where the SQL and migrations shipped with the package live, from src/ (tests) or dist/ (built). */
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const packageRoot = fileURLToPath(new URL('../../', import.meta.url));
export const migrationsDir = path.join(packageRoot, 'migrations');
export const sqlDir = path.join(packageRoot, 'sql');

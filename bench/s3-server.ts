/**
 * s3rver in its own process for the S3 capture scenario, so its request handling and file
 * writes use their own event loop instead of the runner's. Run with
 * `node --openssl-legacy-provider --import tsx bench/s3-server.ts <directory> <bucket>` (s3rver
 * needs the legacy provider for truncated listings). Prints one JSON line {"port":N} when ready
 * and stops on SIGTERM.
 */
import { createRequire } from 'node:module';

/** The part of s3rver's API used here (the package ships no types). */
interface S3rverInstance {
  run(): Promise<{ port: number }>;
  close(callback: () => void): void;
}
type S3rverConstructor = new (options: Record<string, unknown>) => S3rverInstance;
// Loaded with require so no ambient module declaration is needed (tests may declare their own).
const S3rver = createRequire(import.meta.url)('s3rver') as S3rverConstructor;

const [directory, bucket] = process.argv.slice(2);
if (!directory || !bucket) {
  process.stderr.write('usage: s3-server.ts <directory> <bucket>\n');
  process.exit(2);
}

const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  silent: true,
  directory,
  configureBuckets: [{ name: bucket, configs: [] }],
});
const address = await server.run();
process.stdout.write(`${JSON.stringify({ port: address.port })}\n`);
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
});

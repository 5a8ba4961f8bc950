/**
 * Start and stop the s3rver child (bench/s3-server.ts) and describe how Backstop reaches it:
 * the storage URL and the credentials s3rver accepts (S3RVER/S3RVER, its fixed pair).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SERVER_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 's3-server.ts');

export interface BenchS3 {
  endpoint: string;
  bucket: string;
  /** s3rver's folder: objects are files under <directory>/<bucket>/<key>. */
  directory: string;
  storageUrl(prefix: string): string;
  /** Environment for a Backstop child process that talks to this server. */
  env: NodeJS.ProcessEnv;
  stop(): Promise<void>;
}

export async function startS3(workDir: string, bucket = 'bench'): Promise<BenchS3> {
  const directory = await mkdtemp(path.join(workDir, 's3rver-'));
  const child: ChildProcess = spawn(process.execPath, ['--openssl-legacy-provider', '--import', 'tsx', SERVER_SCRIPT, directory, bucket], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk; });
  const port = await new Promise<number>((resolve, reject) => {
    let buffered = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      const line = buffered.split('\n')[0];
      if (buffered.includes('\n') && line) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`s3rver exited with ${code} before it was ready: ${stderr.trim()}`)));
    child.once('error', reject);
  });
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    bucket,
    directory,
    storageUrl: (prefix) => `s3://${bucket}/${prefix}@${endpoint}`,
    env: {
      ...process.env,
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
      AWS_REGION: 'us-east-1',
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      await rm(directory, { recursive: true, force: true });
    },
  };
}

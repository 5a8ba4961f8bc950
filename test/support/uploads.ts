/** Helpers for tests of unfinished multipart uploads: a process killed mid-upload, and what s3rver still holds. */
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestS3 } from './s3.js';
import { uploadsFolder } from './s3rver-multipart.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Run upload-child.ts until its upload is recorded and under way, then SIGKILL it (as a capture dies). */
export async function killMidUpload(url: string, key: string): Promise<void> {
  const child = spawn(process.execPath, ['--openssl-legacy-provider', '--import', 'tsx', path.join(REPO_ROOT, 'test/support/upload-child.ts'), url, key], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (text: string) => {
    stderr += text;
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      if (text.includes('recorded')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`upload child exited with ${code}: ${stderr}`)));
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/** Upload ids of the unfinished uploads s3rver holds in the test bucket. */
export async function uploadsHeld(s3: TestS3): Promise<string[]> {
  return readdir(uploadsFolder(s3.directory!, s3.bucket)).catch(() => []);
}

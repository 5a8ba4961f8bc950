/**
 * A process that streams an endless body to storage and is meant to be killed mid-upload (the
 * way a capture dies with SIGKILL): `node --import tsx upload-child.ts <storage url> <key>`.
 * Prints "recorded" once its upload record exists and a first part is stored, then keeps uploading.
 */
import { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { openStorage } from '../../src/storage/open.js';

const [url, key] = process.argv.slice(2);
const storage = openStorage(url);
const chunk = Buffer.alloc(1024 * 1024, 7);
const body = new Readable({
  read() {
    this.push(chunk);
  },
});
void storage.put(key!, body, { size: 1024 * 1024 * 1024 }).catch((error: unknown) => {
  process.stderr.write(`upload failed: ${String(error)}\n`);
  process.exit(1);
});
for (;;) {
  if ((await storage.list('uploads/')).length > 0) break;
  await delay(20);
}
// The record exists before the first part is sent; a kill right then would leave an upload with
// no bytes. Wait until a whole part (8 MB) is stored, so that the test kills it mid-upload.
for (let attempt = 0; attempt < 1500; attempt += 1) {
  const listing = await storage.unfinishedUploads!({ sizes: true });
  if (listing.uploads.some((upload) => (upload.bytes ?? 0) >= 8 * 1024 * 1024)) break;
  if (listing.listingError !== undefined) {
    // A server that cannot list uploads (plain s3rver): give the first part a moment instead.
    await delay(1000);
    break;
  }
  await delay(20);
}
process.stdout.write('recorded\n');
await new Promise(() => {});

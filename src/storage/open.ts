/** Open the storage a URL names (see url.ts for the forms). */
import { LocalStorage } from './local.js';
import { S3Storage } from './s3.js';
import type { Storage } from './storage.js';
import { parseStorageUrl } from './url.js';

export function openStorage(url?: string): Storage {
  const location = parseStorageUrl(url);
  return location.kind === 'local' ? new LocalStorage(location.root) : new S3Storage(location);
}

/**
 * A local folder as snapshot storage. Writes go to a temp name beside the target, are flushed to
 * disk, then renamed into place, so a reader (or a crash) never sees a half-written file under
 * its final name. Leftover temp files are ordinary orphans that prune collects.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { access, constants, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { NotFoundError, StorageError, describeError } from '../errors/index.js';
import { checkKey } from './keys.js';
import type { PutOptions, Storage, StoredObject } from './storage.js';

const STAT_CONCURRENCY = 32;

export class LocalStorage implements Storage {
  readonly url: string;

  constructor(readonly root: string) {
    this.url = root;
  }

  private file(key: string): string {
    return path.join(this.root, ...checkKey(key));
  }

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<{ size: number }> {
    const target = this.file(key);
    const temp = `${target}.tmp-${randomBytes(6).toString('hex')}`;
    try {
      await mkdir(path.dirname(target), { recursive: true });
      const out = createWriteStream(temp, { flush: true });
      await pipeline(body, out, options.signal ? { signal: options.signal } : {});
      const size = out.bytesWritten;
      await rename(temp, target);
      return { size };
    } catch (error) {
      await rm(temp, { force: true }).catch(() => {});
      if (options.signal?.aborted) throw error;
      throw new StorageError(`cannot write ${target}: ${describeError(error)}`, {
        cause: error,
        hint: 'check that the storage folder exists, is writable by this user, and the disk is not full',
      });
    }
  }

  localFile(key: string): string {
    return this.file(key);
  }

  async get(key: string): Promise<Readable> {
    const file = this.file(key);
    const info = await this.head(key);
    if (!info) throw new NotFoundError(`${file} does not exist`, { hint: 'check --storage and the snapshot id (backstop snapshots list)' });
    return createReadStream(file);
  }

  async head(key: string): Promise<StoredObject | undefined> {
    try {
      const info = await stat(this.file(key));
      return info.isFile() ? { key, size: info.size, modified: info.mtime } : undefined;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new StorageError(`cannot read ${this.file(key)}: ${describeError(error)}`, { cause: error, hint: 'check the folder permissions' });
    }
  }

  async list(prefix: string): Promise<StoredObject[]> {
    // List the deepest folder the prefix names completely, then filter by the full prefix.
    const folderParts = prefix.split('/').slice(0, -1).filter((part) => part !== '');
    const folder = path.join(this.root, ...folderParts);
    let entries;
    try {
      entries = await readdir(folder, { recursive: true, withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new StorageError(`cannot list ${folder}: ${describeError(error)}`, { cause: error, hint: 'check the folder permissions' });
    }
    const files: Array<{ key: string; absolute: string }> = [];
    for (const entry of entries) {
      if (!entry.isFile()) continue;
      const absolute = path.join(entry.parentPath, entry.name);
      const key = path.relative(this.root, absolute).split(path.sep).join('/');
      if (key.startsWith(prefix)) files.push({ key, absolute });
    }
    // Sizes and times in parallel: one stat after another made listing 20,000 files take seconds.
    const objects: StoredObject[] = [];
    let next = 0;
    const worker = async () => {
      while (next < files.length) {
        const { key, absolute } = files[next++]!;
        try {
          const info = await stat(absolute);
          objects.push({ key, size: info.size, modified: info.mtime });
        } catch (error) {
          // Renamed or removed since readdir (a concurrent capture or prune): not there any more.
          if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(STAT_CONCURRENCY, files.length) }, worker));
    return objects;
  }

  async listFolders(prefix: string): Promise<string[]> {
    const folder = path.join(this.root, ...prefix.split('/').filter((part) => part !== ''));
    try {
      return (await readdir(folder, { withFileTypes: true })).filter((entry) => entry.isDirectory()).map((entry) => entry.name);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new StorageError(`cannot list ${folder}: ${describeError(error)}`, { cause: error, hint: 'check the folder permissions' });
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await rm(this.file(key), { force: true });
    } catch (error) {
      throw new StorageError(`cannot remove ${this.file(key)}: ${describeError(error)}`, { cause: error, hint: 'check the folder permissions' });
    }
  }

  async check(): Promise<void> {
    try {
      await mkdir(this.root, { recursive: true });
      await access(this.root, constants.R_OK | constants.W_OK);
    } catch (error) {
      throw new StorageError(`storage folder ${this.root} is not usable: ${describeError(error)}`, {
        cause: error,
        hint: 'create the folder and make it writable by the user running Backstop, or pass another --storage',
      });
    }
  }
}

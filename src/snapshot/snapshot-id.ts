/** Snapshot and group identifiers, and the timestamp that orders data files in storage. */
import { randomBytes } from 'node:crypto';

/** 12 lower-case hex characters: short enough to type, 48 random bits. */
export function newSnapshotId(): string {
  return randomBytes(6).toString('hex');
}

export function newGroupId(): string {
  return `g${randomBytes(6).toString('hex')}`;
}

export function isSnapshotId(text: string): boolean {
  return /^[0-9a-f]{12}$/.test(text);
}

/** `20261122T141500123Z`: sortable, and safe in file names and S3 keys. */
export function storageTimestamp(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace('.', '');
}

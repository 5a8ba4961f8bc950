/** Which unfinished multipart uploads were abandoned by a killed capture, and which may still be running. */
import { describe, expect, it } from 'vitest';
import { planUploadCleanup, type UnfinishedUpload, type UploadOwner } from '../../src/storage/unfinished-uploads.js';

const NOW = new Date('2026-11-22T12:00:00.000Z');
const SELF: UploadOwner = { host: 'db-1', pid: 4242, instance: 'aaaaaaaaaaaa' };
const MINUTE = 60_000;

function recorded(owner: UploadOwner, renewedMinutesAgo: number): UnfinishedUpload {
  const renewed = new Date(NOW.getTime() - renewedMinutesAgo * MINUTE).toISOString();
  return {
    key: 'snapshots/public.t/x.parquet',
    uploadId: `u-${owner.host}-${owner.pid}-${renewedMinutesAgo}`,
    record: { format: 'backstop-upload/v1', key: 'snapshots/public.t/x.parquet', upload_id: 'u', owner, started_at: renewed, renewed_at: renewed, recordKey: 'uploads/r.json' },
  };
}

function plan(uploads: UnfinishedUpload[], alive: number[] = []) {
  return planUploadCleanup(uploads, { now: NOW, self: SELF, isAlive: (pid) => alive.includes(pid) });
}

describe('unfinished upload cleanup plan', () => {
  it('aborts the upload of a process on this host that is gone', () => {
    const result = plan([recorded({ host: 'db-1', pid: 100, instance: 'bbbbbbbbbbbb' }, 2)]);
    expect(result.abort).toHaveLength(1);
    expect(result.abort[0]!.why).toMatch(/process 100 .* gone/);
  });

  it('leaves the upload of a live process on this host, and of a process on another host that renews its record', () => {
    const result = plan([recorded({ host: 'db-1', pid: 100, instance: 'bbbbbbbbbbbb' }, 2), recorded({ host: 'laptop', pid: 7, instance: 'cccccccccccc' }, 9)], [100]);
    expect(result.abort).toEqual([]);
    expect(result.leave).toHaveLength(2);
  });

  it('aborts an upload whose record was not renewed for over an hour, on any host', () => {
    const result = plan([recorded({ host: 'laptop', pid: 7, instance: 'cccccccccccc' }, 61)], [7]);
    expect(result.abort.map((d) => d.why)).toEqual([expect.stringMatching(/last renewed 61 min ago/)]);
  });

  it("treats this pid under another instance as a process that died (a restarted container's pid 1)", () => {
    const result = plan([recorded({ host: 'db-1', pid: SELF.pid, instance: 'dddddddddddd' }, 1)], [SELF.pid]);
    expect(result.abort).toHaveLength(1);
  });

  it("leaves this process's own uploads", () => {
    expect(plan([recorded(SELF, 70)]).leave).toHaveLength(1);
  });

  it('aborts an upload nobody recorded once it is a day old, and leaves a younger one', () => {
    const old: UnfinishedUpload = { key: 'snapshots/a.b/1.parquet', uploadId: 'old', initiated: new Date(NOW.getTime() - 25 * 60 * MINUTE) };
    const young: UnfinishedUpload = { key: 'snapshots/a.b/2.parquet', uploadId: 'young', initiated: new Date(NOW.getTime() - 30 * MINUTE) };
    const result = plan([old, young]);
    expect(result.abort.map((d) => d.upload.uploadId)).toEqual(['old']);
    expect(result.leave.map((d) => d.upload.uploadId)).toEqual(['young']);
  });
});

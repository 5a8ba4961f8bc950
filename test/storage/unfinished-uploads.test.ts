/**
 * Multipart uploads killed captures leave behind, against a real S3 server: s3rver holds the
 * uploads and their parts; the three multipart requests it lacks are added by the test harness
 * (test/support/s3rver-multipart.ts). Without them (plain s3rver) the record of an upload is
 * kept and the failure reported.
 */
import { CreateMultipartUploadCommand, S3Client, UploadPartCommand } from '@aws-sdk/client-s3';
import { utimes } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkUnfinishedUploads } from '../../src/doctor/checks.js';
import { openStorage } from '../../src/storage/open.js';
import { s3ClientConfig } from '../../src/storage/s3.js';
import { cleanUpUnfinishedUploads } from '../../src/storage/unfinished-uploads.js';
import { parseStorageUrl, type S3Location } from '../../src/storage/url.js';
import { startTestS3, type TestS3 } from '../support/s3.js';
import { uploadsFolder } from '../support/s3rver-multipart.js';
import { killMidUpload, uploadsHeld } from '../support/uploads.js';

const MB = 1024 * 1024;

describe('unfinished multipart uploads on s3rver with the multipart requests', () => {
  let s3: TestS3;
  beforeAll(async () => {
    s3 = await startTestS3('uploads-test', { forceS3rver: true });
  });
  afterAll(async () => {
    await s3?.stop();
  });

  it('records an upload while it runs and removes the record once it completes', async () => {
    const storage = openStorage(s3.url('complete'));
    let openGate: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      openGate = resolve;
    });
    // 9 MB (the first 8 MB part goes up), then wait until the test has looked, then the rest.
    const body = Readable.from((async function* () {
      for (let i = 0; i < 9; i += 1) yield Buffer.alloc(MB, 1);
      await gate;
      for (let i = 9; i < 20; i += 1) yield Buffer.alloc(MB, 1);
    })());
    const upload = storage.put('snapshots/public.t/big.parquet', body, { size: 20 * MB });
    let records = await storage.list('uploads/');
    for (let attempt = 0; attempt < 400 && records.length === 0; attempt += 1) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      records = await storage.list('uploads/');
    }
    openGate();
    await upload;
    expect(records).toHaveLength(1);
    expect((await storage.head('snapshots/public.t/big.parquet'))?.size).toBe(20 * MB);
    expect(await storage.list('uploads/')).toEqual([]);
    expect(await uploadsHeld(s3)).toEqual([]);
  });

  it('removes the record when a failed upload is aborted', async () => {
    const storage = openStorage(s3.url('failed'));
    let pushed = 0;
    const failing = new Readable({
      read() {
        this.push(Buffer.alloc(MB));
        if (++pushed > 12) this.destroy(new Error('source failed on purpose'));
      },
    });
    await expect(storage.put('snapshots/public.t/broken.parquet', failing)).rejects.toThrow();
    // lib-storage aborts the upload once its parts in flight are done.
    for (let i = 0; i < 200 && (await storage.list('uploads/')).length > 0; i += 1) await new Promise((r) => setTimeout(r, 25));
    expect(await storage.list('uploads/')).toEqual([]);
    expect(await uploadsHeld(s3)).toEqual([]);
  });

  it('finds the upload of a killed process, reports it in doctor, and aborts it at the next cleanup', async () => {
    const url = s3.url('killed');
    await killMidUpload(url, 'snapshots/public.t/20261122T000000000Z_aaaaaaaaaaaa.parquet');
    const storage = openStorage(url);
    expect(await uploadsHeld(s3)).toHaveLength(1);

    const listing = await storage.unfinishedUploads!({ sizes: true });
    expect(listing.listingError).toBeUndefined();
    expect(listing.uploads).toHaveLength(1);
    expect(listing.uploads[0]!.record?.owner.pid).toBeGreaterThan(0);
    expect(listing.uploads[0]!.bytes).toBeGreaterThanOrEqual(8 * MB);

    const doctor = await checkUnfinishedUploads(storage);
    expect(doctor).toMatchObject({ check: 'unfinished uploads', status: 'warn', detail: expect.stringMatching(/1 left by captures that were killed/) });
    expect(doctor?.hint).toMatch(/AbortIncompleteMultipartUpload/);

    const dry = await cleanUpUnfinishedUploads(storage, { dryRun: true });
    expect(dry.aborted).toHaveLength(1);
    expect(await uploadsHeld(s3)).toHaveLength(1);

    const report = await cleanUpUnfinishedUploads(storage);
    expect(report.aborted.map((d) => d.why)).toEqual([expect.stringMatching(/on this host, which uploaded it, is gone/)]);
    expect(report.failed).toEqual([]);
    expect(await uploadsHeld(s3)).toEqual([]);
    expect(await storage.list('uploads/')).toEqual([]);
    expect(await checkUnfinishedUploads(storage)).toMatchObject({ status: 'ok', detail: 'no unfinished multipart uploads' });
  });

  it('aborts an upload nobody recorded once it is a day old (an older Backstop, a lost record)', async () => {
    const location = parseStorageUrl(s3.url('unrecorded')) as S3Location;
    const client = new S3Client(s3ClientConfig(location));
    const key = 'unrecorded/snapshots/public.t/old.parquet';
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: s3.bucket, Key: key }));
    await client.send(new UploadPartCommand({ Bucket: s3.bucket, Key: key, UploadId, PartNumber: 1, Body: Buffer.alloc(MB) }));
    client.destroy();
    const storage = openStorage(s3.url('unrecorded'));

    const young = await cleanUpUnfinishedUploads(storage);
    expect(young.aborted).toEqual([]);
    expect(young.left.map((d) => d.why)).toEqual([expect.stringMatching(/no record/)]);

    const twoDaysAgo = new Date(Date.now() - 48 * 3600_000);
    await utimes(path.join(uploadsFolder(s3.directory!, s3.bucket), UploadId!), twoDaysAgo, twoDaysAgo);
    const old = await cleanUpUnfinishedUploads(storage);
    expect(old.aborted.map((d) => d.upload.uploadId)).toEqual([UploadId]);
    expect(await uploadsHeld(s3)).toEqual([]);
  });
});

describe('unfinished multipart uploads on plain s3rver (no ListMultipartUploads, no AbortMultipartUpload)', () => {
  let s3: TestS3;
  beforeAll(async () => {
    s3 = await startTestS3('plain-test', { forceS3rver: true, multipart: false });
  });
  afterAll(async () => {
    await s3?.stop();
  });

  it('sees a killed upload through its record, says the listing is unavailable, and keeps the record when the abort fails', async () => {
    const url = s3.url('killed');
    await killMidUpload(url, 'snapshots/public.t/20261122T000000000Z_bbbbbbbbbbbb.parquet');
    const storage = openStorage(url);
    const report = await cleanUpUnfinishedUploads(storage);
    expect(report.listingError).toMatch(/NotImplemented/);
    expect(report.aborted).toEqual([]);
    expect(report.failed).toHaveLength(1);
    expect(await storage.list('uploads/')).toHaveLength(1);
    const doctor = await checkUnfinishedUploads(storage);
    expect(doctor).toMatchObject({ status: 'warn', detail: expect.stringMatching(/ListMultipartUploads is not available/) });
  });
});

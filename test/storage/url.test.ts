import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors/index.js';
import { s3ClientConfig } from '../../src/storage/s3.js';
import { formatStorageLocation, parseStorageUrl } from '../../src/storage/url.js';

describe('storage URLs', () => {
  it('defaults to ./backstop-data', () => {
    expect(parseStorageUrl(undefined, '/srv/app')).toEqual({ kind: 'local', root: '/srv/app/backstop-data' });
    expect(parseStorageUrl('', '/srv/app')).toEqual({ kind: 'local', root: '/srv/app/backstop-data' });
  });

  it('reads plain paths and file URLs', () => {
    expect(parseStorageUrl('snaps', '/srv/app')).toEqual({ kind: 'local', root: path.resolve('/srv/app', 'snaps') });
    expect(parseStorageUrl('/var/lib/backstop')).toEqual({ kind: 'local', root: '/var/lib/backstop' });
    expect(parseStorageUrl('file:///var/lib/back%20stop')).toEqual({ kind: 'local', root: '/var/lib/back stop' });
  });

  it('reads every S3 form', () => {
    expect(parseStorageUrl('s3://my-bucket')).toEqual({ kind: 's3', bucket: 'my-bucket', prefix: '', endpoint: undefined });
    expect(parseStorageUrl('s3://my-bucket/a/b/')).toEqual({ kind: 's3', bucket: 'my-bucket', prefix: 'a/b', endpoint: undefined });
    expect(parseStorageUrl('s3://my-bucket@http://host:9000')).toEqual({ kind: 's3', bucket: 'my-bucket', prefix: '', endpoint: 'http://host:9000' });
    expect(parseStorageUrl('s3://my-bucket/prod/db1@https://s3.example.com/')).toEqual({
      kind: 's3',
      bucket: 'my-bucket',
      prefix: 'prod/db1',
      endpoint: 'https://s3.example.com',
    });
    expect(formatStorageLocation(parseStorageUrl('s3://my-bucket/prod@http://host:9000'))).toBe('s3://my-bucket/prod@http://host:9000');
  });

  it.each([
    ['s3://', 'bucket'],
    ['s3://Bad_Bucket', 'bucket'],
    ['s3://ok-bucket/a//b', 'prefix'],
    ['s3://ok-bucket/../x', 'prefix'],
    ['s3://ok-bucket@ftp://host', 'http'],
    ['s3://ok-bucket@not a url', 'not a URL'],
    ['s3://ok-bucket@http://key:secret@host', 'credentials'],
    ['gs://bucket', 'not supported'],
    ['s3:/bkt', 'misspelt'],
    ['s3//bkt', 'misspelt'],
    ['s3:bkt', 'misspelt'],
    ['file:/var/lib/x', 'misspelt'],
  ])('refuses %s with a ConfigError and a hint', (url, words) => {
    let caught: unknown;
    try {
      parseStorageUrl(url);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).message).toContain(words);
    expect((caught as ConfigError).hint).toBeTruthy();
  });

  it('suggests the URL a typo meant, and takes ./s3/… as a folder', () => {
    expect(() => parseStorageUrl('s3:/bkt')).toThrow(expect.objectContaining({ hint: expect.stringContaining('s3://bkt') }));
    expect(() => parseStorageUrl('s3//bkt/prefix')).toThrow(expect.objectContaining({ hint: expect.stringContaining('s3://bkt/prefix') }));
    expect(parseStorageUrl('S3://bkt')).toEqual({ kind: 's3', bucket: 'bkt', prefix: '', endpoint: undefined });
    expect(parseStorageUrl('./s3/bkt', '/srv/app')).toEqual({ kind: 'local', root: '/srv/app/s3/bkt' });
  });

  it('gives custom endpoints path-style addressing and WHEN_REQUIRED checksums by default', () => {
    const config = s3ClientConfig({ kind: 's3', bucket: 'b-1', prefix: '', endpoint: 'http://127.0.0.1:9000' }, {});
    expect(config).toMatchObject({
      endpoint: 'http://127.0.0.1:9000',
      forcePathStyle: true,
      region: 'us-east-1',
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    const overridden = s3ClientConfig({ kind: 's3', bucket: 'b-1', prefix: '', endpoint: 'http://h:1' }, { AWS_REQUEST_CHECKSUM_CALCULATION: 'WHEN_SUPPORTED' });
    expect(overridden.requestChecksumCalculation).toBeUndefined();
    const aws = s3ClientConfig({ kind: 's3', bucket: 'b-1', prefix: '', endpoint: undefined }, { AWS_REGION: 'eu-west-1' });
    expect(aws).toEqual({ region: 'eu-west-1', followRegionRedirects: true });
  });
});

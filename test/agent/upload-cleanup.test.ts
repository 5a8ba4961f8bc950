/** The agent aborts, when it starts, the S3 upload a killed capture left behind. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type AgentProcess } from '../support/agent-process.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestS3, type TestS3 } from '../support/s3.js';
import { killMidUpload, uploadsHeld } from '../support/uploads.js';

describe('agent start', () => {
  let db: TestDatabase;
  let s3: TestS3;
  let agent: AgentProcess | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    s3 = await startTestS3('agent-uploads', { forceS3rver: true });
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await s3?.stop();
    await db?.drop();
  });

  it('aborts the multipart upload of a capture that was killed, and logs uploads.aborted', async () => {
    const url = s3.url('agent');
    await killMidUpload(url, 'snapshots/public.big/20261122T000000000Z_cccccccccccc.parquet');
    expect(await uploadsHeld(s3)).toHaveLength(1);
    agent = await startAgent({ db: db.url, storage: url, args: ['--interval', '1h', '--http', 'off'] });
    const aborted = await agent.waitForLog((line) => line.event === 'uploads.aborted', 60_000, 'uploads.aborted');
    expect(aborted).toMatchObject({ key: 'snapshots/public.big/20261122T000000000Z_cccccccccccc.parquet', why: expect.stringMatching(/is gone/) });
    expect(await uploadsHeld(s3)).toEqual([]);
  });
});

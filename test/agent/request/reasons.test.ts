/** Denial reasons name what failed once, and say what to do. */
import { describe, expect, it } from 'vitest';
import { captureFailedReason } from '../../../src/decision/reasons.js';
import { SnapshotError } from '../../../src/errors/index.js';
import { wrapFailure } from '../../../src/snapshot/capture.js';

describe('capture failure reasons', () => {
  const table = { schema: 'public', table: 'big' };

  it('name the table once when the capture error already names it', () => {
    const error = wrapFailure(new Error('No space left on device'), table, undefined);
    expect(captureFailedReason('public.big', error)).toBe('snapshot of public.big failed: No space left on device');
    const database = wrapFailure(Object.assign(new Error('canceling statement due to lock timeout'), { code: '55P03' }), table, undefined);
    expect(captureFailedReason('public.big', database)).toBe('snapshot of public.big failed: canceling statement due to lock timeout');
  });

  it('name the table for errors that do not', () => {
    expect(captureFailedReason('public.big', new SnapshotError('public.big is locked by session pid 42'))).toBe(
      'snapshot of public.big failed: public.big is locked by session pid 42',
    );
    expect(captureFailedReason('public.big', new Error('socket hang up'))).toBe('snapshot of public.big failed: socket hang up');
  });
});

import { describe, expect, it } from 'vitest';
import { expiryReason } from '../../src/decision/expiry.js';

const waiting = {
  id: '7',
  status: 'awaiting_approval',
  requester_pid: 4242,
  filed_by_guard: true,
  past_expiry: false,
  backend_alive: true,
  backend_state: 'active',
  backend_query: 'DROP TABLE users',
  statement: 'DROP TABLE users',
};

describe('expiryReason', () => {
  it('keeps a request whose requester is still running the statement', () => {
    expect(expiryReason(waiting)).toBeUndefined();
  });

  it('expires past expires_at, whoever filed it', () => {
    expect(expiryReason({ ...waiting, filed_by_guard: false, past_expiry: true })).toBe('nobody decided before expires_at');
  });

  it('expires when the requesting session ended, is idle, or runs something else', () => {
    expect(expiryReason({ ...waiting, backend_alive: false, backend_state: null, backend_query: null })).toContain('(pid 4242) has ended');
    expect(expiryReason({ ...waiting, backend_state: 'idle' })).toContain('no longer running the statement (it is idle)');
    expect(expiryReason({ ...waiting, backend_query: 'SELECT 1' })).toContain('running a different statement now');
  });

  it('compares only what pg_stat_activity shows: truncated text and hidden text are not a change', () => {
    const long = `DROP TABLE users; -- ${'x'.repeat(3000)}`;
    expect(expiryReason({ ...waiting, statement: long, backend_query: long.slice(0, 1023) })).toBeUndefined();
    expect(expiryReason({ ...waiting, backend_state: null, backend_query: '<insufficient privilege>' })).toBeUndefined();
  });

  it('never expires a request filed ahead because its session moved on', () => {
    expect(expiryReason({ ...waiting, filed_by_guard: false, backend_alive: false })).toBeUndefined();
  });
});

/** The retention policy as a plan: which snapshots --keep-last / --keep-hourly / --keep-daily keep. */
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors/index.js';
import { DEFAULT_RETENTION, checkPolicy, planRetention, type RetentionCandidate } from '../../src/snapshot/retention.js';

const HOUR = 3_600_000;
const NOW = Date.parse('2026-11-22T12:30:00.000Z');

/** Snapshots every `spacingMs`, newest first, ids s0 (newest), s1, … */
function series(count: number, spacingMs: number, from = NOW): RetentionCandidate[] {
  return Array.from({ length: count }, (_, i) => ({ snapshot_id: `s${i}`, created_at: new Date(from - i * spacingMs).toISOString() }));
}

describe('retention plan', () => {
  it('keeps the newest N with --keep-last alone, and removes the rest', () => {
    const plan = planRetention(series(8, 60_000), { last: 3, hourly: 0, daily: 0 });
    expect(plan.kept.map((k) => k.snapshot_id)).toEqual(['s0', 's1', 's2']);
    expect(plan.removed).toEqual(['s3', 's4', 's5', 's6', 's7']);
  });

  it('keeps the newest snapshot of each of the N most recent hours', () => {
    // Every 20 minutes for 5 hours: three per hour.
    const plan = planRetention(series(15, 20 * 60_000), { last: 0, hourly: 3, daily: 0 });
    const kept = plan.kept.map((k) => k.snapshot_id);
    expect(kept).toHaveLength(3);
    const hours = kept.map((id) => series(15, 20 * 60_000).find((s) => s.snapshot_id === id)!.created_at.slice(0, 13));
    expect(new Set(hours).size).toBe(3);
    // The newest of its hour: 12:30 (s0), then 11:50 (s2: 12:10 is s1, same hour as s0), then 10:50.
    expect(kept).toEqual(['s0', 's2', 's5']);
  });

  it('bounds a busy table by the policy: at most last + hourly + daily, whatever it captured', () => {
    // One snapshot a minute for ten days.
    const candidates = series(10 * 24 * 60, 60_000);
    const plan = planRetention(candidates, DEFAULT_RETENTION);
    expect(plan.kept.length).toBeLessThanOrEqual(DEFAULT_RETENTION.last + DEFAULT_RETENTION.hourly + DEFAULT_RETENTION.daily);
    const kept = plan.kept.map((k) => candidates.find((c) => c.snapshot_id === k.snapshot_id)!.created_at);
    // One per hour reaches a day back, one per day to the end of the 7th most recent day (UTC).
    expect(kept.filter((at) => Date.parse(at) > NOW - 24 * HOUR)).toHaveLength(5 + 23);
    expect(kept.at(-1)).toBe('2026-11-16T23:59:00.000Z');
  });

  it('lets a quiet table keep history further back: hourly and daily slots count hours and days that have a snapshot', () => {
    // One snapshot every three days.
    const plan = planRetention(series(10, 72 * HOUR), { last: 1, hourly: 0, daily: 4 });
    expect(plan.kept.map((k) => k.snapshot_id)).toEqual(['s0', 's1', 's2', 's3']);
  });

  it('always keeps the newest snapshot, and says which rules keep each', () => {
    const plan = planRetention(series(3, HOUR), { last: 0, hourly: 0, daily: 1 });
    expect(plan.kept).toEqual([{ snapshot_id: 's0', rules: ['daily'] }]);
    const both = planRetention(series(2, HOUR), { last: 1, hourly: 2, daily: 0 });
    expect(both.kept).toEqual([{ snapshot_id: 's0', rules: ['last', 'hourly'] }, { snapshot_id: 's1', rules: ['hourly'] }]);
  });

  it('treats two snapshots taken in the same millisecond as two for --keep-last', () => {
    const at = new Date(NOW).toISOString();
    const plan = planRetention([{ snapshot_id: 'aa', created_at: at }, { snapshot_id: 'bb', created_at: at }], { last: 2, hourly: 0, daily: 0 });
    expect(plan.removed).toEqual([]);
  });

  it('orders candidates itself', () => {
    const plan = planRetention([...series(4, HOUR)].reverse(), { last: 1, hourly: 0, daily: 0 });
    expect(plan.kept.map((k) => k.snapshot_id)).toEqual(['s0']);
  });

  it('refuses a policy that keeps nothing, or negative counts, with a hint', () => {
    expect(() => checkPolicy({ last: 0, hourly: 0, daily: 0 })).toThrow(ConfigError);
    expect(() => checkPolicy({ last: -1, hourly: 2, daily: 0 })).toThrow(ConfigError);
    try {
      checkPolicy({ last: 0, hourly: 0, daily: 0 });
    } catch (error) {
      expect((error as ConfigError).hint).toContain('--keep-last 5 --keep-hourly 24 --keep-daily 7');
    }
  });
});

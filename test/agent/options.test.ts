import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors/index.js';
import { formatDuration, parseDuration } from '../../src/agent/duration.js';
import { parseAgentFlags, parseHttpFlag } from '../../src/agent/options.js';

const defaults = { interval: '60s', concurrency: '4', state: '.backstop/agent.sqlite', http: '127.0.0.1:8080' };

describe('agent flags', () => {
  it('parses durations with units, combined too', () => {
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('2s')).toBe(2000);
    expect(parseDuration('5m')).toBe(300_000);
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('1m30s')).toBe(90_000);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(formatDuration(90_000)).toBe('1m30s');
  });

  it('rejects durations without a unit or with junk, with a hint', () => {
    for (const bad of ['60', '5 minutes', '', 's', '10x', '-5s']) {
      expect(() => parseDuration(bad, '--interval')).toThrow(ConfigError);
    }
    try {
      parseDuration('60', '--interval');
    } catch (error) {
      expect((error as ConfigError).message).toContain('--interval');
      expect((error as ConfigError).hint).toContain('500ms, 2s, 5m');
    }
  });

  it('parses --http HOST:PORT, port 0 and off', () => {
    expect(parseHttpFlag('127.0.0.1:8080')).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(parseHttpFlag('0.0.0.0:0')).toEqual({ host: '0.0.0.0', port: 0 });
    expect(parseHttpFlag('[::1]:9187')).toEqual({ host: '::1', port: 9187 });
    expect(parseHttpFlag(':9000')).toEqual({ host: '127.0.0.1', port: 9000 });
    expect(parseHttpFlag('off')).toBeNull();
    expect(() => parseHttpFlag('localhost')).toThrow(ConfigError);
    expect(() => parseHttpFlag('host:70000')).toThrow(ConfigError);
  });

  it('checks approval, keep, concurrency and schemas', () => {
    expect(parseAgentFlags({ ...defaults, approval: 'operator', keep: '5', schemas: 'public, "Sales EU",sales', snapshotEveryPoll: true })).toMatchObject({
      approval: 'operator', retention: { last: 5, hourly: 0, daily: 0 }, schemas: ['public', 'Sales EU', 'sales'], snapshotEveryPoll: true, intervalMs: 60_000, concurrency: 4,
    });
    expect(() => parseAgentFlags({ ...defaults, approval: 'yes' })).toThrow(ConfigError);
    expect(() => parseAgentFlags({ ...defaults, concurrency: '0' })).toThrow(ConfigError);
    expect(() => parseAgentFlags({ ...defaults, keep: 'all' })).toThrow(ConfigError);
  });

  it('bounds retention by default and takes a policy, --keep N or --keep-all instead', () => {
    expect(parseAgentFlags(defaults)).toMatchObject({ retention: { last: 5, hourly: 24, daily: 7 }, recaptureFactor: 10 });
    // Rules not named keep nothing, as with restic's forget.
    expect(parseAgentFlags({ ...defaults, keepDaily: '30' }).retention).toEqual({ last: 0, hourly: 0, daily: 30 });
    expect(parseAgentFlags({ ...defaults, keepLast: '2', keepHourly: '6' }).retention).toEqual({ last: 2, hourly: 6, daily: 0 });
    expect(parseAgentFlags({ ...defaults, keepAll: true }).retention).toBe('keep-all');
    expect(parseAgentFlags({ ...defaults, recaptureFactor: '0' }).recaptureFactor).toBe(0);
    expect(parseAgentFlags({ ...defaults, recaptureFactor: '2.5' }).recaptureFactor).toBe(2.5);
  });

  it('refuses retention flags that contradict each other or keep nothing, with a hint', () => {
    for (const flags of [{ keep: '3', keepLast: '3' }, { keepAll: true, keepDaily: '7' }, { keepLast: '0' }, { keepHourly: 'x' }, { recaptureFactor: '-1' }, { recaptureFactor: 'ten' }]) {
      let error: unknown;
      try {
        parseAgentFlags({ ...defaults, ...flags });
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).hint).toBeTruthy();
    }
  });
});

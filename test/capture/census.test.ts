/**
 * compareCensus decides whether a before-image is still exact (proof), holds all but rows added
 * since (a part is enough), or must be read again. Pure: censuses are built by hand here.
 */
import { describe, expect, it } from 'vitest';
import { addedRowsCondition, censusBounds, compareCensus, type RowCensus } from '../../src/capture/census.js';

const base: RowCensus = {
  xmin32: 1000,
  span: 3,
  relations: { '16384': { old: 100, mid: 2, newer: 0 } },
  midVersions: ['16384:(0,1):1001', '16384:(0,2):1002'],
  columns: '1:id:23:-1',
};

function later(change: Partial<RowCensus> & { rel?: Partial<RowCensus['relations'][string]> }): RowCensus {
  const { rel, ...rest } = change;
  return { ...base, ...rest, relations: { '16384': { ...base.relations['16384']!, ...rel } } };
}

describe('compareCensus', () => {
  it('proves an image current when nothing changed', () => {
    expect(compareCensus(base, later({}))).toEqual({ unchanged: true });
  });

  it('calls rows inserted since (newer, or unseen in the in-flight window) added', () => {
    expect(compareCensus(base, later({ rel: { newer: 5 } }))).toMatchObject({ unchanged: false, added: true });
    expect(compareCensus(base, later({ rel: { mid: 3 }, midVersions: [...base.midVersions!, '16384:(0,3):1001'] }))).toMatchObject({ unchanged: false, added: true });
  });

  it('asks for a new read when a row the image holds was updated or deleted', () => {
    expect(compareCensus(base, later({ rel: { old: 99, newer: 1 } }))).toMatchObject({ unchanged: false, added: false });
    expect(compareCensus(base, later({ midVersions: ['16384:(0,1):1001'] }))).toMatchObject({ unchanged: false, added: false });
  });

  it('asks for a new read when columns, partitions or boundaries differ, or the window was too busy', () => {
    expect(compareCensus(base, later({ columns: '1:id:20:-1' }))).toMatchObject({ added: false });
    expect(compareCensus(base, { ...base, relations: { ...base.relations, '16999': { old: 3, mid: 0, newer: 0 } } })).toMatchObject({ added: false });
    expect(compareCensus(base, later({ span: 4 }))).toMatchObject({ added: false });
    expect(compareCensus({ ...base, midVersions: null }, later({}))).toMatchObject({ added: false });
    expect(compareCensus({ ...base, relations: { '16384': { old: 100, mid: 2, newer: 1 } } }, later({}))).toMatchObject({ added: false });
  });

  it('reads the class boundaries from pg_current_snapshot(), in-flight ids included', () => {
    expect(censusBounds('4294967298:4294967301:4294967299,4294967300')).toEqual({ xmin32: 2, span: 3 });
  });

  it('selects the added rows by classifying every row, with only numbers and quoted version ids', () => {
    const condition = addedRowsCondition(base, later({ rel: { newer: 5 } }), (value) => `'${value.replace(/'/g, "''")}'`);
    expect(condition).toContain('>= 3 OR');
    expect(condition).toContain(`'{"16384:(0,1):1001","16384:(0,2):1002"}'::text[]`);
  });

  it('selects the added rows by where they lie when the later census knows: newer ones and unseen mid ones', () => {
    const found = later({ rel: { newer: 2, mid: 3 }, midVersions: [...base.midVersions!, '16384:(0,9):1002'], newerVersions: ['16384:(4,1)', '16384:(4,2)'] });
    const condition = addedRowsCondition(base, found, (value) => `'${value}'`);
    expect(condition).toBe(`t.ctid = ANY ('{"(4,1)","(4,2)","(0,9)"}'::tid[]) AND (t.tableoid::oid::text || ':' || t.ctid::text) = ANY ('{"16384:(4,1)","16384:(4,2)","16384:(0,9)"}'::text[])`);
  });
});

// Migration 0001: runs sql/0001_core.sql. Later changes ship as new numbered files; applied
// migrations never change.
import { readFileSync } from 'node:fs';

export const up = (pgm) => {
  pgm.sql(readFileSync(new URL('../sql/0001_core.sql', import.meta.url), 'utf8'));
};

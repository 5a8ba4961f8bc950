// Migration 0004: runs sql/0004_liveness.sql. Later changes ship as new numbered files;
// applied migrations never change.
import { readFileSync } from 'node:fs';

export const up = (pgm) => {
  pgm.sql(readFileSync(new URL('../sql/0004_liveness.sql', import.meta.url), 'utf8'));
};

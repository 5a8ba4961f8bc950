// Migration 0002: runs sql/0002_guard.sql. Later changes ship as new numbered files; applied
// migrations never change.
import { readFileSync } from 'node:fs';

export const up = (pgm) => {
  pgm.sql(readFileSync(new URL('../sql/0002_guard.sql', import.meta.url), 'utf8'));
};

// Migration 0006: runs sql/0006_exact_scope.sql. Later changes ship as new numbered files;
// applied migrations never change.
import { readFileSync } from 'node:fs';

export const up = (pgm) => {
  pgm.sql(readFileSync(new URL('../sql/0006_exact_scope.sql', import.meta.url), 'utf8'));
};

// Migration 0007: runs sql/0007_undo.sql. Later changes ship as new numbered files;
// applied migrations never change.
import { readFileSync } from 'node:fs';

export const up = (pgm) => {
  pgm.sql(readFileSync(new URL('../sql/0007_undo.sql', import.meta.url), 'utf8'));
};

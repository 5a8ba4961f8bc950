// Migration 0005: runs sql/0005_secrets.sql. Later changes ship as new numbered files;
// applied migrations never change.
import { readFileSync } from 'node:fs';

export const up = (pgm) => {
  pgm.sql(readFileSync(new URL('../sql/0005_secrets.sql', import.meta.url), 'utf8'));
};

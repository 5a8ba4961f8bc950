// Migration 0003: runs sql/0003_attach_marker.sql. Later changes ship as new numbered files;
// applied migrations never change.
import { readFileSync } from 'node:fs';

export const up = (pgm) => {
  pgm.sql(readFileSync(new URL('../sql/0003_attach_marker.sql', import.meta.url), 'utf8'));
};

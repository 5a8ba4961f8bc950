/**
 * Backstop's install() for the scenarios that need it, plus the SQL of --after-install-sql: a way
 * to measure a proposed guard change (a CREATE OR REPLACE FUNCTION …) before it ships as a
 * migration. Results say which file was applied, so such figures are never mistaken for the
 * shipped code's.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { install } from '../src/install/install.js';
import type { ScenarioContext } from './context.js';

export async function installBackstop(client: pg.Client, context: ScenarioContext): Promise<void> {
  await install(client);
  if (context.options.afterInstallSql) {
    await client.query(await readFile(context.options.afterInstallSql, 'utf8'));
  }
}

/** What the results should say about the installed guard. */
export function installedVariant(context: ScenarioContext): Record<string, string> {
  return context.options.afterInstallSql ? { afterInstallSql: context.options.afterInstallSql } : {};
}

/** A result id for the variant: the shipped guard keeps the plain id, a patched one gets a suffix. */
export function variantId(id: string, context: ScenarioContext): string {
  return context.options.afterInstallSql ? `${id} + ${path.basename(context.options.afterInstallSql)}` : id;
}

/** A result title for the variant. */
export function variantTitle(title: string, context: ScenarioContext): string {
  return context.options.afterInstallSql ? `${title}, with ${path.basename(context.options.afterInstallSql)} applied` : title;
}

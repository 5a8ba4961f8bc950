/**
 * Guard overhead on DDL that Backstop does not stop: CREATE TABLE, CREATE INDEX and ALTER TABLE
 * ADD COLUMN, timed statement by statement (client round trip) in a database with Backstop
 * installed and in one without, interleaved so both see the same machine load. The event
 * triggers still fire for these statements (ddl_command_start inspects the tag; ddl_command_end
 * attaches the TRUNCATE guard to new tables), which is the cost measured here.
 */
import pg from 'pg';
import { installBackstop, installedVariant, variantId, variantTitle } from '../install.js';
import type { ScenarioContext } from '../context.js';
import type { ScenarioResult } from '../results.js';
import { round, summarize } from '../stats.js';

const GUARDED_DATABASE = 'bench_ddl_guarded';
const PLAIN_DATABASE = 'bench_ddl_plain';
const TARGET_MS = 1;

type DdlKind = 'CREATE TABLE' | 'CREATE INDEX' | 'ALTER TABLE ADD COLUMN';

const STATEMENTS: Record<DdlKind, (i: number) => string> = {
  'CREATE TABLE': (i) => `CREATE TABLE ddl_${i} (id integer, v text)`,
  'CREATE INDEX': (i) => `CREATE INDEX ddl_${i}_v ON ddl_${i} (v)`,
  'ALTER TABLE ADD COLUMN': (i) => `ALTER TABLE ddl_${i} ADD COLUMN w integer`,
};

async function recreateDatabase(admin: pg.Client, name: string): Promise<void> {
  const quoted = pg.Client.prototype.escapeIdentifier(name);
  await admin.query(`DROP DATABASE IF EXISTS ${quoted} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${quoted}`);
}

async function timed(client: pg.Client, sql: string): Promise<number> {
  const started = performance.now();
  await client.query(sql);
  return performance.now() - started;
}

export async function ddlOverhead(context: ScenarioContext): Promise<ScenarioResult[]> {
  const { server, options, log } = context;
  const admin = new pg.Client({ connectionString: server.adminUrl });
  await admin.connect();
  const guarded = new pg.Client({ connectionString: server.urlFor(GUARDED_DATABASE) });
  const plain = new pg.Client({ connectionString: server.urlFor(PLAIN_DATABASE) });
  try {
    await recreateDatabase(admin, GUARDED_DATABASE);
    await recreateDatabase(admin, PLAIN_DATABASE);
    await guarded.connect();
    await plain.connect();
    await installBackstop(guarded, context);
    const { rows: triggers } = await guarded.query<{ evtname: string; evtevent: string }>(
      `SELECT evtname, evtevent FROM pg_event_trigger WHERE evtenabled <> 'D' ORDER BY evtname`,
    );
    log(`  Backstop installed; ${triggers.length} event trigger(s) enabled`);

    const warmup = Math.max(20, Math.round(options.ddlIterations / 10));
    const samples = new Map<DdlKind, { guarded: number[]; plain: number[] }>(
      (Object.keys(STATEMENTS) as DdlKind[]).map((kind) => [kind, { guarded: [], plain: [] }]),
    );
    for (let i = 0; i < warmup + options.ddlIterations; i += 1) {
      for (const kind of Object.keys(STATEMENTS) as DdlKind[]) {
        const sql = STATEMENTS[kind](i);
        // Alternate which database goes first so neither always runs on a cold cache line.
        const guardedFirst = i % 2 === 0;
        const first = await timed(guardedFirst ? guarded : plain, sql);
        const second = await timed(guardedFirst ? plain : guarded, sql);
        if (i < warmup) continue;
        const bucket = samples.get(kind)!;
        bucket.guarded.push(guardedFirst ? first : second);
        bucket.plain.push(guardedFirst ? second : first);
      }
    }

    return [...samples].map(([kind, bucket]) => {
      const withGuard = summarize(bucket.guarded);
      const without = summarize(bucket.plain);
      const delta = withGuard.median - without.median;
      log(`  ${kind}: p50 ${withGuard.median.toFixed(3)} ms installed vs ${without.median.toFixed(3)} ms not (+${delta.toFixed(3)} ms)`);
      return {
        scenario: 'ddl-overhead',
        id: variantId(`ddl-overhead:${kind}`, context),
        title: variantTitle(`guard overhead: ${kind}`, context),
        status: triggers.length > 0 ? 'measured' : 'partial',
        ...(triggers.length > 0 ? {} : { reason: 'no event trigger was installed: the guard SQL has not landed, so this measures nothing yet' }),
        backstop: { label: 'Backstop installed', unit: 'ms', summary: withGuard },
        anchor: { label: 'same DDL, Backstop not installed', unit: 'ms', summary: without },
        ratio: withGuard.median / without.median,
        delta,
        target: { text: `≤ ${TARGET_MS} ms added at p50`, met: delta <= TARGET_MS },
        extra: {
          iterations: options.ddlIterations,
          warmup,
          p95Installed: round(withGuard.p95, 3),
          p95NotInstalled: round(without.p95, 3),
          eventTriggers: triggers.map((trigger) => `${trigger.evtname} (${trigger.evtevent})`),
          ...installedVariant(context),
        },
      };
    });
  } finally {
    await guarded.end().catch(() => {});
    await plain.end().catch(() => {});
    await admin.query(`DROP DATABASE IF EXISTS ${GUARDED_DATABASE} WITH (FORCE)`).catch(() => {});
    await admin.query(`DROP DATABASE IF EXISTS ${PLAIN_DATABASE} WITH (FORCE)`).catch(() => {});
    await admin.end();
  }
}

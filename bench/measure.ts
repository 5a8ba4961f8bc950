/**
 * Side-by-side measurement: each iteration runs every contender once, in an order that rotates
 * between iterations, so slow phases of a noisy shared machine hit all contenders alike. Warm-up
 * iterations run first and are discarded.
 */
import { summarize, type Summary } from './stats.js';

export interface Contender {
  name: string;
  /** Work outside the measurement before each run (create the target database, …). */
  prepare?(iteration: number): Promise<void>;
  /** One run; returns the measured value (usually milliseconds). */
  run(iteration: number): Promise<number>;
  /** Work outside the measurement after each run (drop the restored table, …). */
  cleanup?(iteration: number): Promise<void>;
}

export interface SideBySideOptions {
  warmup: number;
  runs: number;
  log?: (line: string) => void;
}

export async function sideBySide(contenders: Contender[], options: SideBySideOptions): Promise<Map<string, Summary>> {
  const samples = new Map<string, number[]>(contenders.map((contender) => [contender.name, []]));
  const total = options.warmup + options.runs;
  for (let iteration = 0; iteration < total; iteration += 1) {
    const warm = iteration < options.warmup;
    const order = contenders.map((_, index) => contenders[(index + iteration) % contenders.length]!);
    for (const contender of order) {
      await contender.prepare?.(iteration);
      const value = await contender.run(iteration);
      await contender.cleanup?.(iteration);
      options.log?.(`  ${warm ? 'warm-up' : `run ${iteration - options.warmup + 1}/${options.runs}`} ${contender.name}: ${value.toFixed(1)}`);
      if (!warm) samples.get(contender.name)!.push(value);
    }
  }
  return new Map([...samples].map(([name, values]) => [name, summarize(values)]));
}

/** One pair: both contenders back to back (and the baseline, when there is one). */
export interface Pair {
  backstop: number;
  anchor: number;
  /** backstop / anchor. */
  ratio: number;
  /** Which ran first, second (, third). */
  order: string[];
  /** 1-minute load average when the pair started (the other work sharing the machine). */
  load1: number;
  /** The baseline's run (earlier code) and its ratio to the same anchor run. */
  baseline?: number;
  baselineRatio?: number;
}

export interface PairedResult {
  backstop: Summary;
  anchor: Summary;
  /** Per-pair ratios; their median is the figure a paired scenario reports. */
  ratios: Summary;
  pairs: Pair[];
  baseline?: { summary: Summary; ratios: Summary };
}

export interface PairedOptions extends SideBySideOptions {
  loadAverage: () => number;
  /** Earlier code, run in every pair too and compared with the same anchor run. */
  baseline?: Contender;
}

/**
 * Paired measurement: each iteration runs Backstop and its anchor back to back, Backstop first
 * in even iterations and second in odd ones (with a baseline, the three rotate), and the figure
 * is the median of the per-pair ratios. Load from other work on a shared machine comes and goes
 * over seconds; runs seconds apart see nearly the same load, so a pair's ratio cancels most of
 * it where the ratio of two medians (each over runs minutes apart) does not.
 */
export async function paired(backstop: Contender, anchor: Contender, options: PairedOptions): Promise<PairedResult> {
  const pairs: Pair[] = [];
  const members = [backstop, anchor, ...(options.baseline ? [options.baseline] : [])];
  for (let iteration = 0; iteration < options.warmup + options.runs; iteration += 1) {
    const warm = iteration < options.warmup;
    const order = members.map((_, index) => members[(index + iteration) % members.length]!);
    const load1 = options.loadAverage();
    const times = new Map<Contender, number>();
    for (const contender of order) {
      await contender.prepare?.(iteration);
      times.set(contender, await contender.run(iteration));
      await contender.cleanup?.(iteration);
    }
    const anchorMs = times.get(anchor)!;
    const pair: Pair = { backstop: times.get(backstop)!, anchor: anchorMs, ratio: times.get(backstop)! / anchorMs, order: order.map((c) => c.name), load1 };
    if (options.baseline) {
      pair.baseline = times.get(options.baseline)!;
      pair.baselineRatio = pair.baseline / anchorMs;
    }
    const label = warm ? 'warm-up' : `pair ${iteration - options.warmup + 1}/${options.runs}`;
    const measured = order.map((c) => `${c.name} ${times.get(c)!.toFixed(0)} ms`).join(', ');
    const baselineText = pair.baselineRatio === undefined ? '' : `, baseline ratio ${pair.baselineRatio.toFixed(3)}`;
    options.log?.(`  ${label} (load ${load1.toFixed(2)}): ${measured}; ratio ${pair.ratio.toFixed(3)}${baselineText}`);
    if (!warm) pairs.push(pair);
  }
  return {
    backstop: summarize(pairs.map((pair) => pair.backstop)),
    anchor: summarize(pairs.map((pair) => pair.anchor)),
    ratios: summarize(pairs.map((pair) => pair.ratio)),
    pairs,
    ...(options.baseline
      ? { baseline: { summary: summarize(pairs.map((pair) => pair.baseline!)), ratios: summarize(pairs.map((pair) => pair.baselineRatio!)) } }
      : {}),
  };
}

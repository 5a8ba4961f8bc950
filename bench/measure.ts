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

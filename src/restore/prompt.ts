/**
 * Line prompts for the guided recover: a question written to `output`, one line read from
 * `input`. Lines are read through readline's async iterator, which buffers them, so answers
 * piped in ahead (a script, a test) are never lost. End of input answers '' (the default).
 */
import readline from 'node:readline';

export interface Prompter {
  ask(question: string): Promise<string>;
  close(): void;
}

export function createLinePrompter(input: NodeJS.ReadableStream, output: NodeJS.WritableStream): Prompter {
  const rl = readline.createInterface({ input, terminal: false });
  const lines = rl[Symbol.asyncIterator]();
  return {
    async ask(question) {
      output.write(question);
      const next = await lines.next();
      const answer = next.done ? '' : String(next.value).trim();
      if (next.done) output.write('\n');
      return answer;
    },
    close() {
      rl.close();
    },
  };
}

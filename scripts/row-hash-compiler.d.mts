export function compileRowHashSource(wat: string): Promise<Buffer>;
export function renderRowHashModule(binary: Buffer): string;

/** This build's version: `backstop --version`, the agent's heartbeat, schema-version messages. Keep equal to package.json. */
export const BACKSTOP_VERSION = '0.1.0';

#!/usr/bin/env node
// The `tandem` command: dispatches to one module per subcommand in ./commands.
import { TandemError } from '../native/errors.js';
import type { Command } from './command.js';

// Each subcommand lives in ./commands/<name>.js and exports `command: Command`.
const commands: Record<string, () => Promise<Command>> = {
  inspect: async () => (await import('./commands/inspect.js')).command,
  'make-model': async () => (await import('./commands/make-model.js')).command,
  generate: async () => (await import('./commands/generate.js')).command,
  chat: async () => (await import('./commands/chat.js')).command,
  embed: async () => (await import('./commands/embed.js')).command,
  serve: async () => (await import('./commands/serve.js')).command,
  demo: async () => (await import('./commands/demo.js')).command,
  bench: async () => (await import('./commands/bench.js')).command,
  simulate: async () => (await import('../sched/sim/command.js')).command,
  experts: async () => (await import('../sched/experts/command.js')).command,
};

function usage(): string {
  const lines = Object.keys(commands)
    .sort()
    .map((name) => `  ${name}`);
  return `usage: tandem <command> [options]\n\ncommands:\n${lines.join('\n')}\n\nRun \`tandem <command> --help\` for a command's options.`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name ? 0 : 1;
  }
  const load = commands[name];
  if (!load) {
    console.error(`tandem: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  return (await load()).run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof TandemError) console.error(`tandem: ${err.message} [${err.code}]`);
    else console.error(err);
    process.exitCode = 1;
  },
);

// `tandem chat -m FILE`: an interactive chat in the terminal. The whole history goes
// through the model's chat template each turn; /exit (or end of input) leaves.
import readline from 'node:readline';
import type { ParseArgsConfig } from 'node:util';
import type { ChatMessage } from '../../api/index.js';
import type { Command } from '../command.js';
import {
  generateOptionsFrom,
  loadOptionsFrom,
  loadWithProgress,
  parseFlags,
  SHARED_HELP,
  SHARED_OPTIONS,
  streamTo,
  summary,
  usageError,
} from './generate.js';

const OPTIONS = {
  ...SHARED_OPTIONS,
  system: { type: 'string' },
  stats: { type: 'boolean' },
} as const satisfies ParseArgsConfig['options'];

const HELP = `usage: tandem chat -m FILE [options]

Chats with the model through its chat template. Type a message and press Enter;
/exit or Ctrl-D leaves, /reset forgets the conversation, Ctrl-C stops a reply.

      --system TEXT         a system message to start the conversation
      --stats               print tokens and speed after each reply
${SHARED_HELP}`;

export const command: Command = {
  summary: 'chat with a model interactively',
  async run(argv) {
    const { values, positionals } = parseFlags('chat', { args: argv, options: OPTIONS, allowPositionals: true, strict: true });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    if (!values.model) throw usageError('chat: -m FILE is required (see `tandem chat --help`)');
    if (positionals.length > 0) throw usageError(`chat: unexpected argument '${positionals[0]}'; type messages once it starts`);
    const options = generateOptionsFrom(values, 0);
    const model = await loadWithProgress(values.model, loadOptionsFrom(values));
    const start: ChatMessage[] = values.system ? [{ role: 'system', content: values.system }] : [];
    let history = [...start];
    const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
    // Ctrl-C at the prompt leaves; during a reply, streamTo's handler stops the reply instead.
    rl.on('SIGINT', () => rl.close());
    try {
      rl.setPrompt('> ');
      rl.prompt();
      // The line iterator buffers input typed (or piped) while a reply streams.
      for await (const raw of rl) {
        const line = raw.trim();
        if (line === '/exit' || line === '/quit') break;
        if (line === '/reset') history = [...start];
        if (line && line !== '/reset') {
          history.push({ role: 'user', content: line });
          const stats = await streamTo(model.chat(history, options), process.stdout);
          process.stdout.write('\n');
          history.push({ role: 'assistant', content: stats.result.text });
          if (values.stats) console.error(summary(stats));
        }
        rl.prompt();
      }
    } finally {
      rl.close();
      await model.dispose();
    }
    return 0;
  },
};

// Chat templates: the Jinja template a GGUF carries in tokenizer.chat_template, rendered with
// @huggingface/jinja (the engine transformers.js uses for the same templates). A file without a
// template gets ChatML, which is also what llama.cpp falls back to.
import { Template } from '@huggingface/jinja';
import { TandemError } from '../native/errors.js';
import { GgufFile } from './gguf.js';

export interface ChatMessage {
  /** "system", "user", "assistant", "tool", ... */
  role: string;
  /** Text, or whatever structure the template expects (e.g. a list of parts). */
  content: unknown;
  [key: string]: unknown;
}

export interface ChatRenderOptions {
  /** End with the header that opens the assistant's turn (default true). */
  addGenerationPrompt?: boolean;
  /** More template variables, e.g. tools, documents, enable_thinking. */
  variables?: Record<string, unknown>;
}

/** ChatML: <|im_start|>role\ncontent<|im_end|>\n per message, then <|im_start|>assistant\n. */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export interface ChatTemplateSource {
  /** The Jinja source. */
  source: string;
  /** Text of the BOS / EOS tokens, as the template sees bos_token / eos_token ('' if none). */
  bosToken?: string;
  eosToken?: string;
  /** Where the template came from, for error messages. */
  origin?: string;
  /** Set by fromGguf when the file has no template and this is the ChatML fallback. */
  isFallback?: boolean;
}

/** What a template needs from a tokenizer: the texts of BOS and EOS (ids are -1 when absent). */
export interface TemplateTokens {
  bosId: number;
  eosId: number;
  tokenText(id: number): string;
}

export class ChatTemplate {
  readonly source: string;
  readonly bosToken: string;
  readonly eosToken: string;
  /** True when the file had no template and this is the ChatML fallback. */
  readonly isFallback: boolean;
  private readonly origin: string;
  private readonly template: Template;

  /**
   * Parses a template given as its source and a tokenizer (for bos_token / eos_token), or as a
   * ChatTemplateSource. Throws TandemError TDM_BAD_ARGUMENT if it does not parse.
   */
  constructor(source: string | ChatTemplateSource, tokens?: TemplateTokens) {
    const spec: ChatTemplateSource = typeof source === 'string' ? { source } : source;
    if (spec === null || typeof spec !== 'object' || typeof spec.source !== 'string') {
      throw new TandemError('TDM_BAD_ARGUMENT', 'chat template: source must be a string');
    }
    const text = (id: number | undefined): string => (tokens && id !== undefined && id >= 0 ? tokens.tokenText(id) : '');
    this.source = spec.source;
    this.bosToken = spec.bosToken ?? text(tokens?.bosId);
    this.eosToken = spec.eosToken ?? text(tokens?.eosId);
    this.isFallback = spec.isFallback ?? false;
    this.origin = spec.origin ?? 'chat template';
    try {
      this.template = new Template(spec.source);
    } catch (err) {
      throw new TandemError('TDM_BAD_ARGUMENT', `${this.origin} does not parse: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    }
  }

  /**
   * The template of a GGUF file (tokenizer.chat_template), or ChatML when it has none.
   * Throws TandemError TDM_BAD_GGUF when the file's template does not parse.
   */
  static fromGguf(file: GgufFile): ChatTemplate {
    const source = file.getString('tokenizer.chat_template');
    const tokenText = (key: string): string => {
      const id = file.has(key) ? file.getNumber(key) : undefined;
      const tokens = file.getArray('tokenizer.ggml.tokens');
      if (id === undefined || !tokens || tokens.elementType !== 'string') return '';
      return (tokens.value as readonly string[])[id] ?? '';
    };
    const spec: ChatTemplateSource = {
      source: source ?? CHATML_TEMPLATE,
      bosToken: tokenText('tokenizer.ggml.bos_token_id'),
      eosToken: tokenText('tokenizer.ggml.eos_token_id'),
      origin: `${file.path}: tokenizer.chat_template`,
      isFallback: source === undefined,
    };
    try {
      return new ChatTemplate(spec);
    } catch (err) {
      const e = err as TandemError;
      throw new TandemError('TDM_BAD_GGUF', e.message, { cause: err });
    }
  }

  /** Renders a conversation. Throws TandemError TDM_BAD_ARGUMENT for bad messages or a template error. */
  render(messages: readonly ChatMessage[], options: ChatRenderOptions = {}): string {
    if (!Array.isArray(messages)) {
      throw new TandemError('TDM_BAD_ARGUMENT', 'chat template: messages must be an array');
    }
    messages.forEach((m, i) => {
      if (m === null || typeof m !== 'object' || typeof m.role !== 'string') {
        throw new TandemError('TDM_BAD_ARGUMENT', `chat template: message ${i} needs a string role`);
      }
      if (m.content === undefined) {
        throw new TandemError('TDM_BAD_ARGUMENT', `chat template: message ${i} has no content`);
      }
    });
    if (options === null || typeof options !== 'object') {
      throw new TandemError('TDM_BAD_ARGUMENT', 'chat template: options must be an object');
    }
    try {
      return this.template.render({
        ...options.variables,
        messages,
        add_generation_prompt: options.addGenerationPrompt ?? true,
        bos_token: this.bosToken,
        eos_token: this.eosToken,
      });
    } catch (err) {
      throw new TandemError('TDM_BAD_ARGUMENT', `${this.origin} failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    }
  }
}

/** Opens a GGUF file and reads its chat template (ChatML if it has none). */
export function loadChatTemplate(path: string): ChatTemplate {
  const file = GgufFile.open(path);
  try {
    return ChatTemplate.fromGguf(file);
  } finally {
    file.close();
  }
}

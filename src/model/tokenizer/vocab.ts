// The vocabulary of a GGUF file (tokenizer.ggml.*): token texts, scores, attributes, special ids
// and the flags that steer tokenization, resolved the way llama.cpp's llama_vocab::load does.
import type { GgufFile } from '../gguf.js';
import { TandemError } from '../../native/errors.js';
import { resolvePreTokenizer, type PreTokenizerKind } from './pre-tokenizer.js';
import { TokenIndex } from './token-index.js';
import { utf8Encode } from './unicode.js';

/** Token attribute bits (llama.cpp's llama_token_attr). */
export const ATTR_UNKNOWN = 1 << 0;
export const ATTR_UNUSED = 1 << 1;
export const ATTR_NORMAL = 1 << 2;
export const ATTR_CONTROL = 1 << 3;
export const ATTR_USER_DEFINED = 1 << 4;
export const ATTR_BYTE = 1 << 5;
export const ATTR_LSTRIP = 1 << 7;
export const ATTR_RSTRIP = 1 << 8;

/** GGUF token_type values -> attribute bits (UNDEFINED and unknown values give 0). */
const TYPE_TO_ATTR = [0, ATTR_NORMAL, ATTR_UNKNOWN, ATTR_CONTROL, ATTR_USER_DEFINED, ATTR_UNUSED, ATTR_BYTE];

export type VocabType = 'spm' | 'bpe';

/** Texts that mark end-of-generation tokens; such tokens are also treated as control tokens. */
const EOG_TEXTS = [
  '<|eot_id|>', '<|im_end|>', '<|end|>', '<|return|>', '<|call|>', '<|flush|>', '<|calls|>',
  '<end_of_turn>', '<|endoftext|>', '</s>', '<|eom_id|>', '<EOT>', '_<EOT>', '[EOT]', '[EOS]',
  '<|end_of_text|>', '<end_of_utterance>', '<eos>', '<turn|>', '<|tool_response>',
  '<｜end▁of▁sentence｜>', '[e~[',
];
const EOT_TEXTS = [
  '<|eot_id|>', '<|im_end|>', '<|end|>', '<end_of_turn>', '<|endoftext|>', '<|end_of_text|>',
  '<EOT>', '_<EOT>', '[EOT]', '<｜end▁of▁sentence｜>', '<end_of_utterance>',
];
const FIM_TEXTS: Record<'pre' | 'suf' | 'mid' | 'pad' | 'rep' | 'sep', string[]> = {
  pre: ['<|fim_prefix|>', '<fim-prefix>', '<fim_prefix>', '<｜fim▁begin｜>', '<PRE>', '▁<PRE>', '<|code_prefix|>', '<|prefix|>'],
  suf: ['<|fim_suffix|>', '<fim-suffix>', '<fim_suffix>', '<｜fim▁hole｜>', '<SUF>', '▁<SUF>', '<|code_suffix|>', '<|suffix|>'],
  mid: ['<|fim_middle|>', '<fim-middle>', '<fim_middle>', '<｜fim▁end｜>', '<MID>', '▁<MID>', '<|code_middle|>', '<|middle|>'],
  pad: ['<|fim_pad|>', '<fim-pad>', '<fim_pad>', '<PAD>', '[PAD]'],
  rep: ['<|fim_repo|>', '<|repo_name|>', '<fim-repo>', '<REPO>', '<reponame>'],
  sep: ['<|file_sep|>'],
};
/** gpt-oss channel markers: llama.cpp always renders them, as user-defined tokens. */
const ALWAYS_RENDERED = ['<|channel|>', '<|message|>', '<|start|>', '<|constrain|>'];

const NONE = -1;

export class Vocab {
  readonly path: string;
  readonly type: VocabType;
  /** tokenizer.ggml.model as written in the file. */
  readonly model: string;
  /** tokenizer.ggml.pre as written ('' when absent). */
  readonly preName: string;
  readonly preTokenizer: PreTokenizerKind;
  /** Token texts by id (GGUF order; empty texts replaced by "[EMPTY_<id>]"). */
  readonly tokens: readonly string[];
  /** SentencePiece scores by id (zeros when the file has none). */
  readonly scores: Float32Array;
  /** Attribute bits by id (ATTR_*), after llama.cpp's text-based fix-ups. */
  readonly attrs: Uint16Array;
  /** BPE merges "left right", rank = index (BPE only). */
  readonly merges: readonly string[];
  readonly bosId: number;
  readonly eosId: number;
  readonly eotId: number;
  readonly eomId: number;
  readonly unkId: number;
  readonly sepId: number;
  readonly padId: number;
  /** Whether llama.cpp adds BOS / EOS when asked to add special tokens. */
  readonly addBos: boolean;
  readonly addEos: boolean;
  /** SPM: prefix text that starts the input or follows a special token with a space. */
  readonly addSpacePrefix: boolean;
  /** Detokenize: drop the spaces that English punctuation and contractions would not have. */
  readonly cleanSpaces: boolean;
  /** BPE: a pre-tokenized word that is a whole token skips merging. */
  readonly ignoreMerges: boolean;
  /** Ids that end generation (EOS, EOT, EOM, and end-marker texts). */
  readonly eogIds: ReadonlySet<number>;

  private tokenIndex: TokenIndex | undefined;
  private specialOrder: number[] | undefined;

  constructor(file: GgufFile) {
    this.path = file.path;
    const bad = (what: string): TandemError =>
      new TandemError('TDM_BAD_GGUF', `${file.path}: ${what}`);

    const model = file.getString('tokenizer.ggml.model');
    if (model === undefined) throw bad('no tokenizer.ggml.model: the file carries no vocabulary');
    this.model = model;
    this.preName = file.getString('tokenizer.ggml.pre') ?? '';

    let bos = NONE, eos = NONE, unk = NONE;
    let addBos = false, addEos = false, addSpacePrefix = false, cleanSpaces = false, ignoreMerges = false;
    if (model === 'llama') {
      this.type = 'spm';
      this.preTokenizer = 'default';
      bos = 1; eos = 2; unk = 0;
      addSpacePrefix = true;
      addBos = true;
    } else if (model === 'gpt2') {
      this.type = 'bpe';
      const pre = resolvePreTokenizer(this.preName);
      if (!pre) {
        throw new TandemError('TDM_UNSUPPORTED',
          `${file.path}: pre-tokenizer '${this.preName}' (tokenizer.ggml.pre) is not supported; ` +
          'supported: default, llama3/llama-bpe, qwen2, gpt-2, gpt-4o, starcoder and their aliases');
      }
      this.preTokenizer = pre.kind;
      cleanSpaces = pre.cleanSpaces;
      ignoreMerges = pre.ignoreMerges;
      addBos = pre.addBos;
      bos = 11; eos = 11;
    } else if (model === 'no_vocab' || model === 'none') {
      throw new TandemError('TDM_UNSUPPORTED', `${file.path}: the model has no vocabulary (tokenizer.ggml.model = '${model}')`);
    } else {
      throw new TandemError('TDM_UNSUPPORTED',
        `${file.path}: tokenizer model '${model}' is not supported (supported: 'llama' SentencePiece, 'gpt2' BPE)`);
    }

    const tokensArr = file.getArray('tokenizer.ggml.tokens');
    if (!tokensArr) throw bad('no tokenizer.ggml.tokens');
    if (tokensArr.elementType !== 'string') throw bad(`tokenizer.ggml.tokens holds ${tokensArr.elementType}, expected strings`);
    const raw = tokensArr.value as readonly string[];
    const n = raw.length;
    if (n === 0) throw bad('tokenizer.ggml.tokens is empty');
    let tokens = raw;
    for (let i = 0; i < n; i++) {
      if (raw[i] === '') {
        const copy = Array.from(raw);
        for (let j = i; j < n; j++) if (copy[j] === '') copy[j] = `[EMPTY_${j}]`;
        tokens = copy;
        break;
      }
    }
    this.tokens = tokens;

    const scoresArr = file.getArray('tokenizer.ggml.scores');
    if (scoresArr) {
      if (scoresArr.elementType !== 'float32' && scoresArr.elementType !== 'int32') {
        throw bad(`tokenizer.ggml.scores holds ${scoresArr.elementType}, expected float32`);
      }
      if (scoresArr.value.length < n) throw bad(`tokenizer.ggml.scores has ${scoresArr.value.length} entries for ${n} tokens`);
      this.scores = scoresArr.value instanceof Float32Array ? scoresArr.value : Float32Array.from(scoresArr.value as ArrayLike<number>);
    } else {
      this.scores = new Float32Array(n);
    }

    const attrs = new Uint16Array(n).fill(ATTR_NORMAL);
    const typesArr = file.getArray('tokenizer.ggml.token_type');
    if (typesArr) {
      if (typesArr.elementType !== 'int32') throw bad(`tokenizer.ggml.token_type holds ${typesArr.elementType}, expected int32`);
      const types = typesArr.value as ArrayLike<number>;
      if (types.length < n) throw bad(`tokenizer.ggml.token_type has ${types.length} entries for ${n} tokens`);
      for (let i = 0; i < n; i++) attrs[i] = TYPE_TO_ATTR[types[i]!] ?? 0;
    }
    this.attrs = attrs;

    if (this.type === 'bpe') {
      const mergesArr = file.getArray('tokenizer.ggml.merges');
      if (!mergesArr) throw bad('no tokenizer.ggml.merges, which a BPE vocabulary needs');
      if (mergesArr.elementType !== 'string') throw bad(`tokenizer.ggml.merges holds ${mergesArr.elementType}, expected strings`);
      this.merges = mergesArr.value as readonly string[];
    } else {
      this.merges = [];
    }

    const specialId = (key: string, fallback: number): number => {
      let id = fallback >= 0 && fallback < n ? fallback : NONE;
      if (file.has(key)) {
        const v = file.getNumber(key)!;
        if (Number.isInteger(v) && v >= 0 && v < n) id = v;
      }
      return id;
    };
    this.bosId = specialId('tokenizer.ggml.bos_token_id', bos);
    this.eosId = specialId('tokenizer.ggml.eos_token_id', eos);
    this.unkId = specialId('tokenizer.ggml.unknown_token_id', unk);
    this.sepId = specialId('tokenizer.ggml.seperator_token_id', NONE);
    this.padId = specialId('tokenizer.ggml.padding_token_id', NONE);
    let eot = specialId('tokenizer.ggml.eot_token_id', NONE);
    let eom = specialId('tokenizer.ggml.eom_token_id', NONE);
    const fim = {
      pre: specialId('tokenizer.ggml.fim_pre_token_id', specialId('tokenizer.ggml.prefix_token_id', NONE)),
      suf: specialId('tokenizer.ggml.fim_suf_token_id', specialId('tokenizer.ggml.suffix_token_id', NONE)),
      mid: specialId('tokenizer.ggml.fim_mid_token_id', specialId('tokenizer.ggml.middle_token_id', NONE)),
      pad: specialId('tokenizer.ggml.fim_pad_token_id', NONE),
      rep: specialId('tokenizer.ggml.fim_rep_token_id', NONE),
      sep: specialId('tokenizer.ggml.fim_sep_token_id', NONE),
    };

    const readBool = (key: string, fallback: boolean): boolean => {
      if (!file.has(key)) return fallback;
      const v = file.getBool(key);
      return v ?? fallback;
    };
    this.addBos = readBool('tokenizer.ggml.add_bos_token', addBos);
    this.addEos = readBool('tokenizer.ggml.add_eos_token', addEos);
    this.addSpacePrefix = readBool('tokenizer.ggml.add_space_prefix', addSpacePrefix);
    this.cleanSpaces = cleanSpaces;
    this.ignoreMerges = ignoreMerges;
    if (this.addBos && this.bosId === NONE) throw bad('the vocabulary asks for BOS but has no BOS token');
    if (this.addEos && this.eosId === NONE) throw bad('the vocabulary asks for EOS but has no EOS token');

    // Text-based fix-ups, in llama.cpp's order. Where llama.cpp takes the first match in hash
    // order, this takes the lowest id (the two differ only for vocabularies with several matches).
    const index = this.index();
    const idOf = (text: string): number => index.get(text);
    const firstOf = (texts: string[]): number => {
      let best = NONE;
      for (const t of texts) {
        const id = idOf(t);
        if (id !== NONE && (best === NONE || id < best)) best = id;
      }
      return best;
    };
    const markControl = (id: number): void => {
      if (id !== NONE) attrs[id]! |= ATTR_CONTROL;
    };
    if (eot === NONE) { eot = firstOf(EOT_TEXTS); markControl(eot); }
    if (eom === NONE) { eom = idOf('<|eom_id|>'); markControl(eom); }
    for (const k of Object.keys(fim) as (keyof typeof fim)[]) {
      if (fim[k] === NONE) { fim[k] = firstOf(FIM_TEXTS[k]); markControl(fim[k]); }
    }
    this.eotId = eot;
    this.eomId = eom;

    const eog = new Set<number>();
    for (const id of [fim.pad, fim.rep, fim.sep]) if (id !== NONE) eog.add(id);
    for (const text of EOG_TEXTS) {
      const id = idOf(text);
      if (id !== NONE) { eog.add(id); markControl(id); }
    }
    for (const text of ALWAYS_RENDERED) {
      const id = idOf(text);
      if (id !== NONE) attrs[id] = ATTR_USER_DEFINED;
    }
    for (const id of [this.eosId, eot, eom]) if (id !== NONE) eog.add(id);
    const eogWith = (text: string): number => {
      const id = idOf(text);
      return id !== NONE && eog.has(id) ? id : NONE;
    };
    const endId = eogWith('<|end|>');
    const hasCall = eogWith('<|call|>') !== NONE || eogWith('<|calls|>') !== NONE;
    if (endId !== NONE && hasCall && (eogWith('<|return|>') !== NONE || eogWith('<|flush|>') !== NONE)) {
      eog.delete(endId);
      attrs[endId] = ATTR_USER_DEFINED;
    }
    const sId = eogWith('</s>');
    if (sId !== NONE && eogWith('<|tool_response>') !== NONE) {
      eog.delete(sId);
      attrs[sId] = ATTR_NORMAL;
    }
    this.eogIds = eog;

    // Per-model strip attributes around special tokens.
    const name = (file.getString('general.name') ?? '').toLowerCase();
    if (name.includes('phi-3') || name.includes('phi3')) {
      for (const id of this.specialTokensByLength()) attrs[id]! |= ATTR_RSTRIP;
      const s = idOf('</s>');
      if (s !== NONE) attrs[s]! |= ATTR_RSTRIP;
      for (const t of ['<unk>', '<s>', '<|endoftext|>']) {
        const id = idOf(t);
        if (id !== NONE) attrs[id]! &= ~ATTR_RSTRIP;
      }
    } else if (name.includes('modern-bert')) {
      const id = idOf('[MASK]');
      if (id !== NONE) attrs[id]! |= ATTR_LSTRIP;
    }
  }

  get numTokens(): number {
    return this.tokens.length;
  }

  /** Token text -> id (a later duplicate wins, as in llama.cpp). */
  index(): TokenIndex {
    return (this.tokenIndex ??= new TokenIndex(this.tokens));
  }

  /**
   * Control, user-defined and unknown tokens, longest text (in UTF-8 bytes) first: the order in
   * which llama.cpp cuts them out of raw text. Ties keep id order.
   */
  specialTokensByLength(): readonly number[] {
    if (this.specialOrder) return this.specialOrder;
    const ids: number[] = [];
    const lengths = new Map<number, number>();
    for (let i = 0; i < this.attrs.length; i++) {
      if (this.attrs[i]! & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) {
        ids.push(i);
        lengths.set(i, utf8Encode(this.tokens[i]!).length);
      }
    }
    ids.sort((a, b) => lengths.get(b)! - lengths.get(a)! || a - b);
    this.specialOrder = ids;
    return ids;
  }
}

// Code point classes and byte-level helpers shared by the tokenizers: the category of every code
// point as llama.cpp's tables have it, White_Space, UTF-8 lengths, and GPT-2's byte <-> char map.
import { CATEGORY_RANGES } from './unicode-data.js';

/** Category codes stored in the low bits of a class byte. */
export const CAT_UNASSIGNED = 0;
export const CAT_NUMBER = 1;
export const CAT_LETTER = 2;
export const CAT_SEPARATOR = 3;
export const CAT_MARK = 4;
export const CAT_PUNCTUATION = 5;
export const CAT_SYMBOL = 6;
export const CAT_OTHER = 7;
export const CAT_MASK = 7;
/** Set on the Unicode White_Space code points (what llama.cpp's pre-tokenizers call \s). */
export const WHITESPACE = 8;

const CATEGORY_LETTERS = 'UNLZMPSC';

/** Unicode White_Space. Note: U+0085 is in, U+FEFF is not (unlike JavaScript's \s). */
const WHITESPACE_CODE_POINTS = [
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0x85, 0xa0, 0x1680,
  0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
  0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
];

let classTable: Uint8Array | undefined;

/** One byte per code point (0..0x10FFFF): category code | WHITESPACE. Built once, on first use (~1 MiB). */
export function codePointClasses(): Uint8Array {
  if (classTable) return classTable;
  const table = new Uint8Array(0x110000);
  let start = 0;
  let prevStart = 0;
  let prevCat = CAT_UNASSIGNED;
  let digits = 0;
  for (let i = 0; i < CATEGORY_RANGES.length; i++) {
    const ch = CATEGORY_RANGES.charCodeAt(i);
    if (ch >= 0x41 && ch <= 0x5a) {
      const delta = parseInt(CATEGORY_RANGES.slice(i - digits, i), 36);
      start = prevStart + delta;
      table.fill(prevCat, prevStart, start);
      prevStart = start;
      prevCat = CATEGORY_LETTERS.indexOf(CATEGORY_RANGES[i]!);
      digits = 0;
    } else {
      digits++;
    }
  }
  table.fill(prevCat, prevStart, 0x110000);
  for (const cp of WHITESPACE_CODE_POINTS) table[cp]! |= WHITESPACE;
  classTable = table;
  return table;
}

/** Replaces lone surrogates with U+FFFD, as any conversion of a JS string to UTF-8 does. */
export function wellFormed(text: string): string {
  const s = text as string & { isWellFormed?: () => boolean; toWellFormed?: () => string };
  if (typeof s.isWellFormed === 'function') return s.isWellFormed() ? text : s.toWellFormed!();
  return text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

let byteToCharTable: string[] | undefined;
let charToByteTable: Int16Array | undefined;

function buildByteMaps(): void {
  // GPT-2's reversible map: printable Latin-1 bytes stand for themselves; the other 68 bytes
  // take the code points from U+0100 upwards, in byte order.
  const toChar: string[] = new Array(256);
  const toByte = new Int16Array(0x144).fill(-1);
  let next = 0x100;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    const cp = printable ? b : next++;
    toChar[b] = String.fromCharCode(cp);
    toByte[cp] = b;
  }
  byteToCharTable = toChar;
  charToByteTable = toByte;
}

/** GPT-2 byte-level alphabet: the one-char string that stands for each byte. */
export function byteToChar(): string[] {
  if (!byteToCharTable) buildByteMaps();
  return byteToCharTable!;
}

/** Inverse of byteToChar, indexed by char code (< 0x144); -1 where a char stands for no byte. */
export function charToByte(): Int16Array {
  if (!charToByteTable) buildByteMaps();
  return charToByteTable!;
}

const encoder = new TextEncoder();

/** UTF-8 bytes of a string. */
export function utf8Encode(text: string): Uint8Array {
  return encoder.encode(text);
}

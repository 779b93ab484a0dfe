// The only ways a value reaches the C source of an exported reproducer: an integer literal that was
// checked to be an integer of the C type, or a string literal in which every byte a C compiler could
// read as anything but itself is escaped. Nothing else from a replay file (or its path) is written.
import { InputError } from '../util/errors.js';

const MAX_U64 = 2n ** 64n - 1n;

function integer(v: number | bigint, what: string): bigint {
  // Beyond 2^53 a JSON number may already have been rounded: refuse it rather than export a neighbour.
  if (typeof v === 'number' && !Number.isSafeInteger(v))
    throw new InputError(`${what} ${v} is not an exact integer (a number must be below 2^53)`);
  return BigInt(v);
}

/** A 64-bit word (negative values as their two's complement, as the wire format sends them). */
export function cU64(v: number | bigint, what = 'a value'): string {
  const b = integer(v, what);
  if (b < -(2n ** 63n) || b > MAX_U64) throw new InputError(`${what} ${b} does not fit in 64 bits`);
  return `0x${BigInt.asUintN(64, b).toString(16)}ULL`;
}

function inRange(v: number | bigint, lo: bigint, hi: bigint, what: string): string {
  const b = integer(v, what);
  if (b < lo || b > hi) throw new InputError(`${what} ${b} does not fit in 32 bits`);
  return b.toString(10);
}

export const cU32 = (v: number, what = 'a value'): string => inRange(v, 0n, 2n ** 32n - 1n, what);
export const cI32 = (v: number, what = 'a value'): string => inRange(v, -(2n ** 31n), 2n ** 31n - 1n, what);

/**
 * One byte of a string literal. Backslash and quote are escaped; `?` becomes `\?` so no `??x`
 * trigraph can form (gcc -trigraphs would turn `??/` into a backslash); every byte outside printable
 * ASCII 0x20-0x7e, NUL and newline included, is a three-digit octal escape, which a following digit
 * cannot extend (a hex escape would swallow it).
 */
function escapeByte(b: number): string {
  if (b === 0x5c) return '\\\\';
  if (b === 0x22) return '\\"';
  if (b === 0x3f) return '\\?';
  if (b >= 0x20 && b <= 0x7e) return String.fromCharCode(b);
  return `\\${b.toString(8).padStart(3, '0')}`;
}

/**
 * `s` (its UTF-8 bytes) as a C string literal, split into adjacent literals of at most `width`
 * columns so the generated source stays readable; the compiler joins them into one array.
 */
export function cString(s: string, width = 100): string {
  const pieces: string[] = [];
  let piece = '';
  for (const b of Buffer.from(s, 'utf8')) {
    const e = escapeByte(b);
    if (piece.length + e.length > width - 2) {
      pieces.push(`"${piece}"`);
      piece = '';
    }
    piece += e;
  }
  pieces.push(`"${piece}"`);
  return pieces.join('\n    ');
}

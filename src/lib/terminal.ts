/**
 * Text from stored data (event payloads, subjects, rejection details, names) on its way to a terminal.
 * A control character in it could move the cursor, clear the screen, retitle the window or hide what
 * follows (ESC sequences), and a bidi override could make a line read differently from its bytes. Pure.
 */

import { isMapLike } from './map-delta.ts';

// C0 controls, DEL, C1 controls; bidi embeddings, overrides and isolates (U+202A-202E, U+2066-2069),
// the marks U+200E/200F/061C, and the line and paragraph separators U+2028/2029.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * `s` with every control character, bidi control and line separator written as a visible escape:
 * `\n`, `\r`, `\t`, `\e` (ESC) and `\\` for a backslash that could be mistaken for one, `\xHH` for the
 * other C0/C1 controls and DEL, `\u{HHHH}` for the rest. Printable text, emoji and other scripts pass
 * unchanged; the result holds no character below U+0020 and none of the listed ones.
 */
export function escapeForTerminal(s: string): string {
  if (!UNSAFE.test(s)) {
    UNSAFE.lastIndex = 0;
    return s;
  }
  UNSAFE.lastIndex = 0;
  return s.replace(/\\(?=[nrte]|x[0-9a-fA-F]{2}|u\{)/g, '\\\\').replace(UNSAFE, (c) => {
    const code = c.codePointAt(0)!;
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    if (code === 0x1b) return '\\e';
    if (code <= 0x9f) return `\\x${code.toString(16).padStart(2, '0')}`;
    return `\\u{${code.toString(16)}}`;
  });
}

/** Whether `s` holds anything {@link escapeForTerminal} would escape (tests; checks of output). */
export function hasUnsafeTerminalText(s: string): boolean {
  const r = UNSAFE.test(s);
  UNSAFE.lastIndex = 0;
  return r;
}

/**
 * JSON text safe for a terminal and still the same JSON: `JSON.stringify` escapes C0 controls, and this
 * writes the rest {@link escapeForTerminal} would escape (DEL, C1, bidi controls, U+2028/2029) as
 * `\uXXXX`, which parses back to the same string. Only valid inside JSON string literals, which is
 * the only place JSON text can hold them.
 */
export function jsonForTerminal(value: unknown): string {
  return JSON.stringify(value, mapsAsObjects).replace(UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * A `JSON.stringify` replacer that writes a Map with string keys as an object (a host state's devices,
 * a view's relays): plain `JSON.stringify` writes every Map as `{}`.
 */
export const mapsAsObjects = (_key: string, v: unknown): unknown => (isMapLike(v) ? Object.fromEntries(v) : v);

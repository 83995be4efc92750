import { describe, expect, it } from 'vitest';
import { table } from '../../src/lib/table.ts';
import { escapeForTerminal, hasUnsafeTerminalText, jsonForTerminal } from '../../src/lib/terminal.ts';

describe('escapeForTerminal', () => {
  it('passes printable text, other scripts and emoji unchanged', () => {
    for (const s of ['relay-1 up', 'Zürich Ω 東京 🚀', 'a\\b', 'C:\\path', '']) expect(escapeForTerminal(s)).toBe(s);
  });

  it('writes C0, DEL and C1 controls as visible escapes', () => {
    expect(escapeForTerminal('a\u001b[2Jb')).toBe('a\\e[2Jb');
    expect(escapeForTerminal('x\ny\rz\t')).toBe('x\\ny\\rz\\t');
    expect(escapeForTerminal('\u0000\u0007\u007f\u0080\u009b\u009f')).toBe('\\x00\\x07\\x7f\\x80\\x9b\\x9f');
  });

  it('escapes bidi overrides, isolates, marks and line separators', () => {
    expect(escapeForTerminal('abc\u202Edef\u2066g\u200Fh\u2028')).toBe('abc\\u{202e}def\\u{2066}g\\u{200f}h\\u{2028}');
  });

  it('doubles a backslash only where it could be read as one of its escapes', () => {
    expect(escapeForTerminal('\\e[2J\u0007')).toBe('\\\\e[2J\\x07');
    expect(escapeForTerminal('\\x41\n')).toBe('\\\\x41\\n');
  });

  it('leaves nothing unsafe in any string of code points 0-0x3000', () => {
    let all = '';
    for (let c = 0; c < 0x3000; c++) if (c < 0xd800 || c > 0xdfff) all += String.fromCodePoint(c);
    const out = escapeForTerminal(all);
    expect(hasUnsafeTerminalText(out)).toBe(false);
    expect([...out].every((ch) => ch.codePointAt(0)! >= 0x20)).toBe(true);
    // Twice in a row: the regex's state does not leak between calls.
    expect(escapeForTerminal(all)).toBe(out);
  });
});

describe('jsonForTerminal', () => {
  it('is the same JSON with no raw control, C1 or bidi character', () => {
    const v = { a: 'x\u001b[2J\u0085\u202e\u2028\u007fy', n: 1, nested: ['\u009b31m'] };
    const text = jsonForTerminal(v);
    expect(hasUnsafeTerminalText(text)).toBe(false);
    expect(JSON.parse(text)).toEqual(v);
  });

  it('writes a Map (the devices of a replayed host) as an object, not as {}', () => {
    const host = { devices: new Map([['rc1m2', { name: 'rc1m2', mtu: 1420 }]]), routes: [] };
    expect(JSON.parse(jsonForTerminal({ host }))).toEqual({ host: { devices: { rc1m2: { name: 'rc1m2', mtu: 1420 } }, routes: [] } });
  });
});

describe('tables', () => {
  it('escape every cell, and pad by the escaped width', () => {
    const lines = table(
      [{}, {}],
      [
        ['ID', 'STATE'],
        ['relay-1\u001b[2J', 'up'],
      ],
    );
    expect(lines).toEqual(['ID            STATE', 'relay-1\\e[2J  up']);
    expect(lines.some(hasUnsafeTerminalText)).toBe(false);
  });
});

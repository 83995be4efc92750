import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const MODULE = fileURLToPath(new URL('../../src/lib/write-all.ts', import.meta.url));

/**
 * A child writes 4 MiB to its stdout pipe after opening process.stdout (which makes the pipe
 * non-blocking) while this side does not read for 300 ms: the pipe fills and a write answers EAGAIN.
 */
function run(writer: 'writeAllSync' | 'writeSync'): Promise<{ bytes: number; code: number | null; stderr: string }> {
  const script = [
    "import { writeSync } from 'node:fs';",
    `import { writeAllSync } from ${JSON.stringify(MODULE)};`,
    'void process.stdout.isTTY;',
    "const line = 'x'.repeat(1023) + '\\n';",
    `for (let i = 0; i < 4096; i++) ${writer}(1, line);`,
  ].join('\n');
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let bytes = 0;
    let stderr = '';
    child.stdout.pause();
    setTimeout(() => child.stdout.resume(), 300);
    child.stdout.on('data', (d: Buffer) => {
      bytes += d.length;
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += String(d);
    });
    child.on('close', (code) => resolve({ bytes, code, stderr }));
  });
}

describe('writeAllSync', () => {
  it('writes everything to a full non-blocking pipe, where a plain writeSync fails with EAGAIN', async () => {
    const plain = await run('writeSync');
    expect(plain.code).not.toBe(0);
    expect(plain.stderr).toMatch(/EAGAIN/);
    const all = await run('writeAllSync');
    expect(all.stderr).toBe('');
    expect(all.code).toBe(0);
    expect(all.bytes).toBe(4096 * 1024);
  });
});

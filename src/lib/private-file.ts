import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** Refuse a file of secrets that others may read (the key never leaves this host). */
export function assertPrivate(file: string): void {
  const mode = statSync(file).mode & 0o777;
  if (mode & 0o077) throw new Error(`${file} is readable by others (mode ${mode.toString(8)}); chmod 600 it`);
}

/** The trimmed text of a private key file, or null when there is none; refuses one others can read. */
export function readPrivateKeyFile(file: string): string | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  assertPrivate(file);
  return text.trim();
}

/** Write a new private key file: directory 0700, file 0600, never over an existing one. */
export function writeNewPrivateKeyFile(file: string, key: string): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, `${key}\n`, { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
}

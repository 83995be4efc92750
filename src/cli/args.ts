import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** A subcommand of the `relay-core` CLI. `usage` is the full `--help` text. */
export interface Command {
  name: string;
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  /** Runs the command; resolves to the process exit code. */
  run(values: Record<string, string | boolean | string[] | undefined>, positionals: string[]): Promise<number>;
}

/** Error whose message is shown to the user as is, with exit code 2 (usage) or 1. */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

export function parseCommandArgs(cmd: Command, argv: string[]) {
  try {
    return parseArgs({ args: argv, options: { ...cmd.options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new CliError(`${(e as Error).message}\n\n${cmd.usage}`, 2);
  }
}

export function str(v: unknown, name: string, env?: string): string | undefined {
  if (typeof v === 'string') return v;
  if (env && process.env[env]) return process.env[env];
  void name;
  return undefined;
}

export function requireStr(v: unknown, name: string, env?: string): string {
  const s = str(v, name, env);
  if (s === undefined || s === '') throw new CliError(`missing --${name}${env ? ` (or ${env})` : ''}`, 2);
  return s;
}

export function intOpt(v: unknown, name: string, dflt: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d+$/.test(v) || n < min || n > max) throw new CliError(`--${name} must be an integer in ${min}..${max}`, 2);
  return n;
}

/** `--token`, else the contents of `--token-file` (RELAYNET_TOKEN, RELAYNET_TOKEN_FILE); undefined when neither is given. */
export function tokenOpt(v: Record<string, unknown>): string | undefined {
  const token = str(v.token, 'token', 'RELAYNET_TOKEN');
  if (token) return token;
  const file = str(v['token-file'], 'token-file', 'RELAYNET_TOKEN_FILE');
  if (!file) return undefined;
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw new CliError(`cannot read token file ${file}: ${(e as Error).message}`, 2);
  }
}

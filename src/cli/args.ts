import { readFileSync } from 'node:fs';

/** Option values by commander's attribute name (`--state-dir` is `stateDir`), after flag > env > default. */
export type Values = Record<string, unknown>;

/** What an action gets besides its option values. */
export interface ActionContext {
  /** The words after the command's name as given (`tail --sim DIR --json`), to run the command again elsewhere. */
  argv: string[];
  /** Operands the command takes (none but `sim`'s subcommand words reach an action). */
  operands: string[];
  /** The options given as flags (not from the environment or a default), by attribute name. */
  flags: ReadonlySet<string>;
}

/** Runs one leaf command; resolves to the process exit code. */
export type Action = (v: Values, ctx: ActionContext) => Promise<number>;

/** Error whose message is shown to the user as is, with exit code 2 (usage) or 1. */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** A string option's value, or undefined (unset, or not a string). */
export function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** A required string option: `missing --name` (exit 2) without it. */
export function requireStr(v: unknown, name: string, env?: string): string {
  const s = str(v);
  if (s === undefined || s === '') throw new CliError(`missing --${name}${env ? ` (or ${env})` : ''}`, 2);
  return s;
}

/** `--token` (RELAYNET_TOKEN), else the contents of `--token-file` (RELAYNET_TOKEN_FILE); undefined when neither is given. */
export function tokenOpt(v: Values): string | undefined {
  const token = str(v.token);
  if (token) return token;
  const file = str(v.tokenFile);
  if (!file) return undefined;
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw new CliError(`cannot read token file ${file}: ${(e as Error).message}`, 2);
  }
}

import { Option, type Command } from 'commander';
import { CliError } from './args.ts';

/**
 * The CLI's options, declared once each: flags, help text, environment variable, default and parser.
 * Option groups several commands share (the bus, the control plane, the event filters, a state
 * directory) are functions returning fresh Options, added to each command that takes them.
 * Precedence is commander's: a flag, else the environment variable, else the default.
 */

export interface OptSpec {
  /** The environment variable that supplies the value when the flag is absent. */
  env?: string;
  /** The value when neither flag nor environment gives one. */
  default?: unknown;
  /** How the default reads in help (default: the value itself). */
  defaultText?: string;
  /** Turns the text into the value; throws CliError (exit 2) for bad input. */
  parse?: (value: string) => unknown;
  /** The heading the option is listed under in help (default "Options:"). */
  group?: string;
}

export function opt(flags: string, description: string, spec: OptSpec = {}): Option {
  // A default only described (it depends on other options, or is someone else's) is said in the text.
  const said = spec.default === undefined && spec.defaultText !== undefined;
  const o = new Option(flags, said ? `${description} (default: ${spec.defaultText})` : description);
  if (spec.env) o.env(spec.env);
  if (spec.default !== undefined) o.default(spec.default, spec.defaultText ?? String(spec.default));
  if (spec.parse) o.argParser(spec.parse);
  if (spec.group) o.helpGroup(spec.group);
  return o;
}

/** An integer in min..max; anything else is refused with the option's name. */
export function intIn(name: string, min = 0, max = Number.MAX_SAFE_INTEGER): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min || n > max) throw new CliError(`--${name} must be an integer in ${min}..${max}`, 2);
    return n;
  };
}

/** An integer option: `--port <P>` with the range its parser enforces. */
export function intOpt(flags: string, description: string, min: number, max: number, spec: Omit<OptSpec, 'parse'> = {}): Option {
  const name = /--([a-z0-9-]+)/.exec(flags)![1]!;
  return opt(flags, description, { ...spec, parse: intIn(name, min, max) });
}

/** Add options to a command; returns the command. */
export function withOptions(cmd: Command, ...options: Option[]): Command {
  for (const o of options) cmd.addOption(o);
  return cmd;
}

export const jsonOpt = (description = 'print JSON') => opt('--json', description);

export const stateDirOpt = (description: string, spec: Pick<OptSpec, 'default' | 'defaultText' | 'env' | 'group'> = {}) =>
  opt('--state-dir <DIR>', description, spec);

/** The NATS servers and token of a deployment (`bus bootstrap`, `events`, `replay`, `control-plane`). */
export const natsUrlOpt = (description = 'NATS servers') => opt('--nats-url <URL[,URL]>', description, { env: 'RELAYNET_NATS_SERVERS' });
export const natsTokenOpt = (description = 'NATS token') => opt('--nats-token <TOKEN>', description, { env: 'RELAYNET_NATS_TOKEN' });
export const natsCredsOpt = (description = 'NATS credentials (.creds: a user JWT and its nkey seed)') =>
  opt('--nats-creds <FILE>', description, { env: 'RELAYNET_NATS_CREDS' });
export const busOpts = () => [
  natsUrlOpt(),
  natsCredsOpt("the operator's reader credentials (a control plane's STATE_DIR/bus/reader.creds)"),
  natsTokenOpt('NATS token (token mode)'),
];

/** A running sim's NATS instead (`events`, `replay`): the command runs again inside the sim. */
export const simOpt = (description: string) => opt('--sim [DIR]', description);

/** The control plane and the credential to call it with (`run`, `client ...`). */
export const controlPlaneOpts = (tokenDescription: string) => [
  opt('--control-plane-url <URL>', 'the Supabase project URL', { env: 'SUPABASE_URL' }),
  opt('--token <TOKEN>', tokenDescription, { env: 'RELAYNET_TOKEN' }),
  opt('--token-file <FILE>', 'read the token from FILE', { env: 'RELAYNET_TOKEN_FILE' }),
];

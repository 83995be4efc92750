import { Command, type Help } from 'commander';
import { CliError, type Values } from './args.ts';
import {
  declareBus,
  declareClient,
  declareControlPlane,
  declareDevnet,
  declarePob,
  declareRelay,
  declareOperator,
  declareReconcile,
  declareRotateKey,
  declareRun,
  declareDoctor,
  declareStatus,
  declareToken,
} from './declare-daemon.ts';
import { declareDashboard, declareEvents, declareReplay } from './declare-events.ts';
import { declareSim } from './declare-sim.ts';

/**
 * The `relay-core` command tree, declared with commander: every command, subcommand and option with
 * its help text, environment variable and default. Declaring runs nothing: each leaf command names
 * an action, and `buildProgram` is handed the function that runs it, so tests parse argument
 * vectors through the real tree with actions of their own.
 */

export type ActionName =
  | 'run'
  | 'status'
  | 'control-plane'
  | 'client add'
  | 'client switch'
  | 'client list'
  | 'client remove'
  | 'token mint'
  | 'token revoke'
  | 'rotate-key'
  | 'reconcile'
  | 'relay ban'
  | 'relay unban'
  | 'relay suspend'
  | 'relay resume'
  | 'operator enroll'
  | 'operator status'
  | 'pob receipts'
  | 'pob verify'
  | 'pob settle'
  | 'pob measure'
  | 'pob status'
  | 'events tail'
  | 'events export'
  | 'replay'
  | 'dashboard'
  | 'doctor'
  | 'bus bootstrap'
  | 'bus status'
  | 'devnet'
  | 'sim'
  | 'sim up'
  | 'sim status'
  | 'sim add'
  | 'sim stop'
  | 'sim kill'
  | 'sim restart'
  | 'sim move'
  | 'sim down'
  | 'sim client add'
  | 'sim client switch'
  | 'sim client remove'
  | 'sim client list';

/** Runs the action of a leaf command with its option values, operands and the options given as flags. */
export type Dispatch = (name: ActionName, values: Values, operands: string[], flags: Set<string>) => Promise<void> | void;

/** Makes `cmd` a leaf that runs action `name` (wired by buildProgram). */
export type Leaf = (cmd: Command, name: ActionName) => Command;

/** Help 104 columns wide on every terminal (as the prose is written), with option terms as `--port P` (no angle brackets). */
const HELP: Partial<Help> = {
  helpWidth: 104,
  optionTerm: (o) => o.flags.replace(/<([^>]*)>/g, '$1'),
};

/** The tree; help goes to `writeHelp` (default stdout), errors are thrown (main reports them). */
export function buildProgram(dispatch: Dispatch, writeHelp: (text: string) => void = (t) => process.stdout.write(t)): Command {
  const program = new Command('relay-core')
    .description('relay-core: the daemon of a WireGuard relay network')
    .usage('<command> [options]')
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({ writeOut: writeHelp, outputError: () => {} })
    .helpCommand('help [command]', 'show the help of a command')
    .configureHelp(HELP)
    .addHelpText('after', "\nRun 'relay-core <command> --help' for a command's options.");
  group(program, 'command');
  const leaf: Leaf = (cmd, name) => {
    // Actions take no operands; a command with an action and subcommands (`sim`, declared after its
    // subcommands) gets its subcommand words, to name the unknown ones. Group commands allow operands
    // and commander hands that down to the commands made under them, so it is set here either way.
    const parent = cmd.commands.length > 0;
    cmd.allowExcessArguments(parent);
    if (parent) cmd.hook('preSubcommand', (self) => refuseOptionsBefore(self));
    return cmd.action(async (...args: unknown[]) => {
      const self = args.at(-1) as Command;
      if (self.commands.length && self.args.length) throw groupError(self, 'subcommand');
      const flags = new Set(self.options.map((o) => o.attributeName()).filter((k) => self.getOptionValueSource(k) === 'cli'));
      await dispatch(name, values(self), self.args, flags);
    });
  };
  declareRun(program, leaf);
  declareStatus(program, leaf);
  declareRotateKey(program, leaf);
  declareReconcile(program, leaf);
  declareDoctor(program, leaf);
  declareControlPlane(program, leaf);
  declareClient(program, leaf);
  declareToken(program, leaf);
  declareRelay(program, leaf);
  declareOperator(program, leaf);
  declarePob(program, leaf);
  declareEvents(program, leaf);
  declareReplay(program, leaf);
  declareDashboard(program, leaf);
  declareBus(program, leaf);
  declareDevnet(program, leaf);
  declareSim(program, leaf);
  return program;
}

/** A command that only groups subcommands: `relay-core client`, `relay-core sim client`. */
export function subcommands(parent: Command, name: string, summary: string, description: string): Command {
  const cmd = parent.command(name).summary(summary).description(description).configureHelp(HELP);
  return group(cmd, 'subcommand');
}

/**
 * Without a known subcommand, a group command fails as bad usage (exit 2) naming its subcommands,
 * instead of commander's help-and-exit: `token burn` is an unknown subcommand, `token --relay-id a`
 * a missing one, and `client --json list` is told to put the subcommand first.
 */
function group(cmd: Command, what: 'command' | 'subcommand'): Command {
  return cmd
    .allowUnknownOption()
    .allowExcessArguments()
    .action((_opts: unknown, self: Command) => {
      throw groupError(self, what);
    });
}

export function groupError(cmd: Command, what: 'command' | 'subcommand', args: readonly string[] = cmd.args): CliError {
  const names = cmd.commands.filter((c) => !(c as unknown as { _hidden: boolean })._hidden).map((c) => c.name());
  const first = args[0];
  const named = args.find((a) => !a.startsWith('-'));
  if (first?.startsWith('-') && named !== undefined && names.includes(named)) {
    return new CliError(`give the ${what} first: '${commandPath(cmd)} ${named} ${first} ...'`, 2);
  }
  const which = first === undefined || first.startsWith('-') ? `missing ${what}` : `unknown ${what} ${JSON.stringify(first)}`;
  return new CliError(`${which}; one of ${names.join(', ')}`, 2);
}

/** `sim --relays 3 up`: the options of `sim` are not those of `sim up`; say where they go. */
function refuseOptionsBefore(cmd: Command): void {
  const given = cmd.options.find((o) => cmd.getOptionValueSource(o.attributeName()) === 'cli');
  if (given) throw new CliError(`${given.long} goes after the subcommand: '${commandPath(cmd)} <subcommand> ${given.long} ...'`, 2);
}

/** `relay-core sim client`: the command's full name. */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/**
 * The argument vector with each subcommand word moved in front of the options given before it:
 * `sim --state-dir D status` reads as `sim status --state-dir D`, `token --relay-id a mint` as
 * `token mint --relay-id a`, as the CLI has always accepted them. An option that takes a value
 * (of the command or of any command under it) keeps its value; after `--` nothing moves.
 */
export function subcommandFirst(program: Command, argv: readonly string[]): string[] {
  const out = [...argv];
  let cmd = program;
  let start = 0;
  while (cmd.commands.length) {
    const { required, optional } = valueOptions(cmd);
    const isSub = (a: string | undefined) => a !== undefined && cmd.commands.some((c) => c.name() === a);
    let i = start;
    while (i < out.length && out[i]!.startsWith('-')) {
      const a = out[i]!;
      if (a === '--') return out;
      i += !a.includes('=') && (required.has(a) || (optional.has(a) && !isSub(out[i + 1]) && !out[i + 1]?.startsWith('-'))) ? 2 : 1;
    }
    const word = out[i];
    const sub = cmd.commands.find((c) => c.name() === word);
    if (!sub) return out;
    out.splice(i, 1);
    out.splice(start, 0, word!);
    cmd = sub;
    start += 1;
  }
  return out;
}

/** The flags (long and short) of the options under `cmd` that take a value, required or optional. */
function valueOptions(cmd: Command, acc = { required: new Set<string>(), optional: new Set<string>() }) {
  for (const o of cmd.options) {
    const set = o.required ? acc.required : o.optional ? acc.optional : null;
    for (const f of [o.long, o.short]) if (set && f) set.add(f);
  }
  for (const c of cmd.commands) valueOptions(c, acc);
  return acc;
}

/**
 * The command `argv` names: down the tree as long as words name subcommands (`sim client add`).
 * Used to point a usage error at the right `--help`.
 */
export function commandOf(program: Command, argv: readonly string[]): Command {
  let cmd = program;
  for (const a of argv) {
    if (a.startsWith('-')) continue;
    const sub = cmd.commands.find((c) => c.name() === a);
    if (!sub) break;
    cmd = sub;
  }
  return cmd;
}

/**
 * The option values of a command. An environment variable set to the empty string counts as unset,
 * as it always has: the option keeps its default.
 */
export function values(cmd: Command): Values {
  const v: Values = { ...cmd.opts() };
  for (const o of cmd.options) {
    const key = o.attributeName();
    if (o.envVar && cmd.getOptionValueSource(key) === 'env' && process.env[o.envVar] === '') v[key] = o.defaultValue;
  }
  return v;
}

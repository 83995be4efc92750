import { CommanderError } from 'commander';
import { CliError, type Action } from './args.ts';
import { buildProgram, commandOf, commandPath, subcommandFirst, type ActionName } from './program.ts';

/**
 * The actions of the command tree (src/cli/program.ts), each loaded when it runs so `--help` and small
 * commands stay fast. Adding a command: declare it in a declare-*.ts file and name its action here.
 */
const sim = () => import('./commands/sim.ts');
const client = () => import('./commands/client.ts');
const relay = () => import('./commands/relay.ts');
const events = () => import('./commands/events.ts');
const ACTIONS: Record<ActionName, () => Promise<Action>> = {
  run: async () => (await import('./commands/run.ts')).run,
  status: async () => (await import('./commands/status.ts')).status,
  'control-plane': async () => (await import('./commands/control-plane.ts')).controlPlane,
  'client add': async () => (await client()).add,
  'client switch': async () => (await client()).switchExit,
  'client list': async () => (await client()).list,
  'client remove': async () => (await client()).remove,
  'relay ban': async () => (await relay()).ban,
  'relay unban': async () => (await relay()).unban,
  'relay suspend': async () => (await relay()).suspend,
  'relay resume': async () => (await relay()).resume,
  'operator enroll': async () => (await import('./commands/operator.ts')).enroll,
  'operator status': async () => (await import('./commands/operator.ts')).status,
  'pob receipts': async () => (await import('./commands/pob.ts')).receipts,
  'pob verify': async () => (await import('./commands/pob.ts')).verify,
  'pob settle': async () => (await import('./commands/pob.ts')).settle,
  'pob measure': async () => (await import('./commands/pob.ts')).measure,
  'pob status': async () => (await import('./commands/pob.ts')).status,
  'token mint': async () => (await import('./commands/token.ts')).mint,
  'token revoke': async () => (await import('./commands/token.ts')).revoke,
  'rotate-key': async () => (await import('./commands/status.ts')).rotateKey,
  reconcile: async () => (await import('./commands/status.ts')).reconcile,
  'events tail': async () => (await events()).tail,
  'events export': async () => (await events()).exportLog,
  replay: async () => (await import('./commands/replay.ts')).replay,
  dashboard: async () => (await import('./commands/dashboard.ts')).dashboard,
  doctor: async () => (await import('./commands/doctor.ts')).doctor,
  'bus bootstrap': async () => (await import('./commands/bus.ts')).bootstrap,
  'bus status': async () => (await import('./commands/bus.ts')).status,
  devnet: async () => (await import('./commands/devnet.ts')).devnet,
  sim: async () => (await sim()).foreground,
  'sim up': async () => (await sim()).up,
  'sim status': async () => (await sim()).status,
  'sim add': async () => (await sim()).add,
  'sim stop': async () => (await sim()).stop,
  'sim kill': async () => (await sim()).kill,
  'sim restart': async () => (await sim()).restart,
  'sim move': async () => (await sim()).move,
  'sim down': async () => (await sim()).down,
  'sim client add': async () => (await sim()).clientAdd,
  'sim client switch': async () => (await sim()).clientSwitch,
  'sim client remove': async () => (await sim()).clientRemove,
  'sim client list': async () => (await sim()).clientList,
};

export async function main(argv: string[]): Promise<number> {
  let code = 0;
  // Help is written at once, so `relay-core sim --help | head` does not meet a closed pipe half way.
  let help = '';
  const program = buildProgram(
    async (name, values, operands, flags) => {
      code = await (await ACTIONS[name]())(values, { argv: argv.slice(1), operands, flags });
    },
    (text) => (help += text),
  );
  argv = subcommandFirst(program, argv);
  if (argv.length === 0) {
    process.stdout.write(program.helpInformation());
    return 2;
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (e) {
    // --help, and `relay-core help [command]`.
    if (e instanceof CommanderError && (e.code === 'commander.helpDisplayed' || (e.code === 'commander.help' && e.exitCode === 0))) {
      process.stdout.write(help);
      return 0;
    }
    if (!(e instanceof CommanderError) && !(e instanceof CliError)) throw e;
    // Commander says `error: unknown option '--x'`; ours read `Unknown option '--x'`.
    const message = e instanceof CliError ? e.message : e.message.replace(/^error: /, '').replace(/^./, (c) => c.toUpperCase());
    const exitCode = e instanceof CliError ? e.exitCode : 2;
    const cmd = commandOf(program, argv);
    const top = program.commands.find((c) => c.name() === argv[0]);
    const hint = exitCode === 2 ? `\n\nUsage: ${commandPath(cmd)} ${cmd.usage()}\nRun '${commandPath(cmd)} --help' for more.` : '';
    process.stderr.write(`relay-core${top ? ` ${top.name()}` : ''}: ${message}${hint}\n`);
    return exitCode;
  }
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
      // Leave a moment for logs to flush, then exit even if a client still retries in the background.
      setTimeout(() => process.exit(code), 200).unref();
    },
    (e) => {
      process.stderr.write(`relay-core: ${(e as Error).stack ?? e}\n`);
      process.exitCode = 1;
    },
  );
}

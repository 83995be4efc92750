import { CliError, parseCommandArgs, type Command } from './args.ts';

/**
 * The command table. Each entry is loaded lazily so `--help` and small commands stay fast.
 * Adding a command: a module under src/cli/commands exporting `command: Command`, plus one line here.
 */
const COMMANDS: Record<string, { summary: string; load: () => Promise<{ command: Command }> }> = {
  run: { summary: 'run the relay daemon: register, seed, follow topology, heartbeat', load: () => import('./commands/run.ts') },
  status: { summary: "show a running relay's topology view and counters", load: () => import('./commands/status.ts') },
  'control-plane': { summary: 'run the local control plane (Edge Functions on Deno, gateway, Postgres, publisher)', load: () => import('./commands/control-plane.ts') },
  client: { summary: 'open, switch, list and close client sessions (stock WireGuard clients)', load: () => import('./commands/client.ts') },
  token: { summary: 'mint scoped tokens: relay tokens (bound to one relay id) and user tokens', load: () => import('./commands/token.ts') },
  events: { summary: 'tail the event streams live, or export them to a file (JSON lines)', load: () => import('./commands/events.ts') },
  replay: { summary: "rebuild a relay's actors and programmed host from its event log; timeline; drift", load: () => import('./commands/replay.ts') },
  bus: { summary: 'event-bus administration (idempotent JetStream bootstrap)', load: () => import('./commands/bus.ts') },
  devnet: { summary: 'run a live multi-relay network on loopback (NATS, control plane, N relays)', load: () => import('./commands/devnet.ts') },
  sim: { summary: 'run a live multi-relay network from network namespaces, with WireGuard links (root)', load: () => import('./commands/sim.ts') },
};

export function mainUsage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length));
  return [
    'relay-core: the daemon of a WireGuard relay network',
    '',
    'Usage: relay-core <command> [options]',
    '',
    'Commands:',
    ...Object.entries(COMMANDS).map(([k, v]) => `  ${k.padEnd(width)}  ${v.summary}`),
    '',
    "Run 'relay-core <command> --help' for a command's options.",
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(mainUsage() + '\n');
    return name ? 0 : 2;
  }
  const entry = COMMANDS[name];
  if (!entry) {
    process.stderr.write(`relay-core: unknown command '${name}'\n\n${mainUsage()}\n`);
    return 2;
  }
  const { command } = await entry.load();
  try {
    const { values, positionals } = parseCommandArgs(command, rest);
    if (values.help) {
      process.stdout.write(command.usage + '\n');
      return 0;
    }
    return await command.run(values, positionals);
  } catch (e) {
    if (e instanceof CliError) {
      process.stderr.write(`relay-core ${name}: ${e.message}\n`);
      return e.exitCode;
    }
    throw e;
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

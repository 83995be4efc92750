import { afterEach, describe, expect, it } from 'vitest';
import { CliError, type Values } from '../../src/cli/args.ts';
import { buildProgram, subcommandFirst, type ActionName } from '../../src/cli/program.ts';
import { table } from '../../src/lib/table.ts';
import { cli } from '../support/cli.ts';

interface Parsed {
  name: ActionName;
  values: Values;
  operands: string[];
  flags: Set<string>;
}

/** Parse argv through the real command tree; the action only records what it was given. */
async function parse(...argv: string[]): Promise<Parsed> {
  let got: Parsed | null = null;
  const program = buildProgram((name, values, operands, flags) => {
    got = { name, values, operands, flags };
  });
  await program.parseAsync(argv, { from: 'user' });
  if (!got) throw new Error(`no action ran for ${argv.join(' ')}`);
  return got;
}

/** The error parsing argv ends in (none: the test fails). */
async function parseError(...argv: string[]): Promise<Error> {
  return parse(...argv).then(
    () => {
      throw new Error(`${argv.join(' ')} parsed`);
    },
    (e: Error) => e,
  );
}

const ENV = ['RELAYNET_STATE_DIR', 'RELAYNET_REGION', 'RELAYNET_NATS_SERVERS', 'RELAYNET_RELAY_ID'] as const;
const saved = Object.fromEntries(ENV.map((k) => [k, process.env[k]]));

describe('the relay-core command tree', () => {
  afterEach(() => {
    for (const k of ENV) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  });

  it('routes nested subcommands to their actions with their options', async () => {
    expect(await parse('sim', 'client', 'add', '--exit', 'relay-2', '--state-dir', '/tmp/s')).toMatchObject({
      name: 'sim client add',
      values: { exit: 'relay-2', stateDir: '/tmp/s' },
    });
    expect((await parse('sim', 'client', 'list', '--json')).values).toEqual({ json: true, stateDir: '.state/sim' });
    expect((await parse('client', 'add', '--exit-region', 'eu', '--ttl', '600')).values).toMatchObject({ exitRegion: 'eu', ttl: 600 });
    expect((await parse('events', 'tail', '--sim', '/tmp/s', '--json')).values).toMatchObject({ sim: '/tmp/s', json: true, stream: 'all' });
    expect((await parse('events', 'export', '--sim')).values).toMatchObject({ sim: true });
    expect((await parse('bus', 'bootstrap', '--relay-max-age', '60')).values).toMatchObject({ relayMaxAge: 60 });
    expect((await parse('token', 'mint', '--relay-id', 'relay-a')).values).toMatchObject({ role: 'relay', relayId: 'relay-a', ttl: '30d' });
    expect((await parse('sim', 'add', '--no-ipv6')).values).toMatchObject({ ipv6: false, wait: 'mesh', timeout: 60 });
    const names: ActionName[] = [];
    for (const argv of [
      ['run'],
      ['status'],
      ['control-plane'],
      ['replay'],
      ['devnet'],
      ['sim'],
      ['sim', 'up'],
      ['sim', 'status'],
      ['sim', 'stop'],
      ['sim', 'kill'],
      ['sim', 'restart'],
      ['sim', 'move'],
      ['sim', 'down'],
    ]) {
      names.push((await parse(...argv)).name);
    }
    expect(names).toEqual([
      'run',
      'status',
      'control-plane',
      'replay',
      'devnet',
      'sim',
      'sim up',
      'sim status',
      'sim stop',
      'sim kill',
      'sim restart',
      'sim move',
      'sim down',
    ]);
  });

  it('takes a flag over its environment variable over the default; an empty variable counts as unset', async () => {
    expect((await parse('run')).values.region).toBe('local');
    process.env.RELAYNET_REGION = 'eu';
    expect((await parse('run')).values.region).toBe('eu');
    expect((await parse('run', '--region', 'us')).values.region).toBe('us');
    process.env.RELAYNET_REGION = '';
    expect((await parse('run')).values.region).toBe('local');

    process.env.RELAYNET_STATE_DIR = '/env/dir';
    process.env.RELAYNET_RELAY_ID = 'relay-9';
    expect((await parse('status')).values).toMatchObject({ stateDir: '/env/dir', relayId: 'relay-9' });
    const flagged = await parse('status', '--state-dir', '/flag/dir');
    expect(flagged.values.stateDir).toBe('/flag/dir');
    expect([...flagged.flags]).toEqual(['stateDir']);

    process.env.RELAYNET_NATS_SERVERS = 'nats://env:4222';
    const r = await parse('replay', '--relay', 'relay-1');
    expect(r.values.natsUrl).toBe('nats://env:4222');
    expect(r.flags.has('natsUrl')).toBe(false);
  });

  it('parses integers with their range, from flags and the environment alike', async () => {
    expect((await parse('control-plane', '--port', '0')).values.port).toBe(0);
    expect((await parse('control-plane')).values.port).toBe(54321);
    const bad = await parseError('control-plane', '--port', 'eighty');
    expect(bad).toBeInstanceOf(CliError);
    expect(bad.message).toBe('--port must be an integer in 0..65535');
    expect((await parseError('sim', 'up', '--relays', '0')).message).toMatch(/^--relays must be an integer in 1\.\./);
  });

  it('refuses unknown options and operands, and says which subcommands exist', async () => {
    expect(await parseError('sim', 'status', '--relays', '3')).toMatchObject({ code: 'commander.unknownOption' });
    expect(await parseError('events', 'tail', 'extra')).toMatchObject({ code: 'commander.excessArguments' });
    expect((await parseError('token', 'burn')).message).toBe('unknown subcommand "burn"; one of mint, revoke');
    expect((await parseError('token', '--relay-id', 'a')).message).toBe('missing subcommand; one of mint, revoke');
    expect((await parseError('sim', 'frob')).message).toMatch(/^unknown subcommand "frob"; one of up, status, add/);
    expect((await parseError('sim', 'client')).message).toBe('missing subcommand; one of add, switch, remove, list');
    expect((await parseError('sim', '--relays', '3', 'up')).message).toMatch(/^--relays goes after the subcommand/);
    expect((await parseError('client', '--json', 'list')).message).toMatch(/^give the subcommand first: 'relay-core client list --json/);
    expect((await parseError('frob')).message).toMatch(/^unknown command "frob"; one of run, status/);
  });

  it('takes options given before the subcommand, as the CLI always has (main moves the subcommand first)', async () => {
    const program = buildProgram(() => {});
    const first = (...argv: string[]) => subcommandFirst(program, argv);
    expect(first('sim', '--state-dir', 'D', 'status')).toEqual(['sim', 'status', '--state-dir', 'D']);
    expect(first('token', '--relay-id', 'a', 'mint', '--ttl', '1h')).toEqual(['token', 'mint', '--relay-id', 'a', '--ttl', '1h']);
    expect(first('sim', '--state-dir', 'D', 'client', '--json', 'list')).toEqual(['sim', 'client', 'list', '--state-dir', 'D', '--json']);
    expect(first('sim', '--relays', '3')).toEqual(['sim', '--relays', '3']);
    // A value that happens to be a subcommand's name stays the option's value; after `--` nothing moves.
    expect(first('sim', '--state-dir', 'status')).toEqual(['sim', '--state-dir', 'status']);
    expect(first('sim', '--', 'status')).toEqual(['sim', '--', 'status']);
    const st = await parse(...first('sim', '--state-dir', 'D', 'status'));
    expect(st.name).toBe('sim status');
    expect(st.values.stateDir).toBe('D');
    const ls = await parse(...first('client', '--json', 'list'));
    expect(ls.name).toBe('client list');
    expect(ls.values.json).toBe(true);
  });

  it('reports bad usage on stderr with the command, exit 2; help on stdout, exit 0', async () => {
    const bad = await cli('sim', 'status', '--relays', '3');
    expect(bad).toMatchObject({ code: 2, out: '' });
    expect(bad.err).toMatch(/^relay-core sim: Unknown option '--relays'\n\nUsage: relay-core sim status \[options\]\n/);
    const unknown = await cli('frob');
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/^relay-core: unknown command "frob"/);
    const help = await cli('sim', 'client', 'add', '--help');
    expect(help).toMatchObject({ code: 0, err: '' });
    expect(help.out).toMatch(/^Usage: relay-core sim client add \[options\]\n/);
    expect(help.out).toContain('--exit-region R');
    expect(help.out).toContain('--state-dir DIR');
    const run = await cli('run', '--help');
    expect(run.out).toMatch(/--relay-id ID +this relay's id, \[a-z0-9-\] \(required\) \(env: RELAYNET_RELAY_ID\)/);
    expect((await cli('help', 'events')).code).toBe(0);
    const none = await cli();
    expect(none.code).toBe(2);
    expect(none.out).toMatch(/^Usage: relay-core <command> \[options\]/);
  });
});

describe('table', () => {
  it('draws fixed and fitted columns as the hand-padded tables did', () => {
    const rows = [
      ['relay-1', 'serving', '10.0.0.1', '7'],
      ['relay-10', 'registering', '-', '12'],
    ];
    const fixed = [{ width: 10 }, { width: 10 }, { width: 13 }, { width: 4, align: 'right' as const }];
    expect(table(fixed, rows, { gap: ' ' })).toEqual(rows.map((r) => `${r[0]!.padEnd(10)} ${r[1]!.padEnd(10)} ${r[2]!.padEnd(13)} ${r[3]!.padStart(4)}`));
    expect(table([{}, {}, {}, {}], rows)).toEqual(['relay-1   serving      10.0.0.1  7', 'relay-10  registering  -         12']);
    expect(table([{ width: 4 }, {}], [['toolong', 'x']], { indent: '  ' })).toEqual(['  toolong  x']);
  });
});

import { CliError, intOpt, str, tokenOpt, type Command } from '../args.ts';
import { ControlPlaneClient, ControlPlaneError } from '../../daemon/control-plane-client.ts';
import { rootLogger } from '../../lib/logger.ts';
import { generateWgKeyPair, loadOrCreateWgKey } from '../../lib/wg-keys.ts';

const usage = `Usage: relay-core client add --exit ID|--exit-region REGION [--entry ID] [key options] [--ttl S] [--json]
       relay-core client switch --session ID --exit ID|--exit-region REGION [--json]
       relay-core client list [--entry ID] [--all] [--json]
       relay-core client remove --session ID | --public-key KEY
  Every form takes --control-plane-url URL (SUPABASE_URL) and --token TOKEN | --token-file FILE
  (RELAYNET_TOKEN, RELAYNET_TOKEN_FILE): the service-role key (an operator) or a user's JWT.

Client sessions of stock WireGuard clients (docs/clients.md). A client enters the network at an entry
relay and leaves it at the exit it chose; the control plane picks what is not given.

  add      Open a session and print the client's wg-quick configuration once the entry relay has
           programmed it (the control plane waits for the entry's confirmation). The client's key:
           --key-file FILE reads a private key from FILE, or creates one there (mode 0600) when it
           does not exist; --public-key KEY uses a key whose private half stays elsewhere (the
           configuration then has a PrivateKey placeholder); with neither, a fresh key is made and
           printed in the configuration only. The private key never goes to the control plane.
  switch   Steer a session to another exit; the client's tunnel is untouched (no new handshake).
  list     Open sessions (--all: also closed ones), one per line, or JSON.
  remove   Close a session: the entry removes the client's peer and rules.

Options:
  --entry ID          the entry relay (add: default the least loaded live relay; list: filter)
  --exit ID           the exit relay
  --exit-region R     any live relay of region R as the exit (the least loaded)
  --session ID        the session (switch, remove)
  --key-file FILE     add: the client's private key file (created, mode 0600, if missing)
  --public-key KEY    add: the client's public key (its private key stays elsewhere); remove: the
                      session of this key
  --ttl S             session lifetime in seconds (default: the control plane's, 24 h)
  --json              print the control plane's answer as JSON
  -h, --help          show this help

Exit codes: 0 done; 1 refused or failed (the control plane's reason is printed); 2 bad usage.`;

function connect(v: Record<string, unknown>): ControlPlaneClient {
  const url = str(v['control-plane-url'], 'control-plane-url', 'SUPABASE_URL');
  if (!url) throw new CliError(`missing --control-plane-url (or SUPABASE_URL)\n\n${usage}`, 2);
  const token = tokenOpt(v);
  if (!token) throw new CliError(`missing --token or --token-file (or RELAYNET_TOKEN)\n\n${usage}`, 2);
  return new ControlPlaneClient({ url, key: token, logger: rootLogger({ component: 'client-cli' }, 'warn') });
}

/** The client's key: from a file (created if absent), a given public key, or a fresh one. */
function clientKey(v: Record<string, unknown>): { publicKey: string; privateKey: string | null } {
  const file = str(v['key-file'], 'key-file');
  const pub = str(v['public-key'], 'public-key');
  if (file && pub) throw new CliError('give --key-file or --public-key, not both', 2);
  if (pub) return { publicKey: pub, privateKey: null };
  if (file) {
    try {
      const k = loadOrCreateWgKey(file);
      return { publicKey: k.publicKey, privateKey: k.privateKey };
    } catch (e) {
      throw new CliError(`key file ${file}: ${(e as Error).message}`, 2);
    }
  }
  const fresh = generateWgKeyPair();
  return { publicKey: fresh.publicKey, privateKey: fresh.privateKey };
}

/** Put the private key into the configuration the control plane rendered with a placeholder. */
export function withPrivateKey(wgQuick: string, privateKey: string | null): string {
  if (privateKey === null) return wgQuick;
  return wgQuick.replace(/^# PrivateKey = .*$/m, `PrivateKey = ${privateKey}`);
}

function refused(e: unknown): never {
  if (e instanceof ControlPlaneError) throw new CliError(e.message, 1);
  throw e;
}

export const command: Command = {
  name: 'client',
  summary: 'open, switch, list and close client sessions',
  usage,
  options: {
    'control-plane-url': { type: 'string' },
    token: { type: 'string' },
    'token-file': { type: 'string' },
    entry: { type: 'string' },
    exit: { type: 'string' },
    'exit-region': { type: 'string' },
    session: { type: 'string' },
    'public-key': { type: 'string' },
    'key-file': { type: 'string' },
    ttl: { type: 'string' },
    all: { type: 'boolean' },
    json: { type: 'boolean' },
  },
  async run(v, positionals) {
    const [sub, ...extra] = positionals;
    if (extra.length) throw new CliError(`unexpected arguments: ${extra.join(' ')}\n\n${usage}`, 2);
    const out = (s: string) => process.stdout.write(s.endsWith('\n') ? s : `${s}\n`);
    const exitChoice = () => {
      const exit = str(v.exit, 'exit');
      const exitRegion = str(v['exit-region'], 'exit-region');
      if (!exit === !exitRegion) throw new CliError(`give exactly one of --exit and --exit-region\n\n${usage}`, 2);
      return exit ? { exit } : { exitRegion: exitRegion! };
    };
    switch (sub) {
      case 'add': {
        const choice = exitChoice();
        const key = clientKey(v);
        const cp = connect(v);
        const entry = str(v.entry, 'entry');
        const ttl = v.ttl === undefined ? undefined : intOpt(v.ttl, 'ttl', 0, 60, 30 * 86_400);
        const r = await cp.connectClient({ publicKey: key.publicKey, ...choice, ...(entry ? { entry } : {}), ...(ttl ? { ttlSeconds: ttl } : {}) }).catch(refused);
        if (v.json) out(JSON.stringify({ ...r, wgQuick: withPrivateKey(r.wgQuick, key.privateKey) }, null, 2));
        else out(withPrivateKey(r.wgQuick, key.privateKey));
        process.stderr.write(`session ${r.session.id}: ${r.session.address} enters at ${r.entry.id}, leaves at ${r.exit.id}\n`);
        return 0;
      }
      case 'switch': {
        const sessionId = str(v.session, 'session');
        if (!sessionId) throw new CliError(`missing --session\n\n${usage}`, 2);
        const r = await connect(v).switchExit({ sessionId, ...exitChoice() }).catch(refused);
        out(v.json ? JSON.stringify(r, null, 2) : `session ${r.session.id} now leaves at ${r.session.exitId}`);
        return 0;
      }
      case 'list': {
        const entry = str(v.entry, 'entry');
        const r = await connect(v).listClients({ ...(entry ? { entry } : {}), includeClosed: v.all === true }).catch(refused);
        if (v.json) {
          out(JSON.stringify(r, null, 2));
          return 0;
        }
        if (!r.sessions.length) out('no sessions');
        for (const s of r.sessions) {
          out(`${s.id}  ${s.address.padEnd(15)}  ${s.entryId} -> ${s.exitId}  ${s.status}${s.confirmed ? '' : ' (unconfirmed)'}  key ${s.publicKey}  expires ${s.expiresAt}`);
        }
        return 0;
      }
      case 'remove': {
        const sessionId = str(v.session, 'session');
        const publicKey = str(v['public-key'], 'public-key');
        if (!sessionId === !publicKey) throw new CliError(`give exactly one of --session and --public-key\n\n${usage}`, 2);
        const r = await connect(v).disconnectClient(sessionId ? { sessionId } : { publicKey: publicKey! }).catch(refused);
        out(v.json ? JSON.stringify(r, null, 2) : `session ${r.sessionId} closed`);
        return 0;
      }
      default:
        throw new CliError(`${sub ? `unknown subcommand '${sub}'` : 'missing subcommand'}\n\n${usage}`, 2);
    }
  },
};

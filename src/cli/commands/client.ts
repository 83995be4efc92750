import { CliError, str, tokenOpt, type Action, type Values } from '../args.ts';
import { ControlPlaneClient, ControlPlaneError } from '../../daemon/control-plane-client.ts';
import { rootLogger } from '../../lib/logger.ts';
import { table } from '../../lib/table.ts';
import { generateWgKeyPair, loadOrCreateWgKey, loadWgKey } from '../../lib/wg-keys.ts';

/** `relay-core client add|switch|list|remove`: client sessions through the control plane. */

/** A client of the control plane of `--control-plane-url`, calling with `--token`/`--token-file` (`what` it must be). */
export function connect(v: Values, what = ''): ControlPlaneClient {
  const url = str(v.controlPlaneUrl);
  if (!url) throw new CliError('missing --control-plane-url (or SUPABASE_URL)', 2);
  const token = tokenOpt(v);
  if (!token) throw new CliError(`missing --token or --token-file (or RELAYNET_TOKEN)${what ? `: ${what}` : ''}`, 2);
  return new ControlPlaneClient({ url, key: token, logger: rootLogger({ component: 'client-cli' }, 'warn') });
}

/** The client's key: from a file (created if absent), a given public key, or a fresh one. */
function clientKey(v: Values): { publicKey: string; privateKey: string | null } {
  const file = str(v.keyFile);
  const pub = str(v.publicKey);
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

const out = (s: string) => process.stdout.write(s.endsWith('\n') ? s : `${s}\n`);

function exitChoice(v: Values): { exit: string } | { exitRegion: string } {
  const exit = str(v.exit);
  const exitRegion = str(v.exitRegion);
  if (!exit === !exitRegion) throw new CliError('give exactly one of --exit and --exit-region', 2);
  return exit ? { exit } : { exitRegion: exitRegion! };
}

export const add: Action = async (v) => {
  const choice = exitChoice(v);
  const key = clientKey(v);
  const cp = connect(v);
  const entry = str(v.entry);
  const ttl = v.ttl as number | undefined;
  if (v.private === true && v.standard === true) throw new CliError('give --private or --standard, not both', 2);
  // Neither: the control plane's choice (standard, or private with a community relay on the path).
  const mode = v.private === true ? { mode: 'private' as const } : v.standard === true ? { mode: 'standard' as const } : {};
  const community = v.community === true ? { community: true } : {};
  const r = await cp
    .connectClient({ publicKey: key.publicKey, ...choice, ...(entry ? { entry } : {}), ...(ttl ? { ttlSeconds: ttl } : {}), ...mode, ...community })
    .catch(refused);
  if (v.json) out(JSON.stringify({ ...r, wgQuick: withPrivateKey(r.wgQuick, key.privateKey) }, null, 2));
  else out(withPrivateKey(r.wgQuick, key.privateKey));
  const how = r.session.mode === 'private' ? ' (private: the entry forwards its ciphertext, the exit terminates its tunnel)' : '';
  process.stderr.write(`session ${r.session.id}: ${r.session.address} enters at ${r.entry.id}, leaves at ${r.exit.id}${how}\n`);
  return 0;
};

/**
 * A standard session's tunnel is untouched by a switch. A private session's client gets a new
 * configuration (its peer is the exit): printed like `add` prints one, the private key filled in from
 * `--key-file` when given.
 */
export const switchExit: Action = async (v) => {
  const sessionId = str(v.session);
  if (!sessionId) throw new CliError('missing --session', 2);
  const file = str(v.keyFile);
  const privateKey = file ? keyFromFile(file) : null;
  const r = await connect(v)
    .switchExit({ sessionId, ...exitChoice(v) })
    .catch(refused);
  const wgQuick = r.wgQuick === null ? null : withPrivateKey(r.wgQuick, privateKey);
  if (v.json) out(JSON.stringify({ ...r, wgQuick }, null, 2));
  else if (wgQuick !== null) out(wgQuick);
  else out(`session ${r.session.id} now leaves at ${r.session.exitId}`);
  if (wgQuick !== null)
    process.stderr.write(
      `session ${r.session.id} now leaves at ${r.session.exitId}: a private session, its client needs this new configuration (its peer is the exit)\n`,
    );
  return 0;
};

/** The private key of an existing key file (a switch never creates one). */
function keyFromFile(file: string): string {
  try {
    return loadWgKey(file).privateKey;
  } catch (e) {
    throw new CliError(`key file ${file}: ${(e as Error).message}`, 2);
  }
}

/** One line a session: id, address (15 wide), entry -> exit, status, key and expiry. */
const SESSION_COLUMNS = [{ width: 0 }, { width: 15 }, {}] as const;

export const list: Action = async (v) => {
  const entry = str(v.entry);
  const r = await connect(v)
    .listClients({ ...(entry ? { entry } : {}), includeClosed: v.all === true })
    .catch(refused);
  if (v.json) {
    out(JSON.stringify(r, null, 2));
    return 0;
  }
  if (!r.sessions.length) out('no sessions');
  const rows = r.sessions.map((s) => [
    s.id,
    s.address,
    `${s.entryId} -> ${s.exitId}  ${s.mode}  ${s.status}${s.confirmed ? '' : ' (unconfirmed)'}  key ${s.publicKey}  expires ${s.expiresAt}`,
  ]);
  for (const line of table(SESSION_COLUMNS, rows)) out(line);
  return 0;
};

export const remove: Action = async (v) => {
  const sessionId = str(v.session);
  const publicKey = str(v.publicKey);
  if (!sessionId === !publicKey) throw new CliError('give exactly one of --session and --public-key', 2);
  const r = await connect(v)
    .disconnectClient(sessionId ? { sessionId } : { publicKey: publicKey! })
    .catch(refused);
  out(v.json ? JSON.stringify(r, null, 2) : `session ${r.sessionId} closed`);
  return 0;
};

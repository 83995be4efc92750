// A wireguard-go device's peers read from its control socket (/var/run/wireguard/DEV.sock), in
// WireGuard's cross-platform userspace API (`get=1`: key=value lines, an `errno=` line and an empty
// line), without a `wg` process. The relay's observer reads its devices every few seconds; on a loaded
// host, starting `ip` and `wg` for each reading cost more than the reading (measured in
// docs/proof-of-bandwidth.md, "Measuring"). The device's own lines (its private key first) are skipped
// unread: only peers are kept.
import { connect } from 'node:net';
import type { DumpPeer } from './linux-parse.ts';

/** More than any device's answer (about 300 bytes a peer): a socket that sends more is not wireguard-go. */
const MAX_ANSWER = 16 * 1024 * 1024;

export class UapiError extends Error {}

/** The peers of a `get=1` answer (the text up to and including its `errno=0` line). Pure; throws UapiError on a malformed answer. */
export function parseUapiPeers(text: string): DumpPeer[] {
  const peers: DumpPeer[] = [];
  let peer: DumpPeer | null = null;
  let errno: number | null = null;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (errno !== null) throw new UapiError('a line after errno');
    const eq = line.indexOf('=');
    if (eq <= 0) throw new UapiError(`not key=value: ${JSON.stringify(line.slice(0, 40))}`);
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    if (key === 'errno') {
      errno = count(key, value);
      continue;
    }
    if (key === 'public_key') {
      peer = { publicKey: base64Key(value), endpoint: null, allowedIps: [], keepaliveSeconds: 0, latestHandshakeSeconds: 0, rxBytes: 0, txBytes: 0 };
      peers.push(peer);
      continue;
    }
    // Before the first peer: the device's own settings (private key, listen port, fwmark), not read.
    if (peer === null) continue;
    if (key === 'endpoint') peer.endpoint = value;
    else if (key === 'allowed_ip') peer.allowedIps.push(value);
    else if (key === 'last_handshake_time_sec') peer.latestHandshakeSeconds = count(key, value);
    else if (key === 'rx_bytes') peer.rxBytes = count(key, value);
    else if (key === 'tx_bytes') peer.txBytes = count(key, value);
    else if (key === 'persistent_keepalive_interval') peer.keepaliveSeconds = count(key, value);
  }
  if (errno === null) throw new UapiError('no errno line');
  if (errno !== 0) throw new UapiError(`errno=${errno}`);
  return peers;
}

function count(key: string, value: string): number {
  if (!/^\d{1,20}$/.test(value)) throw new UapiError(`${key} is not a count: ${JSON.stringify(value.slice(0, 40))}`);
  return Number(value);
}

/** A key as `wg` shows it (base64) from the API's hex. */
function base64Key(hex: string): string {
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new UapiError('a public key that is not 32 bytes of hex');
  return Buffer.from(hex, 'hex').toString('base64');
}

/**
 * The `get=1` answer of the socket at `path`: rejects when it cannot be reached (no such socket, nobody
 * listening), answers wrongly or too much, or not within `timeoutMs`.
 */
export function uapiGet(path: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tail = '';
    let settled = false;
    const s = connect({ path });
    const done = (e: Error | null, text?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      if (e) reject(e);
      else resolve(text!);
    };
    const timer = setTimeout(() => done(new UapiError(`${path}: no answer within ${timeoutMs} ms`)), timeoutMs);
    s.once('connect', () => s.write('get=1\n\n'));
    s.on('data', (b: Buffer) => {
      chunks.push(b);
      size += b.length;
      if (size > MAX_ANSWER) return done(new UapiError(`${path}: answer over ${MAX_ANSWER} bytes`));
      // The answer ends with its errno line and an empty line; the socket stays open for more requests.
      tail = (tail + b.toString('latin1')).slice(-32);
      if (/(^|\n)errno=\d+\n\n$/.test(tail)) done(null, Buffer.concat(chunks).toString('utf8'));
    });
    s.once('error', (e) => done(e));
    s.once('close', () => done(new UapiError(`${path}: closed before its answer ended`)));
  });
}

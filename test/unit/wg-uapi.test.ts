import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { parseUapiPeers, uapiGet, UapiError } from '../../src/kernel/wg-uapi.ts';
import { tempDir } from '../support/temp.ts';

const hex = () => randomBytes(32).toString('hex');
const b64 = (h: string) => Buffer.from(h, 'hex').toString('base64');

/** A device with two peers, as wireguard-go answers `get=1`. */
function answer(privateKey: string, peers: string[]): string {
  return [
    `private_key=${privateKey}`,
    'listen_port=51820',
    `public_key=${peers[0]}`,
    `preshared_key=${'0'.repeat(64)}`,
    'protocol_version=1',
    'endpoint=198.18.1.2:51821',
    'last_handshake_time_sec=1764720000',
    'last_handshake_time_nsec=500',
    'tx_bytes=1234',
    'rx_bytes=5678',
    'persistent_keepalive_interval=25',
    'allowed_ip=100.64.0.3/32',
    'allowed_ip=fd00::3/128',
    `public_key=${peers[1]}`,
    `preshared_key=${'0'.repeat(64)}`,
    'protocol_version=1',
    'last_handshake_time_sec=0',
    'last_handshake_time_nsec=0',
    'tx_bytes=0',
    'rx_bytes=0',
    'persistent_keepalive_interval=0',
    'errno=0',
    '',
    '',
  ].join('\n');
}

describe('parseUapiPeers', () => {
  it('reads each peer as `wg show dump` would show it, and never the device’s private key', () => {
    const [priv, p1, p2] = [hex(), hex(), hex()];
    const peers = parseUapiPeers(answer(priv, [p1, p2]));
    expect(peers).toEqual([
      {
        publicKey: b64(p1),
        endpoint: '198.18.1.2:51821',
        allowedIps: ['100.64.0.3/32', 'fd00::3/128'],
        keepaliveSeconds: 25,
        latestHandshakeSeconds: 1764720000,
        rxBytes: 5678,
        txBytes: 1234,
      },
      { publicKey: b64(p2), endpoint: null, allowedIps: [], keepaliveSeconds: 0, latestHandshakeSeconds: 0, rxBytes: 0, txBytes: 0 },
    ]);
    const text = JSON.stringify(peers);
    expect(text).not.toContain(priv);
    expect(text).not.toContain(b64(priv));
  });

  it('reads a device without peers', () => {
    expect(parseUapiPeers(`private_key=${hex()}\nlisten_port=51820\nerrno=0\n\n`)).toEqual([]);
  });

  it.each([
    ['an error answer', `private_key=${hex()}\nerrno=74\n\n`, /errno=74/],
    ['no errno line', `public_key=${hex()}\ntx_bytes=1\n`, /no errno/],
    ['a short public key', `public_key=abcd\nerrno=0\n\n`, /32 bytes/],
    ['a count that is not one', `public_key=${hex()}\ntx_bytes=-1\nerrno=0\n\n`, /tx_bytes is not a count/],
    ['a line without =', `public_key=${hex()}\nnonsense\nerrno=0\n\n`, /not key=value/],
    ['a line after errno', `errno=0\npublic_key=${hex()}\n\n`, /after errno/],
  ])('refuses %s', (_, text, why) => {
    expect(() => parseUapiPeers(text)).toThrow(UapiError);
    expect(() => parseUapiPeers(text)).toThrow(why);
  });
});

describe('uapiGet', () => {
  const tmp = tempDir('wg-uapi');
  let server: Server | null = null;
  afterAll(() => tmp.remove());
  afterEach(async () => {
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = null;
  });
  /** A socket that answers `get=1` with `chunks`, written one at a time; the connection stays open, as wireguard-go's does. */
  const serve = async (chunks: (string | Buffer)[], end = false): Promise<{ path: string; asked: string[] }> => {
    const path = join(tmp.dir, `${randomBytes(4).toString('hex')}.sock`);
    const asked: string[] = [];
    server = createServer((s) => {
      s.on('error', () => {});
      s.once('data', async (b) => {
        asked.push(b.toString());
        for (const c of chunks) {
          s.write(c);
          await new Promise((r) => setTimeout(r, 2));
        }
        if (end) s.end();
      });
    });
    await new Promise<void>((r) => server!.listen(path, r));
    return { path, asked };
  };

  it('asks get=1 and returns the answer up to its end, however it is cut', async () => {
    const text = answer(hex(), [hex(), hex()]);
    const { path, asked } = await serve([...text].map((c) => c));
    expect(await uapiGet(path, 5_000)).toBe(text);
    expect(asked).toEqual(['get=1\n\n']);
  });

  it('fails clearly: no socket, closed early, too much, too slow', async () => {
    await expect(uapiGet(join(tmp.dir, 'none.sock'), 1_000)).rejects.toThrow(/ENOENT/);
    const early = await serve(['public_key=ab'], true);
    await expect(uapiGet(early.path, 5_000)).rejects.toThrow(/closed before its answer ended/);
    await new Promise<void>((r) => server!.close(() => r()));
    const big = await serve([Buffer.alloc(17 * 1024 * 1024, 'a')]);
    await expect(uapiGet(big.path, 5_000)).rejects.toThrow(/answer over/);
    await new Promise<void>((r) => server!.close(() => r()));
    const slow = await serve(['public_key=']);
    await expect(uapiGet(slow.path, 200)).rejects.toThrow(/no answer within 200 ms/);
  });
});

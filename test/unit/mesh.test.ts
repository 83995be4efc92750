import { describe, expect, it } from 'vitest';
import { desiredMeshState, linkDevice, linkListenPort, linkPeerEndpoint, meshIndex, meshScope } from '../../src/kernel/mesh.ts';
import { relay } from '../support/given.ts';

const opts = { wgPrefix: 'rc', keepaliveSeconds: 25, mtu: 1420, privateKeyFile: '/s/wg.key', exitTableBase: 100_000, clientPrefix6: null };

describe('mesh layout', () => {
  it('indexes mesh addresses within 100.64.0.0/16 and refuses others', () => {
    expect(meshIndex('100.64.0.1')).toBe(1);
    expect(meshIndex('100.64.1.5')).toBe(261);
    for (const bad of ['100.64.0.0', '100.65.0.1', '198.51.100.1', '100.64.255.255', 'x']) expect(() => meshIndex(bad)).toThrow(/100.64.0.0\/16/);
  });

  it('names link devices so that both ends and every relay on a machine differ, within 15 characters', () => {
    expect(linkDevice('rc', 1, 2)).toBe('rc1m2');
    expect(linkDevice('rc', 2, 1)).toBe('rc2m1');
    // Prefix of relay 1 is not a prefix of relay 12's devices.
    expect(linkDevice('rc', 12, 3).startsWith(meshScope('rc', relay(1)).devicePrefix)).toBe(false);
    expect(linkDevice('abc', 65534, 65533).length).toBeLessThanOrEqual(15);
  });

  it('derives ports so that each end dials the port the other listens on', () => {
    const a = relay(3);
    const b = relay(7);
    expect(linkListenPort(a.endpoint, 7)).toBe(51827);
    expect(linkPeerEndpoint(a, 7)).toBe('198.51.100.3:51827');
    expect(linkListenPort(b.endpoint, 3)).toBe(51823);
    expect(linkPeerEndpoint(b, 3)).toBe('198.51.100.7:51823');
    expect(() => linkListenPort('198.51.100.1:65530', 10)).toThrow(/exceeds 65535/);
  });

  it('a view gives one device per other relay with a default-routing peer, and routes to its mesh address and pool', () => {
    const self = relay(1);
    const s = desiredMeshState(self, [self, relay(2), relay(3)], opts, {});
    expect([...s.devices.keys()]).toEqual(['rc1m2', 'rc1m3']);
    expect(s.devices.get('rc1m2')).toMatchObject({
      publicKey: self.publicKey,
      privateKeyFile: '/s/wg.key',
      listenPort: 51822,
      mtu: 1420,
      addresses: ['100.64.0.1/32'],
      up: true,
    });
    expect(s.devices.get('rc1m2')!.peers).toEqual([
      { publicKey: relay(2).publicKey, endpoint: '198.51.100.2:51821', allowedIps: ['0.0.0.0/0'], keepaliveSeconds: 25 },
    ]);
    expect(s.routes).toContainEqual({ dst: '100.64.0.2/32', dev: 'rc1m2', table: 254, src: '100.64.0.1' });
    expect(s.routes).toContainEqual({ dst: relay(2).clientPool, dev: 'rc1m2', table: 254, src: null });
    // The exit table of relay 2: clients steered to it default-route into this link.
    expect(s.routes).toContainEqual({ dst: '0.0.0.0/0', dev: 'rc1m2', table: 100_002, src: null });
    expect(s.rules).toEqual([]);
  });
});

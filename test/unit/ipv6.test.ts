import { describe, expect, it } from 'vitest';
import { sessionReached } from '../../src/kernel/owners/clients.ts';
import { clientNftBody, clientScope, desiredClientState, type ClientOptions } from '../../src/kernel/clients.ts';
import { egressRules, egressVerdict } from '../../src/kernel/egress.ts';
import { emptyHostState } from '../../src/kernel/host-state.ts';
import { DEFAULT_CLIENT_PREFIX6, embed6, embedCidr6, prefix6Problem } from '../../src/kernel/ipv6.ts';
import { desiredMeshState } from '../../src/kernel/mesh.ts';
import { relay, devs } from '../support/given.ts';
import { clientsInput, session } from '../support/clients-harness.ts';

/** Clients' IPv6 (docs/clients.md, "IPv6"): the address plan, the mesh's and the client scope's share of it. */

const P6 = DEFAULT_CLIENT_PREFIX6;
const mesh = { wgPrefix: 'rc', keepaliveSeconds: 25, mtu: 1420, privateKeyFile: '/s/wg.key', exitTableBase: 100_000 };
const clients: ClientOptions = { ...clientsInput.clients, clientPrefix6: P6 };

describe('the clients’ IPv6 address plan', () => {
  it('embeds a client’s IPv4 address in the low 32 bits of the /96, and a pool likewise', () => {
    expect(embed6(P6, '100.96.4.7')).toBe('fd64::6460:407');
    expect(embed6('2001:db8:64::/96', '100.127.255.254')).toBe('2001:db8:64::647f:fffe');
    expect(embedCidr6(P6, '100.96.4.0/22')).toBe('fd64::6460:400/118');
    expect(embedCidr6(P6, '100.96.0.0/11')).toBe('fd64::6460:0/107');
  });

  it('takes only an IPv6 /96 with no host bits', () => {
    expect(prefix6Problem(P6)).toBeNull();
    expect(prefix6Problem('fd64::/64')).toMatch(/not an IPv6 \/96/);
    expect(prefix6Problem('100.64.0.0/10')).toMatch(/not an IPv6 \/96/);
    expect(prefix6Problem('fd64::1:0:0/96')).toBeNull();
    expect(prefix6Problem('fd64::1/96')).toMatch(/host bits/);
    expect(() => embed6(P6, 'fd64::1')).toThrow(/not an IPv4 address/);
  });
});

describe('mesh links with client IPv6', () => {
  it('carry IPv6 (::/0 allowed), route each peer’s IPv6 pool, and give an exit table ::/0 only toward a peer that exits IPv6', () => {
    const self = relay(1);
    const s = desiredMeshState(self, [self, relay(2, { exitIpv6: true }), relay(3, { exitIpv6: false }), relay(4)], { ...mesh, clientPrefix6: P6 }, {});
    expect(s.devices.get('rc1m2')!.peers[0]!.allowedIps).toEqual(['0.0.0.0/0', '::/0']);
    expect(s.routes).toContainEqual({ dst: embedCidr6(P6, relay(2).clientPool), dev: 'rc1m2', table: 254, src: null });
    expect(s.routes).toContainEqual({ dst: embedCidr6(P6, relay(3).clientPool), dev: 'rc1m3', table: 254, src: null });
    const v6Defaults = s.routes.filter((r) => r.dst === '::/0');
    expect(v6Defaults).toEqual([{ dst: '::/0', dev: 'rc1m2', table: 100_002, src: null }]);
  });

  it('without the prefix, carry IPv4 only (as before IPv6)', () => {
    const self = relay(1);
    const s = desiredMeshState(self, [self, relay(2, { exitIpv6: true })], { ...mesh, clientPrefix6: null }, {});
    expect(s.devices.get('rc1m2')!.peers[0]!.allowedIps).toEqual(['0.0.0.0/0']);
    expect(s.routes.some((r) => r.dst.includes(':'))).toBe(false);
  });
});

describe('the client scope with client IPv6', () => {
  const self = relay(1);
  const relays = { 'relay-1': self, 'relay-2': relay(2, { exitIpv6: true }), 'relay-3': relay(3) };

  it('gives each client its /128 too, steered to the same exit table, and ends both families at the fail-closed rule', () => {
    const s1 = session(1, self, 'relay-2');
    const s2 = session(2, self, 'relay-3');
    const d = desiredClientState(self, relays, [s1, s2], clients);
    const dev = d.devices.get('rc1c')!;
    expect(dev.addresses).toEqual(['100.96.0.1/22', 'fd64::6460:1/118']);
    expect(dev.peers.find((p) => p.publicKey === s1.publicKey)!.allowedIps).toEqual([`${s1.address}/32`, `${embed6(P6, s1.address)}/128`]);
    const [lo, end] = clientScope(self, clients).rulePriorities;
    expect(d.rules).toContainEqual({ priority: lo + 2, from: `${embed6(P6, s1.address)}/128`, iif: 'rc1c', table: 100_002 });
    expect(d.rules).toContainEqual({ priority: lo + 3, from: `${embed6(P6, s2.address)}/128`, iif: 'rc1c', table: 100_003 });
    expect(d.rules).toContainEqual({ priority: end, from: 'fd64::6460:0/118', iif: 'rc1c', table: null });
    expect(d.rules).toContainEqual({ priority: end, from: '100.96.0.0/22', iif: 'rc1c', table: null });
    expect(d.sysctls['net.ipv6.conf.all.forwarding']).toBe('1');
    expect(clientScope(self, clients).sysctls).toContain('net.ipv6.conf.all.forwarding');
    expect(clientScope(self, { ...clients, clientPrefix6: null }).sysctls).not.toContain('net.ipv6.conf.all.forwarding');
  });

  it('filters, refuses and NATs IPv6 like IPv4 in the relay table', () => {
    const body = clientNftBody(self, clients);
    expect(body).toContain(`iifname "rc1m*" ip6 saddr ${P6} fib saddr . iif oif missing counter name "mesh_spoofed" drop`);
    expect(body).toContain(`iifname "rc1c" ip6 daddr ${P6} goto refused_network`);
    expect(body).toContain(`iifname "rc1m*" ip6 saddr != ${P6} counter name "mesh_foreign" drop`);
    expect(body).toContain(`ip6 saddr ${P6} masquerade`);
    expect(body).not.toContain('meta nfproto ipv6');
    // The foreign-source drop comes before the egress policy: a forged source gets no ICMP refusal.
    expect(body.indexOf(`ip6 saddr != ${P6}`)).toBeLessThan(body.indexOf('iifname "rc1m*" ip6 daddr vmap @egress_v6'));
    // A private session's client at its exit passes the same IPv6 policy.
    expect(body).toContain('iifname "rc1cp" ip6 daddr vmap @egress_v6');
    const without = clientNftBody(self, { ...clients, clientPrefix6: null });
    expect(without).toContain('iifname "rc1m*" meta nfproto ipv6 counter name "mesh_foreign" drop');
    expect(without).not.toMatch(/ip6 saddr|fd64/);
  });

  it('refuses the clients’ IPv6 space as the network itself, whatever --client-allow says', () => {
    const rules = egressRules({ denyCidrs: [], allowCidrs: ['fc00::/7'], serviceCidrs: [], clientPrefix6: P6 });
    expect(egressVerdict(rules, 'fd64::6460:407')).toBe('network');
    expect(egressVerdict(rules, 'fd00::1')).toBeNull();
  });

  it('calls a session programmed only when its peer has both addresses and both rules steer to its exit', () => {
    const s = session(1, self, 'relay-2');
    const exits = new Map([
      [100_002, 'relay-2'],
      [100_003, 'relay-3'],
    ]);
    const d = desiredClientState(self, relays, [s], clients);
    const host = { ...emptyHostState(), devices: d.devices, rules: d.rules };
    expect(sessionReached(host, 'rc1c', s, exits, P6)).toEqual({ peer: true, exitId: 'relay-2' });
    const v4only = {
      ...host,
      devices: devs({ rc1c: { ...d.devices.get('rc1c')!, peers: d.devices.get('rc1c')!.peers.map((p) => ({ ...p, allowedIps: [p.allowedIps[0]!] })) } }),
    };
    expect(sessionReached(v4only, 'rc1c', s, exits, P6).peer).toBe(false);
    const split = { ...host, rules: host.rules.map((r) => (r.from?.includes(':') && r.table !== null ? { ...r, table: 100_003 } : r)) };
    expect(sessionReached(split, 'rc1c', s, exits, P6).exitId).toBeNull();
    expect(sessionReached(v4only, 'rc1c', s, exits, null)).toEqual({ peer: true, exitId: 'relay-2' });
  });
});

import { describe, expect, it } from 'vitest';
import { clientNftBody, type NftOptions } from '../../src/kernel/clients.ts';
import { cidrToRange, DEFAULT_EGRESS_DENY, egressMapElements, egressRules, egressVerdict, type EgressOptions } from '../../src/kernel/egress.ts';
import { relay } from '../support/given.ts';

const none = { denyCidrs: [] as string[], allowCidrs: [] as string[], serviceCidrs: [] as string[] } satisfies EgressOptions;
const r1 = relay(1);
const nft = (o: Partial<NftOptions> = {}) =>
  clientNftBody(r1, { wgPrefix: 'rc', clientSupernet: '100.96.0.0/11', clientPrefix6: null, privateSessions: true, echoService: true, ...none, ...o });

/** The elements of one family's verdict map in a rendered table body, as `cidr reason`. */
function mapElements(body: string, family: 'v4' | 'v6'): string[] {
  const m = new RegExp(`map egress_${family} \\{[^}]*elements = \\{ ([^}]*) \\}`).exec(body);
  return m ? m[1]!.split(', ').map((e) => e.replace(' : goto refused_', ' ').replaceAll('_', '-')) : [];
}

/** Every range the issue and docs/security.md name, IPv4 and IPv6. */
const ISSUE_RANGES = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.0.0.0/24',
  '192.168.0.0/16',
  '198.18.0.0/15',
  '224.0.0.0/4',
  '240.0.0.0/4',
  '::1/128',
  'fe80::/10',
  'fc00::/7',
  'ff00::/8',
  '64:ff9b::/96',
];

describe('the nftables body of a relay', () => {
  it('is built once per relay and options, and again for any other option or relay record', () => {
    expect(nft()).toBe(nft());
    const base = nft();
    for (const other of [
      nft({ wgPrefix: 'rd' }),
      nft({ clientSupernet: '100.96.0.0/12' }),
      nft({ denyCidrs: ['203.0.113.0/24'] }),
      nft({ allowCidrs: ['198.18.0.0/24'] }),
      nft({ serviceCidrs: ['198.18.0.2/32'] }),
      nft({ clientPrefix6: 'fd64::/96' }),
      clientNftBody(
        { ...r1, meshAddress: '100.64.0.9' },
        { wgPrefix: 'rc', clientSupernet: '100.96.0.0/11', clientPrefix6: null, privateSessions: true, echoService: true, ...none },
      ),
    ])
      expect(other).not.toBe(base);
  });
});

describe('egress policy, pure', () => {
  it('refuses every default range by default, from its first to its last address, and the internet not', () => {
    const rules = egressRules(none);
    for (const c of ISSUE_RANGES) {
      const { v6, range } = cidrToRange(c)!;
      const ends = [range.lo, range.hi].map((n) => (v6 ? bigintToV6(n) : bigintToV4(n)));
      for (const a of ends) expect(egressVerdict(rules, a), `${a} of ${c}`).not.toBeNull();
    }
    expect(egressVerdict(rules, '169.254.169.254')).toBe('link-local');
    expect(egressVerdict(rules, '100.96.0.7')).toBe('network');
    expect(egressVerdict(rules, '8.8.8.8')).toBeNull();
    expect(egressVerdict(rules, '2606:4700::1111')).toBeNull();
    expect(egressVerdict(rules, '1.0.0.1')).toBeNull();
  });

  it('renders one verdict map per family holding every default range under its reason, a counter and a refusing chain per reason', () => {
    const body = nft();
    const rendered = [...mapElements(body, 'v4'), ...mapElements(body, 'v6')];
    for (const [reason, cidrs] of Object.entries(DEFAULT_EGRESS_DENY)) {
      const r = reason.replaceAll('-', '_');
      for (const c of cidrs) expect(rendered, `${reason} ${c}`).toContain(`${c} ${reason}`);
      expect(body).toContain(`counter refused_${r} {`);
      expect(body).toContain(`chain refused_${r} {\n    counter name "refused_${r}" goto refuse\n  }`);
    }
    expect(rendered).toContain('100.64.0.0/10 network');
    expect(body).toContain('iifname "rc1m*" ip daddr vmap @egress_v4');
    expect(body).toContain('iifname "rc1m*" ip6 daddr vmap @egress_v6');
    // Refusals answer at once: a TCP reset, or ICMP administratively prohibited.
    expect(body).toContain('chain refuse {\n    meta l4proto tcp reject with tcp reset\n    reject with icmpx type admin-prohibited\n  }');
  });

  it('the maps never overlap: a range is refused under the first reason that holds it', () => {
    const rules = egressRules({ denyCidrs: ['203.0.113.0/24', '2001:db8:5::/48'], allowCidrs: [], serviceCidrs: ['198.18.0.2/32'] });
    const m = egressMapElements(rules);
    for (const family of ['v4', 'v6'] as const) {
      const ranges = m[family].map((e) => cidrToRange(e.cidr)!.range);
      for (let i = 1; i < ranges.length; i++) expect(ranges[i]!.lo > ranges[i - 1]!.hi, `${family} ${m[family][i]!.cidr}`).toBe(true);
    }
    // The service address and the operator's range are cut out of the defaults that also hold them.
    expect(m.v4.filter((e) => e.cidr === '198.18.0.2/32')).toEqual([{ cidr: '198.18.0.2/32', reason: 'service' }]);
    expect(m.v4.find((e) => e.cidr === '198.18.0.0/31')).toEqual({ cidr: '198.18.0.0/31', reason: 'benchmark' });
    expect(m.v4.find((e) => e.cidr === '203.0.113.0/24')!.reason).toBe('operator');
    expect(m.v6.find((e) => e.cidr === '2001:db8:5::/48')!.reason).toBe('operator');
    // Every address gets the same reason from the map as from the rules.
    for (const a of ['198.18.0.2', '198.18.0.3', '203.0.113.5', '169.254.169.254', '10.9.9.9', '2001:db8:5::1', '2001:db8::1', 'fe80::1']) {
      const inMap = [...m.v4, ...m.v6].find(
        (e) => egressVerdict([{ reason: e.reason, v4: e.cidr.includes(':') ? [] : [e.cidr], v6: e.cidr.includes(':') ? [e.cidr] : [] }], a) !== null,
      );
      expect(inMap?.reason, a).toBe(egressVerdict(rules, a));
    }
  });

  it('--client-allow takes a range out of the defaults, splitting a larger one, and nothing else', () => {
    const rules = egressRules({ ...none, allowCidrs: ['198.18.0.0/15', '169.254.0.0/24'] });
    expect(egressVerdict(rules, '198.18.0.1')).toBeNull();
    expect(egressVerdict(rules, '198.19.255.255')).toBeNull();
    expect(egressVerdict(rules, '169.254.0.9')).toBeNull();
    expect(egressVerdict(rules, '169.254.169.254')).toBe('link-local');
    expect(rules.find((r) => r.reason === 'link-local')!.v4).toEqual([
      '169.254.1.0/24',
      '169.254.2.0/23',
      '169.254.4.0/22',
      '169.254.8.0/21',
      '169.254.16.0/20',
      '169.254.32.0/19',
      '169.254.64.0/18',
      '169.254.128.0/17',
    ]);
    expect(rules.some((r) => r.reason === 'benchmark')).toBe(false);
  });

  it('the network, the services and --client-deny stay refused whatever --client-allow says', () => {
    const rules = egressRules({
      denyCidrs: ['203.0.113.0/24', '2001:db8:5::/48'],
      allowCidrs: ['0.0.0.0/0', '::/0'],
      serviceCidrs: ['198.18.0.2/32', '2001:db8::2/128'],
    });
    expect(egressVerdict(rules, '100.64.0.1')).toBe('network');
    expect(egressVerdict(rules, '198.18.0.2')).toBe('service');
    expect(egressVerdict(rules, '2001:db8::2')).toBe('service');
    expect(egressVerdict(rules, '203.0.113.9')).toBe('operator');
    expect(egressVerdict(rules, '2001:db8:5::1')).toBe('operator');
    // Everything else was allowed.
    expect(egressVerdict(rules, '169.254.169.254')).toBeNull();
    expect(egressVerdict(rules, '10.1.2.3')).toBeNull();
    expect(rules.map((r) => r.reason)).toEqual(['network', 'service', 'operator']);
  });

  it('merges overlapping and duplicate ranges, so the interval sets never conflict', () => {
    const rules = egressRules({ ...none, denyCidrs: ['203.0.113.0/25', '203.0.113.128/25', '203.0.113.7', '203.0.113.0/24'] });
    expect(rules.find((r) => r.reason === 'operator')!.v4).toEqual(['203.0.113.0/24']);
  });

  it('service addresses learned at registration appear in the table; a table without them differs', () => {
    const without = nft();
    const withNats = nft({ serviceCidrs: ['198.18.0.2/32', '198.18.0.3/32'] });
    expect(mapElements(withNats, 'v4')).toContain('198.18.0.2/31 service');
    expect(mapElements(without, 'v4').some((e) => e.endsWith(' service'))).toBe(false);
    expect(without).not.toContain('refused_service');
  });

  it('mesh links: foreign sources dropped by the route back, forwarded traffic only from client space, the relay itself reachable only by ping and its measurement echo service', () => {
    const body = nft();
    expect(body).toContain('iifname "rc1m*" ip saddr 100.64.0.0/10 fib saddr . iif oif missing counter name "mesh_spoofed" drop');
    expect(body).toContain('iifname "rc1m*" ip saddr != 100.96.0.0/11 counter name "mesh_foreign" drop');
    expect(body).toContain('iifname "rc1m*" ip daddr 100.64.0.1 icmp type echo-request accept');
    // The echo service of Proof-of-Bandwidth measurements (open only while measured, to the measurers).
    expect(body).toContain('iifname "rc1m*" ip daddr 100.64.0.1 tcp dport 51900 accept');
    expect(body.indexOf('tcp dport 51900 accept')).toBeLessThan(body.indexOf('counter name "mesh_input" drop'));
    // A relay from before measurements, replayed, had no such rule.
    expect(nft({ echoService: false })).not.toContain('tcp dport 51900');
    expect(body).toContain('iifname "rc1m*" counter name "mesh_input" drop');
    expect(body).toContain('iifname "rc1c" counter name "client_input" drop');
    // The spoofing check comes before anything that accepts a mesh packet: at prerouting, for the relay and what it forwards.
    expect(body).toMatch(
      /chain mesh_ingress \{\n {4}type filter hook prerouting priority filter; policy accept;\n {4}iifname "rc1m\*" ip saddr 100\.64\.0\.0\/10 fib saddr \. iif oif missing counter name "mesh_spoofed" drop\n {2}\}/,
    );
    // The egress policy applies after the source checks.
    expect(body.indexOf('mesh_foreign" drop')).toBeLessThan(body.indexOf('iifname "rc1m*" ip daddr vmap @egress_v4'));
  });

  it('private sessions: the entry forwards its port map into the mesh and nowhere else, the exit takes them from the mesh only and applies its policy', () => {
    const body = nft();
    // Entry: the port map, looked up for datagrams to this host from outside the mesh and the client devices.
    expect(body).toContain('map port_map {\n    type inet_service : ipv4_addr . inet_service;\n  }');
    expect(body).toContain('iifname != "rc1m*" iifname != "rc1c" iifname != "rc1cp" fib daddr type local dnat ip to udp dport map @port_map');
    expect(body).toContain('ct status dnat ct direction original ip daddr 100.64.0.0/10 oifname != "rc1m*" counter name "private_fail_closed" drop');
    expect(body).toContain('oifname "rc1m*" ct status dnat masquerade');
    // A port of the pool's range that no session maps (the endpoint port is 51820, the pool a /22) is dropped and counted.
    expect(body).toContain('ct state new udp dport 50798-51818 counter name "private_unmapped" drop');
    // Exit: the private port (51820 + own index 1) only from a mesh link to the mesh address.
    expect(body).toContain('iifname "rc1m*" ip daddr 100.64.0.1 udp dport 51821 accept');
    expect(body.indexOf('udp dport 51821 accept')).toBeLessThan(body.indexOf('counter name "mesh_input" drop'));
    expect(body).toContain('udp dport 51821 counter name "private_direct" drop');
    expect(body).toContain('iifname "rc1cp" counter name "client_input" drop');
    expect(body).toContain('iifname "rc1cp" ip daddr 100.64.0.0/10 goto refused_network');
    expect(body).toContain('iifname "rc1cp" ip daddr vmap @egress_v4');
    expect(body).toContain('oifname "rc1cp" counter name "client_unsolicited" drop');
    // A relay on a low port keeps the well-known ports: no private range below 1024 is dropped.
    const low = clientNftBody(relay(1, { endpoint: '198.51.100.1:443' }), {
      wgPrefix: 'rc',
      clientSupernet: '100.96.0.0/11',
      clientPrefix6: null,
      privateSessions: true,
      echoService: true,
      ...none,
    });
    expect(low).not.toContain('counter name "private_unmapped" drop');
    // Without private sessions (a relay from before them, replayed) the table is the one it had.
    const before = nft({ privateSessions: false });
    for (const gone of ['port_map', 'rc1cp', 'private_', 'ct status dnat']) expect(before).not.toContain(gone);
  });
});

function bigintToV4(n: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 0xffn)).join('.');
}
function bigintToV6(n: bigint): string {
  return Array.from({ length: 8 }, (_, i) => ((n >> BigInt(112 - 16 * i)) & 0xffffn).toString(16)).join(':');
}

import { describe, expect, it } from 'vitest';
import { clientNftBody, type NftOptions } from '../../src/kernel/clients.ts';
import { cidrToRange, DEFAULT_EGRESS_DENY, egressRules, egressVerdict, type EgressOptions } from '../../src/kernel/egress.ts';
import { relay } from '../support/given.ts';

const none = { denyCidrs: [] as string[], allowCidrs: [] as string[], serviceCidrs: [] as string[] } satisfies EgressOptions;
const r1 = relay(1);
const nft = (o: Partial<NftOptions> = {}) => clientNftBody(r1, { wgPrefix: 'rc', clientSupernet: '100.96.0.0/11', ...none, ...o });

/** The elements of one set in a rendered table body. */
function setElements(body: string, name: string): string[] {
  const m = new RegExp(`set ${name} \\{[^}]*elements = \\{ ([^}]*) \\}`).exec(body);
  return m ? m[1]!.split(', ') : [];
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

  it('renders each reason as a set of both families with a counter and a refusing rule, holding every default range', () => {
    const body = nft();
    for (const [reason, cidrs] of Object.entries(DEFAULT_EGRESS_DENY)) {
      const r = reason.replaceAll('-', '_');
      const rendered = [...setElements(body, `egress_${r}_v4`), ...setElements(body, `egress_${r}_v6`)];
      for (const c of cidrs) expect(rendered, `${reason} ${c}`).toContain(c);
      expect(body).toContain(`counter refused_${r} {`);
      expect(body).toContain(`counter name "refused_${r}" goto refuse`);
    }
    expect(setElements(body, 'egress_network_v4')).toEqual(['100.64.0.0/10']);
    // Refusals answer at once: a TCP reset, or ICMP administratively prohibited.
    expect(body).toContain('chain refuse {\n    meta l4proto tcp reject with tcp reset\n    reject with icmpx type admin-prohibited\n  }');
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
    const rules = egressRules({ denyCidrs: ['203.0.113.0/24', '2001:db8:5::/48'], allowCidrs: ['0.0.0.0/0', '::/0'], serviceCidrs: ['198.18.0.2/32', '2001:db8::2/128'] });
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
    expect(setElements(withNats, 'egress_service_v4')).toEqual(['198.18.0.2/31']);
    expect(setElements(without, 'egress_service_v4')).toEqual([]);
    expect(without).not.toContain('egress_service_v4');
  });

  it('mesh links: foreign sources dropped by the route back, forwarded traffic only from client space, the relay itself reachable only by ping', () => {
    const body = nft();
    expect(body).toContain('iifname "rc1m*" ip saddr 100.64.0.0/10 fib saddr . iif oif missing counter name "mesh_spoofed" drop');
    expect(body).toContain('iifname "rc1m*" ip saddr != 100.96.0.0/11 counter name "mesh_foreign" drop');
    expect(body).toContain('iifname "rc1m*" ip daddr 100.64.0.1 icmp type echo-request accept');
    expect(body).toContain('iifname "rc1m*" counter name "mesh_input" drop');
    expect(body).toContain('iifname "rc1c" counter name "client_input" drop');
    // The spoofing check comes before anything that accepts a mesh packet: at prerouting, for the relay and what it forwards.
    expect(body).toMatch(/chain mesh_ingress \{\n    type filter hook prerouting priority filter; policy accept;\n    iifname "rc1m\*" ip saddr 100\.64\.0\.0\/10 fib saddr \. iif oif missing counter name "mesh_spoofed" drop\n  \}/);
    // The egress policy applies after the source checks.
    expect(body.indexOf('mesh_foreign" drop')).toBeLessThan(body.indexOf('@egress_network_v4'));
  });
});

function bigintToV4(n: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 0xffn)).join('.');
}
function bigintToV6(n: bigint): string {
  return Array.from({ length: 8 }, (_, i) => ((n >> BigInt(112 - 16 * i)) & 0xffffn).toString(16)).join(':');
}

import { describe, expect, it } from 'vitest';
import type { KernelOp } from '../../src/kernel/host-state.ts';
import { commandOf, ipBatch, ipBatchFailure, ipBatchKey, nftTableScript, READ, STEP } from '../../src/kernel/linux-commands.ts';
import {
  countersOf,
  nftTableDigest,
  observation,
  parseDevice,
  parseDump,
  splitDumpAll,
  presentTables,
  routesOf,
  rulesOf,
  sysctlValues,
} from '../../src/kernel/linux-parse.ts';

/**
 * The Linux backend's edge, without root: the exact command of every operation (golden texts), and
 * the host state parsed from output as iproute2, wg and nft print it (shapes taken from this machine's
 * iproute2 6.1, wireguard-tools 1.0.20210914 and nft 1.0.6).
 */

const KEY = 'vVR3cffpoH83bjIORRKVMMhmAFHtotGwor9hgdt57CU=';
const PEER = 'XMa4Qhs3uTMCD7HQ+SACjMThG15L1c9ORdlzsC9s/TM=';
const text = (argv: readonly string[]) => argv.join(' ');

describe('the command of each operation', () => {
  it.each<[KernelOp, string]>([
    [{ op: 'link.mtu', dev: 'rc1m2', mtu: 1420 }, 'ip link set dev rc1m2 mtu 1420'],
    [{ op: 'link.up', dev: 'rc1m2' }, 'ip link set dev rc1m2 up'],
    [{ op: 'link.down', dev: 'rc1m2' }, 'ip link set dev rc1m2 down'],
    [{ op: 'wg.device', dev: 'rc1m2', privateKeyFile: '/s/wg.key', publicKey: KEY, listenPort: 51822 }, 'wg set rc1m2 listen-port 51822 private-key /s/wg.key'],
    [
      { op: 'wg.peer.set', dev: 'rc1m2', peer: { publicKey: PEER, endpoint: '198.51.100.2:51821', allowedIps: ['0.0.0.0/0', '::/0'], keepaliveSeconds: 25 } },
      `wg set rc1m2 peer ${PEER} endpoint 198.51.100.2:51821 allowed-ips 0.0.0.0/0,::/0 persistent-keepalive off peer ${PEER} persistent-keepalive 25`,
    ],
    [
      { op: 'wg.peer.set', dev: 'rc1c', peer: { publicKey: PEER, endpoint: null, allowedIps: ['100.96.0.2/32'], keepaliveSeconds: 0 } },
      `wg set rc1c peer ${PEER} allowed-ips 100.96.0.2/32 persistent-keepalive off`,
    ],
    [
      { op: 'wg.peer.set', dev: 'rc1c', peer: { publicKey: PEER, endpoint: null, allowedIps: [], keepaliveSeconds: 0 } },
      `wg set rc1c peer ${PEER} allowed-ips  persistent-keepalive off`,
    ],
    [{ op: 'wg.peer.del', dev: 'rc1c', publicKey: PEER }, `wg set rc1c peer ${PEER} remove`],
    [{ op: 'addr.add', dev: 'rc1c', cidr: '100.96.0.1/22' }, 'ip -4 addr add 100.96.0.1/22 dev rc1c'],
    [{ op: 'addr.del', dev: 'rc1c', cidr: 'fd64::6460:1/118' }, 'ip -6 addr del fd64::6460:1/118 dev rc1c'],
    [
      { op: 'route.add', route: { dst: '100.64.0.2/32', dev: 'rc1m2', table: 254, src: '100.64.0.1' } },
      'ip -4 route add 100.64.0.2/32 dev rc1m2 table 254 src 100.64.0.1',
    ],
    [{ op: 'route.replace', route: { dst: '::/0', dev: 'rc1m2', table: 100_002, src: null } }, 'ip -6 route replace ::/0 dev rc1m2 table 100002'],
    [{ op: 'route.del', route: { dst: '0.0.0.0/0', dev: 'rc1m2', table: 100_002, src: null } }, 'ip -4 route del 0.0.0.0/0 dev rc1m2 table 100002'],
    [
      { op: 'rule.add', rule: { priority: 20_002, from: '100.96.0.2/32', iif: 'rc1c', table: 100_002 } },
      'ip -4 rule add priority 20002 from 100.96.0.2/32 iif rc1c lookup 100002',
    ],
    [
      { op: 'rule.add', rule: { priority: 21_024, from: 'fd64::6460:0/118', iif: 'rc1c', table: null } },
      'ip -6 rule add priority 21024 from fd64::6460:0/118 iif rc1c unreachable',
    ],
    [{ op: 'rule.del', rule: { priority: 100, from: null, iif: null, table: 7 } }, 'ip -4 rule del priority 100 lookup 7'],
    [{ op: 'sysctl.set', key: 'net.ipv4.ip_forward', value: '1' }, 'sysctl -q -w net.ipv4.ip_forward=1'],
    [{ op: 'nft.table.del', name: 'rc1' }, 'nft delete table inet rc1'],
  ])('%j', (op, expected) => {
    expect(text(commandOf(op as Parameters<typeof commandOf>[0]))).toBe(expected);
  });

  it('replaces an nft table in one transaction that works whether or not it exists, its digest in its comment', () => {
    expect(nftTableScript({ op: 'nft.table.set', name: 'rc1', digest: 'abc', body: '  counter c {\n  }' })).toBe(
      'table inet rc1 {}\ndelete table inet rc1\ntable inet rc1 {\n comment "relay-core:abc";\n  counter c {\n  }\n}\n',
    );
    expect(text(STEP.nftScript)).toBe('nft -f -');
  });

  it('builds devices and reads the host with these commands', () => {
    expect(text(STEP.kernelDevice('rc1m2'))).toBe('ip link add dev rc1m2 type wireguard');
    expect(text(STEP.wireguardGo('rc1m2'))).toBe('wireguard-go rc1m2');
    expect(text(STEP.mtu('rc1m2', 1420))).toBe('ip link set dev rc1m2 mtu 1420');
    expect(text(STEP.deleteLink('rc1m2'))).toBe('ip link del dev rc1m2');
    expect(
      [
        READ.addresses,
        READ.links,
        READ.wgDump('rc1c'),
        READ.wgDumpAll,
        READ.routes('-6'),
        READ.rules('-4'),
        READ.sysctls(['net.ipv4.ip_forward', 'net.ipv4.conf.all.rp_filter']),
        READ.nftTables,
        READ.nftTable('rc1'),
        READ.nftCounters('rc1'),
        READ.ipv6Disabled,
        READ.ipv6DefaultRoutes,
      ].map(text),
    ).toEqual([
      'ip -j addr show',
      'ip -j link show',
      'wg show rc1c dump',
      'wg show all dump',
      'ip -6 -N -d -j route show table all',
      'ip -4 -N -j rule show',
      'sysctl net.ipv4.ip_forward net.ipv4.conf.all.rp_filter',
      'nft -j list tables',
      'nft list table inet rc1',
      'nft -j list counters table inet rc1',
      'sysctl -n net.ipv6.conf.all.disable_ipv6',
      'ip -6 -j route show default',
    ]);
  });

  it('puts addresses, routes, rules and link settings of one family in one `ip -batch`, and reads where it stopped', () => {
    const route = { dst: '100.64.0.2/32', dev: 'rc1m2', table: 254, src: '100.64.0.1' };
    const ops = [
      { op: 'addr.add', dev: 'rc1m2', cidr: '100.64.0.1/32' },
      { op: 'route.add', route },
    ] as const;
    expect(ipBatchKey(ops[0])).toBe('-4');
    expect(ipBatchKey({ op: 'addr.add', dev: 'rc1c', cidr: 'fd64::1/128' })).toBe('-6');
    expect(ipBatchKey({ op: 'link.up', dev: 'rc1m2' })).toBe('link');
    expect(ipBatchKey({ op: 'wg.peer.del', dev: 'rc1m2', publicKey: KEY })).toBeNull();
    expect(ipBatch('-4', ops)).toEqual({
      args: ['ip', '-4', '-batch', '-'],
      input: 'addr add 100.64.0.1/32 dev rc1m2\nroute add 100.64.0.2/32 dev rc1m2 table 254 src 100.64.0.1\n',
    });
    expect(ipBatch('link', [{ op: 'link.up', dev: 'rc1m2' }])).toEqual({ args: ['ip', '-batch', '-'], input: 'link set dev rc1m2 up\n' });
    expect(ipBatchFailure('Error: ipv4: Address already assigned.\nCommand failed -:3\n')).toEqual({
      line: 3,
      message: 'Error: ipv4: Address already assigned.',
    });
    expect(ipBatchFailure('timed out after 10000 ms')).toBeNull();
  });

  it('refuses an operation it does not know', () => {
    expect(() => commandOf({ op: 'link.teleport', dev: 'x' } as never)).toThrow(/unknown operation "link.teleport"/);
  });
});

describe('parsing what the commands print', () => {
  const dump = [
    `(private key not shown)\t${KEY}\t51822\toff`,
    `${PEER}\t(none)\t198.51.100.2:51821\t0.0.0.0/0,::/0\t1796023917\t1024\t2048\t25`,
    `${KEY}\t(none)\t(none)\t(none)\t0\t0\t0\toff`,
    '',
  ].join('\n');

  it('cuts `wg show all dump` into the dumps of the devices wanted, each as `wg show DEV dump` prints it', () => {
    const prefixed = (dev: string) =>
      dump
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => `${dev}\t${l}\n`)
        .join('');
    const all = prefixed('rc1m2') + prefixed('other9') + prefixed('rc1m3');
    const cut = splitDumpAll(all, new Set(['rc1m2', 'rc1m3', 'rc1m4']));
    expect([...cut.keys()]).toEqual(['rc1m2', 'rc1m3']);
    expect(cut.get('rc1m2')).toBe(dump);
    expect(cut.get('rc1m3')).toBe(dump);
    expect(splitDumpAll('', new Set(['rc1m2'])).size).toBe(0);
  });

  it('reads a WireGuard device from `ip -j addr show` and `wg show dump`, without link-local addresses', () => {
    const link = {
      ifname: 'rc1m2',
      mtu: 1420,
      flags: ['POINTOPOINT', 'NOARP', 'UP', 'LOWER_UP'],
      addr_info: [
        { family: 'inet', local: '100.64.0.1', prefixlen: 32, scope: 'global' },
        { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' },
      ],
    };
    expect(parseDevice(link, dump)).toEqual({
      name: 'rc1m2',
      publicKey: KEY,
      listenPort: 51822,
      mtu: 1420,
      addresses: ['100.64.0.1/32'],
      up: true,
      peers: [
        { publicKey: PEER, endpoint: '198.51.100.2:51821', allowedIps: ['0.0.0.0/0', '::/0'], keepaliveSeconds: 25 },
        { publicKey: KEY, endpoint: null, allowedIps: [], keepaliveSeconds: 0 },
      ],
    });
    const peers = parseDump(dump).peers;
    expect(observation('rc1m2', peers[0]!)).toEqual({
      dev: 'rc1m2',
      publicKey: PEER,
      endpoint: '198.51.100.2:51821',
      latestHandshakeMs: 1796023917000,
      rxBytes: 1024,
      txBytes: 2048,
    });
    expect(observation('rc1m2', peers[1]!).latestHandshakeMs).toBeNull();
  });

  it("keeps the routes an owner manages: unicast, not the kernel's, on its devices", () => {
    const listed = [
      { type: '1', dst: 'default', dev: 'rc1m2', table: '100002', protocol: '3' },
      { type: '1', dst: '100.64.0.2', dev: 'rc1m2', table: '254', protocol: '3', prefsrc: '100.64.0.1' },
      { type: '1', dst: '100.96.0.0/22', dev: 'rc1c', table: '254', protocol: '2' },
      { type: '2', dst: '100.64.0.1', dev: 'rc1m2', table: '255', protocol: '2' },
      { type: '1', dst: '198.18.0.0/16', dev: 'pub0', table: '254', protocol: '2' },
    ];
    expect(routesOf(listed, '-4', (d) => d?.startsWith('rc1m') === true)).toEqual([
      { dst: '0.0.0.0/0', dev: 'rc1m2', table: 100_002, src: null },
      { dst: '100.64.0.2/32', dev: 'rc1m2', table: 254, src: '100.64.0.1' },
    ]);
    expect(routesOf([{ type: '1', dst: 'default', dev: 'rc1m2', table: '100002', protocol: '3' }], '-6', () => true)).toEqual([
      { dst: '::/0', dev: 'rc1m2', table: 100_002, src: null },
    ]);
  });

  it('keeps the rules in the owned range it can represent, sets the strange ones apart, and reads IPv6 rules without `from` as not ours', () => {
    const v4 = [
      { priority: 0, src: 'all', table: 'local' },
      { priority: 20_002, src: '100.96.0.2', iif: 'rc1c', table: '100002' },
      { priority: 21_024, src: '100.96.0.0', srclen: 22, iif: 'rc1c', action: '7' },
      { priority: 20_500, src: 'all', fwmark: '0x1', table: '9' },
      { priority: 32_766, src: 'all', table: 'main' },
    ];
    const v6 = [
      { priority: 20_002, src: 'fd64::6460:2', iif: 'rc1c', table: '100002' },
      { priority: 20_003, src: 'all', table: '5' },
    ];
    const { rules, strange } = rulesOf(v4 as never, v6 as never, [20_000, 21_024]);
    expect(rules).toEqual([
      { priority: 20_002, from: '100.96.0.2/32', iif: 'rc1c', table: 100_002 },
      { priority: 21_024, from: '100.96.0.0/22', iif: 'rc1c', table: null },
      { priority: 20_002, from: 'fd64::6460:2/128', iif: 'rc1c', table: 100_002 },
    ]);
    expect(strange.map((r) => r.priority)).toEqual([20_500]);
  });

  it('finds owned nft tables, their digest and their counters', () => {
    const listed = {
      nftables: [
        { metainfo: {} },
        { table: { family: 'inet', name: 'rc1' } },
        { table: { family: 'ip', name: 'rc1' } },
        { table: { family: 'inet', name: 'other' } },
      ],
    } as never;
    expect(presentTables(listed, ['rc1', 'rc2'])).toEqual(['rc1']);
    expect(nftTableDigest('rc1', 'table inet rc1 {\n\tcomment "relay-core:0123abcd"\n\tcounter c {\n\t}\n}\n')).toBe('0123abcd');
    expect(nftTableDigest('rc1', 'table inet rc1 {\n\tcounter c {\n\t}\n}\n')).toBe('');
    const counters = {
      nftables: [
        { metainfo: {} },
        { counter: { family: 'inet', table: 'rc1', name: 'mesh_spoofed', packets: 3, bytes: 252 } },
        { counter: { family: 'inet', table: 'x', name: 'n', packets: 1, bytes: 1 } },
      ],
    } as never;
    expect(countersOf(counters, 'rc1')).toEqual({ mesh_spoofed: { packets: 3, bytes: 252 } });
    expect(sysctlValues('net.ipv4.ip_forward = 1\nnet.ipv4.conf.all.rp_filter = 2\n', ['net.ipv4.conf.all.rp_filter', 'net.ipv4.ip_forward'])).toEqual({
      'net.ipv4.conf.all.rp_filter': '2',
      'net.ipv4.ip_forward': '1',
    });
    expect(() => sysctlValues('net.ipv4.ip_forward = 1\n', ['net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding'])).toThrow(/no value for net.ipv6/);
  });
});

import { readFileSync } from 'node:fs';
import type { CommandResult, CommandRunner } from '../../src/kernel/command-runner.ts';
import { wgPublicKey } from '../../src/lib/wg-keys.ts';

/**
 * A fake Linux host for the Linux backend: it interprets the commands the backend runs
 * (src/kernel/linux-commands.ts) against an in-memory model and prints what iproute2, wg, sysctl and
 * nft print, in the shapes src/kernel/linux-parse.ts reads. Only the commands relay-core uses; anything
 * else fails like an unknown command. So the backend's own logic (reading, parsing, the wireguard-go
 * fallback, errors) runs in unit tests without root.
 */

interface Link {
  mtu: number;
  up: boolean;
  addrs: string[];
  wg: { publicKey: string; listenPort: number; peers: { publicKey: string; endpoint: string | null; allowedIps: string[]; keepalive: number }[] };
}
interface Route {
  fam: 4 | 6;
  dst: string;
  dev: string;
  table: number;
  src: string | null;
}
interface Rule {
  fam: 4 | 6;
  priority: number;
  from: string | null;
  iif: string | null;
  table: number | null;
}

export class FakeLinux implements CommandRunner {
  readonly links = new Map<string, Link>();
  routes: Route[] = [];
  rules: Rule[] = [];
  readonly sysctls = new Map<string, string>([
    ['net.ipv4.ip_forward', '0'],
    ['net.ipv4.conf.all.rp_filter', '1'],
    ['net.ipv6.conf.all.forwarding', '0'],
    ['net.ipv6.conf.all.disable_ipv6', '0'],
  ]);
  readonly nft = new Map<string, { digest: string; body: string }>();
  /** The elements of each table's port map: port -> `address:port`. */
  readonly portMaps = new Map<string, Map<number, string>>();
  /** Every command run, as text. */
  readonly log: string[] = [];
  /** Keepalives WireGuard would send at once: a peer's persistent keepalive turned on from off. */
  readonly keepalivesSent: { dev: string; peer: string }[] = [];
  /**
   * wireguard-go devices whose daemon has not taken them over yet. Like the real one, the daemon sets
   * the device's MTU to 1420 when it does: here right after the next command, unless a question to the
   * device's WireGuard (which only the daemon answers) made it take over first.
   */
  private readonly pendingDaemons = new Set<string>();
  /** Without the WireGuard module, `ip link add ... type wireguard` fails as Linux says; wireguard-go works. */
  private readonly opts: { kernelWireGuard?: boolean; fail?: (argv: readonly string[]) => string | null };
  /** `fail`: an error message for a command that must fail (injected failures), or null. */
  constructor(opts: { kernelWireGuard?: boolean; fail?: (argv: readonly string[]) => string | null } = {}) {
    this.opts = opts;
  }

  async run(argv: readonly string[], opts: { input?: string }): Promise<CommandResult> {
    this.log.push(argv.join(' '));
    const injected = this.opts.fail?.(argv) ?? null;
    if (injected !== null) return err(injected);
    try {
      return ok(this.interpret([...argv], opts.input));
    } catch (e) {
      return err((e as Error).message);
    } finally {
      if (argv[0] !== 'wireguard-go') for (const dev of this.pendingDaemons) this.daemonTakesOver(dev);
    }
  }

  private daemonTakesOver(dev: string): void {
    if (!this.pendingDaemons.delete(dev)) return;
    const l = this.links.get(dev);
    if (l) l.mtu = 1420;
  }

  private interpret(a: string[], input: string | undefined): string {
    const [cmd, ...rest] = a;
    if (cmd === 'ip' && rest.includes('-batch')) return this.ipBatch(rest, input ?? '');
    if (cmd === 'ip') return this.ip(rest);
    if (cmd === 'wg') return this.wg(rest);
    if (cmd === 'wireguard-go') {
      this.addLink(rest[0]!);
      this.pendingDaemons.add(rest[0]!);
      return '';
    }
    if (cmd === 'sysctl') return this.sysctl(rest);
    if (cmd === 'nft') return this.nftCmd(rest, input);
    throw new Error(`${cmd}: command not found`);
  }

  /** `ip [-4|-6] -batch -`: each line as one `ip` command, stopping at the first that fails, as ip says it. */
  private ipBatch(a: string[], input: string): string {
    const fam = a.filter((x) => x === '-4' || x === '-6');
    for (const [n, line] of input
      .split('\n')
      .filter((l) => l !== '')
      .entries()) {
      const argv = ['ip', ...fam, ...line.split(' ')];
      try {
        const injected = this.opts.fail?.(argv) ?? null;
        if (injected !== null) throw new Error(injected);
        this.ip(argv.slice(1));
      } catch (e) {
        throw new Error(`${(e as Error).message}\nCommand failed -:${n + 1}`);
      }
    }
    return '';
  }

  private link(name: string): Link {
    const l = this.links.get(name);
    if (!l) throw new Error(`Cannot find device "${name}"`);
    return l;
  }

  private addLink(name: string): void {
    if (this.links.has(name)) throw new Error('RTNETLINK answers: File exists');
    this.links.set(name, { mtu: 1420, up: false, addrs: [], wg: { publicKey: '', listenPort: 0, peers: [] } });
  }

  private ip(a: string[]): string {
    const fam: 4 | 6 | null = a[0] === '-4' ? 4 : a[0] === '-6' ? 6 : null;
    const args = a.filter((x) => !['-4', '-6', '-N', '-d', '-j'].includes(x));
    const [obj, verb, ...r] = args;
    const kv = (k: string) => {
      const i = r.indexOf(k);
      return i < 0 ? null : r[i + 1]!;
    };
    if (obj === 'link') {
      if (verb === 'show') return JSON.stringify([...this.links.keys()].map((ifname) => ({ ifname })));
      if (verb === 'add') {
        if (!this.opts.kernelWireGuard) throw new Error('Error: Unknown device type.');
        this.addLink(kv('dev')!);
        return '';
      }
      if (verb === 'del') {
        const dev = kv('dev')!;
        this.link(dev);
        this.links.delete(dev);
        this.routes = this.routes.filter((x) => x.dev !== dev);
        return '';
      }
      if (verb === 'set') {
        const l = this.link(kv('dev')!);
        if (r.includes('mtu')) l.mtu = Number(kv('mtu'));
        if (r.includes('up')) l.up = true;
        if (r.includes('down')) l.up = false;
        return '';
      }
    }
    if (obj === 'addr' || obj === 'address') {
      if (verb === 'show')
        return JSON.stringify(
          [...this.links].map(([ifname, l]) => ({
            ifname,
            mtu: l.mtu,
            flags: ['POINTOPOINT', 'NOARP', ...(l.up ? ['UP', 'LOWER_UP'] : [])],
            addr_info: l.addrs.map((c) => ({
              family: c.includes(':') ? 'inet6' : 'inet',
              local: c.split('/')[0],
              prefixlen: Number(c.split('/')[1]),
              scope: 'global',
            })),
          })),
        );
      const l = this.link(kv('dev')!);
      const cidr = r[0]!;
      if (verb === 'add') {
        if (l.addrs.includes(cidr)) throw new Error('RTNETLINK answers: File exists');
        l.addrs.push(cidr);
      } else if (verb === 'del') {
        if (!l.addrs.includes(cidr)) throw new Error('RTNETLINK answers: Cannot assign requested address');
        l.addrs = l.addrs.filter((x) => x !== cidr);
      }
      return '';
    }
    if (obj === 'route') {
      if (verb === 'show') {
        const want = r.includes('default')
          ? this.routes.filter((x) => x.fam === fam && x.table === 254 && /\/0$/.test(x.dst))
          : this.routes.filter((x) => x.fam === (fam ?? 4));
        return JSON.stringify(
          want.map((x) => ({
            type: '1',
            dst: /\/0$/.test(x.dst) ? 'default' : x.dst.replace(fam === 6 ? /\/128$/ : /\/32$/, ''),
            dev: x.dev,
            table: String(x.table),
            protocol: '3',
            ...(x.src ? { prefsrc: x.src } : {}),
          })),
        );
      }
      const route: Route = { fam: fam ?? 4, dst: r[0]!, dev: kv('dev')!, table: Number(kv('table') ?? 254), src: kv('src') };
      this.link(route.dev);
      const same = (x: Route) => x.fam === route.fam && x.dst === route.dst && x.table === route.table;
      if (verb === 'add' && this.routes.some(same)) throw new Error('RTNETLINK answers: File exists');
      if (verb === 'del' && !this.routes.some(same)) throw new Error('RTNETLINK answers: No such process');
      this.routes = this.routes.filter((x) => !same(x));
      if (verb !== 'del') this.routes.push(route);
      return '';
    }
    if (obj === 'rule') {
      if (verb === 'show')
        return JSON.stringify(
          this.rules
            .filter((x) => x.fam === (fam ?? 4))
            .sort((x, y) => x.priority - y.priority)
            .map((x) => {
              const [src, len] = x.from ? x.from.split('/') : ['all', undefined];
              const host = len === (x.fam === 6 ? '128' : '32');
              return {
                priority: x.priority,
                src,
                ...(len && !host ? { srclen: Number(len) } : {}),
                ...(x.iif ? { iif: x.iif } : {}),
                ...(x.table === null ? { action: '7' } : { table: String(x.table) }),
              };
            }),
        );
      const rule: Rule = {
        fam: fam ?? 4,
        priority: Number(kv('priority')),
        from: kv('from'),
        iif: kv('iif'),
        table: r.includes('unreachable') ? null : Number(kv('lookup')),
      };
      const same = (x: Rule) => x.fam === rule.fam && x.priority === rule.priority && x.from === rule.from && x.iif === rule.iif && x.table === rule.table;
      if (verb === 'add') this.rules.push(rule);
      else if (verb === 'del') {
        const i = this.rules.findIndex(same);
        if (i < 0) throw new Error('RTNETLINK answers: No such file or directory');
        this.rules.splice(i, 1);
      }
      return '';
    }
    throw new Error(`ip: unsupported ${args.join(' ')}`);
  }

  private wg(a: string[]): string {
    const [verb, dev, ...r] = a;
    if (verb === 'show' && dev === 'all' && r[0] === 'dump') {
      // Every device that is a WireGuard one (has a listen port), each line led by its name.
      const wgLinks = [...this.links.keys()].filter((n) => this.links.get(n)!.wg.listenPort > 0);
      return wgLinks
        .flatMap((n) =>
          this.wg(['show', n, 'dump'])
            .split('\n')
            .filter((x) => x !== '')
            .map((x) => `${n}\t${x}\n`),
        )
        .join('');
    }
    const l = this.link(dev!);
    if (verb === 'show' && r[0] === 'dump') {
      const lines = [`(private key)\t${l.wg.publicKey || '(none)'}\t${l.wg.listenPort}\toff`];
      for (const p of l.wg.peers)
        lines.push(
          [p.publicKey, '(none)', p.endpoint ?? '(none)', p.allowedIps.join(',') || '(none)', '0', '0', '0', p.keepalive ? String(p.keepalive) : 'off'].join(
            '\t',
          ),
        );
      return lines.join('\n') + '\n';
    }
    if (verb === 'show' && r[0] === 'listen-port') {
      this.daemonTakesOver(dev!);
      return `${l.wg.listenPort}\n`;
    }
    if (verb !== 'set') throw new Error(`wg: unsupported ${a.join(' ')}`);
    if (r[0] === 'listen-port') {
      l.wg.listenPort = Number(r[1]);
      l.wg.publicKey = wgPublicKey(readFileSync(r[3]!, 'utf8').trim());
      return '';
    }
    if (r[0] === 'peer') {
      // One `wg set` may name several peers (or one peer twice); each section changes only what it names.
      const starts = r.flatMap((w, i) => (w === 'peer' ? [i] : []));
      for (const [n, start] of starts.entries()) this.setPeer(dev!, l, r.slice(start + 1, starts[n + 1] ?? r.length));
      return '';
    }
    throw new Error(`wg: unsupported ${a.join(' ')}`);
  }

  /** One `peer KEY ...` section of `wg set`: a keepalive turned on from off sends one at once (WireGuard does), counted in `keepalivesSent`. */
  private setPeer(dev: string, l: Link, r: string[]): void {
    const key = r[0]!;
    const others = l.wg.peers.filter((p) => p.publicKey !== key);
    if (r[1] === 'remove') {
      l.wg.peers = others;
      return;
    }
    const at = (k: string) => (r.indexOf(k) < 0 ? null : r[r.indexOf(k) + 1]!);
    const old = l.wg.peers.find((p) => p.publicKey === key);
    const ka = at('persistent-keepalive');
    const keepalive = ka === null ? (old?.keepalive ?? 0) : ka === 'off' ? 0 : Number(ka);
    const allowed = at('allowed-ips');
    if (keepalive > 0 && (old?.keepalive ?? 0) === 0) this.keepalivesSent.push({ dev, peer: key });
    l.wg.peers = [
      ...others,
      {
        publicKey: key,
        endpoint: at('endpoint') ?? old?.endpoint ?? null,
        allowedIps: allowed === null ? (old?.allowedIps ?? []) : allowed.split(',').filter(Boolean),
        keepalive,
      },
    ];
  }

  private sysctl(a: string[]): string {
    if (a[0] === '-n') {
      const v = this.sysctls.get(a[1]!);
      if (v === undefined) throw new Error(`sysctl: cannot stat /proc/sys/${a[1]!.replaceAll('.', '/')}: No such file or directory`);
      return `${v}\n`;
    }
    if (a[0] !== '-q') {
      return a
        .map((k) => {
          const v = this.sysctls.get(k);
          if (v === undefined) throw new Error(`sysctl: cannot stat /proc/sys/${k.replaceAll('.', '/')}: No such file or directory`);
          return `${k} = ${v}\n`;
        })
        .join('');
    }
    const [k, v] = a[a.length - 1]!.split('=');
    this.sysctls.set(k!, v!);
    return '';
  }

  private nftCmd(a: string[], input: string | undefined): string {
    const j = a[0] === '-j';
    const r = j ? a.slice(1) : a;
    if (r[0] === '-f' && r[1] === '-') {
      // Our scripts: create if absent, delete, create with comment and body; or a port map's element replaced.
      const m = /table inet (\S+) \{\n comment "relay-core:([^"]*)";\n([\s\S]*)\n\}\n$/.exec(input ?? '');
      const e = /^delete element inet (\S+) port_map \{ (\d+) \}\nadd element inet \1 port_map \{ \2 : ([\d.]+) \. (\d+) \}\n$/.exec(input ?? '');
      if (m) {
        this.nft.set(m[1]!, { digest: m[2]!, body: m[3]! });
        this.portMaps.delete(m[1]!);
      } else if (e) {
        const map = this.portMapOf(e[1]!);
        if (!map.has(Number(e[2]))) throw new Error('Error: Could not process rule: No such file or directory');
        map.set(Number(e[2]), `${e[3]}:${e[4]}`);
      } else throw new Error('Error: syntax error (the fake reads only relay-core table and port map scripts)');
      return '';
    }
    if (r[0] === 'delete' && r[1] === 'table') {
      if (!this.nft.delete(r[3]!)) throw new Error(`Error: No such file or directory; did you mean table ‘${r[3]}’ in family inet?`);
      this.portMaps.delete(r[3]!);
      return '';
    }
    if ((r[0] === 'add' || r[0] === 'delete') && r[1] === 'element' && r[4] === 'port_map') {
      const map = this.portMapOf(r[3]!);
      const el = r[0] === 'add' ? /^\{ (\d+) : ([\d.]+) \. (\d+) \}$/.exec(r[5] ?? '') : /^\{ (\d+) \}$/.exec(r[5] ?? '');
      if (!el) throw new Error('Error: syntax error');
      const port = Number(el[1]);
      if (r[0] === 'add') {
        if (map.has(port)) throw new Error('Error: Could not process rule: File exists');
        map.set(port, `${el[2]}:${el[3]}`);
      } else if (!map.delete(port)) throw new Error('Error: Could not process rule: No such file or directory');
      return '';
    }
    if (r[0] === 'list' && r[1] === 'map' && r[4] === 'port_map') {
      const map = this.portMapOf(r[3]!);
      const elem = [...map].map(([port, to]) => [port, { concat: [to.split(':')[0], Number(to.split(':')[1])] }]);
      return JSON.stringify({
        nftables: [{ metainfo: {} }, { map: { family: 'inet', name: 'port_map', table: r[3], type: 'inet_service', ...(elem.length ? { elem } : {}) } }],
      });
    }
    if (r[0] === 'list' && r[1] === 'tables')
      return JSON.stringify({ nftables: [{ metainfo: {} }, ...[...this.nft.keys()].map((name) => ({ table: { family: 'inet', name } }))] });
    if (r[0] === 'list' && r[1] === 'table') {
      const t = this.nft.get(r[3]!);
      if (!t) throw new Error('Error: No such file or directory');
      return `table inet ${r[3]} {\n\tcomment "relay-core:${t.digest}"\n${t.body}\n}\n`;
    }
    if (r[0] === 'list' && r[1] === 'counters') {
      const t = this.nft.get(r[4]!);
      if (!t) throw new Error('Error: No such file or directory');
      const names = [...t.body.matchAll(/^\s*counter ([a-z0-9_]+) \{/gm)].map((m) => m[1]!);
      return JSON.stringify({
        nftables: [{ metainfo: {} }, ...names.map((name) => ({ counter: { family: 'inet', table: r[4], name, packets: 0, bytes: 0 } }))],
      });
    }
    throw new Error(`nft: unsupported ${a.join(' ')}`);
  }

  /** The port map of a table whose body declares it, as nft refuses the others. */
  private portMapOf(table: string): Map<number, string> {
    const t = this.nft.get(table);
    if (!t?.body.includes('map port_map {')) throw new Error('Error: No such file or directory');
    const map = this.portMaps.get(table) ?? new Map<number, string>();
    this.portMaps.set(table, map);
    return map;
  }
}

const ok = (stdout: string): CommandResult => ({ stdout, stderr: '', exitCode: 0, timedOut: false });
const err = (stderr: string): CommandResult => ({ stdout: '', stderr, exitCode: 2, timedOut: false });

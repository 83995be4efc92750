/**
 * `relay-core doctor`'s verdicts (docs/operations.md, "doctor"): each check turns what a probe found on
 * the host into one line, pass, fail or skip (a check that needs a setting not given). Pure: the probes
 * are in src/cli/commands/doctor.ts.
 */

export type CheckStatus = 'pass' | 'fail' | 'skip';

export interface Check {
  name: string;
  status: CheckStatus;
  detail: string;
}

const pass = (name: string, detail: string): Check => ({ name, status: 'pass', detail });
const fail = (name: string, detail: string): Check => ({ name, status: 'fail', detail });
const skip = (name: string, detail: string): Check => ({ name, status: 'skip', detail });

/** Exit status: 1 if any check failed, else 0. */
export const exitCodeOf = (checks: readonly Check[]): number => (checks.some((c) => c.status === 'fail') ? 1 : 0);

/** One line per check: `PASS name  detail`, the names padded to one column; then a summary line. */
export function formatReport(checks: readonly Check[]): string {
  const width = Math.max(...checks.map((c) => c.name.length));
  const lines = checks.map((c) => `${c.status.toUpperCase()}  ${c.name.padEnd(width)}  ${c.detail}`);
  const n = (s: CheckStatus) => checks.filter((c) => c.status === s).length;
  return `${lines.join('\n')}\n${n('fail') ? 'not ready' : 'ready'}: ${n('pass')} passed, ${n('fail')} failed, ${n('skip')} skipped\n`;
}

/** CAP_NET_ADMIN is bit 12 of the capability sets in /proc/self/status. */
const CAP_NET_ADMIN = 12n;

export function privilegeCheck(capEffHex: string | null, uid: number): Check {
  if (capEffHex === null) return fail('privileges', 'cannot read this process’s capabilities (/proc/self/status)');
  const has = ((BigInt(`0x${capEffHex}`) >> CAP_NET_ADMIN) & 1n) === 1n;
  return has
    ? pass('privileges', uid === 0 ? 'root' : `uid ${uid} with CAP_NET_ADMIN`)
    : fail('privileges', `uid ${uid} without CAP_NET_ADMIN: run as root, or with CAP_NET_ADMIN (the systemd unit grants it)`);
}

/**
 * WireGuard: the kernel module where there is one, else wireguard-go with /dev/net/tun. With
 * wireguard-go every link is a process holding an inotify instance: `inotifyInstances`
 * (fs.inotify.max_user_instances, per user) bounds the links a relay can have, and is said.
 */
export function wireguardCheck(p: {
  module: boolean;
  wireguardGo: string | null;
  tun: boolean;
  /** Whether this user may open /dev/net/tun (read and write): a root-only node stops an unprivileged relay's wireguard-go. */
  tunOpen?: boolean;
  inotifyInstances?: number | null;
}): Check {
  if (p.module) return pass('wireguard', 'kernel module');
  if (p.wireguardGo && p.tun && p.tunOpen === false)
    return fail('wireguard', 'no kernel module, and this user cannot open /dev/net/tun for wireguard-go (Debian makes it mode 0666: chmod 0666 /dev/net/tun)');
  if (p.wireguardGo && p.tun) {
    const limit =
      p.inotifyInstances == null
        ? ''
        : `; one process and one inotify instance per link: fs.inotify.max_user_instances ${p.inotifyInstances} allows fewer than ${p.inotifyInstances} links (peers and client devices)`;
    return pass('wireguard', `no kernel module; userspace ${p.wireguardGo}${limit}`);
  }
  if (p.wireguardGo) return fail('wireguard', 'no kernel module, and /dev/net/tun is missing for wireguard-go');
  return fail('wireguard', 'no kernel module and no wireguard-go: install wireguard-go (or a kernel with WireGuard)');
}

/** A command the relay runs (`wg`, `ip`, `nft`): its version line, or why it cannot run. */
export function toolCheck(name: string, pkg: string, r: { ok: boolean; output: string }): Check {
  const line = r.output.trim().split('\n')[0] ?? '';
  return r.ok ? pass(name, line || 'runs') : fail(name, `cannot run ${name}: ${line || 'not found'} (Debian package ${pkg})`);
}

export function nftablesCheck(r: { ok: boolean; output: string }): Check {
  return r.ok ? pass('nftables', 'nft lists tables') : fail('nftables', `nft cannot list tables: ${r.output.trim().split('\n')[0] || 'failed'}`);
}

/** Forwarding: the relay turns it on itself, so it must be on or writable. */
export function forwardingCheck(p: { value: string | null; writable: boolean }): Check {
  if (p.value === null) return fail('forwarding', 'cannot read net.ipv4.ip_forward');
  if (p.value.trim() === '1') return pass('forwarding', 'net.ipv4.ip_forward is 1');
  return p.writable
    ? pass('forwarding', 'net.ipv4.ip_forward is 0; the relay turns it on (and back off when it stops)')
    : fail('forwarding', 'net.ipv4.ip_forward is 0 and read only here (a container without its own network namespace?)');
}

export function portCheck(name: string, what: string, r: { free: boolean; error: string | null } | null): Check {
  if (r === null) return skip(name, `give ${what}`);
  return r.free ? pass(name, `${what.replace(/^--\S+ /, '')} is free`) : fail(name, `${what.replace(/^--\S+ /, '')} is taken: ${r.error ?? 'in use'}`);
}

/** The largest clock difference the relay tolerates: tokens and events carry times. */
export const MAX_SKEW_MS = 5_000;

export function clockCheck(localMs: number | null, serverDate: string | null): Check {
  if (localMs === null) return skip('clock', 'give --control-plane-url (its answers carry its time)');
  const server = serverDate === null ? Number.NaN : Date.parse(serverDate);
  if (Number.isNaN(server)) return fail('clock', 'the control plane’s answer carried no Date to compare with');
  // HTTP dates have whole seconds: up to 1 s of the difference is theirs.
  const skew = localMs - server;
  const s = (Math.abs(skew) / 1000).toFixed(1);
  return Math.abs(skew) <= MAX_SKEW_MS + 1_000
    ? pass('clock', `within ${s} s of the control plane`)
    : fail('clock', `${s} s ${skew > 0 ? 'ahead of' : 'behind'} the control plane (at most ${MAX_SKEW_MS / 1000} s): synchronise it (NTP)`);
}

/** The control plane and the relay's token, from a heartbeat (harmless: a relay not yet admitted is told so). */
export function controlPlaneCheck(r: { status: number | null; error: string | null; message: string | null } | null, url: string | null): Check {
  if (r === null || url === null) return skip('control plane', 'give --control-plane-url, --token or --token-file, and --relay-id');
  if (r.status === null) return fail('control plane', `${url} unreachable: ${r.error ?? 'no answer'}`);
  if (r.status === 200) return pass('control plane', `${url} reachable; token accepted; the relay is admitted`);
  if (r.status === 404) return pass('control plane', `${url} reachable; token accepted; the relay is not admitted yet`);
  if (r.status === 401) return fail('control plane', `${url} refused the token: ${r.message ?? 'unauthorized'}`);
  if (r.status === 403) return fail('control plane', `${url} refused the token for this relay: ${r.message ?? 'forbidden'}`);
  return fail('control plane', `${url} answered ${r.status}: ${r.message ?? 'unexpected'}`);
}

export function natsCheck(r: { connected: boolean; withCredentials: boolean; error: string | null } | null, servers: string | null): Check {
  if (r === null || servers === null) return skip('nats', 'give --nats-url (the control plane hands relays their servers at admission)');
  if (r.connected)
    return pass(
      'nats',
      `${servers} reachable${r.withCredentials ? '; the relay’s credentials (STATE_DIR/nats.creds) accepted' : ' (no credentials yet: the relay gets them at admission)'}`,
    );
  return fail('nats', `${servers}: ${r.error ?? 'unreachable'}`);
}

/** The state directory: there (or creatable) and writable; key files private. */
export function stateDirCheck(p: { dir: string; exists: boolean; writable: boolean; parentWritable: boolean; loose: string[] }): Check {
  if (!p.exists)
    return p.parentWritable
      ? pass('state dir', `${p.dir} does not exist yet; the relay makes it (0700)`)
      : fail('state dir', `${p.dir} does not exist and cannot be made here`);
  if (!p.writable) return fail('state dir', `${p.dir} is not writable`);
  if (p.loose.length) return fail('state dir', `key files readable by others (must be 0600): ${p.loose.join(', ')}`);
  return pass('state dir', `${p.dir} writable, key files private`);
}

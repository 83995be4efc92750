import { describe, expect, it } from 'vitest';
import {
  clockCheck,
  controlPlaneCheck,
  exitCodeOf,
  formatReport,
  forwardingCheck,
  natsCheck,
  portCheck,
  privilegeCheck,
  stateDirCheck,
  wireguardCheck,
} from '../../src/doctor/checks.ts';

describe('doctor checks', () => {
  it('privileges: CAP_NET_ADMIN is bit 12 of CapEff', () => {
    expect(privilegeCheck('000001ffffffffff', 0)).toMatchObject({ status: 'pass', detail: 'root' });
    expect(privilegeCheck('0000000000001000', 998)).toMatchObject({ status: 'pass', detail: 'uid 998 with CAP_NET_ADMIN' });
    expect(privilegeCheck('0000000000000800', 998).status).toBe('fail');
    expect(privilegeCheck(null, 0).status).toBe('fail');
  });

  it('WireGuard: the module, or wireguard-go with /dev/net/tun', () => {
    expect(wireguardCheck({ module: true, wireguardGo: null, tun: false }).status).toBe('pass');
    expect(wireguardCheck({ module: false, wireguardGo: 'wireguard-go v1', tun: true }).detail).toContain('wireguard-go v1');
    // With wireguard-go the inotify limit bounds the links (each daemon holds an instance): said, not failed.
    const limited = wireguardCheck({ module: false, wireguardGo: 'wireguard-go v1', tun: true, inotifyInstances: 128 });
    expect(limited.status).toBe('pass');
    expect(limited.detail).toContain('fs.inotify.max_user_instances 128');
    expect(wireguardCheck({ module: true, wireguardGo: null, tun: false, inotifyInstances: 128 }).detail).toBe('kernel module');
    // A root-only /dev/net/tun (a host without udev): an unprivileged relay's wireguard-go cannot create devices.
    const closed = wireguardCheck({ module: false, wireguardGo: 'wireguard-go v1', tun: true, tunOpen: false });
    expect(closed.status).toBe('fail');
    expect(closed.detail).toContain('chmod 0666 /dev/net/tun');
    expect(wireguardCheck({ module: false, wireguardGo: 'wireguard-go v1', tun: false }).detail).toContain('/dev/net/tun');
    expect(wireguardCheck({ module: false, wireguardGo: null, tun: true }).status).toBe('fail');
  });

  it('clock: within 5 s (plus the Date header’s second) of the control plane', () => {
    const at = Date.parse('2026-12-01T12:00:00Z');
    expect(clockCheck(at + 3_000, new Date(at).toUTCString()).status).toBe('pass');
    expect(clockCheck(at + 9_000, new Date(at).toUTCString())).toMatchObject({ status: 'fail', detail: expect.stringMatching(/^9\.0 s ahead/) });
    expect(clockCheck(at - 9_000, new Date(at).toUTCString()).detail).toMatch(/behind/);
    expect(clockCheck(at, null).status).toBe('fail');
    expect(clockCheck(null, null).status).toBe('skip');
  });

  it('control plane: a heartbeat’s answer says whether it is reachable and takes the token', () => {
    const url = 'https://cp.example';
    expect(controlPlaneCheck({ status: 404, error: null, message: 'not registered' }, url)).toMatchObject({ status: 'pass' });
    expect(controlPlaneCheck({ status: 200, error: null, message: null }, url).detail).toContain('admitted');
    expect(controlPlaneCheck({ status: 401, error: null, message: 'bad signature' }, url)).toMatchObject({
      status: 'fail',
      detail: expect.stringContaining('refused the token: bad signature'),
    });
    expect(controlPlaneCheck({ status: 403, error: null, message: 'other relay' }, url).status).toBe('fail');
    expect(controlPlaneCheck({ status: null, error: 'ECONNREFUSED', message: null }, url).detail).toContain('unreachable: ECONNREFUSED');
    expect(controlPlaneCheck({ status: 503, error: null, message: 'down' }, url).status).toBe('fail');
    expect(controlPlaneCheck(null, null).status).toBe('skip');
  });

  it('forwarding, ports, NATS and the state directory', () => {
    expect(forwardingCheck({ value: '1\n', writable: false }).status).toBe('pass');
    expect(forwardingCheck({ value: '0\n', writable: true }).status).toBe('pass');
    expect(forwardingCheck({ value: '0\n', writable: false }).status).toBe('fail');
    expect(portCheck('wireguard port', '--endpoint UDP port 51820', { free: false, error: 'EADDRINUSE' }).detail).toBe('UDP port 51820 is taken: EADDRINUSE');
    expect(portCheck('metrics port', '--metrics-listen to check its port', null).status).toBe('skip');
    expect(natsCheck({ connected: true, withCredentials: false, error: null }, 'nats://x:4222').detail).toContain('no credentials yet');
    expect(natsCheck({ connected: false, withCredentials: true, error: 'Authorization Violation' }, 'nats://x:4222').status).toBe('fail');
    expect(stateDirCheck({ dir: '/s', exists: true, writable: true, parentWritable: true, loose: ['wg.key'] })).toMatchObject({
      status: 'fail',
      detail: expect.stringContaining('wg.key'),
    });
    expect(stateDirCheck({ dir: '/s', exists: false, writable: false, parentWritable: false, loose: [] }).status).toBe('fail');
    expect(stateDirCheck({ dir: '/s', exists: false, writable: false, parentWritable: true, loose: [] }).status).toBe('pass');
  });

  it('reports one line per check and a summary; exit 1 on any failure, skips included as 0', () => {
    const checks = [
      { name: 'wg', status: 'pass' as const, detail: 'v1' },
      { name: 'control plane', status: 'skip' as const, detail: 'give --control-plane-url' },
    ];
    expect(formatReport(checks)).toBe('PASS  wg             v1\nSKIP  control plane  give --control-plane-url\nready: 1 passed, 0 failed, 1 skipped\n');
    expect(exitCodeOf(checks)).toBe(0);
    expect(exitCodeOf([...checks, { name: 'nft', status: 'fail', detail: 'x' }])).toBe(1);
  });
});

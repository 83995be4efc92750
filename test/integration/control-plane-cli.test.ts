import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { createClient } from '@supabase/supabase-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../../src/control-plane/paths.ts';
import { verifyJwt } from '../../src/control-plane/jwt.ts';
import { freePort } from '../../src/lib/ports.ts';
import { tempDir } from '../support/temp.ts';

const BIN = join(ROOT, 'bin/relay-core');

interface Run {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exit: Promise<number | null>;
}

const children = new Set<ChildProcess>();

function start(args: string[]): Run {
  const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RELAYNET_LOG_LEVEL: 'warn' } });
  children.add(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exit = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      children.delete(child);
      resolve(code);
    }),
  );
  return { child, stdout: () => out, stderr: () => err, exit };
}

async function waitFor(run: Run, re: RegExp, ms = 120_000): Promise<RegExpExecArray> {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = re.exec(run.stdout());
    if (m) return m;
    if (run.child.exitCode !== null) throw new Error(`exited ${run.child.exitCode} before printing ${re}: ${run.stderr().slice(-2000)}`);
    if (Date.now() > deadline) throw new Error(`no ${re} within ${ms} ms; stdout: ${run.stdout()} stderr: ${run.stderr().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const field = (out: string, name: string) => new RegExp(`^  ${name} +(\\S+)$`, 'm').exec(out)?.[1];

describe('relay-core control-plane and token commands', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeAll(() => {
    tmp = tempDir('cp-cli');
  });
  afterEach(async () => {
    for (const c of children) c.kill('SIGKILL');
    children.clear();
  });
  afterAll(() => tmp?.remove());

  it('prints what relays need, serves until SIGTERM, exits 0, and keeps its state for the next start', async () => {
    const stateDir = join(tmp.dir, 'state');
    const run = start(['control-plane', '--port', '0', '--state-dir', stateDir, '--heartbeat-seconds', '3']);
    await waitFor(run, /stop with Ctrl-C/);
    const out = run.stdout();
    const url = field(out, 'URL \\(SUPABASE_URL\\)')!;
    const pub = field(out, 'topology public key')!;
    // The key's file, never the key: this output ends up in logs.
    const keyFile = join(stateDir, 'service-role.key');
    const srk = readFileSync(keyFile, 'utf8').trim();
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(out).toContain(`  service-role key      in ${keyFile} (mode 0600)\n`);
    expect(out).toContain(`RELAYNET_TOKEN_FILE=${keyFile}\n`);
    expect(out).not.toContain(srk);
    expect(out).not.toContain(srk.split('.')[2]!);
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(out).toContain(`SUPABASE_URL=${url}\n`);
    expect(out).toContain(`RELAYNET_TOPOLOGY_KEY=${pub}\n`);
    expect(out).toContain('relay-core token mint --relay-id');

    const secrets = JSON.parse(readFileSync(join(stateDir, 'secrets.json'), 'utf8')) as { jwtSecret: string };
    expect(statSync(join(stateDir, 'secrets.json')).mode & 0o777).toBe(0o600);
    expect(statSync(join(stateDir, 'control-plane.json')).mode & 0o777).toBe(0o600);
    const info = JSON.parse(readFileSync(join(stateDir, 'control-plane.json'), 'utf8'));
    expect(info).toMatchObject({ url, serviceRoleKey: srk, topologyPublicKey: pub, natsServers: [] });
    const claims = await verifyJwt(srk, secrets.jwtSecret);
    expect(claims.ok && claims.claims).toMatchObject({ role: 'service_role', iss: 'relay-core' });

    // A second control plane on the same state directory is refused.
    const second = start(['control-plane', '--port', '0', '--state-dir', stateDir]);
    expect(await second.exit).toBe(1);
    expect(second.stderr()).toMatch(/another control plane \(pid \d+\) uses/);

    const body = { relayId: 'relay-a', name: 'A', region: 'test', publicKey: Buffer.alloc(32, 1).toString('base64'), endpoint: '198.51.100.1:51820' };
    const first = await createClient(url, srk).functions.invoke('register-server', { body });
    expect(first.error).toBeNull();
    expect(first.data).toMatchObject({ revision: 1, readmitted: false, heartbeatIntervalSeconds: 3, bus: { topologySigningKey: pub } });

    run.child.kill('SIGTERM');
    expect(await run.exit).toBe(0);
    expect(run.stdout()).toContain('control plane stopped');

    // Same state directory: same secrets and key, same data (the relay is still admitted).
    const again = start(['control-plane', '--port', '0', '--state-dir', stateDir]);
    await waitFor(again, /stop with Ctrl-C/);
    expect(field(again.stdout(), 'topology public key')).toBe(pub);
    const url2 = field(again.stdout(), 'URL \\(SUPABASE_URL\\)')!;
    const token = spawnSync(BIN, ['token', 'mint', '--relay-id', 'relay-a', '--state-dir', stateDir], { encoding: 'utf8' }).stdout.trim();
    const re = await createClient(url2, token).functions.invoke('register-server', { body });
    expect(re.error).toBeNull();
    expect(re.data).toMatchObject({ revision: 1, readmitted: true });
    again.child.kill('SIGINT');
    expect(await again.exit).toBe(0);
  });

  it('fails clearly when the port is taken', async () => {
    const port = await freePort();
    const blocker: Server = createServer();
    await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', () => r()));
    try {
      const run = start(['control-plane', '--port', String(port), '--state-dir', join(tmp.dir, 'taken')]);
      expect(await run.exit).toBe(1);
      expect(run.stderr()).toContain(`port ${port} on 127.0.0.1 is already in use`);
    } finally {
      await new Promise<void>((r) => blocker.close(() => r()));
    }
  });

  it('fails clearly when the database is unreachable', async () => {
    const port = await freePort();
    const run = start(['control-plane', '--port', '0', '--state-dir', join(tmp.dir, 'nodb'), '--db-url', `postgres://postgres:pw@127.0.0.1:${port}/postgres`]);
    expect(await run.exit).toBe(1);
    expect(run.stderr()).toContain(`cannot connect to the database at postgres://postgres:***@127.0.0.1:${port}/postgres`);
    expect(run.stderr()).not.toContain(':pw@');
  });

  it('rejects bad options with exit 2 and prints complete help', () => {
    const bad = spawnSync(BIN, ['control-plane', '--port', 'eighty'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('--port must be an integer');
    const nats = spawnSync(BIN, ['control-plane', '--nats-url', 'http://x'], { encoding: 'utf8' });
    expect(nats.status).toBe(2);
    for (const cmd of ['control-plane', 'token']) {
      const help = spawnSync(BIN, [cmd, '--help'], { encoding: 'utf8' });
      expect(help.status).toBe(0);
      expect(help.stdout).toMatch(/^Usage: relay-core /);
    }
  });
});

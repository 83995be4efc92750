import type { ChildProcess } from 'node:child_process';
import { spawnOwned } from '../lib/children.ts';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fetchStatus } from '../daemon/status-server.ts';
import type { RelayStatus } from '../daemon/relay-status.ts';

export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const RELAY_CORE_BIN = join(PROJECT_ROOT, 'bin/relay-core');

export interface RelayProcessOptions {
  relayId: string;
  stateDir: string;
  endpoint: string;
  controlPlaneUrl: string;
  token: string;
  region?: string;
  natsServers?: string[];
  extraArgs?: string[];
  env?: Record<string, string>;
  /**
   * Kernel backend of the relay (default `memory`): relays sharing loopback must not program this
   * host's WireGuard devices and routes; `relay-core sim` gives each relay its own network namespace.
   */
  kernel?: 'linux' | 'memory';
}

/** A `relay-core run` child process on loopback (devnet, tests). Its JSON log goes to STATE_DIR/relay.log. */
export class RelayProcess {
  readonly opts: RelayProcessOptions;
  child: ChildProcess | null = null;
  #log: WriteStream | null = null;
  #exit: Promise<number | null> | null = null;
  stderrTail = '';

  constructor(opts: RelayProcessOptions) {
    this.opts = opts;
  }

  get socket(): string {
    return join(this.opts.stateDir, 'relay.sock');
  }

  start(): this {
    if (this.child) throw new Error(`${this.opts.relayId} already running`);
    mkdirSync(this.opts.stateDir, { recursive: true, mode: 0o700 });
    const o = this.opts;
    const args = [
      'run',
      '--relay-id',
      o.relayId,
      '--endpoint',
      o.endpoint,
      '--state-dir',
      o.stateDir,
      '--control-plane-url',
      o.controlPlaneUrl,
      '--region',
      o.region ?? 'local',
    ];
    args.push('--kernel', o.kernel ?? 'memory');
    if (o.natsServers) args.push('--nats-url', o.natsServers.join(','));
    args.push(...(o.extraArgs ?? []));
    this.#log = createWriteStream(join(o.stateDir, 'relay.log'), { flags: 'a' });
    const child = spawnOwned(RELAY_CORE_BIN, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RELAYNET_TOKEN: o.token, ...o.env },
    });
    this.child = child;
    child.stdout?.pipe(this.#log, { end: false });
    child.stderr?.on('data', (b: Buffer) => {
      this.#log?.write(b);
      this.stderrTail = (this.stderrTail + b.toString()).slice(-4000);
    });
    this.#exit = new Promise((resolve) =>
      child.once('exit', (code, sig) => {
        this.child = null;
        resolve(code ?? (sig ? 128 : null));
      }),
    );
    return this;
  }

  /** Send a signal and wait for the exit code (SIGKILL after `timeoutMs`). */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<number | null> {
    const c = this.child;
    if (!c || !this.#exit) return null;
    c.kill(signal);
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    const code = await this.#exit;
    clearTimeout(t);
    this.#log?.end();
    return code;
  }

  exited(): Promise<number | null> {
    return this.#exit ?? Promise.resolve(null);
  }

  status(): Promise<RelayStatus> {
    return fetchStatus(this.socket) as Promise<RelayStatus>;
  }
}

/** Poll `probe` until it returns a truthy value or `timeoutMs` passes; the error names `what`. */
export async function eventually<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs = 30_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { RelayIdSchema } from '../contract/envelope.ts';
import { SIM_ID_RE } from './layout.ts';

/**
 * DIR/manifest.json: everything a sim created, written before each thing is created, so that
 * `sim down` finds all of it from this file alone, also after the sim or a relay crashed.
 */

export const MANIFEST_FILE = 'manifest.json';

const ProcessSchema = z.object({
  kind: z.enum(['nats', 'control-plane', 'relay', 'web']),
  /** 'nats' (or 'nats-<i>', a node of a cluster), 'control-plane', 'web' or the relay id. */
  name: z.string().min(1),
  namespace: z.string().min(1),
  /** The full command, `ip netns exec <namespace> ...`. */
  command: z.array(z.string()).min(1),
  /** Null between recording the process and spawning it. */
  pid: z.number().int().positive().nullable(),
  log: z.string(),
  startedAt: z.string().nullable(),
  /** Set when the sim itself stopped (SIGTERM) or killed (SIGKILL) it; a dead process without it crashed. */
  stoppedBy: z.enum(['SIGTERM', 'SIGKILL']).nullable(),
});
export type SimProcess = z.infer<typeof ProcessSchema>;

const VethSchema = z.object({
  /** The bridge-side end, in the inet namespace. */
  name: z.string().min(1).max(15),
  namespace: z.string().min(1),
  /** The node's own end, inside the node's namespace. */
  peer: z.string().min(1).max(15),
  peerNamespace: z.string().min(1),
});
export type SimVeth = z.infer<typeof VethSchema>;

const RelaySchema = z.object({
  id: RelayIdSchema,
  index: z.number().int().min(1).max(250),
  namespace: z.string().min(1),
  publicAddress: z.string(),
  /** Its IPv6 on the sim's internet, null for a relay added with --no-ipv6 (it then exits no IPv6). */
  publicAddress6: z.string().nullable().default(null),
  endpoint: z.string(),
  /** Known once the relay has registered (from its status). */
  meshAddress: z.string().nullable(),
  publicKey: z.string().nullable(),
  stateDir: z.string(),
  /** Its scoped relay token (0600). */
  tokenFile: z.string(),
});
export type SimRelay = z.infer<typeof RelaySchema>;

const ClientSchema = z.object({
  name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,30}$/),
  index: z.number().int().min(1).max(250),
  namespace: z.string().min(1),
  /** Its stock WireGuard device (wireguard-go) inside the namespace. */
  device: z.string().min(1).max(15),
  publicAddress: z.string(),
  /** The client's private key and wg-quick configuration (0600). */
  keyFile: z.string(),
  configFile: z.string(),
  /** Null until the control plane answered. */
  sessionId: z.string().nullable(),
  entryId: z.string().nullable(),
  exitId: z.string().nullable(),
  /** Its address inside the network (from the entry's pool). */
  address: z.string().nullable(),
  /** A private session (its peer is the exit, reached through the entry); absent in older manifests: standard. */
  mode: z.enum(['standard', 'private']).default('standard'),
});
export type SimClient = z.infer<typeof ClientSchema>;

export const ManifestSchema = z.object({
  version: z.literal(1),
  simId: z.string().regex(SIM_ID_RE),
  wgPrefix: z.string().regex(/^[a-z]{1,3}$/),
  stateDir: z.string(),
  createdAt: z.string(),
  /** What every relay of this sim runs with (`sim add` and `restart` reuse it). */
  settings: z.object({
    keepaliveSeconds: z.number().int().min(0),
    linkStaleAfterMs: z.number().int().min(100),
    linkDownAfterMs: z.number().int().min(100),
    observeIntervalMs: z.number().int().min(100),
    heartbeatSeconds: z.number().int().min(1),
    /** The control plane's Proof-of-Bandwidth receipt epoch (`sim up --receipt-epoch`); absent: its default. */
    receiptEpochSeconds: z.number().int().min(10).optional(),
    /** The control plane's measurement schedule (`sim up --measure-every`); absent: only on demand. */
    measureEverySeconds: z.number().int().min(1).optional(),
    /** The control plane's settlement schedule (`sim up --settle-after`); absent: only on demand. */
    settleAfterSeconds: z.number().int().min(0).optional(),
    /** The pino level of the relays and the control plane (RELAYNET_LOG_LEVEL in their environment). */
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
    /** Nodes of the sim's NATS (`sim up --nats N`); the streams then have N replicas. */
    natsNodes: z.number().int().min(1).max(5).default(1),
  }),
  /** In creation order; deleted in reverse. */
  namespaces: z.array(z.string()),
  veths: z.array(VethSchema),
  processes: z.array(ProcessSchema),
  relays: z.array(RelaySchema),
  clients: z.array(ClientSchema).default([]),
  controlPlane: z.object({
    /** As seen from inside the sim (relay namespaces). */
    url: z.string(),
    /** Every NATS node's URL, comma-separated (as `--nats-url` takes them). */
    natsUrl: z.string(),
    stateDir: z.string(),
    /** The service-role key (0600); relays hold scoped tokens instead. */
    serviceRoleKeyFile: z.string(),
    topologyPublicKey: z.string(),
  }),
});
export type Manifest = z.infer<typeof ManifestSchema>;

export const manifestPath = (dir: string) => join(dir, MANIFEST_FILE);

/** The manifest in `dir`, or null when there is none. Throws when it exists but is not valid. */
export function readManifest(dir: string): Manifest | null {
  let text: string;
  try {
    text = readFileSync(manifestPath(dir), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  return parseManifest(text, manifestPath(dir));
}

export function parseManifest(text: string, where = MANIFEST_FILE): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${where} is not JSON: ${(e as Error).message}`);
  }
  const r = ManifestSchema.safeParse(json);
  if (!r.success) throw new Error(`${where} is not a sim manifest: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return r.data;
}

/**
 * Write the manifest atomically (a temp file, fsync, rename), mode 0600: a crash leaves the old
 * or the new one, never half of one.
 */
export function writeManifest(m: Manifest): void {
  const file = manifestPath(m.stateDir);
  const text = JSON.stringify(ManifestSchema.parse(m), null, 2) + '\n';
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}

export class StateDirBusyError extends Error {}

/**
 * Run `fn` holding DIR/sim.lock, so that two sim commands never change one sim at once. The lock
 * holds the owner's pid and is taken over when that process is gone (a sim killed with SIGKILL).
 */
export async function withStateDirLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  if (!existsSync(dir)) throw new Error(`no sim in ${dir} (no such directory)`);
  const file = join(dir, 'sim.lock');
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
      const pid = Number(readFileSync(file, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0 && pidAlive(pid))
        throw new StateDirBusyError(`another sim command (pid ${pid}) is working on ${dir}; wait for it to finish`);
      rmSync(file, { force: true });
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(file, { force: true });
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

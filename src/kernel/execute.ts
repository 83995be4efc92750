import type { Focus } from './focus.ts';
import { KernelOpError, type HostState, type KernelBackend, type KernelOp, type KernelScope } from './host-state.ts';
import { canonicalIp } from './ip.ts';
import { peerSettingsText, portMapText, routeText, ruleText } from './host-text.ts';

export interface PlanResult {
  /** The operations that succeeded, in order. */
  applied: KernelOp[];
  /** The operations that failed, in order. */
  failures: { op: KernelOp; error: KernelOpError }[];
  /** The operations not run because they depend on one that failed (or was skipped), in order. */
  skipped: KernelOp[];
  /** The owned state read back after the run: what the host actually holds now. */
  reached: HostState;
}

/** The device an operation needs, or null. */
function deviceOf(op: KernelOp): string | null {
  if ('dev' in op) return op.dev;
  if (op.op === 'route.add' || op.op === 'route.replace') return op.route.dev;
  return null;
}

/** Operations that build a device: everything else on it needs them. */
const BUILDS_DEVICE = new Set<KernelOp['op']>(['link.add', 'wg.device', 'link.mtu', 'addr.add', 'link.up']);

/**
 * Whether `later` must not run once `failed` did not: the guards of a scope (its nftables filters and
 * its fail-closed rule) come before any peer, port map or forwarding is switched on, so a failed guard
 * holds back every peer, port map and sysctl after it; a device that could not be built holds back what is on it, and
 * an address that could not be added the routes that take it as their source.
 * Nothing else depends on anything: a peer whose endpoint is refused, a route or rule that failed,
 * fails alone, and the rest of the plan runs.
 */
export function dependsOn(later: KernelOp, failed: KernelOp): boolean {
  const isGuard = failed.op === 'nft.table.set' || (failed.op === 'rule.add' && failed.rule.table === null);
  if (isGuard && (later.op === 'wg.peer.set' || later.op === 'sysctl.set' || later.op === 'portmap.add' || later.op === 'portmap.replace')) return true;
  // A route whose source is an address that could not be added, on whichever device.
  if (failed.op === 'addr.add' && (later.op === 'route.add' || later.op === 'route.replace') && later.route.src !== null) {
    if (canonicalIp(later.route.src) === canonicalIp(failed.cidr.split('/')[0]!)) return true;
  }
  return BUILDS_DEVICE.has(failed.op) && deviceOf(later) === deviceOf(failed);
}

/**
 * Apply `ops` in order. A failed operation fails alone with what depends on it ({@link dependsOn}):
 * everything else still runs. Whatever happened, the state is read again, so the caller learns what
 * the host reached, also after failures (the next plan starts there and retries what is missing); with
 * a focus, what it reached of the focused objects (`known`: the scope before, see KernelBackend.read). Consecutive operations the backend can take together
 * (`batchKey`: one `ip -batch` on Linux) go in one call, which stops at the first failure; what it did
 * not run is looked at again as above.
 */
export async function applyPlan(backend: KernelBackend, ops: readonly KernelOp[], scope: KernelScope, focus?: Focus, known?: HostState): Promise<PlanResult> {
  const applied: KernelOp[] = [];
  const failures: PlanResult['failures'] = [];
  const skipped: KernelOp[] = [];
  const notDone: KernelOp[] = [];
  const held = (op: KernelOp) => notDone.some((f) => dependsOn(op, f));
  for (let i = 0; i < ops.length; ) {
    const op = ops[i]!;
    if (held(op)) {
      skipped.push(op);
      notDone.push(op);
      i++;
      continue;
    }
    const batch = batchFrom(backend, ops, i, held);
    if (batch.length > 1) {
      const r = await applyBatch(backend, batch);
      applied.push(...batch.slice(0, r.applied));
      i += r.applied;
      if (r.error) {
        failures.push({ op: batch[r.applied]!, error: r.error });
        notDone.push(batch[r.applied]!);
        i++;
      }
      continue;
    }
    try {
      await backend.apply(op);
      applied.push(op);
    } catch (e) {
      failures.push({ op, error: asKernelOpError(op, e) });
      notDone.push(op);
    }
    i++;
  }
  return { applied, failures, skipped, reached: await backend.read(scope, focus, known) };
}

/** Operations in one batch at most. */
const MAX_BATCH = 500;

/** The operations from `i` on that the backend can apply together: same batch key, none held back. */
function batchFrom(backend: KernelBackend, ops: readonly KernelOp[], i: number, held: (op: KernelOp) => boolean): KernelOp[] {
  const key = backend.applyBatch && backend.batchKey ? backend.batchKey(ops[i]!) : null;
  if (key === null) return [ops[i]!];
  let j = i + 1;
  while (j < ops.length && j - i < MAX_BATCH && backend.batchKey!(ops[j]!) === key && !held(ops[j]!)) j++;
  return ops.slice(i, j);
}

/** A batch that throws instead of answering (a bug) fails its first operation, with nothing counted as applied. */
async function applyBatch(backend: KernelBackend, batch: readonly KernelOp[]): Promise<{ applied: number; error: KernelOpError | null }> {
  try {
    return await backend.applyBatch!(batch);
  } catch (e) {
    return { applied: 0, error: asKernelOpError(batch[0]!, e) };
  }
}

/** A backend is meant to throw `KernelOpError`; anything else (a bug) is wrapped so callers see one shape. */
function asKernelOpError(op: KernelOp, e: unknown): KernelOpError {
  if (e instanceof KernelOpError) return e;
  return new KernelOpError(op, `${describeOp(op)}: ${e instanceof Error ? e.message : String(e)}`);
}

/** A public key shortened for one-line texts: enough to tell keys apart. */
const shortKey = (key: string) => (key.length > 8 ? `${key.slice(0, 8)}…` : key);

/** One line of human text per operation. Public keys only, shortened; never a key file's content or a table body. */
export function describeOp(op: KernelOp): string {
  switch (op.op) {
    case 'link.add':
    case 'link.mtu':
      return `${op.op} ${op.dev} mtu ${op.mtu}`;
    case 'link.del':
    case 'link.up':
    case 'link.down':
      return `${op.op} ${op.dev}`;
    case 'wg.device':
      return `wg.device ${op.dev} listen-port ${op.listenPort} public-key ${shortKey(op.publicKey)}`;
    case 'wg.peer.set':
      return `wg.peer.set ${op.dev} peer ${shortKey(op.peer.publicKey)} ${peerSettingsText(op.peer)}`;
    case 'wg.peer.del':
      return `wg.peer.del ${op.dev} peer ${shortKey(op.publicKey)}`;
    case 'addr.add':
    case 'addr.del':
      return `${op.op} ${op.cidr} dev ${op.dev}`;
    case 'route.add':
    case 'route.del':
    case 'route.replace':
      return `${op.op} ${routeText(op.route)}`;
    case 'rule.add':
    case 'rule.del':
      return `${op.op} ${ruleText(op.rule)}`;
    case 'sysctl.set':
      return `sysctl.set ${op.key}=${op.value}`;
    case 'nft.table.set':
      // Never the body: it can be long, and the digest names it.
      return `nft.table.set inet ${op.name} digest ${op.digest}`;
    case 'nft.table.del':
      return `nft.table.del inet ${op.name}`;
    case 'portmap.add':
    case 'portmap.replace':
    case 'portmap.del':
      return `${op.op} ${portMapText(op.map)}`;
    default:
      return `unknown op ${JSON.stringify((op as { op?: unknown }).op)}`;
  }
}

import { KernelOpError, type HostState, type KernelBackend, type KernelOp, type KernelScope } from './host-state.ts';
import { canonicalIp } from './ip.ts';
import { peerSettingsText, routeText, ruleText } from './host-text.ts';

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
 * its fail-closed rule) come before any peer or forwarding is switched on, so a failed guard holds
 * back every peer and sysctl after it; a device that could not be built holds back what is on it, and
 * an address that could not be added the routes that take it as their source.
 * Nothing else depends on anything: a peer whose endpoint is refused, a route or rule that failed,
 * fails alone, and the rest of the plan runs.
 */
export function dependsOn(later: KernelOp, failed: KernelOp): boolean {
  const isGuard = failed.op === 'nft.table.set' || (failed.op === 'rule.add' && failed.rule.table === null);
  if (isGuard && (later.op === 'wg.peer.set' || later.op === 'sysctl.set')) return true;
  // A route whose source is an address that could not be added, on whichever device.
  if (failed.op === 'addr.add' && (later.op === 'route.add' || later.op === 'route.replace') && later.route.src !== null) {
    if (canonicalIp(later.route.src) === canonicalIp(failed.cidr.split('/')[0]!)) return true;
  }
  return BUILDS_DEVICE.has(failed.op) && deviceOf(later) === deviceOf(failed);
}

/**
 * Apply `ops` in order. A failed operation fails alone with what depends on it ({@link dependsOn}):
 * everything else still runs. Whatever happened, the state is read again, so the caller learns what
 * the host reached, also after failures (the next plan starts there and retries what is missing).
 */
export async function applyPlan(backend: KernelBackend, ops: readonly KernelOp[], scope: KernelScope): Promise<PlanResult> {
  const applied: KernelOp[] = [];
  const failures: PlanResult['failures'] = [];
  const skipped: KernelOp[] = [];
  const notDone: KernelOp[] = [];
  for (const op of ops) {
    if (notDone.some((f) => dependsOn(op, f))) {
      skipped.push(op);
      notDone.push(op);
      continue;
    }
    try {
      await backend.apply(op);
      applied.push(op);
    } catch (e) {
      failures.push({ op, error: asKernelOpError(op, e) });
      notDone.push(op);
    }
  }
  return { applied, failures, skipped, reached: await backend.read(scope) };
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
    default:
      return `unknown op ${JSON.stringify((op as { op?: unknown }).op)}`;
  }
}

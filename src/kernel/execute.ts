import { KernelOpError, type HostState, type KernelBackend, type KernelOp, type KernelScope } from './host-state.ts';
import { peerSettingsText, routeText, ruleText } from './plan.ts';

export interface PlanResult {
  /** The operations that succeeded, in order. */
  applied: KernelOp[];
  /** The first operation that failed (later ones did not run), or null. */
  failed: { op: KernelOp; error: KernelOpError } | null;
  /** The owned state read back after the run: what the host actually holds now. */
  reached: HostState;
}

/**
 * Apply `ops` in order and stop at the first failure. Whatever happened, the state is read again, so
 * the caller learns what the host reached, also after a partial failure (the next plan starts there).
 */
export async function applyPlan(backend: KernelBackend, ops: readonly KernelOp[], scope: KernelScope): Promise<PlanResult> {
  const applied: KernelOp[] = [];
  let failed: PlanResult['failed'] = null;
  for (const op of ops) {
    try {
      await backend.apply(op);
      applied.push(op);
    } catch (e) {
      failed = { op, error: asKernelOpError(op, e) };
      break;
    }
  }
  return { applied, failed, reached: await backend.read(scope) };
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

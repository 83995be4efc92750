import { applyPlan } from './execute.ts';
import type { KernelBackend } from './host-state.ts';
import type { ReconcileInput, ReconcileOutcome, ReconcileOutput } from './kernel.machine.ts';
import { planKernel } from './plan.ts';

/**
 * One reconcile round against a backend, for the kernel actor: per owner, read the owned part of the
 * host, plan the diff, apply it, and report the state reached. A desired state the host already has
 * costs reads only: no mutating command runs.
 */
export function reconcileWith(backend: KernelBackend): (input: ReconcileInput) => Promise<ReconcileOutput> {
  return async (input) => {
    const outcomes: ReconcileOutcome[] = [];
    for (const o of input.owners) {
      const actual = await backend.read(o.scope);
      const planned = planKernel(actual, o.state);
      if (planned.length === 0) {
        outcomes.push({ owner: o.owner, cause: o.cause, planned, applied: [], failed: null, reached: actual });
        continue;
      }
      const r = await applyPlan(backend, planned, o.scope);
      const failed = r.failed
        ? { op: r.failed.op, message: r.failed.error.message, command: r.failed.error.command, exitCode: r.failed.error.exitCode, stderr: r.failed.error.stderr }
        : null;
      outcomes.push({ owner: o.owner, cause: o.cause, planned, applied: r.applied, failed, reached: r.reached });
    }
    return { outcomes, nowMs: Date.now() };
  };
}

import { applyPlan } from './execute.ts';
import type { KernelBackend } from './host-state.ts';
import type { ReconcileInput, ReconcileOutcome, ReconcileOutput } from './kernel.machine.ts';
import { planKernel } from './plan.ts';

/**
 * One reconcile round against a backend, for the kernel actor: per owner, read the owned part of the
 * host, plan the diff, apply it (a failed operation fails alone with what depends on it), and report
 * the state reached. One owner's failures never keep another owner's plan from running. A desired state the host already has
 * costs reads only: no mutating command runs. `now` stamps the round (the daemon's clock; tests fix it).
 */
export function reconcileWith(backend: KernelBackend, now: () => number = Date.now): (input: ReconcileInput) => Promise<ReconcileOutput> {
  return async (input) => {
    const outcomes: ReconcileOutcome[] = [];
    for (const o of input.owners) {
      const actual = await backend.read(o.scope);
      const planned = planKernel(actual, o.state);
      if (planned.length === 0) {
        outcomes.push({ owner: o.owner, cause: o.cause, planned, applied: [], failures: [], skipped: [], reached: actual });
        continue;
      }
      const r = await applyPlan(backend, planned, o.scope);
      const failures = r.failures.map(({ op, error }) => ({
        op,
        message: error.message,
        command: error.command,
        exitCode: error.exitCode,
        stderr: error.stderr,
      }));
      outcomes.push({ owner: o.owner, cause: o.cause, planned, applied: r.applied, failures, skipped: r.skipped, reached: r.reached });
    }
    return { outcomes, nowMs: now() };
  };
}

import { applyPlan } from './execute.ts';
import { focusOf, isEmptyFocus, mayReachBeyond, mergeFocused, readBackFocus, restrict, sameScope, type Focus } from './focus.ts';
import type { DesiredHostState, HostState, KernelBackend, KernelScope } from './host-state.ts';
import type { ReconcileInput, ReconcileOutcome, ReconcileOutput } from './kernel.machine.ts';
import { scopeDigest, updateScopeDigest, type ScopeDigest } from './host-text.ts';
import { planKernel } from './plan.ts';

/** What an owner's last round reached, for the desired state it planned: where the next round starts. */
interface Basis {
  scope: KernelScope;
  desired: DesiredHostState;
  reached: HostState;
  digest: ScopeDigest;
}

/**
 * Reconcile rounds against a backend, for the kernel actor: per owner, read the owned part of the
 * host, plan the diff, apply it (a failed operation fails alone with what depends on it), and report
 * the state reached. One owner's failures never keep another owner's plan from running. A desired state
 * the host already has costs reads only: no mutating command runs. `now` stamps the round (the daemon's
 * clock; tests fix it).
 *
 * A round is proportional to the change (src/kernel/focus.ts): after a round that reached its desired
 * state without a failure, the next round of that owner reads and plans only the objects whose desired
 * state changed since, and the same desired state again costs nothing. The whole scope is read and
 * planned on an owner's first round, after a round with a failure, when its scope changes, and when the
 * kernel actor asks for it (`full`: its slow timer and on demand, which is also the drift check).
 */
export function reconcileWith(backend: KernelBackend, now: () => number = Date.now): (input: ReconcileInput) => Promise<ReconcileOutput> {
  const bases = new Map<string, Basis>();
  return async (input) => {
    const outcomes: ReconcileOutcome[] = [];
    for (const o of input.owners) {
      const was = input.full ? undefined : bases.get(o.owner);
      const basis = was && sameScope(was.scope, o.scope) ? was : undefined;
      const focus = basis ? focusOf(basis.desired, o.state) : undefined;
      if (basis && focus && isEmptyFocus(focus)) {
        bases.set(o.owner, { ...basis, desired: o.state });
        outcomes.push({
          owner: o.owner,
          cause: o.cause,
          planned: [],
          applied: [],
          failures: [],
          skipped: [],
          reached: basis.reached,
          digest: basis.digest,
          focused: true,
        });
        continue;
      }
      const actual = await backend.read(o.scope, focus, basis?.reached);
      const planned = planKernel(actual, focus ? restrict(o.state, focus) : o.state);
      // What the owner reached: the last round's scope with the focused objects as read now.
      const merge = (part: HostState, f: Focus | undefined): { reached: HostState; digest: ScopeDigest } =>
        basis && f
          ? { reached: mergeFocused(basis.reached, f, part), digest: updateScopeDigest(basis.digest, restrict(basis.reached, f), part) }
          : { reached: part, digest: scopeDigest(part) };
      if (planned.length === 0) {
        const { reached, digest } = merge(actual, focus);
        bases.set(o.owner, { scope: o.scope, desired: o.state, reached, digest });
        outcomes.push({ owner: o.owner, cause: o.cause, planned, applied: [], failures: [], skipped: [], reached, digest, focused: focus !== undefined });
        continue;
      }
      // An address gone from the whole scope takes routes elsewhere with it: read all back.
      const readBack = basis && focus && !mayReachBeyond(planned, basis.reached) ? readBackFocus(focus, planned) : undefined;
      const r = await applyPlan(backend, planned, o.scope, readBack, basis?.reached);
      const failures = r.failures.map(({ op, error }) => ({
        op,
        message: error.message,
        command: error.command,
        exitCode: error.exitCode,
        stderr: error.stderr,
      }));
      const { reached, digest } = merge(r.reached, readBack);
      // After a failure the next round starts from the whole scope again.
      if (failures.length === 0) bases.set(o.owner, { scope: o.scope, desired: o.state, reached, digest });
      else bases.delete(o.owner);
      outcomes.push({
        owner: o.owner,
        cause: o.cause,
        planned,
        applied: r.applied,
        failures,
        skipped: r.skipped,
        reached,
        digest,
        focused: focus !== undefined,
      });
    }
    return { outcomes, nowMs: now() };
  };
}

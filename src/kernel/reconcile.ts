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
 * Reconcile rounds against a backend, for the kernel actor: per owner, plan the diff between the owned
 * part of the host and the desired state, apply it (a failed operation fails alone with what depends on
 * it), and report the state reached. One owner's failures never keep another owner's plan from running.
 * A desired state the host already has costs nothing: no mutating command runs. `now` stamps the round
 * (the daemon's clock; tests fix it).
 *
 * A round is proportional to the change (src/kernel/focus.ts): after a round that reached its desired
 * state without a failure, the next round of that owner plans only the objects whose desired state
 * changed since, from what the last round reached of them (no read before: the same state the replay of
 * the relay's log plans from), applies the plan, and reads back only those objects. When what it reads
 * back is not the desired state, or an operation failed (the host was not as the last round left it),
 * the same round goes on with the whole scope: read, plan and apply, which mends what can be mended. The whole scope is also read and planned
 * on an owner's first round, after a round with a failure, when its scope changes, and when the kernel
 * actor asks for it (`full`: its slow timer and on demand, which is also the drift check).
 */
export function reconcileWith(backend: KernelBackend, now: () => number = Date.now): (input: ReconcileInput) => Promise<ReconcileOutput> {
  const bases = new Map<string, Basis>();

  /**
   * One pass over the owner's focus (with a basis) or whole scope (without). `off`: a focused pass that
   * failed, or read back something else than desired: the host was not as the last round left it.
   */
  async function pass(
    o: ReconcileInput['owners'][number],
    basis: Basis | undefined,
  ): Promise<{ outcome: ReconcileOutcome; basis: Basis | null; off: boolean }> {
    const focus = basis ? focusOf(basis.desired, o.state) : undefined;
    const base = { owner: o.owner, cause: o.cause, focused: focus !== undefined };
    if (basis && focus && isEmptyFocus(focus)) {
      const outcome = { ...base, planned: [], applied: [], failures: [], skipped: [], reached: basis.reached, digest: basis.digest };
      return { outcome, basis: { ...basis, desired: o.state }, off: false };
    }
    const was = basis && focus ? restrict(basis.reached, focus) : undefined;
    const actual = was ?? (await backend.read(o.scope));
    const planned = planKernel(actual, focus ? restrict(o.state, focus) : o.state);
    // What the owner reached: the last round's scope with the focused objects as read now (`restrict`
    // keeps its last answer per state: for the round's own focus that is `was`, not a second walk).
    const merge = (part: HostState, f: Focus | undefined): { reached: HostState; digest: ScopeDigest } =>
      basis && f
        ? { reached: mergeFocused(basis.reached, f, part), digest: updateScopeDigest(basis.digest, restrict(basis.reached, f), part) }
        : { reached: part, digest: scopeDigest(part) };
    if (planned.length === 0) {
      const { reached, digest } = merge(actual, focus);
      const outcome = { ...base, planned, applied: [], failures: [], skipped: [], reached, digest };
      return { outcome, basis: { scope: o.scope, desired: o.state, reached, digest }, off: false };
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
    const outcome = { ...base, planned, applied: r.applied, failures, skipped: r.skipped, reached, digest };
    // A focused plan came from what the last round reached: the host must now be what is desired of it.
    const off = focus !== undefined && (failures.length > 0 || planKernel(r.reached, readBack ? restrict(o.state, readBack) : o.state).length > 0);
    // After a failure the next round starts from the whole scope again.
    return { outcome, basis: failures.length === 0 && !off ? { scope: o.scope, desired: o.state, reached, digest } : null, off };
  }

  return async (input) => {
    const outcomes: ReconcileOutcome[] = [];
    for (const o of input.owners) {
      const was = input.full ? undefined : bases.get(o.owner);
      const first = await pass(o, was && sameScope(was.scope, o.scope) ? was : undefined);
      let { outcome, basis } = first;
      if (first.off) {
        // The host was not as the last round left it (or an operation failed): the whole scope, in the same round.
        const whole = await pass(o, undefined);
        basis = whole.basis;
        const w = whole.outcome;
        outcome = {
          ...w,
          planned: [...outcome.planned, ...w.planned],
          applied: [...outcome.applied, ...w.applied],
          failures: w.failures,
          skipped: w.skipped,
        };
      }
      if (basis) bases.set(o.owner, basis);
      else bases.delete(o.owner);
      outcomes.push(outcome);
    }
    return { outcomes, nowMs: now() };
  };
}

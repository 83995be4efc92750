import type { AnyActorRef } from 'xstate';
import type { TopologyView } from '../../events/topology.fold.ts';
import type { DesiredHostState, HostState, KernelScope } from '../host-state.ts';
import type { KernelEvent } from '../kernel.machine.ts';

/**
 * The shape every owner of a part of the host shares (the mesh: mesh.ts, the clients: clients.ts).
 * An owner's state is folded from what the relay actor tells it (a view, the teardown) by pure
 * functions; from that state alone follow the scope it owns, the objects it desires of the kernel,
 * and what a kernel round's reached host means for its members (links, sessions). The owner's actor
 * and replay call the same functions, so replay derives every desired state as the relay did.
 *
 * `S`: the owner's state; `O`: its settings (fixed for a run); `M`: a member as the actor knows it;
 * `R`: what a round reached for one member. `scope`, `desire` and `reached` need a state that knows the
 * relay's own record (after a view it took).
 */
export interface KernelOwner<S extends OwnerState, O, M, R> {
  /** The owner's name in the kernel actor and in `KernelReconciled` events. */
  readonly owner: 'mesh' | 'clients';
  /** The state once the relay hands over a view this owner takes ({@link takesView}). Pure. */
  view<T extends S>(s: T, v: OwnerView): T;
  /** The state once the relay drains: the owner desires nothing of its own any more. Pure. */
  teardown<T extends S>(s: T): T;
  /** The part of the host this owner owns. */
  scope(s: S, o: O): KernelScope;
  /** The kernel objects this owner desires in this state. Pure: same state, same objects. */
  desire(s: S, o: O): DesiredHostState;
  /** What a round that reached `actual` (the owner's scope of the host) means for each member, in order. */
  reached(s: S, o: O, actual: HostState, members: readonly M[]): OwnerReached<R>;
}

/** What every owner's state holds besides its own facts. */
export interface OwnerState {
  selfId: string;
  /** Draining: the view no longer matters. */
  tearingDown: boolean;
}

/** What the relay hands its owners on a view change (the `VIEW` event less its type and cause). */
export interface OwnerView {
  view: TopologyView;
  /** NATS addresses of the latest registration (the clients owner keeps clients from them). */
  services?: string[];
}

export interface OwnerReached<R> {
  /** One verdict per member, in the order given. */
  members: R[];
  /** The owner is tearing down and its scope of the host holds nothing of its own any more. */
  tornDown: boolean;
}

/** Whether an owner takes a view: not while tearing down, and only one that holds this relay. */
export const takesView = (s: OwnerState, view: TopologyView): boolean => !s.tearingDown && view.relays.has(s.selfId);

/** The message that hands the kernel actor an owner's desired state, caused by the relay event `cause`. */
export function desiredEvent<S extends OwnerState, O>(
  owner: KernelOwner<S, O, unknown, unknown>,
  s: S,
  o: O,
  cause: string | null,
  replyTo: AnyActorRef,
): KernelEvent {
  return { type: 'DESIRED', owner: owner.owner, scope: owner.scope(s, o), state: owner.desire(s, o), cause, replyTo };
}

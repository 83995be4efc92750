import { createActor, type AnyActor, type AnyActorLogic, type AnyActorRef, type InputFrom } from 'xstate';

/**
 * Child actors that a parent keeps in a Map of its own context rather than in xstate's `children`
 * record. xstate copies that record (a plain object) on every spawn and every stop: with one link
 * actor per peer that is O(N) per join and per leave, a quarter of a relay's work per topology event at
 * N = 1,000 (bench/README.md, "One relay's actors per topology event").
 *
 * A kept child is created with the parent as its parent, so its done and error events reach the
 * parent exactly as a spawned child's do (`xstate.done.actor.<id>`). The parent starts it with an
 * action queued after the assignment that records it (events sent to it before it starts wait in its
 * mailbox, as they would for a spawned child xstate starts after the transition). Once done it has
 * stopped itself; the parent only forgets it. The parent never stops one: a kept child must hold no
 * timers or other resources (the peer-link actor holds none), so one left behind when its parent stops
 * leaves nothing running.
 */

/** The implementation of actor `src` that `self`'s machine was given (its own, or one of `provide`). */
export function providedLogic<T extends AnyActorLogic>(self: AnyActorRef, src: string): T {
  const logic = (self as AnyActor).logic as { implementations?: { actors?: Record<string, unknown> } };
  const impl = logic.implementations?.actors?.[src];
  if (!impl || typeof impl !== 'object' || !('transition' in impl)) throw new Error(`actor ${self.id} has no actor logic "${src}"`);
  return impl as T;
}

/** A child of `parent` that is not in its `children` record; start it with `ref.start()` in an action. */
export function keptChild<T extends AnyActorLogic>(parent: AnyActorRef, logic: T, id: string, input: InputFrom<T>) {
  return createActor(logic, { parent, id, input });
}

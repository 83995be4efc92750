import { prefetchFunctionDeps } from '../../src/control-plane/functions.ts';

/**
 * vitest globalSetup of the integration project: fetch the Edge Functions' npm: dependencies into
 * .cache/deno once, before any test starts a function (scripts/setup.sh does the same). Cheap when
 * they are cached already.
 */
export default function setup(): void {
  prefetchFunctionDeps();
}

#!/usr/bin/env bash
# Records test/fixtures/replay-sim.jsonl: `relay-core events export` of a real 3-relay sim (real
# WireGuard, NATS, control plane) through the story test/unit/replay.test.ts reads: boot, two client
# sessions on relay-1, an exit switch, a session closed, relay-2 killed and restarted, relay-3 stopped.
# Re-record when the planner or the event catalogue changes what a relay records. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's Node (the npm package node), not the system's: vitest and the code need it.
export PATH="$PWD/node_modules/.bin:$PATH"
state=$(mktemp -d /tmp/relay-core-fixture-XXXXXX)
sim() { bin/relay-core sim "$@" --state-dir "$state/sim"; }
trap 'sim down >/dev/null 2>&1 || true; rm -rf "$state"' EXIT

sim up --relays 3 --timeout 90 >/dev/null
sim client add --name c1 --entry relay-1 --exit relay-2 >/dev/null
sim client add --name c2 --entry relay-1 --exit relay-2 >/dev/null
sim client switch --name c1 --exit relay-3 >/dev/null
sim client remove --name c2 >/dev/null
sim kill --relay relay-2 >/dev/null
sim restart --relay relay-2 --timeout 90 >/dev/null
sim stop --relay relay-3 >/dev/null
sleep 3 # the last events reach the stream
bin/relay-core events export --sim "$state/sim" --out test/fixtures/replay-sim.jsonl
wc -l test/fixtures/replay-sim.jsonl
# The unit test reads a story whose first rounds depend on the order the relays came up in (the sim
# starts them together): a recording where relay-1 seeded before the others were admitted tells a
# different story. Check it, and record again if it does not fit.
node_modules/.bin/vitest run --project unit test/unit/replay.test.ts >/dev/null 2>&1 || {
  echo "the recording does not tell the story test/unit/replay.test.ts reads (relays came up in another order): run this again" >&2
  exit 1
}

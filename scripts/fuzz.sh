#!/usr/bin/env bash
# The full fuzz run of issue 14, part 7 (figures in docs/security.md, "Fuzzing"): the relay's decoder
# and fold (test/unit/fuzz-topology.test.ts, 106k messages at scale 1) and 10,000 malformed requests
# through every Edge Function on the real Deno runtime and PostgreSQL
# (test/integration/fuzz-functions.test.ts; the integration suite runs the same count).
#
#   scripts/fuzz.sh                     seed 14, scale 1, 10,000 requests per function
#   RELAYNET_FUZZ_SEED=7 RELAYNET_FUZZ_SCALE=5 RELAYNET_FUZZ_REQUESTS=20000 scripts/fuzz.sh
#
# Each test prints one line of figures (FUZZ-TOPOLOGY, FUZZ-FUNCTIONS); this script collects them in
# .state/fuzz/figures.jsonl with the command, the seed and the wall time. Needs PostgreSQL and Deno as
# the integration tests do (npm run setup). On a shared machine, serialise it with the integration
# tests: flock /tmp/relay-it.lock scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
export RELAYNET_FUZZ_SEED="${RELAYNET_FUZZ_SEED:-14}"
export RELAYNET_FUZZ_SCALE="${RELAYNET_FUZZ_SCALE:-1}"
export RELAYNET_FUZZ_REQUESTS="${RELAYNET_FUZZ_REQUESTS:-10000}"
out=.state/fuzz
mkdir -p "$out"
run() {
  local name=$1
  shift
  local start end
  start=$(date +%s)
  "$@" 2>&1 | tee "$out/$name.log"
  end=$(date +%s)
  FUZZ_LOG="$out/$name.log" FUZZ_WALL=$((end - start)) FUZZ_COMMAND="$*" node -e '
    const fs = require("node:fs");
    for (const m of fs.readFileSync(process.env.FUZZ_LOG, "utf8").matchAll(/(FUZZ-[A-Z]+) (\{.*\})/g)) {
      const line = { test: m[1], wallSeconds: Number(process.env.FUZZ_WALL), command: process.env.FUZZ_COMMAND, at: new Date().toISOString(), figures: JSON.parse(m[2]) };
      fs.appendFileSync(".state/fuzz/figures.jsonl", JSON.stringify(line) + "\n");
    }'
}
run topology vitest run --project unit test/unit/fuzz-topology.test.ts
run functions vitest run --project integration test/integration/fuzz-functions.test.ts
echo "figures: $out/figures.jsonl"

#!/usr/bin/env bash
# The test command of the README: installs what is missing, type-checks, runs every vitest project
# (unit, then integration on real nats-server, Deno, PGlite and PostgreSQL) and ends with
# "N passed, N failed". Extra arguments go to vitest (e.g. a file filter).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
export PATH="$PWD/node_modules/.bin:$PATH"
export DENO_DIR="$PWD/.cache/deno"
mkdir -p .cache

failed_extra=0
echo "== typecheck"
if ! tsc -p tsconfig.json; then echo "typecheck failed"; failed_extra=1; fi

echo "== vitest"
vitest run --reporter=default --reporter=json --outputFile.json=.cache/vitest-report.json "$@"
code=$?

read -r passed failed < <(node -e '
  const fs = require("fs");
  try {
    const r = JSON.parse(fs.readFileSync(".cache/vitest-report.json", "utf8"));
    console.log(r.numPassedTests, r.numFailedTests + (r.numTotalTestSuites && !r.success && r.numFailedTests === 0 ? 1 : 0));
  } catch { console.log(0, 1); }
')
failed=$((failed + failed_extra))
if [[ $code -ne 0 && $failed -eq 0 ]]; then failed=1; fi
echo "${passed} passed, ${failed} failed"
[[ $failed -eq 0 && $code -eq 0 ]]

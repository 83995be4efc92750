#!/usr/bin/env bash
# The test command of the README: installs what is missing, type-checks, checks format and lint (Biome), runs every vitest project
# (unit and integration on real nats-server, Deno, PGlite, PostgreSQL and WireGuard in namespaces;
# then the container suite, scripts/test-containers.sh) and ends with "N passed, N failed".
# Extra arguments go to vitest (e.g. a file filter; with one, add --passWithNoTests).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
export PATH="$PWD/node_modules/.bin:$PATH"
export DENO_DIR="$PWD/.cache/deno"
mkdir -p .cache

failed_extra=0
echo "== typecheck"
if ! tsc -p tsconfig.json; then echo "typecheck failed"; failed_extra=1; fi

echo "== format and lint (Biome; 'npm run format' rewrites, 'npm run lint' explains)"
if ! biome ci --colors=off .; then echo "format or lint check failed"; failed_extra=1; fi

echo "== vitest (unit, integration)"
vitest run --project unit --project integration --reporter=default --reporter=json --outputFile.json=.cache/vitest-report.json "$@"
code=$?

echo "== vitest (containers: Docker engine, images, testcontainers, docker-compose.yml)"
bash scripts/test-containers.sh "$@"
ccode=$?

read -r passed failed < <(node -e '
  const fs = require("fs");
  let passed = 0, failed = 0;
  for (const f of [".cache/vitest-report.json", ".cache/vitest-containers.json"]) {
    try {
      const r = JSON.parse(fs.readFileSync(f, "utf8"));
      passed += r.numPassedTests;
      failed += r.numFailedTests + (r.numTotalTestSuites && !r.success && r.numFailedTests === 0 ? 1 : 0);
    } catch { failed += 1; }
  }
  console.log(passed, failed);
')
failed=$((failed + failed_extra))
if [[ ($code -ne 0 || $ccode -ne 0) && $failed -eq 0 ]]; then failed=1; fi
echo "${passed} passed, ${failed} failed"
[[ $failed -eq 0 && $code -eq 0 && $ccode -eq 0 ]]

#!/usr/bin/env bash
# The container suite (vitest project `containers`: testcontainers and docker-compose.yml), with
# what it needs: a Docker engine (scripts/docker-engine.sh starts one where none runs, and stops it
# afterwards) and the images (scripts/docker-images.sh). Writes its vitest JSON report to
# .cache/vitest-containers.json. Extra arguments go to vitest.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
report=.cache/vitest-containers.json
rm -f "$report"

engine_ok=1
if bash scripts/docker-engine.sh status >/dev/null 2>&1; then
  bash scripts/docker-engine.sh start || engine_ok=0   # installs what is missing; the engine stays as it is
else
  bash scripts/docker-engine.sh start || engine_ok=0
  trap 'bash scripts/docker-engine.sh stop' EXIT      # it was not running: stop it again
fi
if ((engine_ok)); then
  bash scripts/docker-images.sh 2>&1 | grep -v -e DEPRECATED -e 'BuildKit is' -e 'environment-variable' -e '^ *$'
  if ((PIPESTATUS[0] != 0)); then
    # Not the tests' images: running them against older ones would test something else.
    echo "test-containers: building the images failed (above); the container suite did not run" >&2
    exit 1
  fi
fi
# Without an engine or images the tests themselves fail, saying which (requireImages).
vitest run --project containers --reporter=default --reporter=json --outputFile.json="$report" "$@"
code=$?
# Whatever a crashed run left behind (every container and network the suite makes is labelled).
if ((engine_ok)); then
  left=$(docker ps -aq --filter label=relay-core.test)
  [[ -z $left ]] || { echo "test-containers: removing leftover containers: $left"; docker rm -f -v $left >/dev/null; }
  nets=$(docker network ls -q --filter label=relay-core.test)
  [[ -z $nets ]] || docker network rm $nets >/dev/null
fi
exit $code

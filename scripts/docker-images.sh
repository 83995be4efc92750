#!/usr/bin/env bash
# Builds relay-core's images without a registry (docker/Dockerfile):
#   relay-core-base:bookworm   Debian bookworm made with debootstrap from Debian's mirror, with the
#                              packages the images need, imported with `docker import`
#   relay-core:TAG             the relay daemon          (target relay)
#   relay-core-cp:TAG          the local control plane   (target control-plane)
#   relay-core-nats:TAG        nats-server -js           (target nats)
# TAG is $RELAY_CORE_IMAGE_TAG or "dev". The base is built once and reused (remove it to rebuild);
# the others are rebuilt from the working tree each time (Docker's layer cache keeps that quick).
# With a registry, `docker build --target relay -f docker/Dockerfile CONTEXT` works on the public
# debian:bookworm-slim too; CONTEXT is what `stage` writes.
#
#   scripts/docker-images.sh [all|base|stage]      (needs a running engine: scripts/docker-engine.sh start)
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${RELAY_CORE_IMAGE_TAG:-dev}
BASE=relay-core-base:bookworm
PACKAGES=wireguard-go,wireguard-tools,iproute2,nftables,iputils-ping,procps,ca-certificates,nats-server,curl,tini
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=.cache/docker
CTX=$CACHE/context

base() {
  if docker image inspect "$BASE" >/dev/null 2>&1; then
    echo "docker-images: $BASE exists"
    return 0
  fi
  command -v debootstrap >/dev/null || {
    echo "docker-images: installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  local root=$CACHE/rootfs-bookworm
  rm -rf "$root"
  mkdir -p "$root"
  echo "docker-images: debootstrap bookworm ($MIRROR) into $root"
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 || {
    echo "docker-images: debootstrap failed; the end of $CACHE/debootstrap.log:" >&2
    tail -n 20 "$CACHE/debootstrap.log" >&2
    exit 1
  }
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "relay-core base: debootstrap bookworm minbase + $PACKAGES" - "$BASE" >/dev/null
  rm -rf "$root"
  echo "docker-images: $BASE imported"
}

stage() {
  [[ -x node_modules/node/bin/node && -x node_modules/deno/deno ]] || { echo "docker-images: run 'npm run setup' first" >&2; exit 1; }
  [[ -d .cache/deno ]] || { echo "docker-images: .cache/deno is missing: run 'npm run setup' first" >&2; exit 1; }
  rm -rf "$CTX"
  mkdir -p "$CTX/app" "$CTX/cp/node_modules/.bin" "$CTX/docker"
  cp -a package.json package-lock.json bin src supabase "$CTX/app/"
  # Contents (dir/.), not the name: in a git worktree node_modules and .cache/deno may be symlinks to the
  # main checkout, and `cp -a` would copy the link itself (npm prune would then work on a link, Docker
  # would find no deno-cache).
  mkdir -p "$CTX/app/node_modules" "$CTX/cp/deno-cache"
  cp -a node_modules/. "$CTX/app/node_modules/"
  # Production dependencies only; Node, Deno and PGlite go where only the images that need them take them.
  (cd "$CTX/app" && npm prune --omit=dev --no-audit --no-fund --ignore-scripts >/dev/null)
  mv "$CTX/app/node_modules/deno" "$CTX/app/node_modules/@electric-sql" "$CTX/cp/node_modules/"
  rm -rf "$CTX/app/node_modules/node" "$CTX/app/node_modules/@deno" "$CTX/app/node_modules/.bin/node" "$CTX/app/node_modules/.bin/deno"
  ln -s ../deno/deno "$CTX/cp/node_modules/.bin/deno"
  cp -L node_modules/node/bin/node "$CTX/node"
  cp -a .cache/deno/. "$CTX/cp/deno-cache/"
  cp -a docker/relay-entrypoint.sh docker/nats-entrypoint.sh "$CTX/docker/"
  echo "docker-images: context in $CTX ($(du -sh "$CTX" | cut -f1))"
}

build() {
  for target in relay control-plane nats; do
    local image
    case $target in relay) image=relay-core:$TAG ;; control-plane) image=relay-core-cp:$TAG ;; nats) image=relay-core-nats:$TAG ;; esac
    echo "docker-images: building $image"
    DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$BASE" --target "$target" -t "$image" -f docker/Dockerfile "$CTX" >/dev/null
  done
  docker image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "relay-core(-cp|-nats)?:$TAG|$BASE" || true
}

timeout 5 docker info >/dev/null 2>&1 || { echo "docker-images: no Docker engine answers (scripts/docker-engine.sh start)" >&2; exit 1; }
mkdir -p "$CACHE"
case "${1:-all}" in
  base) base ;;
  stage) stage ;;
  all) base; stage; build ;;
  *) echo "usage: $0 [all|base|stage]" >&2; exit 2 ;;
esac

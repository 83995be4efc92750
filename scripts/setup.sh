#!/usr/bin/env bash
# Installs everything relay-core's main command and its tests need on a fresh Debian 12 machine:
# Debian packages (apt-get, no recommends) and npm packages (which bring Node 24 and Deno).
# Idempotent: installs only what is missing. Needs root for the Debian part.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(nats-server postgresql wireguard-go wireguard-tools iproute2 nftables iputils-ping procps curl ca-certificates iperf3 tcpdump chromium)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root, or install them with apt-get)" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a default cluster and nats-server as services on install; the project runs its own.
  (systemctl disable --now postgresql nats-server 2>/dev/null || true)
  (pg_ctlcluster 15 main stop 2>/dev/null || true)
fi

# /dev/net/tun as Debian's udev makes it (mode 0666: opening it grants nothing, creating a device still
# needs CAP_NET_ADMIN). A host without udev (a container, some VMs) may have it root-only, and then the
# systemd unit's unprivileged relay cannot start wireguard-go (docs/operations.md, systemd).
if [[ -c /dev/net/tun && $(stat -c %a /dev/net/tun) != 666 && $(id -u) -eq 0 ]]; then
  echo "setup: /dev/net/tun was mode $(stat -c %a /dev/net/tun); setting Debian's 0666"
  chmod 0666 /dev/net/tun
fi

if [[ ! -x node_modules/.bin/node || ! -x node_modules/.bin/deno || package.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: installing npm packages"
  if [[ -f package-lock.json ]]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi
node_modules/.bin/node --version >/dev/null

# Deno fetches the Edge Functions' npm: imports on first run; do it now so the first request is not slow.
export DENO_DIR="$PWD/.cache/deno"
(cd supabase/functions && for f in */index.ts; do [[ -f "$f" ]] && ../../node_modules/.bin/deno cache --quiet "$f"; done) || {
  echo "setup: deno could not fetch the Edge Functions' dependencies" >&2
  exit 1
}
echo "setup: ok"

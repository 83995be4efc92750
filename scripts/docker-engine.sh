#!/usr/bin/env bash
# A Docker engine for relay-core's container tests and docker-compose.yml, where none runs.
#
#   scripts/docker-engine.sh start    use the running engine, or install Debian's docker.io (if
#                                     missing) and start dockerd as root with its networks in
#                                     198.19.0.0/16 (DESIGN.md: test networks in 198.18.0.0/15)
#   scripts/docker-engine.sh stop     stop the engine only if `start` started it
#   scripts/docker-engine.sh status
#
# `start` leaves a marker (/run/relay-core-dockerd.pid) only when it starts dockerd itself, so
# `stop` puts the machine back as it found it: an engine that was running keeps running.
set -euo pipefail

PIDFILE=/run/relay-core-dockerd.pid
SYSCTLS_BEFORE=/run/relay-core-dockerd.sysctls
# What an engine may change on the host; `stop` puts back what differs.
SYSCTLS=(net.ipv4.ip_forward net.ipv4.conf.all.forwarding net.ipv6.conf.all.forwarding)
LOG=/var/log/relay-core-dockerd.log
BIP=198.19.0.1/24
POOL=base=198.19.16.0/20,size=24

engine_up() { timeout 5 docker info >/dev/null 2>&1; }

ours() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

install_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io iptables)
  command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "docker-engine: missing ${missing[*]}, and installing them needs root" >&2
    exit 1
  fi
  echo "docker-engine: installing Debian's ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Install without starting the service: this script starts the engine with its own settings.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
  trap - EXIT
}

start() {
  install_packages
  if engine_up; then
    ours && echo "docker-engine: running (started by this script, pid $(cat $PIDFILE))" || echo "docker-engine: an engine is already running; using it as it is"
    return 0
  fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "docker-engine: no Docker engine answers and starting one needs root" >&2
    exit 1
  fi
  # --iptables=false and --ip-forward=false: the host's firewall and forwarding are left as they are
  # (network namespaces created later inherit the host's forwarding setting). Containers on one
  # network reach each other over its bridge, and nothing here needs NAT or routing to the outside.
  for k in "${SYSCTLS[@]}"; do echo "$k=$(sysctl -n "$k")"; done > "$SYSCTLS_BEFORE"
  echo "docker-engine: starting dockerd (bridge $BIP, networks from ${POOL}; log $LOG)"
  setsid dockerd --bip "$BIP" --default-address-pool "$POOL" --iptables=false --ip6tables=false --ip-forward=false --pidfile "$PIDFILE.dockerd" >"$LOG" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  for _ in $(seq 1 60); do
    engine_up && { echo "docker-engine: up"; return 0; }
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
    sleep 1
  done
  echo "docker-engine: dockerd did not come up; the end of $LOG:" >&2
  tail -n 20 "$LOG" >&2
  stop
  exit 1
}

stop() {
  if ! ours; then
    rm -f "$PIDFILE"
    echo "docker-engine: not started by this script; left as it is"
    return 0
  fi
  local pid
  pid=$(cat "$PIDFILE")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDFILE" "$PIDFILE.dockerd"
  if [[ -f $SYSCTLS_BEFORE ]]; then
    while IFS='=' read -r k v; do
      [[ "$(sysctl -n "$k")" == "$v" ]] || { sysctl -qw "$k=$v" && echo "docker-engine: $k put back to $v"; }
    done < "$SYSCTLS_BEFORE"
    rm -f "$SYSCTLS_BEFORE"
  fi
  echo "docker-engine: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) engine_up && echo "docker-engine: up$(ours && echo ' (started by this script)')" || { echo "docker-engine: down"; exit 1; } ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

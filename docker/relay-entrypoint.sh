#!/bin/sh
# Entrypoint of the relay image (under tini, which forwards signals and reaps wireguard-go).
#   (no arguments) or run [flags]   relay-core run; the relay id defaults to the hostname, the
#                                   endpoint to the address of the container's default-route interface and
#                                   RELAYNET_PORT (default 51820)
#   anything else                   relay-core with those arguments (status, events, ...)
set -e
if [ $# -eq 0 ] || [ "$1" = run ]; then
  [ $# -gt 0 ] && shift
  : "${RELAYNET_RELAY_ID:=$(hostname)}"
  if [ -z "${RELAYNET_ENDPOINT:-}" ]; then
    dev=$(ip -4 -o route show default | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')
    addr=$(ip -4 -o addr show dev "${dev:-eth0}" scope global | awk '{ split($4, a, "/"); print a[1]; exit }')
    if [ -z "$addr" ]; then
      echo "relay-entrypoint: no IPv4 address on the default-route interface; set RELAYNET_ENDPOINT=HOST:PORT" >&2
      exit 2
    fi
    RELAYNET_ENDPOINT="$addr:${RELAYNET_PORT:-51820}"
  fi
  export RELAYNET_RELAY_ID RELAYNET_ENDPOINT
  exec relay-core run "$@"
fi
exec relay-core "$@"

#!/bin/sh
# Entrypoint of the nats image: nats-server with JetStream in /data and monitoring on 8222.
# NATS decentralized auth (docs/security.md, "The bus"): the server trusts the operator of the control
# plane's /auth/nats-auth.conf (its --nats-auth-out; JWTs only, no secret) and keeps account JWTs in
# /data/jwt. It waits up to 120 s for that file. RELAYNET_NATS_AUTH=none runs without auth: an
# explicit choice, for a bus nobody else can reach.
# A node of a cluster: NATS_SERVER_NAME (its name) and NATS_CLUSTER_ROUTES (every node's host:port for
# routes, its own included, comma-separated); it listens for routes on 6222 (docker-compose.yml).
set -eu
conf=/data/nats.conf
{
  echo 'jetstream { store_dir: "/data" }'
  echo 'http_port: 8222'
  echo 'max_payload: 1048576'
  if [ -n "${NATS_CLUSTER_ROUTES:-}" ]; then
    [ -n "${NATS_SERVER_NAME:-}" ] || { echo "nats-entrypoint: NATS_CLUSTER_ROUTES needs NATS_SERVER_NAME" >&2; exit 1; }
    routes=$(echo "$NATS_CLUSTER_ROUTES" | tr ',' '\n' | sed 's|^|nats-route://|' | paste -sd, -)
    echo "server_name: $NATS_SERVER_NAME"
    echo "cluster { name: ${NATS_CLUSTER_NAME:-relaynet}, listen: 0.0.0.0:6222, routes: [$routes] }"
  fi
} > "$conf"
if [ "${RELAYNET_NATS_AUTH:-jwt}" != none ]; then
  i=0
  until [ -s /auth/nats-auth.conf ]; do
    i=$((i + 1))
    if [ "$i" -gt 600 ]; then echo "nats-entrypoint: no /auth/nats-auth.conf after 120 s (mount the control plane's --nats-auth-out there)" >&2; exit 1; fi
    sleep 0.2
  done
  cat /auth/nats-auth.conf >> "$conf"
  mkdir -p /data/jwt
  echo 'resolver: { type: full, dir: "/data/jwt", allow_delete: false, interval: "2m" }' >> "$conf"
fi
exec nats-server -c "$conf" "$@"

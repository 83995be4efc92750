#!/bin/bash
# Bring up a stock WireGuard client from a wg-quick file as wg-quick would (wireguard-go,
# `wg-quick strip` + `wg setconf`, address, MTU), then route everything into the tunnel except the
# entry relay's endpoint. The container's own network route goes too, so nothing on that network
# (the "internet" server, other relays) is reached around the tunnel.
#
#   wg-client-up.sh CONFIG ENTRY_HOST      (ENTRY_HOST: an address or a name to resolve)
set -euo pipefail
config=$1
entry=$2
[[ -f $config ]] || { echo "wg-client-up: no configuration at $config" >&2; exit 2; }
entry_ip=$(getent ahostsv4 "$entry" | awk '{ print $1; exit }')
[[ -n $entry_ip ]] || { echo "wg-client-up: cannot resolve $entry" >&2; exit 2; }
address=$(sed -n 's/^Address *= *\([^ ,]*\).*/\1/p' "$config" | head -n1)
mtu=$(sed -n 's/^MTU *= *\([0-9]*\).*/\1/p' "$config" | head -n1)
[[ -n $address ]] || { echo "wg-client-up: $config has no Address" >&2; exit 2; }

wireguard-go wg0
wg-quick strip "$config" > /tmp/wg0.setconf
wg setconf wg0 /tmp/wg0.setconf
rm -f /tmp/wg0.setconf
ip address add "$address" dev wg0
[[ -z $mtu ]] || ip link set dev wg0 mtu "$mtu"
ip link set dev wg0 up
dev=$(ip -4 -o route show default | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')
ip route add "$entry_ip/32" dev "$dev"
ip -4 -o route show dev "$dev" proto kernel scope link | while read -r net _; do ip route del "$net" dev "$dev"; done
ip route del default
ip route add default dev wg0
echo "wg-client-up: wg0 up as $address, entry $entry ($entry_ip)"

#!/usr/bin/env bash
# DHCP benchmark: link-up → lease time of virga's DHCP client against BusyBox udhcpc and
# dhcpcd (the client CirrOS uses), all against the same dnsmasq, in a network-namespace pair
# this script creates and deletes. Runs alternate between clients.
#
#   sudo bash bench/dhcp.sh [--runs N]
#
# Each run: flush vc0, take it down, then time `ip link set vc0 up` + the client until it has
# applied a lease (address and default route) and exited. Every client applies the lease itself
# (virga via netlink, udhcpc and dhcpcd via their scripts/netlink); none writes resolv.conf.
# dnsmasq runs with --no-ping so the server adds no delay of its own. dhcpcd runs twice: with
# CirrOS's settings (ARP-probes the offered address, RFC 5227) and with --noarp.
#
# Needs root, iproute2, dnsmasq (dnsmasq-base), busybox (busybox-static) and dhcpcd
# (dhcpcd-base); a missing baseline is skipped. DHCPC=/path/to/dhcpc overrides the build of
# `cargo build --release -p net-config --example dhcpc`.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=20
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    *) echo "usage: bench/dhcp.sh [--runs N]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench/dhcp.sh: needs root (network namespaces)" >&2; exit 1; }
command -v dnsmasq >/dev/null || { echo "bench/dhcp.sh: install dnsmasq-base" >&2; exit 1; }

if [ -z "${DHCPC:-}" ]; then
  cargo build -q --release -p net-config --example dhcpc
  DHCPC="${CARGO_TARGET_DIR:-target}/release/examples/dhcpc"
fi
DHCPC=$(realpath "$DHCPC")

work=$(mktemp -d)
srv="vbench$$-s"
cli="vbench$$-c"
cleanup() {
  [ -n "${dnsmasq_pid:-}" ] && kill "$dnsmasq_pid" 2>/dev/null || true
  ip netns del "$srv" 2>/dev/null || true
  ip netns del "$cli" 2>/dev/null || true
  rm -f /var/lib/dhcpcd/vc0*.lease* 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$srv"
ip netns add "$cli"
ip link add vs0 netns "$srv" type veth peer name vc0 netns "$cli" address 02:00:00:be:00:01
ip -n "$srv" addr add 10.78.0.1/24 dev vs0
ip -n "$srv" link set lo up
ip -n "$srv" link set vs0 up
ip -n "$cli" link set lo up

ip netns exec "$srv" dnsmasq --no-daemon --conf-file=/dev/null --interface=vs0 --bind-interfaces \
  --port=0 --user=root --no-ping --dhcp-leasefile="$work/leases" \
  --dhcp-range=10.78.0.50,10.78.0.99,255.255.255.0,2m \
  --dhcp-option=option:router,10.78.0.1 --dhcp-option=option:dns-server,10.78.0.1 \
  >"$work/dnsmasq.log" 2>&1 &
dnsmasq_pid=$!
sleep 0.5

# udhcpc applies the lease with a script, as CirrOS's BusyBox-era images did.
cat >"$work/udhcpc.script" <<'EOF'
#!/bin/sh
case "$1" in
  bound|renew)
    ip addr add "$ip/$subnet" dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done ;;
esac
exit 0
EOF
chmod +x "$work/udhcpc.script"

# dhcpcd with the options CirrOS's dhcpcd.conf sets (no hooks: they would write resolv.conf).
cat >"$work/dhcpcd.conf" <<'EOF'
clientid
persistent
vendorclassid
option domain_name_servers, domain_name, domain_search
option classless_static_routes
option interface_mtu
option host_name
option ntp_servers
option rapid_commit
require dhcp_server_identifier
EOF

clients=(virga)
busybox udhcpc --help >/dev/null 2>&1 && clients+=(udhcpc) || echo "skipping udhcpc (no busybox)" >&2
if command -v dhcpcd >/dev/null; then clients+=(dhcpcd dhcpcd-noarp); else echo "skipping dhcpcd" >&2; fi

run_client() {
  case "$1" in
    virga) ip netns exec "$cli" "$DHCPC" --timeout 30 vc0 >/dev/null ;;
    udhcpc) ip netns exec "$cli" busybox udhcpc -f -q -n -t 10 -T 3 -i vc0 -s "$work/udhcpc.script" >/dev/null 2>&1 ;;
    dhcpcd) ip netns exec "$cli" dhcpcd -f "$work/dhcpcd.conf" -c /bin/true --noipv4ll -4 -1 -w -t 30 -q vc0 >/dev/null 2>&1 ;;
    dhcpcd-noarp) ip netns exec "$cli" dhcpcd -f "$work/dhcpcd.conf" -c /bin/true --noipv4ll --noarp -4 -1 -w -t 30 -q vc0 >/dev/null 2>&1 ;;
  esac
}

for i in $(seq 1 "$runs"); do
  for c in "${clients[@]}"; do
    ip -n "$cli" link set vc0 down
    ip -n "$cli" addr flush dev vc0
    rm -f /var/lib/dhcpcd/vc0*.lease* 2>/dev/null || true
    sleep 0.1
    t0=$(date +%s%N)
    ip -n "$cli" link set vc0 up
    if ! run_client "$c"; then echo "run $i: $c failed" >&2; tail -5 "$work/dnsmasq.log" >&2; exit 1; fi
    t1=$(date +%s%N)
    # The lease must really be applied.
    ip -n "$cli" -4 addr show dev vc0 | grep -q "inet 10.78.0." || { echo "run $i: $c applied no address" >&2; exit 1; }
    ip -n "$cli" route show default | grep -q "via 10.78.0.1" || { echo "run $i: $c applied no default route" >&2; exit 1; }
    echo "$c $(( (t1 - t0) / 1000 ))" >>"$work/times"
  done
done

python3 - "$work/times" "$runs" <<'PY'
import statistics, sys, collections
times = collections.OrderedDict()
for line in open(sys.argv[1]):
    c, us = line.split()
    times.setdefault(c, []).append(int(us) / 1000)
base = statistics.median(times["virga"])
print(f"DHCP link-up -> lease (ms), {sys.argv[2]} runs each, dnsmasq in a netns pair, veth")
print(f"| client | median | mean | min | max | median vs virga |")
print(f"|---|---:|---:|---:|---:|---:|")
names = {"virga": "virga (net-config)", "udhcpc": "busybox udhcpc", "dhcpcd": "dhcpcd (CirrOS settings)",
         "dhcpcd-noarp": "dhcpcd --noarp"}
for c, t in times.items():
    m = statistics.median(t)
    print(f"| {names[c]} | {m:.1f} | {statistics.mean(t):.1f} | {min(t):.1f} | {max(t):.1f} | {m / base:.2f}x |")
PY

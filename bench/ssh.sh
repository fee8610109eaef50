#!/usr/bin/env bash
# SSH benchmark: virga's SSH server (crates/ssh-server) against Dropbear, in the same run, on
# loopback, with the same OpenSSH client, key and commands.
#
#   bash bench/ssh.sh [--runs N] [--mib M]
#
# Metrics (runs alternate between the servers):
#   * connect → first output: a fresh `ssh host echo x`, from spawning the client to the first
#     byte on its stdout (key exchange, public-key auth, session, exec). Median and minimum.
#   * upload / download: M MiB through `cat` over one multiplexed connection (the connection is
#     set up once, so this is channel throughput), and through `scp` (SFTP) end to end.
# Ratios are virga/dropbear: below 1 is better for latency, above 1 is better for throughput.
#
# Needs: ssh, scp, ssh-keygen (openssh-client), dropbear + dropbearkey (Debian: dropbear-bin),
# /usr/lib/sftp-server for scp against Dropbear (openssh-sftp-server), python3, and root (Dropbear
# reads ~root/.ssh/authorized_keys: it runs in a private mount namespace where a temporary home
# is bind-mounted over /root, so the real one is never touched).
# VIRGA_SSHD=/path/to/virga-sshd-dev skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=20
mib=64
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --mib) mib=$2; shift 2 ;;
    *) echo "usage: bench/ssh.sh [--runs N] [--mib M]" >&2; exit 2 ;;
  esac
done

for tool in ssh scp ssh-keygen dropbear dropbearkey python3 unshare; do
  command -v "$tool" >/dev/null || { echo "bench/ssh.sh: $tool not found" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "bench/ssh.sh: run as root (see header)" >&2; exit 1; }

if [ -z "${VIRGA_SSHD:-}" ]; then
  cargo build -q --release -p ssh-server --bin virga-sshd-dev
  VIRGA_SSHD="${CARGO_TARGET_DIR:-target}/release/virga-sshd-dev"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

ssh-keygen -q -t ed25519 -N '' -f "$work/id"
mkdir -p "$work/home/.ssh" && chmod 700 "$work/home/.ssh"
cp "$work/id.pub" "$work/home/.ssh/authorized_keys"
chmod 600 "$work/home/.ssh/authorized_keys"

# virga: port 0, the server prints the port it got.
"$VIRGA_SSHD" --listen 127.0.0.1:0 --host-key-dir "$work/virga-hk" \
  --authorized-keys "$work/home/.ssh/authorized_keys" --shell /bin/sh --log warn \
  >"$work/virga.out" 2>"$work/virga.log" &
pids+=($!)
for _ in $(seq 100); do grep -q '^listening on' "$work/virga.out" 2>/dev/null && break; sleep 0.1; done
vport=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/virga.out" | head -1)
[ -n "$vport" ] || { echo "virga sshd did not start:" >&2; cat "$work/virga.log" >&2; exit 1; }

# Dropbear: an ed25519 host key, password logins off, root's home replaced in its namespace.
dropbearkey -t ed25519 -f "$work/dropbear-hk" >/dev/null 2>&1
dport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
unshare -m sh -c "mount --bind '$work/home' /root && exec dropbear -F -E -s -p 127.0.0.1:$dport \
  -r '$work/dropbear-hk' -P '$work/dropbear.pid'" 2>"$work/dropbear.log" &
pids+=($!)
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$dport),0.2)" 2>/dev/null && break
  sleep 0.1
done

head -c "$((mib * 1048576))" /dev/urandom >"$work/blob"

python3 - "$work" "$vport" "$dport" "$runs" "$mib" <<'PY'
import datetime, os, statistics, subprocess, sys, time

work, vport, dport, runs, mib = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
servers = {"virga": vport, "dropbear": dport}
base = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
        "-i", f"{work}/id"]

def ssh(port, *extra):
    return ["ssh", *base, "-p", port, *extra, "root@127.0.0.1"]

def first_output_ms(port):
    t0 = time.perf_counter()
    p = subprocess.Popen(ssh(port) + ["echo x"], stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = p.stdout.read(1)
    t1 = time.perf_counter()
    rest = p.stdout.read()
    err = p.stderr.read()
    p.wait()
    if first + rest != b"x\n" or p.returncode != 0:
        sys.exit(f"ssh to port {port} failed: {err.decode(errors='replace')}")
    return (t1 - t0) * 1000

def timed(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {r.stderr.decode(errors='replace')}")
    return dt

# Cipher and kex the client negotiated with each server (same client, default preferences).
negotiated = {}
for name, port in servers.items():
    v = subprocess.run(ssh(port, "-v") + ["true"], capture_output=True, text=True)
    lines = [l for l in v.stderr.splitlines() if "kex: server->client cipher:" in l or "kex: algorithm:" in l]
    negotiated[name] = "; ".join(l.split("debug1: ", 1)[-1] for l in lines)

# Warm-up (page cache, first fork), then alternate.
for port in servers.values():
    for _ in range(2):
        first_output_ms(port)
lat = {n: [] for n in servers}
for _ in range(runs):
    for name, port in servers.items():
        lat[name].append(first_output_ms(port))

# Throughput over one multiplexed connection per server.
size = mib * 1048576
thr = {n: {"up": [], "down": [], "scp_up": [], "scp_down": []} for n in servers}
masters = {}
for name, port in servers.items():
    ctl = f"{work}/ctl-{name}"
    masters[name] = subprocess.Popen(ssh(port, "-o", "ControlMaster=yes", "-o", f"ControlPath={ctl}", "-N"),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(ctl):
            break
        time.sleep(0.05)
reps = 3
for _ in range(reps):
    for name, port in servers.items():
        mux = ssh(port, "-o", f"ControlPath={work}/ctl-{name}")
        with open(f"{work}/blob", "rb") as f:
            thr[name]["up"].append(timed(mux + ["cat > /dev/null"], stdin=f))
        thr[name]["down"].append(timed(mux + [f"head -c {size} /dev/zero"]))
        scp = ["scp", *base, "-P", port]
        thr[name]["scp_up"].append(timed(scp + [f"{work}/blob", f"root@127.0.0.1:{work}/up-{name}"]))
        thr[name]["scp_down"].append(timed(scp + [f"root@127.0.0.1:{work}/up-{name}", f"{work}/down-{name}"]))
        if os.path.getsize(f"{work}/down-{name}") != size:
            sys.exit(f"scp via {name}: wrong size")
for m in masters.values():
    m.terminate()
    m.wait()

client = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print(f"SSH benchmark, {now}: loopback, {os.cpu_count()} CPUs, {runs} latency runs, "
      f"{mib} MiB x {reps} transfers, client {client}")
for n in servers:
    print(f"  {n}: {negotiated[n]}")
rows = []
def row(label, v, d, unit_better):
    rows.append((label, v, d, v / d if d else float("nan"), unit_better))
med = statistics.median
row("connect -> first output, median (ms)", med(lat["virga"]), med(lat["dropbear"]), "lower")
row("connect -> first output, min (ms)", min(lat["virga"]), min(lat["dropbear"]), "lower")
for key, label in [("up", "upload, cat > /dev/null (MiB/s)"), ("down", "download, head -c /dev/zero (MiB/s)"),
                   ("scp_up", "scp upload, incl. connect (MiB/s)"), ("scp_down", "scp download, incl. connect (MiB/s)")]:
    row(label, mib / med(thr["virga"][key]), mib / med(thr["dropbear"][key]), "higher")
w = max(len(r[0]) for r in rows)
print(f"| {'metric'.ljust(w)} | {'virga':>9} | {'dropbear':>9} | {'virga/dropbear':>14} | better |")
print(f"|{'-' * (w + 2)}|{'-' * 11}|{'-' * 11}|{'-' * 16}|--------|")
for label, v, d, ratio, better in rows:
    print(f"| {label.ljust(w)} | {v:9.1f} | {d:9.1f} | {ratio:14.2f} | {better:6} |")
PY

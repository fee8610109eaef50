#!/usr/bin/env bash
# Network benchmark inside a booted guest (issue 4): virga's DHCP client and SSH server against
# BusyBox udhcpc and Debian's Dropbear, all in ONE image, ONE boot, on the same QEMU user-mode
# (slirp) network, with the same OpenSSH client and key on the host.
#
#   bash bench/guest-net.sh [--runs N] [--mib M] [--record]
#
# The image is the default one (derived from virga.toml) plus, as [[files]]:
#   * Debian's dropbear (dropbear-bin) with the shared libraries `ldd` lists and the dynamic
#     loader, at the same paths; an ed25519 host key made here with dropbearkey; OpenSSH's
#     sftp-server at /usr/lib/sftp-server (Dropbear's SFTP subsystem, for scp);
#   * the `dhcpc` example of net-config (the same `net_config::run_dhcp` PID 1 uses at boot,
#     as a static musl binary), so virga's client can run again after boot like udhcpc;
#   * the in-guest DHCP loop below.
# User-data starts Dropbear on port 2222 next to virga's sshd on 22; `virga run --ssh-port`
# and `--forward` forward two host ports. Both servers authorize the key virga injects
# (root's authorized_keys, written from metadata).
#
# Metrics (medians of N unless noted; runs alternate between the two sides):
#   * connect → first output: a fresh `ssh host echo x`, host clock, spawn to first byte.
#   * upload / download: M MiB through `cat > /dev/null` / `head -c M /dev/zero` over one
#     multiplexed connection per server (channel throughput); scp (SFTP) end to end. 3 reps.
#   * link-up → lease, in the guest after boot: `ip link set eth0 up` + the client until it has
#     applied the lease and exited; timed with /dev/kmsg stamps (BusyBox date has no %N).
#     The boot-time lease (PID 1's own log line) and the `network` stage are shown for virga.
#   * guest binary size: release musl build with and without the `ssh` feature.
# Ratios are virga/other: below 1 is better for times and sizes, above 1 for throughput.
#
# Needs: QEMU, ssh/scp (openssh-client), dropbear + dropbearkey (dropbear-bin),
# /usr/lib/openssh/sftp-server (openssh-sftp-server), ldd, python3, the musl target.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5
mib=16
record=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --mib) mib=$2; shift 2 ;;
    --record) record=1; shift ;;
    *) echo "usage: bench/guest-net.sh [--runs N] [--mib M] [--record]" >&2; exit 2 ;;
  esac
done

DROPBEAR=/usr/sbin/dropbear
SFTP_SERVER=/usr/lib/openssh/sftp-server
for tool in ssh scp dropbearkey ldd python3 qemu-system-x86_64 "$DROPBEAR" "$SFTP_SERVER"; do
  command -v "$tool" >/dev/null || { echo "bench/guest-net.sh: $tool not found" >&2; exit 1; }
done

target="${CARGO_TARGET_DIR:-target}"
musl="$target/x86_64-unknown-linux-musl/release"
work=$(mktemp -d)
vm_pid=
cleanup() {
  if [ -n "$vm_pid" ] && kill -0 "$vm_pid" 2>/dev/null; then
    kill "$vm_pid" 2>/dev/null || true
    wait "$vm_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "building virga, the guest binary with and without SSH, and the dhcpc example..." >&2
cargo build -q -p virga-cli
virga="$target/debug/virga"
# Without SSH first: the default build then leaves the usual binary in place.
cargo build -q --release --target x86_64-unknown-linux-musl -p virga-guest --no-default-features
cp "$musl/virga-guest" "$work/guest-nossh"
cargo build -q --release --target x86_64-unknown-linux-musl -p virga-guest
cp "$musl/virga-guest" "$work/guest-ssh"
cargo build -q --release --target x86_64-unknown-linux-musl -p net-config --example dhcpc
cp "$musl/examples/dhcpc" "$work/dhcpc"

dropbearkey -t ed25519 -f "$work/dropbear_ed25519_host_key" >/dev/null 2>&1

# In-guest DHCP loop: alternate the two clients; the kernel stamps each start/end in dmesg.
cat >"$work/udhcpc.script" <<'EOF'
#!/bin/sh
# Applies a lease the way bench/dhcp.sh's udhcpc does (no resolv.conf).
case "$1" in
  bound|renew)
    ip addr add "$ip/$subnet" dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done ;;
esac
exit 0
EOF
cat >"$work/dhcp-loop.sh" <<'EOF'
#!/bin/sh
# usage: dhcp-loop.sh RUNS — prints "done" when finished; timings are in dmesg (gnb: lines).
echo on >/proc/sys/kernel/printk_devkmsg
for i in $(seq 1 "$1"); do
  for c in virga udhcpc; do
    ip link set eth0 down
    ip addr flush dev eth0
    sleep 0.3
    echo "<7>gnb: start $c $i" >/dev/kmsg
    ip link set eth0 up
    case $c in
      virga) /usr/local/bin/virga-dhcpc --timeout 30 eth0 >/dev/null ;;
      udhcpc) udhcpc -f -q -n -t 10 -T 3 -i eth0 -s /etc/bench/udhcpc.script >/dev/null 2>&1 ;;
    esac
    rc=$?
    echo "<7>gnb: end $c $i" >/dev/kmsg
    if [ $rc != 0 ] || ! ip -4 addr show dev eth0 | grep -q "inet 10.0.2.15/24" \
        || ! ip route show default | grep -q "via 10.0.2.2"; then
      echo "run $i: $c failed (exit $rc) or applied no address/default route"
      exit 1
    fi
  done
done
echo done
EOF

cat >"$work/user-data" <<'EOF'
#!/bin/sh
# bench/guest-net.sh: Dropbear on 2222, next to virga's sshd on 22.
setsid /usr/sbin/dropbear -F -E -s -p 2222 -r /etc/dropbear/dropbear_ed25519_host_key \
  -P /run/dropbear.pid </dev/null >/run/dropbear.log 2>&1 &
EOF

# The spec: virga.toml plus the files above; Dropbear's libraries where ldd finds them.
python3 - "$work" "$DROPBEAR" "$SFTP_SERVER" <<'PY'
import os, pathlib, re, subprocess, sys, tomllib
work, dropbear, sftp = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
text = pathlib.Path("virga.toml").read_text()
tomllib.loads(text)
assert 'name = "virga-default"' in text, "virga.toml must name the image"
text = text.replace('name = "virga-default"', 'name = "virga-guest-net-bench"')
files = [(dropbear, dropbear, "0755"), ("/usr/lib/sftp-server", sftp, "0755"),
         ("/etc/dropbear/dropbear_ed25519_host_key", work / "dropbear_ed25519_host_key", "0600"),
         ("/usr/local/bin/virga-dhcpc", work / "dhcpc", "0755"),
         ("/etc/bench/udhcpc.script", work / "udhcpc.script", "0755"),
         ("/etc/bench/dhcp-loop.sh", work / "dhcp-loop.sh", "0755")]
def ldd(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    return {m.group(1) for m in re.finditer(r"(/\S+)\s+\(0x", out)}
dropbear_libs, sftp_libs = ldd(dropbear), ldd(sftp)
assert any("ld-linux" in l for l in dropbear_libs), "ldd listed no dynamic loader"
for lib in sorted(dropbear_libs | sftp_libs):
    files.append((lib, os.path.realpath(lib), "0755"))
libsize = sum(os.path.getsize(os.path.realpath(l)) for l in dropbear_libs
              if not re.search(r"/(libc\.so|ld-linux)", l))
for path, src, mode in files:
    text += f'\n[[files]]\npath = "{path}"\nsource = "{src}"\nmode = "{mode}"\n'
(work / "bench.toml").write_text(text)
# Dropbear's own footprint, for the size rows: the binary and its libraries other than libc.
(work / "dropbear-size").write_text(f"{os.path.getsize(dropbear)} {libsize}\n")
PY

echo "building the image..." >&2
$virga build -q --spec "$work/bench.toml" --guest-binary "$work/guest-ssh" --out "$work/img" >/dev/null

ports=$(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
read -r vport dport <<<"$ports"
key="${XDG_DATA_HOME:-$HOME/.local/share}/virga/ssh/id_ed25519"

echo "booting (virga sshd on 127.0.0.1:$vport, Dropbear on 127.0.0.1:$dport)..." >&2
"$virga" run --out "$work/img" --ssh-port "$vport" --forward "$dport:2222" \
  --user-data "$work/user-data" --timeout 1200 --log "$work/console.log" \
  </dev/null >"$work/run.out" 2>&1 &
vm_pid=$!

python3 - "$work" "$vport" "$dport" "$key" "$runs" "$mib" "$record" <<'PY'
import datetime, json, os, pathlib, re, statistics, subprocess, sys, time

work = pathlib.Path(sys.argv[1])
vport, dport, key = sys.argv[2], sys.argv[3], sys.argv[4]
runs, mib, record = int(sys.argv[5]), int(sys.argv[6]), sys.argv[7] == "1"
servers = {"virga": vport, "dropbear": dport}
base = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
        "-o", "ConnectTimeout=20", "-i", key]

def ssh(port, *extra):
    return ["ssh", *base, "-p", port, *extra, "root@127.0.0.1"]

def console():
    return (work / "console.log").read_text(errors="replace") if (work / "console.log").exists() else ""

def fail(msg):
    tail = "\n".join("  | " + l for l in console().splitlines()[-20:])
    sys.exit(f"bench/guest-net.sh: {msg}\nconsole:\n{tail}")

def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)

def wait_ssh(port, what, limit=300):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if run(ssh(port) + ["true"], timeout=60).returncode == 0:
                return
        except subprocess.TimeoutExpired:
            pass
        time.sleep(1)
    fail(f"{what} did not accept SSH within {limit}s")

wait_ssh(vport, "virga's sshd")
ready = next((l for l in console().splitlines() if "virga: ready {" in l), None)
if ready is None:
    fail("no ready line on the console")
ready = json.loads(ready.split("virga: ready ", 1)[1])
wait_ssh(dport, "Dropbear", 60)
# Dropbear really is Dropbear, and it is still running (started by user-data before ready).
v = run(ssh(dport, "-v") + ["true"])
if "remote software version dropbear" not in v.stderr:
    fail("port 2222 is not Dropbear")
r = run(ssh(vport) + ["kill -0 $(cat /run/dropbear.pid) && echo alive"])
if r.stdout.strip() != "alive":
    fail(f"Dropbear is not running: {r.stderr}")

negotiated = {}
for name, port in servers.items():
    v = run(ssh(port, "-v") + ["true"])
    lines = [l for l in v.stderr.splitlines() if "kex: algorithm:" in l or "kex: server->client cipher:" in l
             or "kex: host key algorithm:" in l]
    negotiated[name] = "; ".join(l.split("debug1: ", 1)[-1] for l in lines)

def first_output_ms(port):
    t0 = time.perf_counter()
    p = subprocess.Popen(ssh(port) + ["echo x"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    first = p.stdout.read(1)
    t1 = time.perf_counter()
    rest, err = p.stdout.read(), p.stderr.read()
    p.wait()
    if first + rest != b"x\n" or p.returncode != 0:
        fail(f"ssh to port {port} failed: {err.decode(errors='replace')}")
    return (t1 - t0) * 1000

def timed(cmd, stdin=subprocess.DEVNULL):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        fail(f"{' '.join(cmd)} failed: {r.stderr.decode(errors='replace')}")
    return dt

print("measuring SSH connect latency...", file=sys.stderr)
for port in servers.values():
    first_output_ms(port)  # warm-up: page cache, first fork, the guest's ARP/TCP state
lat = {n: [] for n in servers}
for _ in range(runs):
    for name, port in servers.items():
        lat[name].append(first_output_ms(port))

print("measuring throughput...", file=sys.stderr)
size = mib * 1048576
blob = work / "blob"
blob.write_bytes(os.urandom(size))
reps = 3
thr = {n: {"up": [], "down": [], "scp_up": [], "scp_down": []} for n in servers}
masters = {}
for name, port in servers.items():
    ctl = work / f"ctl-{name}"
    masters[name] = subprocess.Popen(ssh(port, "-o", "ControlMaster=yes", "-o", f"ControlPath={ctl}", "-N"),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
    for _ in range(600):
        if ctl.exists():
            break
        time.sleep(0.1)
    else:
        fail(f"no multiplexed connection to {name}")
for _ in range(reps):
    for name, port in servers.items():
        mux = ssh(port, "-o", f"ControlPath={work}/ctl-{name}")
        with open(blob, "rb") as f:
            thr[name]["up"].append(timed(mux + ["cat > /dev/null"], stdin=f))
        thr[name]["down"].append(timed(mux + [f"head -c {size} /dev/zero"]))
        scp = ["scp", *base, "-P", port]
        thr[name]["scp_up"].append(timed(scp + [str(blob), "root@127.0.0.1:/tmp/blob"]))
        down = work / f"down-{name}"
        thr[name]["scp_down"].append(timed(scp + ["root@127.0.0.1:/tmp/blob", str(down)]))
        if down.read_bytes() != blob.read_bytes():
            fail(f"scp via {name}: the file came back different")
        down.unlink()
        run(mux + ["rm -f /tmp/blob"])
for m in masters.values():
    m.terminate()
    m.wait()

print("measuring DHCP in the guest...", file=sys.stderr)
# The loop takes eth0 down, so it runs detached; poll for its end.
r = run(ssh(vport) + [f"setsid /etc/bench/dhcp-loop.sh {runs} >/run/dhcp-loop.out 2>&1 </dev/null &"])
if r.returncode != 0:
    fail(f"cannot start the DHCP loop: {r.stderr}")
deadline = time.monotonic() + 60 + 30 * runs
out = ""
while time.monotonic() < deadline:
    time.sleep(2)
    try:
        r = run(ssh(vport) + ["cat /run/dhcp-loop.out"], timeout=30)
    except subprocess.TimeoutExpired:
        continue
    out = r.stdout
    if "done" in out or "failed" in out:
        break
if "done" not in out:
    fail(f"DHCP loop did not finish: {out}")
stamps = {}
for line in run(ssh(vport) + ["dmesg"]).stdout.splitlines():
    m = re.match(r"\[\s*([0-9.]+)\] gnb: (start|end) (\S+) (\d+)$", line)
    if m:
        stamps[(m.group(3), int(m.group(4)), m.group(2))] = float(m.group(1))
dhcp = {c: [(stamps[(c, i, "end")] - stamps[(c, i, "start")]) * 1000 for i in range(1, runs + 1)]
        for c in ("virga", "udhcpc")}
boot_lease = re.search(r"virga:\s+INFO eth0: lease \S+ from \S+ in (\d+) ms", console())
network_stage = next((s["ms"] for s in ready["stages"] if s["name"] == "network"), None)

run(ssh(vport) + ["poweroff"])
for _ in range(120):
    if "virga: power-off" in console():
        break
    time.sleep(0.5)
else:
    fail("the guest did not power off")

# Sizes.
g_ssh = (work / "guest-ssh").stat().st_size
g_nossh = (work / "guest-nossh").stat().st_size
db_bin, db_libs = map(int, (work / "dropbear-size").read_text().split())
manifest = json.loads((work / "img" / "manifest.json").read_text())

med = statistics.median
rows = []
def row(metric, v, o, fmt="{:,.1f}", ratio=True):
    f = lambda x: "—" if x is None else fmt.format(x)
    rt = f"{v / o:.2f}" if ratio and v is not None and o else "—"
    rows.append(f"| {metric} | {f(v)} | {f(o)} | {rt} |")
row("SSH connect → first output, median (ms)", med(lat["virga"]), med(lat["dropbear"]))
row("SSH connect → first output, min (ms)", min(lat["virga"]), min(lat["dropbear"]))
for k, label in [("up", "upload `cat > /dev/null`"), ("down", "download `head -c /dev/zero`"),
                 ("scp_up", "scp upload, incl. connect"), ("scp_down", "scp download, incl. connect")]:
    row(f"{label} (MiB/s)", mib / med(thr["virga"][k]), mib / med(thr["dropbear"][k]), "{:,.2f}")
row("DHCP link-up → lease applied, after boot, median (ms)", med(dhcp["virga"]), med(dhcp["udhcpc"]))
row("DHCP link-up → lease applied, after boot, min (ms)", min(dhcp["virga"]), min(dhcp["udhcpc"]))
row("DHCP at boot: PID 1's lease line (ms, one boot)",
    float(boot_lease.group(1)) if boot_lease else None, None, "{:,.0f}", ratio=False)
row("DHCP at boot: `network` stage (ms, one boot)", network_stage, None, "{:,.1f}", ratio=False)
row("guest binary with SSH (bytes)", g_ssh, None, "{:,}", ratio=False)
row("guest binary without SSH (`--no-default-features`) (bytes)", g_nossh, None, "{:,}", ratio=False)
row("SSH server size: virga's growth vs. dropbear binary (bytes)", g_ssh - g_nossh, db_bin, "{:,}")
row("SSH server size: virga's growth vs. dropbear + its libraries except libc (bytes)",
    g_ssh - g_nossh, db_bin + db_libs, "{:,}")

load = os.getloadavg()
kernel = manifest["kernel"]["release"]
dropbear_v = run(["dpkg-query", "-W", "-f", "${Version}", "dropbear-bin"]).stdout or "?"
busybox_v = manifest.get("busybox") or "?"
client = run(["ssh", "-V"]).stderr.strip()
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
accel = "TCG" if "using TCG" in (work / "run.out").read_text(errors="replace") else "KVM"
head = (f"Guest network benchmark, {now}: kernel {kernel}, QEMU {accel}, 256 MiB, 1 vCPU, user-mode "
        f"networking; one boot; {runs} latency and DHCP runs per side, {mib} MiB x {reps} transfers; "
        f"Dropbear {dropbear_v} (dropbear-bin), BusyBox {busybox_v}; client {client}; host load "
        f"average {load[0]:.2f} at the end ({os.cpu_count()} CPUs).\n"
        f"Command: `bash bench/guest-net.sh --runs {runs} --mib {mib}`\n")
neg = "\n".join(f"- {n}: {negotiated[n]}" for n in servers) + "\n"
table = "\n".join(["| metric | virga | dropbear / udhcpc | ratio virga/other |", "|---|---:|---:|---:|", *rows])
print(head)
print(neg)
print(table)
if record:
    doc = pathlib.Path("docs/benchmarks.md")
    text = doc.read_text()
    start, end = "<!-- guest-net-bench:start -->", "<!-- guest-net-bench:end -->"
    block = f"{start}\n{head}\nNegotiated (same client defaults):\n{neg}\n{table}\n{end}"
    if start not in text:
        sys.exit("docs/benchmarks.md has no guest-net-bench markers")
    pre, rest = text.split(start, 1)
    doc.write_text(pre + block + rest.split(end, 1)[1])
    print("recorded in docs/benchmarks.md", file=sys.stderr)
PY
wait "$vm_pid" || { echo "bench/guest-net.sh: virga run exited non-zero:" >&2; tail -5 "$work/run.out" >&2; exit 1; }
vm_pid=

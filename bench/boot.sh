#!/usr/bin/env bash
# Boot benchmark: virga's Rust PID 1 against a CirrOS-style baseline (BusyBox init + shell
# scripts doing the same work) built in the same run, on the same kernel, booted the same way.
#
#   bash bench/boot.sh [--runs N] [--record]
#
# Prints a table of artifact sizes and boot times (medians over N boots each, alternating), with
# virga/baseline ratios. Guest times come from the guest's own clock; wall time is from QEMU
# launch to the ready line on the console. --record also writes the table into
# docs/benchmarks.md (between the boot-bench markers).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5
record=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --record) record=1; shift ;;
    *) echo "usage: bench/boot.sh [--runs N] [--record]" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build -q -p virga-cli
virga=target/debug/virga

# The baseline spec is derived from virga.toml so both images carry the same kernel and modules.
python3 bench/baseline-spec.py baseline-busybox "$work" > "$work/baseline.toml"

echo "building images..." >&2
$virga build -q --out "$work/virga" >/dev/null
$virga build -q --spec "$work/baseline.toml" --out "$work/baseline" >/dev/null

# Same work on both sides: no NIC, no datasource, no SSH host keys and no state disk, so virga's
# network, metadata, SSH and state stages have nothing to do (the foundation's PID 1 work
# against the baseline's rcS). "virga-auto" is virga's default image booted without
# `virga.state=none`: it looks for a state disk, so it waits for the storage drivers (the IDE
# probe) as a default boot does. "-q35" boots both images on QEMU's q35 machine, which has no
# IDE controller (like EC2 Nitro), virga with its default state-disk search.
for i in $(seq 1 "$runs"); do
  for side in virga baseline virga-auto virga-q35 baseline-q35; do
    img=${side%-auto}
    img=${img%-q35}
    machine=pc
    [ "${side%-q35}" != "$side" ] && machine=q35
    append="virga.ssh=0 virga.state=none"
    [ "$side" = virga-auto ] || [ "$side" = virga-q35 ] && append="virga.ssh=0"
    if ! $virga run --expect-ready --quiet --json --timeout 120 --no-net --datasource none --append "$append" \
        --machine "$machine" --out "$work/$img" > "$work/$side.$i.json" 2>"$work/$side.$i.err"; then
      echo "boot $i of $side failed:" >&2; cat "$work/$side.$i.err" >&2; exit 1
    fi
  done
  echo "run $i/$runs done" >&2
done

python3 - "$work" "$runs" "$record" <<'PY'
import sys, json, statistics, pathlib, datetime
work, runs, record = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
med = statistics.median
def boots(side):
    rs = [json.loads((work / f"{side}.{i}.json").read_text()) for i in range(1, runs + 1)]
    for r in rs:
        assert r["powered_off"], f"{side} did not power off cleanly"
    return rs
def stage(r, name):
    return sum(s["ms"] for s in r["ready"]["stages"] if s["name"] == name)
def load(side, img):
    rs = boots(side)
    m = json.loads((work / img / "manifest.json").read_text())
    size = {a["name"]: a["size"] for a in m["artifacts"]}
    return {
        "initramfs.img bytes": size["initramfs.img"],
        "vmlinuz bytes": size["vmlinuz"],
        "kernel → PID 1 (ms, guest)": med([r["ready"]["kernel_ms"] for r in rs]),
        "PID 1 → ready (ms, guest)": med([r["ready"]["init_ms"] for r in rs]),
        "launch → ready (ms, wall)": med([r["wall_ms"] for r in rs]),
    }
v, b = load("virga", "virga"), load("baseline", "baseline")
auto = boots("virga-auto")
kernel = json.loads((work / "virga" / "manifest.json").read_text())["kernel"]["release"]
fmt = lambda x: f"{x:,.0f}"
lines = ["| metric | virga | baseline | virga/baseline |", "|---|---:|---:|---:|"]
for k in v:
    lines.append(f"| {k} | {fmt(v[k])} | {fmt(b[k])} | {v[k] / b[k]:.2f} |")
pending = med([r["ready"].get("modules_pending", 0) for r in boots("virga")])
base_mod = med([stage(r, "modules") for r in boots("baseline")])
lines.append(f"| modules still loading at the ready line | {pending:.0f} | 0 | — |")
lines.append(f"| module loading before the ready line (ms) | in the background | {fmt(base_mod)} | — |")
auto_init = med([r["ready"]["init_ms"] for r in auto])
auto_state = med([stage(r, "state") for r in auto])
lines.append(f"| PID 1 → ready, virga looking for a state disk (ms) | {fmt(auto_init)} | {fmt(b['PID 1 → ready (ms, guest)'])} | {auto_init / b['PID 1 → ready (ms, guest)']:.2f} |")
lines.append(f"|   of which its `state` stage, waiting for the storage drivers (ms) | {fmt(auto_state)} | — | — |")
q35 = med([r["ready"]["init_ms"] for r in boots("virga-q35")])
q35_base = med([r["ready"]["init_ms"] for r in boots("baseline-q35")])
q35_state = med([stage(r, "state") for r in boots("virga-q35")])
lines.append(f"| PID 1 → ready on q35 (no IDE controller), virga looking for a state disk (ms) | {fmt(q35)} | {fmt(q35_base)} | {q35 / q35_base:.2f} |")
lines.append(f"|   of which its `state` stage (ms) | {fmt(q35_state)} | — | — |")
target = v["PID 1 → ready (ms, guest)"] / b["PID 1 → ready (ms, guest)"]
accel = "TCG (software emulation)"
head = (f"Boot benchmark, {datetime.date.today()}, kernel {kernel}, QEMU {accel}, 256 MiB, 1 vCPU, "
        f"medians of {runs} boots each.\nCommand: `bash bench/boot.sh --runs {runs}`\n")
table = "\n".join(lines)
verdict = (f"\nPID 1 → ready ratio {target:.2f} (target ≤ 0.20): {'met' if target <= 0.2 else 'NOT met'}; "
           f"with the state-disk search (waits for the IDE probe): {auto_init / b['PID 1 → ready (ms, guest)']:.2f}; "
           f"on q35 with the state-disk search: {q35 / q35_base:.2f}\n")
print(head); print(table); print(verdict)
if record:
    doc = pathlib.Path("docs/benchmarks.md")
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start, end = "<!-- boot-bench:start -->", "<!-- boot-bench:end -->"
    block = f"{start}\n{head}\n{table}\n{verdict}{end}"
    if start in text:
        pre, rest = text.split(start, 1)
        text = pre + block + rest.split(end, 1)[1]
    else:
        text += "\n## Boot: virga PID 1 vs CirrOS-style baseline\n\n" + block + "\n"
    doc.write_text(text)
PY

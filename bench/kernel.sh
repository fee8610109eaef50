#!/usr/bin/env bash
# Kernel benchmark: the default image on Debian's cloud kernel against the same image on the
# lean kernel (`[kernel] source = "build"`, profile cloud), built and booted in the same run.
#
#   bash bench/kernel.sh [--runs N] [--rebuild]
#
# Prints one table (stdout): bzImage and initramfs sizes, kernel → PID 1 and PID 1 → ready
# (guest clock), launch → ready (wall, host clock) — medians of N boots each, alternating, on
# QEMU's pc machine and on q35 —
# and the minimum RAM with which each image still reaches the ready line (bisection between 16
# and 128 MiB in 4 MiB steps). The boots for the times are bench/boot.sh's "virga" boots (no
# NIC, no datasource, no SSH, no state disk: the same devices and seed for both kernels); the
# minimum-RAM boots are plain `virga run` boots (user-mode network, SSH on), as in the e2e test.
# The lean kernel's build time comes from its cache entry (build.json: how long it took when it
# was built, and the load average then); --rebuild builds it again in a temporary cache to
# measure it now (minutes). `bash bench/record.sh kernel-bench "…" -- bash bench/kernel.sh`
# writes the output into docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5
rebuild=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --rebuild) rebuild=1; shift ;;
    *) echo "usage: bench/kernel.sh [--runs N] [--rebuild]" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build -q -p virga-cli
virga=target/debug/virga

# The lean spec is the repository's default spec with the kernel source switched: same modules
# (all built in), same userland, same compression.
sed '0,/^source = "debian"$/s//source = "build"\nconfig = "cloud"/' virga.toml > "$work/lean.toml"
grep -q '^source = "build"$' "$work/lean.toml" || { echo "virga.toml changed shape" >&2; exit 1; }

build_s=""
if [ "$rebuild" = 1 ]; then
  echo "building the lean kernel in a fresh cache (minutes)..." >&2
  start=$(date +%s.%N)
  VIRGA_CACHE_DIR="$work/cache" $virga build -q --spec "$work/lean.toml" --out "$work/rebuilt" >/dev/null
  build_s=$(echo "$(date +%s.%N) - $start" | bc)
  rm -rf "$work/cache"
fi

echo "building images (the lean kernel once per cache: minutes the first time)..." >&2
$virga build -q --out "$work/debian" >/dev/null
$virga build -q --spec "$work/lean.toml" --out "$work/lean" >/dev/null

boot() { # image run-number machine
  if ! $virga run --expect-ready --quiet --json --timeout 120 --no-net --datasource none \
      --append "virga.ssh=0 virga.state=none" --machine "$3" --out "$work/$1" \
      > "$work/$1.$3.$2.json" 2>"$work/$1.$3.$2.err"; then
    echo "boot $2 of $1 on $3 failed:" >&2; cat "$work/$1.$3.$2.err" >&2; exit 1
  fi
}
for i in $(seq 1 "$runs"); do
  for machine in pc q35; do
    boot debian "$i" $machine
    boot lean "$i" $machine
  done
  echo "run $i/$runs done" >&2
done

ready_with() { # image MiB → 0 when the ready line came
  local out
  out=$($virga run --expect-ready --quiet --json --timeout 60 --memory "$2" --out "$work/$1" 2>/dev/null || true)
  python3 -c 'import json,sys; sys.exit(0 if isinstance(json.loads(sys.argv[1] or "{}").get("ready"), dict) else 1)' "$out"
}
min_ram() { # image → smallest MiB (multiple of 4, 16..128) that reaches ready
  local lo=16 hi=128 mid
  ready_with "$1" $hi || { echo "none"; return; }
  if ready_with "$1" $lo; then echo $lo; return; fi
  while [ $((hi - lo)) -gt 4 ]; do
    mid=$(( (lo + hi) / 2 / 4 * 4 ))
    if ready_with "$1" $mid; then hi=$mid; else lo=$mid; fi
  done
  echo $hi
}
echo "finding the minimum RAM (bisection)..." >&2
min_debian=$(min_ram debian)
min_lean=$(min_ram lean)

python3 - "$work" "$runs" "$min_debian" "$min_lean" "$build_s" <<'PY'
import sys, json, statistics, pathlib, datetime
work, runs = pathlib.Path(sys.argv[1]), int(sys.argv[2])
min_debian, min_lean, build_s = sys.argv[3], sys.argv[4], sys.argv[5]
med = statistics.median
def boots(img, machine):
    rs = [json.loads((work / f"{img}.{machine}.{i}.json").read_text()) for i in range(1, runs + 1)]
    for r in rs:
        assert r["powered_off"], f"{img} on {machine} did not power off cleanly"
        assert r["ready"]["errors"] == 0, f"{img} on {machine}: errors at boot"
    return rs
def load(img):
    rs, q35 = boots(img, "pc"), boots(img, "q35")
    m = json.loads((work / img / "manifest.json").read_text())
    size = {a["name"]: a["size"] for a in m["artifacts"]}
    return m, {
        "vmlinuz (bzImage) bytes": size["vmlinuz"],
        "initramfs.img bytes": size["initramfs.img"],
        "modules in the image": len(m["modules"]),
        "kernel → PID 1 (ms, guest)": med([r["ready"]["kernel_ms"] for r in rs]),
        "PID 1 → ready (ms, guest)": med([r["ready"]["init_ms"] for r in rs]),
        "launch → ready (ms, wall)": med([r["wall_ms"] for r in rs]),
        "kernel → PID 1 on q35 (ms, guest)": med([r["ready"]["kernel_ms"] for r in q35]),
        "launch → ready on q35 (ms, wall)": med([r["wall_ms"] for r in q35]),
    }
dm, d = load("debian")
lm, l = load("lean")
d["minimum RAM to reach ready (MiB)"] = min_debian
l["minimum RAM to reach ready (MiB)"] = min_lean
origin = lm["kernel"]["origin"]
key = lm["kernel"]["origin_sha256"][:16]
import os
cache = os.environ.get("VIRGA_CACHE_DIR") or (
    os.path.join(os.environ["XDG_CACHE_HOME"], "virga") if os.environ.get("XDG_CACHE_HOME")
    else os.path.expanduser("~/.cache/virga"))
info = json.loads(pathlib.Path(cache, "kernels", key, "build.json").read_text())
fmt = lambda x: f"{x:,.0f}" if isinstance(x, (int, float)) else str(x)
def ratio(a, b):
    try:
        return f"{float(b) / float(a):.2f}"
    except (ValueError, ZeroDivisionError):
        return "—"
print(f"Kernel benchmark, {datetime.date.today()}: the default image (virga.toml) on "
      f"{dm['kernel']['release']} ({dm['kernel']['origin']}) and on {lm['kernel']['release']} "
      f"({origin}); QEMU TCG, 1 vCPU; times are medians of {runs} boots each (256 MiB, no NIC, "
      f"no datasource, no SSH, no state disk, as bench/boot.sh's virga boots) on QEMU's pc "
      f"machine (PIIX IDE) and, in the q35 rows, on q35 (AHCI, no IDE). Load average "
      f"{open('/proc/loadavg').read().split()[0]} at the end (2 CPUs shared).")
print(f"Command: `bash bench/kernel.sh --runs {runs}{' --rebuild' if build_s else ''}`\n")
print("| metric | Debian cloud kernel | lean kernel (cloud) | lean/Debian |")
print("|---|---:|---:|---:|")
for k in d:
    print(f"| {k} | {fmt(d[k])} | {fmt(l[k])} | {ratio(d[k], l[k]) if k != 'modules in the image' else '—'} |")
load_avg = info.get("load_average")
print(f"| lean kernel build, make -j{info['jobs']} (s) | — | {info['seconds']:,.0f} "
      f"(when cached{', load average %.1f' % load_avg if load_avg is not None else ''}) | — |")
if build_s:
    print(f"| lean kernel build, measured now in a fresh cache (s) | — | {float(build_s):,.0f} | — |")
print()
mib = l["vmlinuz (bzImage) bytes"] / (1 << 20)
k_ratio = l["kernel → PID 1 (ms, guest)"] / d["kernel → PID 1 (ms, guest)"]
w_ratio = l["launch → ready (ms, wall)"] / d["launch → ready (ms, wall)"]
def verdict(ok): return "met" if ok else "NOT met"
print(f"Targets: bzImage {mib:.2f} MiB (≤ 3 MiB): {verdict(mib <= 3)}; kernel → PID 1 ratio "
      f"{k_ratio:.2f} (≤ 0.70): {verdict(k_ratio <= 0.7)}; launch → ready ratio {w_ratio:.2f} "
      f"(≤ 0.50): {verdict(w_ratio <= 0.5)}; ready in {min_lean} MiB (≤ 32 MiB): "
      f"{verdict(min_lean.isdigit() and int(min_lean) <= 32)}.")
print(f"Lean kernel: {info['source_package']} {info['source_version']}, fragments "
      f"{' + '.join(info['configs'])}, {info['steps']} build steps, {info['toolchain']['gcc']}.")
PY

#!/usr/bin/env bash
# Disk image benchmark: sizes of the bootable disk (raw, qcow2, and what in the qcow2 is not
# the kernel) and launch → ready of disk boots (SeaBIOS, OVMF) against a direct kernel boot of
# the same build, in the same run; CirrOS 0.6.2 as a fixed reference.
#
#   bash bench/disk.sh [--runs N]
#
# Boots use TCG here (see docs/benchmarks.md); medians over N boots each, alternating. Every
# boot: no NIC, datasource none, no SSH server, so only the boot path differs.
# Record with: bash bench/record.sh disk-bench "Disk image: sizes and boot" -- bash bench/disk.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    *) echo "usage: bench/disk.sh [--runs N]" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build -q -p virga-cli
virga=target/debug/virga

echo "building the image (raw, qcow2)..." >&2
$virga build -q --format raw,qcow2 --out "$work/img" >/dev/null

# The qcow2 without the kernel: the same raw disk with vmlinuz-a's bytes on the ESP zeroed
# (the FAT writer stores each file contiguously), converted the same way.
python3 - "$work/img" <<'PY'
import sys, pathlib
d = pathlib.Path(sys.argv[1])
k = (d / "vmlinuz").read_bytes()
raw = bytearray((d / "virga.raw").read_bytes())
at = raw.find(k[:65536])
assert at >= 0 and raw[at:at + len(k)] == k, "vmlinuz-a not found contiguous on the ESP"
raw[at:at + len(k)] = bytes(len(k))
(d / "nokernel.raw").write_bytes(raw)
PY
qemu-img convert -q -f raw -O qcow2 -c -o compression_type=zlib "$work/img/nokernel.raw" "$work/img/nokernel.qcow2"
rm -f "$work/img/nokernel.raw"

boot() { # NAME ARGS...
  local name=$1 i=$2
  shift 2
  if ! $virga run --expect-ready --quiet --json --timeout 300 --no-net --datasource none \
      --append "virga.ssh=0" "$@" > "$work/$name.$i.json" 2>"$work/$name.$i.err"; then
    echo "boot $i of $name failed:" >&2; cat "$work/$name.$i.err" >&2; exit 1
  fi
}
for i in $(seq 1 "$runs"); do
  boot direct "$i" --out "$work/img"
  boot disk-bios "$i" --disk "$work/img/virga.qcow2" --firmware bios
  boot disk-uefi "$i" --disk "$work/img/virga.qcow2" --firmware uefi
  boot direct-q35 "$i" --out "$work/img" --machine q35
  echo "run $i/$runs done" >&2
done
# The CirrOS reference's minimum RAM: the disk boots in 128 MiB too.
boot disk-bios-128m 1 --disk "$work/img/virga.qcow2" --firmware bios --memory 128

python3 - "$work" "$runs" <<'PY'
import sys, json, statistics, pathlib
work, runs = pathlib.Path(sys.argv[1]), int(sys.argv[2])
img = work / "img"
m = json.loads((img / "manifest.json").read_text())
size = {a["name"]: a["size"] for a in m["artifacts"]}
d = m["disk"]
mb = lambda b: f"{b / 1e6:.2f} MB"
raw_alloc = (img / "virga.raw").stat().st_blocks * 512
nokernel = (img / "nokernel.qcow2").stat().st_size
print("| size | bytes | |")
print("|---|---:|---|")
print(f"| raw disk (virtual; allocated) | {size['virga.raw']} | {mb(size['virga.raw'])}; {mb(raw_alloc)} allocated (sparse) |")
print(f"| qcow2 (compressed) | {size['virga.qcow2']} | {mb(size['virga.qcow2'])} |")
print(f"| qcow2 without the kernel (vmlinuz-a zeroed) | {nokernel} | {mb(nokernel)} (target ≤ 3 MB) |")
print(f"| — kernel (vmlinuz, LZ4 bzImage) | {size['vmlinuz']} | {mb(size['vmlinuz'])} |")
print(f"| — slot initramfs on the ESP (zstd; what mounting the slot needs) | {size['initramfs-slot.img']} | {mb(size['initramfs-slot.img'])} |")
print(f"| (whole initramfs, for a direct kernel boot; not in the disk) | {size['initramfs.img']} | {mb(size['initramfs.img'])} |")
print(f"| — slot A {d['slot']['filesystem']} (BusyBox + modules) | {d['slot']['filesystem_bytes']} | {mb(d['slot']['filesystem_bytes'])} |")
print(f"| CirrOS 0.6.2 qcow2 (reference) | 21400000 | 21.4 MB |")
print()
def boots(name, n):
    rs = [json.loads((work / f"{name}.{i}.json").read_text()) for i in range(1, n + 1)
          if (work / f"{name}.{i}.json").exists() and (work / f"{name}.{i}.json").stat().st_size]
    for r in rs:
        assert r["powered_off"], f"{name} did not power off cleanly"
    return rs
med = statistics.median
rows = [("direct kernel boot (pc, -kernel/-initrd)", "direct", runs),
        ("direct kernel boot (q35)", "direct-q35", runs),
        ("disk, SeaBIOS (pc)", "disk-bios", runs),
        ("disk, OVMF (q35)", "disk-uefi", runs),
        ("disk, SeaBIOS, 128 MiB RAM (1 boot)", "disk-bios-128m", 1)]
base = med([r["wall_ms"] for r in boots("direct", runs)])
print(f"| boot (TCG, median of {runs}) | launch → ready (ms, wall) | × direct | kernel → PID 1 (ms, guest) | PID 1 → ready (ms, guest) |")
print("|---|---:|---:|---:|---:|")
for label, name, n in rows:
    rs = boots(name, n)
    if not rs:
        continue
    w = med([r["wall_ms"] for r in rs])
    print(f"| {label} | {w:.0f} | {w / base:.2f} | {med([r['ready']['kernel_ms'] for r in rs]):.0f} | {med([r['ready']['init_ms'] for r in rs]):.0f} |")
print()
print("CirrOS 0.6.2 (reference): qcow2 21.4 MB, minimum RAM 128 MB. Wall time includes firmware,")
print("GRUB reading the kernel and initramfs through the firmware, and QEMU start-up.")
PY
